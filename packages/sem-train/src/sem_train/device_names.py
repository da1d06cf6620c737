"""The device names a training run accepts (``run.device``, ``--device``); torch-free, so the
command line can offer them without importing torch."""

from __future__ import annotations

__all__ = ["DEVICES"]

#: auto: CUDA where present, else the CPU; mps: an Apple GPU, in one process.
DEVICES = ("auto", "cpu", "cuda", "mps")

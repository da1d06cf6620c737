"""Test helpers for code built on sem_models: a micro MAE, one torch thread, torchrun ranks,
a dataset whose DataLoader worker gets Ctrl-C, the CPU standing in for a device without float64.

Shared by the tests of sem-models, sem-baselines and sem-train (as ``numpy.testing`` and
``torch.testing`` serve theirs); nothing here is imported by the library itself.

>>> import sem_models
>>> from sem_models.testing import MICRO_MAE
>>> sem_models.build_mae("tiny", in_chans=1, **MICRO_MAE).patch_embed.num_patches
16
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import types
import typing
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

__all__ = [
    "MICRO_MAE",
    "SignalsItsWorker",
    "cpu_without_float64",
    "free_port",
    "number_fields",
    "one_torch_thread",
    "run_torchrun",
]

#: Overrides of the ``tiny`` preset for a ViT-MAE that builds and steps in milliseconds on a
#: CPU: 32-px inputs, 8-px patches (16 tokens), width 32, two encoder blocks, one decoder block.
MICRO_MAE: dict[str, int] = {
    "img_size": 32,
    "patch_size": 8,
    "embed_dim": 32,
    "depth": 2,
    "num_heads": 2,
    "decoder_embed_dim": 32,
    "decoder_depth": 1,
    "decoder_num_heads": 2,
}


def number_fields(model: type[BaseModel]) -> list[str]:
    """The fields of pydantic ``model`` that hold a number: int, float or an integer Literal,
    also Optional (read from the annotations, so that a field added later is covered too)."""

    def numeric(tp: object) -> bool:
        if typing.get_origin(tp) in (typing.Union, types.UnionType):
            members = [a for a in typing.get_args(tp) if a is not type(None)]
            return bool not in members and any(numeric(a) for a in members)
        if typing.get_origin(tp) is typing.Literal:
            return all(type(a) is int for a in typing.get_args(tp))
        return tp in (int, float)

    return [n for n, f in model.model_fields.items() if numeric(f.annotation)]


@contextmanager
def one_torch_thread() -> Iterator[None]:
    """Run the block on one intra-op thread (restored after).

    Tiny tensors gain nothing from threads, and on a shared machine torch's spinning threads
    make tiny training steps many times slower.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class _NoFloat64(TorchDispatchMode):
    """Every torch operation that returns a float64 tensor raises, as on Apple's ``mps``."""

    def __torch_dispatch__(self, func: Any, kinds: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor) and t.dtype == torch.float64:
                raise TypeError(f"{func} returned float64, which a device without float64 refuses")
        return out


@contextmanager
def cpu_without_float64(*also: types.ModuleType, forbid: bool = True) -> Iterator[None]:
    """The CPU stands in for a device without float64 (Apple's ``mps``, where a float64 tensor
    can be neither made nor moved) for the block: ``"cpu"`` joins
    :data:`sem_models.precision.NO_FLOAT64_DEVICES` and the ``NO_FLOAT64_DEVICES`` of each
    module in ``also`` (e.g. ``sem_physics.batched``), and, with ``forbid``, every torch
    operation returning a float64 tensor raises TypeError (restored after).

    Host-side float64 (numpy, a draw on the CPU moved to the device afterwards) cannot be told
    apart from device data here: run only device-side code in the block.
    """
    from . import precision

    name = "NO_FLOAT64_DEVICES"
    modules: list[types.ModuleType] = [precision, *also]
    before: list[frozenset[str]] = [getattr(m, name) for m in modules]
    for m, kinds in zip(modules, before, strict=True):
        setattr(m, name, frozenset(kinds | {"cpu"}))
    try:
        with _NoFloat64() if forbid else nullcontext():
            yield
    finally:
        for m, kinds in zip(modules, before, strict=True):
            setattr(m, name, kinds)


class SignalsItsWorker(torch.utils.data.Dataset):
    """``inner`` whose DataLoader worker receives SIGINT (as every process of the terminal's
    group does on Ctrl-C) while loading item ``at``.

    Defined here, not in a test module, so that spawned workers (Windows, macOS) can import it.
    """

    def __init__(self, inner: torch.utils.data.Dataset, at: int = 3) -> None:
        self.inner, self.at = inner, at

    def __len__(self) -> int:
        return len(self.inner)  # type: ignore[arg-type]

    def __getitem__(self, key):
        index = key if isinstance(key, int) else key[0]
        if torch.utils.data.get_worker_info() is not None and index == self.at:
            signal.raise_signal(signal.SIGINT)
            time.sleep(0.05)
        return self.inner[key]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


_WORKER = """
import importlib.util
spec = importlib.util.spec_from_file_location("torchrun_worker_module", {module!r})
mod = importlib.util.module_from_spec(spec)
spec.loader.exec_module(mod)
mod.{function}(*{args!r})
"""


def run_torchrun(
    module_file: str | Path,
    function: str,
    *args: object,
    workdir: str | Path,
    nproc: int = 2,
    timeout_s: float = 300.0,
) -> subprocess.CompletedProcess[str]:
    """Run ``function(*args)`` of the module at ``module_file`` in ``nproc`` torchrun ranks.

    ``args`` must be literals (``repr`` round-trips them into the worker script written to
    ``workdir``). Each rank runs one thread; the rendezvous is on a free local port, tried
    again (three times at most) when another process takes the port before torchrun binds it.
    Returns the finished process; the caller checks ``returncode`` and reads ``stderr``.
    """
    script = Path(workdir) / f"torchrun_{function}.py"
    script.write_text(
        _WORKER.format(module=str(module_file), function=function, args=args), encoding="utf-8"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for _attempt in range(3):
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc),
               "--master_addr", "127.0.0.1", "--master_port", str(free_port()), str(script)]  # fmt: skip
        proc = subprocess.run(
            cmd, env=env, capture_output=True, text=True, encoding="utf-8", timeout=timeout_s
        )
        if proc.returncode == 0 or "address already in use" not in proc.stderr.lower():
            break
    return proc

"""Devices: which one a name means (refused in one line when it cannot be used here),
whether it computes bf16 in hardware, the one test behind every bf16 autocast of the toolkit
(training loops and sliding-window inference), and in which dtype statistics accumulate on it
(float64, except on a device without float64)."""

from __future__ import annotations

import torch

__all__ = ["NO_FLOAT64_DEVICES", "accumulation_dtype", "checked_device", "native_bf16"]

#: Device types without float64 kernels: a float64 tensor can be neither made nor moved there
#: (Apple's Metal backend, ``mps``: "Cannot convert a MPS Tensor to float64 dtype").
NO_FLOAT64_DEVICES: frozenset[str] = frozenset({"mps"})


def accumulation_dtype(device: torch.device | str) -> torch.dtype:
    """The dtype in which sums and statistics (losses over a validation set, routing
    statistics, values read back for the log) are kept on ``device``: float64, or float32 on a
    device type of :data:`NO_FLOAT64_DEVICES`, where float64 does not exist."""
    return torch.float32 if torch.device(device).type in NO_FLOAT64_DEVICES else torch.float64


def checked_device(device: torch.device | str | None, what: str = "device") -> torch.device:
    """``device`` as a torch device (None: CUDA when a GPU is visible, else the CPU), or a
    ValueError naming ``what`` when the name is unknown or the device is absent here."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(
            f"{what}={device!r} is not a device name (cpu, cuda, cuda:N, mps, meta)"
        ) from err
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"{what}={device!r}, but no CUDA GPU is visible here (use cpu)")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ValueError(
            f"{what}={device!r}, but only {torch.cuda.device_count()} CUDA GPU(s) are visible"
        )
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"{what}={device!r}, but MPS is not available here (use cpu)")
    return dev


def native_bf16(device: torch.device | str) -> bool:
    """Whether ``device`` computes bf16 in hardware: a CUDA GPU with native bf16 (Ampere and
    later; a V100 or T4 reports bf16 by emulation, slower than fp32, and is excluded), or a CPU
    with AVX512-BF16 or AMX (where bf16 autocast roughly halves a convolution step; elsewhere
    it is emulated and slower than fp32)."""
    device = torch.device(device)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            return False
        try:
            return bool(torch.cuda.is_bf16_supported(including_emulation=False))
        except TypeError:  # torch < 2.4 has no such argument (and counts only native bf16)
            return bool(torch.cuda.is_bf16_supported())
    if device.type == "cpu":
        probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
        return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in probes)
    return False

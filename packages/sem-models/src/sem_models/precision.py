"""Whether a device computes bf16 in hardware: the one test behind every bf16 autocast of the
toolkit (training loops and sliding-window inference)."""

from __future__ import annotations

import torch

__all__ = ["native_bf16"]


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

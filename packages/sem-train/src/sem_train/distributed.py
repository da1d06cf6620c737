"""Process-group set-up from the ``torchrun`` environment, and device selection.

``torchrun --nproc_per_node N`` sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``
and ``MASTER_PORT``; with ``WORLD_SIZE > 1`` the process group is initialised with NCCL on
GPUs and Gloo on CPUs. Without those variables everything runs in one process. An Apple GPU
(``mps``) serves a single-process run only: no collective backend runs on it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from sem_models.precision import accumulation_dtype

from .device_names import DEVICES
from .ranks import is_rank_zero

__all__ = ["DistContext", "check_device", "env_local_rank", "is_rank_zero", "select_device"]


def env_local_rank() -> int:
    """This process's GPU slot under torchrun (``LOCAL_RANK``, else ``RANK``); 0 in a
    single-process run (``WORLD_SIZE`` unset or 1), whatever else the environment holds."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return 0
    return int(os.environ.get("LOCAL_RANK", os.environ.get("RANK", "0")))


def check_device(name: str) -> None:
    """Refuse a device name outside :data:`DEVICES`, ``cuda`` without a CUDA GPU, and ``mps``
    without an Apple GPU or under torchrun (one process only)."""
    if name not in DEVICES:
        raise ValueError(f"device must be one of {', '.join(map(repr, DEVICES))}, got {name!r}")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device='cuda' was requested but no CUDA device is available")
    if name == "mps":
        if not torch.backends.mps.is_available():
            raise ValueError("device='mps' was requested but no Apple GPU (MPS) is available here")
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            raise ValueError(
                "device='mps' runs in one process; torchrun with WORLD_SIZE > 1 needs cuda or cpu"
            )


def select_device(name: str = "auto", local_rank: int = 0) -> torch.device:
    """``auto`` -> ``cuda:<local_rank>`` when a GPU is visible, else ``cpu`` (an Apple GPU only
    when asked for: ``mps``). A launcher that shows each process only its own GPU (one visible
    device) gets ``cuda:0`` on every rank."""
    check_device(name)
    if name == "mps":
        return torch.device("mps")
    if name == "cpu" or (name == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    index = local_rank % max(1, torch.cuda.device_count())
    torch.cuda.set_device(index)
    return torch.device("cuda", index)


@dataclass
class DistContext:
    """Rank, world size and helpers; a no-op in single-process runs."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    owns_group: bool = False

    @classmethod
    def from_env(cls, device: torch.device) -> DistContext:
        """Join (or create) the process group described by the torchrun environment."""
        world = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local = env_local_rank()
        if world <= 1:
            return cls()
        owns = False
        if not dist.is_initialized():
            backend = "nccl" if device.type == "cuda" else "gloo"
            dist.init_process_group(backend=backend, rank=rank, world_size=world)
            owns = True
        return cls(
            rank=dist.get_rank(),
            world_size=dist.get_world_size(),
            local_rank=local,
            owns_group=owns,
        )

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    def all_reduce_sum(self, t: torch.Tensor) -> torch.Tensor:
        """In-place sum over ranks (identity in one process)."""
        if self.enabled:
            dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return t

    def mean_over_ranks(self, values: dict[str, float], device: torch.device) -> dict[str, float]:
        """The mean of each value over ranks, in one all-reduce (identity in one process).

        Every rank must pass the same keys. For logging: the loss and its parts of a step are
        then those of the global batch, not rank 0's.
        """
        if not self.enabled or not values:
            return dict(values)
        keys = sorted(values)
        wide = accumulation_dtype(device)
        t = torch.tensor([float(values[k]) for k in keys], dtype=wide, device=device)
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return {k: v / self.world_size for k, v in zip(keys, t.tolist(), strict=True)}

    def sum_over_ranks(
        self, values: list[torch.Tensor | float], device: torch.device
    ) -> list[float]:
        """The sum of each value (a float or a 0-dim tensor, on any device) over ranks, in one
        all-reduce and one read from the device (the values themselves in one process), added
        in float64 (float32 on a device without float64)."""
        wide = accumulation_dtype(device)
        t = torch.stack(
            [torch.as_tensor(v, device=device).detach().reshape(()).to(wide) for v in values]
        )
        if self.enabled:
            dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return [float(v) for v in t.tolist()]

    def any_true(self, flag: bool, device: torch.device) -> bool:
        """True if ``flag`` is true on any rank."""
        return self.any_of([flag], device)[0]

    def any_of(self, flags: list[bool], device: torch.device) -> list[bool]:
        """Each flag: true on any rank, in one all-reduce (identity in one process)."""
        if not self.enabled:
            return [bool(f) for f in flags]
        t = torch.tensor([1.0 if f else 0.0 for f in flags], device=device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return [v > 0 for v in t.tolist()]

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def close(self) -> None:
        """Destroy the process group if this context created it.

        All ranks meet at a barrier first: a rank that tears Gloo down while its peer is still
        finishing its last collective makes the peer abort ("terminate called without an
        active exception"), which turned finished runs into failures on busy machines.
        """
        if self.owns_group and dist.is_initialized():
            dist.barrier()
            dist.destroy_process_group()

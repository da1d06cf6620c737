"""Deterministic, resumable, rank-sharded batch order.

For epoch ``e`` the dataset order is ``randperm(n)`` drawn from a generator seeded with
``(seed, e)``; the global batch of step ``s`` is positions ``[s G, (s + 1) G)`` of that order,
``G = world_size * batch_size``, and rank ``r`` takes the contiguous slice
``[r B, (r + 1) B)`` of it. Each item is ``(index, sample_seed)`` where the sample seed depends
only on ``(seed, epoch, position)``. Consequences:

* ``N`` processes with batch ``B`` see exactly the samples (and augmentations) of one process
  with batch ``N B``, in the same order once the rank slices are concatenated;
* resuming at step ``s`` of an epoch is ``start_step=s``: nothing is replayed or skipped.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Sampler

__all__ = ["EpochBatchSampler", "sample_seed", "validation_batches"]

_MIX = 0x9E3779B97F4A7C15


def sample_seed(seed: int, epoch: int, position: int) -> int:
    """A 62-bit seed from (seed, epoch, position) (splitmix64 finaliser; no collisions in practice)."""
    z = (seed * 1_000_003 + epoch * 7_919 + position * _MIX) & 0xFFFFFFFFFFFFFFFF
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
    return (z ^ (z >> 31)) >> 2


class EpochBatchSampler(Sampler[list[tuple[int, int]]]):
    """Batches of ``(index, sample_seed)`` for one epoch on one rank (see module doc).

    The last incomplete global batch is dropped (``drop_last``) unless it is the only one, in
    which case the order wraps around so that every epoch has at least one step.
    """

    def __init__(
        self,
        n: int,
        batch_size: int,
        *,
        seed: int = 0,
        epoch: int = 0,
        rank: int = 0,
        world_size: int = 1,
        start_step: int = 0,
        shuffle: bool = True,
    ) -> None:
        if n < 1:
            raise ValueError(f"dataset size must be >= 1, got {n}")
        if batch_size < 1 or world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(
                f"need batch_size >= 1 and 0 <= rank < world_size, got {batch_size}, "
                f"{rank}, {world_size}"
            )
        self.n, self.batch_size = n, batch_size
        self.seed, self.epoch, self.rank, self.world_size = seed, epoch, rank, world_size
        self.start_step, self.shuffle = start_step, shuffle

    @property
    def global_batch(self) -> int:
        return self.batch_size * self.world_size

    def steps_per_epoch(self) -> int:
        """Number of batches (micro-steps) in a full epoch."""
        return max(1, self.n // self.global_batch)

    def order(self) -> list[int]:
        """The epoch's dataset order (length ``steps * global_batch``, wrapping if needed)."""
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
            perm = torch.randperm(self.n, generator=g).tolist()
        else:
            perm = list(range(self.n))
        need = self.steps_per_epoch() * self.global_batch
        while len(perm) < need:
            perm = perm + perm
        return perm[:need]

    def __len__(self) -> int:
        return max(0, self.steps_per_epoch() - self.start_step)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        order = self.order()
        g, b = self.global_batch, self.batch_size
        for step in range(self.start_step, self.steps_per_epoch()):
            lo = step * g + self.rank * b
            yield [(order[p], sample_seed(self.seed, self.epoch, p)) for p in range(lo, lo + b)]


def validation_batches(
    n: int, batch_size: int, *, seed: int, rank: int = 0, world_size: int = 1
) -> list[list[tuple[int, int]]]:
    """Fixed validation batches: rank ``r`` gets items ``r, r + W, ...`` with fixed seeds."""
    mine = list(range(rank, n, world_size))
    items = [(i, sample_seed(seed, -1, i)) for i in mine]
    return [items[k : k + batch_size] for k in range(0, len(items), batch_size)]

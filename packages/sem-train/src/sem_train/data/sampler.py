"""Deterministic, resumable, rank-sharded batch order.

For epoch ``e`` the dataset order is ``randperm(n)`` drawn from a generator seeded with
``(seed, e)``; the global batch of step ``s`` is positions ``[s G, (s + 1) G)`` of that order,
``G = world_size * batch_size``, and rank ``r`` takes the contiguous slice
``[r B, (r + 1) B)`` of it. Each item is ``(index, sample_seed)`` where the sample seed depends
only on ``(seed, epoch, position)``. Consequences:

* ``N`` processes with batch ``B`` see exactly the samples (and augmentations) of one process
  with batch ``N B``, in the same order once the rank slices are concatenated;
* resuming at step ``s`` of an epoch is ``start_step=s``: nothing is replayed or skipped.

One sampler serves a whole run: :meth:`EpochBatchSampler.set_epoch` sets the epoch (and the
step it starts at) before each epoch's iteration, so a ``DataLoader`` built once keeps its
worker processes (``persistent_workers``). Each batch is an :class:`EpochBatch`: a list that
also says its epoch, so that a worker can tell where an epoch begins and seed itself as a
loader built for that epoch would have (:class:`EpochSeededWorkers`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import random
from collections.abc import Iterable, Iterator
from typing import Any

import torch
from torch.utils.data import Dataset, Sampler, get_worker_info

__all__ = [
    "EpochBatch",
    "EpochBatchSampler",
    "EpochSeededWorkers",
    "loader_generator",
    "sample_seed",
    "validation_batches",
]

_MIX = 0x9E3779B97F4A7C15


def sample_seed(seed: int, epoch: int, position: int) -> int:
    """A 62-bit seed from (seed, epoch, position) (splitmix64 finaliser; no collisions in practice)."""
    z = (seed * 1_000_003 + epoch * 7_919 + position * _MIX) & 0xFFFFFFFFFFFFFFFF
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
    return (z ^ (z >> 31)) >> 2


class EpochBatch(list):
    """One batch of ``(index, sample_seed)`` items: a plain list that also carries its
    ``epoch`` (kept when pickled to a DataLoader worker)."""

    def __init__(self, items: Iterable[tuple[int, int]] = (), epoch: int = 0) -> None:
        super().__init__(items)
        self.epoch = epoch


class EpochBatchSampler(Sampler[list[tuple[int, int]]]):
    """Batches of ``(index, sample_seed)`` for one epoch on one rank (see module doc).

    The last incomplete global batch is dropped (``drop_last``) unless it is the only one, in
    which case the order wraps around so that every epoch has at least one step.
    :meth:`set_epoch` moves it to another epoch (or step of one); an iteration uses the epoch
    and start step set when it begins.
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

    def set_epoch(self, epoch: int, start_step: int = 0) -> None:
        """Iterate ``epoch`` from micro-step ``start_step`` next (before ``iter``)."""
        if start_step < 0:
            raise ValueError(f"start_step must be >= 0, got {start_step}")
        self.epoch, self.start_step = epoch, start_step

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
        # the epoch and start step now, not at the first batch: set_epoch may follow
        return self._batches(self.epoch, self.start_step, self.order())

    def _batches(
        self, epoch: int, start_step: int, order: list[int]
    ) -> Iterator[list[tuple[int, int]]]:
        g, b = self.global_batch, self.batch_size
        for step in range(start_step, self.steps_per_epoch()):
            lo = step * g + self.rank * b
            yield EpochBatch(
                [(order[p], sample_seed(self.seed, epoch, p)) for p in range(lo, lo + b)], epoch
            )


def validation_batches(
    n: int, batch_size: int, *, seed: int, rank: int = 0, world_size: int = 1
) -> list[list[tuple[int, int]]]:
    """Fixed validation batches: rank ``r`` gets items ``r, r + W, ...`` with fixed seeds."""
    mine = list(range(rank, n, world_size))
    items = [(i, sample_seed(seed, -1, i)) for i in mine]
    return [items[k : k + batch_size] for k in range(0, len(items), batch_size)]


def loader_generator(seed: int, epoch: int = -1) -> torch.Generator:
    """A DataLoader's generator, seeded by the run's seed and the epoch (resume-exact)."""
    return torch.Generator().manual_seed(int(seed) * 1_000_003 + epoch + 1)


def worker_base_seed(seed: int, epoch: int) -> int:
    """The workers' base seed of a loader built for ``epoch`` (generator
    :func:`loader_generator`): its generator's first draw, as a DataLoader draws it when
    iterated."""
    g = loader_generator(seed, epoch)
    return int(torch.empty((), dtype=torch.int64).random_(generator=g).item())


def seed_this_worker(base_seed: int) -> None:
    """Seed this DataLoader worker's global RNGs (``random``, torch, numpy) and the ``seed``
    its :func:`~torch.utils.data.get_worker_info` reports, as torch seeds a worker it starts
    with ``base_seed``. In the main process (no worker), nothing."""
    info = get_worker_info()
    if info is None:
        return
    seed = base_seed + info.id
    random.seed(seed)
    torch.manual_seed(seed)
    worker_module: Any = None
    try:  # private to torch: should it go, numpy is seeded plainly (still once per epoch)
        from torch.utils.data._utils import worker

        numpy_seed: Any = worker._generate_state(base_seed, info.id)
        worker_module = worker
    except (ImportError, AttributeError):
        numpy_seed = seed % 2**32
    try:
        import numpy as np
    except ImportError:  # torch seeds numpy only where it is installed
        pass
    else:
        # the legacy global RNG a dataset may draw from, seeded as torch seeds it
        np.random.seed(numpy_seed)  # noqa: NPY002
    with contextlib.suppress(Exception):  # the reported seed only: the RNGs are seeded
        if dataclasses.is_dataclass(info):
            worker_module._worker_info = dataclasses.replace(info, seed=seed)
        else:  # an older torch's WorkerInfo, frozen by its own __setattr__
            object.__setattr__(info, "seed", seed)


class EpochSeededWorkers(Dataset):
    """``dataset`` as DataLoader workers that persist across epochs serve it, each epoch's
    randomness that of a loader built for that epoch alone.

    A loader built for epoch ``e`` starts workers seeded from its generator
    (:func:`loader_generator` ``(seed, e)``). A persistent worker starts once, so at the first
    batch of each epoch it is given (an :class:`EpochBatch` says its epoch) it seeds its global
    RNGs exactly so (:func:`seed_this_worker`). The batches of an epoch reach the workers in the
    same order either way (the first to worker 0), so a dataset drawing from a global RNG draws
    what it drew with a loader per epoch. (:class:`~sem_train.data.dataset.SEMImageDataset`
    and the other datasets of the stages draw only from each item's seed.)

    Defined here, in a module that imports only torch, since a spawned worker imports the
    module of the dataset it is given.
    """

    def __init__(self, dataset: Dataset, seed: int) -> None:
        self.dataset, self.seed = dataset, int(seed)
        self.seeded_epoch: int | None = None  # in a worker: the epoch its RNGs are seeded for

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, key: Any) -> Any:
        return self.dataset[key]

    def __getitems__(self, batch: list[Any]) -> list[Any]:
        epoch = getattr(batch, "epoch", None)
        if epoch is not None and epoch != self.seeded_epoch:
            self.seeded_epoch = epoch
            seed_this_worker(worker_base_seed(self.seed, epoch))
        many = getattr(self.dataset, "__getitems__", None)
        return many(batch) if many else [self.dataset[key] for key in batch]

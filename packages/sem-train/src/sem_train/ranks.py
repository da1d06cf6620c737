"""Which process of a ``torchrun`` launch this is, read from its environment.

Kept apart from :mod:`sem_train.distributed` so that it imports no torch: the ``sem train``
commands take their run folder's lock (on rank 0 only) before the seconds of loading torch.
"""

from __future__ import annotations

import os

__all__ = ["is_rank_zero", "rank", "world_size"]


def rank() -> int:
    """This process's rank in a ``torchrun`` launch (0 when it runs alone)."""
    return int(os.environ.get("RANK", "0"))


def world_size() -> int:
    """The number of processes of this ``torchrun`` launch (1 when it runs alone), as the
    process group will count them: a resume is checked against it before torch loads."""
    return max(1, int(os.environ.get("WORLD_SIZE", "1")))


def is_rank_zero() -> bool:
    """Whether this process is rank 0 of a ``torchrun`` launch, or runs alone: the one that
    holds a run's folder and writes what is written once."""
    return rank() == 0

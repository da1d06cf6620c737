"""The threads one restoration's FFTs use (``scipy.fft`` workers).

``scipy.fft`` runs on one thread unless told otherwise; the deconvolutions and the blind PSF
estimate are FFTs on the whole frame, so ``sem restore`` gives them every core it may use:
``OMP_NUM_THREADS`` when set (a shared machine's limit), else the cores this process may run
on. The results are bit-identical whatever the count (pocketfft splits independent 1-D
transforms); ``benchmarks/bench_restore_threads.py`` measures the gain. The evaluation, which
runs methods in parallel worker processes, does not use this.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["fft_threads", "using_fft_threads"]


def fft_threads() -> int:
    """``OMP_NUM_THREADS`` when it is a positive integer, else the usable cores."""
    env = os.environ.get("OMP_NUM_THREADS", "").strip()
    if env.isdigit() and int(env) > 0:
        return int(env)
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


@contextmanager
def using_fft_threads(threads: int | None = None) -> Iterator[int]:
    """``scipy.fft`` uses ``threads`` (default :func:`fft_threads`) inside the block."""
    import scipy.fft

    n = threads or fft_threads()
    with scipy.fft.set_workers(n):
        yield n

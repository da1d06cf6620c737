"""Methods of an evaluation run in worker processes, the cores kept busy until the end.

Each worker is a process forked from a fork server (spawned where there is none) with
``cores // workers`` torch threads (no oversubscription).
Jobs go to the workers longest first: first every method that trains on the protocol's images
(one job each: fit, then restore every case), then every other method split into one job per
case (a restorer built in each job), so that short jobs fill the cores while the last long
ones finish. The caller builds its scorer while the workers start and scores each method as
soon as all its jobs are back; the merged run of a split method equals its run on all cases
(:func:`~sem_train.evaluation.methods.merge_runs`), so the rounded tables are those of a
sequential run; the last digits of CSV/JSON cells may differ with the threads per worker
(:func:`thread_provenance`, recorded in ``results.json``).

Stopping is the parent's decision: workers ignore Ctrl-C (SIGINT reaches the whole process
group), the parent stops them at once when its run ends with an error or an interrupt
(:func:`stop_workers`), and a worker whose parent died (kill -9) exits by itself.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from sem_physics.cli_support import one_line_process, one_line_prog

from ..interrupt import ignore_sigint
from ..worker_server import start_worker_server, stop_worker_server, worker_context
from . import methods
from .methods import merge_runs
from .protocols import Case
from .results import MethodRun

__all__ = [
    "MethodJob",
    "RunningJobs",
    "beside_workers",
    "stop_workers",
    "thread_provenance",
    "worker_pool",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MethodJob:
    """A method to run: ``call(cases=...) -> MethodRun`` (picklable, e.g. a partial of
    :func:`~sem_train.evaluation.methods.run_method`) and whether it trains on the protocol's
    images (one job) or only restores (one job per case)."""

    name: str
    call: Callable[..., MethodRun]
    trains: bool


def _exit_with_parent() -> None:
    """Exit this process as soon as the process that started it ends, however it ended: a
    parent killed with SIGKILL cannot stop its workers, which would otherwise run their jobs
    to the end and keep the fork server alive."""
    parent = multiprocessing.parent_process()
    if parent is None:
        return

    def watch() -> None:
        multiprocessing.connection.wait([parent.sentinel])
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def _worker_init(threads: int, prog: str | None = None) -> None:
    """Worker process: Ctrl-C ignored (the parent stops the workers), exit with the parent, a
    share of the cores for torch; a failed method is reported once, by the parent process, not
    by each of its jobs. ``prog``: the command whose one-line notes (``sem: warning: ...``)
    the worker's log records and warnings are printed as (None: left as they are)."""
    if prog is not None:
        one_line_process(prog)
    ignore_sigint()
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # stop_workers' terminate() ends it at once
    _exit_with_parent()
    import torch
    from tqdm import tqdm

    # tqdm's default lock holds a multiprocessing semaphore, created per process here (a
    # forked worker shares none with its siblings) and reported as leaked when a stopped
    # worker cannot release it; a thread lock serves the same purpose within the process.
    tqdm.set_lock(threading.RLock())

    torch.set_num_threads(threads)
    logging.getLogger(methods.__name__).setLevel(logging.ERROR)


def _threads_per_worker(workers: int) -> int:
    return max(1, (os.cpu_count() or 1) // workers)


def thread_provenance(workers: int) -> dict[str, Any]:
    """The threads the methods of a run with ``workers`` processes use, the cores and the
    package versions: a run's last digits (CSV, JSON) depend on them, the rounded table not."""
    import torch  # noqa: F401  (loaded: the methods run on it, so its threads are recorded)

    from ..runinfo import runtime_provenance

    return {
        "workers": workers,
        "threads_per_worker": _threads_per_worker(workers) if workers > 1 else None,
        **runtime_provenance(),
    }


def worker_pool(workers: int) -> ProcessPoolExecutor:
    """``workers`` processes, ``cores // workers`` torch threads each, forked from the fork
    server where the platform has one (:func:`sem_train.worker_server.worker_context`; a
    command may have started it already), else spawned; their notes printed as this
    process prints its own (:func:`sem_physics.cli_support.one_line_prog`)."""
    start_worker_server()  # with Ctrl-C ignored from its start (see worker_server)
    return ProcessPoolExecutor(
        max_workers=workers,
        mp_context=worker_context(),
        initializer=_worker_init,
        initargs=(_threads_per_worker(workers), one_line_prog()),
    )


def stop_workers(pool: ProcessPoolExecutor, grace_s: float = 5.0) -> None:
    """Stop ``pool`` now: queued jobs cancelled, running ones terminated (SIGTERM, SIGKILL
    after ``grace_s`` seconds), without waiting for them to finish as
    :meth:`~concurrent.futures.Executor.shutdown` does, and the fork server killed
    (:func:`~sem_train.worker_server.stop_worker_server`). For a run that ends with an error
    or an interrupt, whose workers' results nobody will read."""
    processes = list((getattr(pool, "_processes", None) or {}).values())
    _release_call_queue(pool)
    pool.shutdown(wait=False, cancel_futures=True)
    for proc in processes:
        proc.terminate()
    for proc in processes:
        proc.join(grace_s)
        if proc.is_alive():
            proc.kill()
            proc.join()
    _close_call_queue_reader(pool)
    stop_worker_server()  # a worker it is still to fork would outlive the run


def _release_call_queue(pool: ProcessPoolExecutor) -> None:
    """Let the process exit without flushing the pool's job queue: its feeder thread may be
    blocked writing a queued job (a case's images, hundreds of kB) into a pipe no stopped
    worker will read, and the executor's shutdown, run again at interpreter exit, would join
    that thread forever (a Ctrl-C'd ``sem benchmark`` printed "interrupted" and hung)."""
    queue = getattr(pool, "_call_queue", None)
    if queue is not None:
        queue.cancel_join_thread()


def _close_call_queue_reader(pool: ProcessPoolExecutor) -> None:
    """Close this process's read end of the job queue once the workers are gone, so that a
    feeder blocked writing into it fails (EPIPE) instead of waiting (CPython closes it too,
    but only where the pool notices a broken worker)."""
    queue = getattr(pool, "_call_queue", None)
    reader = getattr(queue, "_reader", None)
    if reader is not None:
        with contextlib.suppress(OSError):
            reader.close()


@contextmanager
def beside_workers(workers: int) -> Iterator[None]:
    """This process's torch threads while ``workers`` workers hold the cores: the cores their
    ``cores // workers`` threads each leave (at least one), the previous count restored on
    exit.

    The caller scores while the workers run; with its default of one thread per core it
    would oversubscribe them, and multi-threaded torch kernels whose threads wait on a
    descheduled sibling run many times slower (NIQE per frame: 1.8 s with two threads, 0.8 s
    with one, in two demo runs at similar load).
    """
    import torch

    before = torch.get_num_threads()
    cores = os.cpu_count() or 1
    torch.set_num_threads(max(1, cores - workers * _threads_per_worker(workers)))
    try:
        yield
    finally:
        torch.set_num_threads(before)


class RunningJobs:
    """``jobs`` on ``cases`` queued on ``pool`` (longest first, see the module docstring);
    iterating yields ``(name, run)`` for each method as soon as all its jobs are back, in the
    order methods finish, the parts of a split method merged."""

    def __init__(
        self, pool: ProcessPoolExecutor, jobs: Sequence[MethodJob], cases: Sequence[Case]
    ) -> None:
        self.cases = list(cases)
        self.futures: dict[Future, tuple[str, int]] = {}
        for job in [j for j in jobs if j.trains]:
            self.futures[pool.submit(job.call, cases=self.cases)] = (job.name, 1)
        for job in [j for j in jobs if not j.trains]:
            for c in self.cases:
                self.futures[pool.submit(job.call, cases=[c])] = (job.name, len(self.cases))

    def __iter__(self) -> Iterator[tuple[str, MethodRun]]:
        parts: dict[str, list[MethodRun]] = {}
        for fut in as_completed(self.futures):
            name, expected = self.futures[fut]
            parts.setdefault(name, []).append(fut.result())
            if len(parts[name]) == expected:
                run = merge_runs(parts.pop(name), self.cases)
                if run.failed:
                    log.warning("%s: %s", name, run.failed)
                yield name, run

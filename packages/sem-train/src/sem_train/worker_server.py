"""The process evaluation workers are forked from, startable before anything heavy is imported.

Where the platform has one, an evaluation's worker processes come from a fork server: a fresh
process that imports the evaluation modules once (torch, the restorers) and forks each worker
from itself, so workers start without importing again and no threaded torch is ever forked.
:func:`start_worker_server` starts it at the top of ``sem demo``: it then imports on an idle
core while the command's own process imports the same modules (about 3 s with byte-compiled
modules, 10 s without), instead of after them. This module imports nothing heavy.
"""

from __future__ import annotations

import multiprocessing
from multiprocessing.context import BaseContext

__all__ = ["PRELOAD", "start_worker_server", "worker_context"]

#: Modules the fork server imports before forking workers.
PRELOAD = ["sem_train.evaluation.workers"]


def worker_context() -> BaseContext:
    """Fork server where the platform has one (preloading :data:`PRELOAD`), else spawn."""
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(PRELOAD)
    return ctx


def start_worker_server() -> bool:
    """Start the fork server now (True), or nothing where workers are spawned (False)."""
    if worker_context().get_start_method() != "forkserver":
        return False
    from multiprocessing import forkserver

    forkserver.ensure_running()
    return True

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
import os
import signal
import threading
from multiprocessing.context import BaseContext

__all__ = ["PRELOAD", "start_worker_server", "stop_worker_server", "worker_context"]

#: Modules the fork server imports before forking workers: torch itself too, which the
#: restorers and the scores import only when first used (without it every worker imported
#: torch again: 73 -> 53 s for a 4-method benchmark on 2 workers). The server runs no torch
#: operation, so torch's thread pools are idle (not yet sized) when it forks.
PRELOAD = ["torch", "sem_train.evaluation.workers"]


def worker_context() -> BaseContext:
    """Fork server where the platform has one (preloading :data:`PRELOAD`), else spawn."""
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(PRELOAD)
    return ctx


def start_worker_server() -> bool:
    """Start the fork server now (True; nothing if it runs already), or nothing where workers
    are spawned (False).

    The server starts with Ctrl-C ignored, a disposition it and the workers forked from it
    inherit: a Ctrl-C reaches every process of the group, and the server would otherwise
    print a traceback when it arrives during its imports (it ignores SIGINT only once they are
    done), a worker when it arrives during its start-up. The command's process, which keeps
    its own handler, stops the workers.
    """
    if worker_context().get_start_method() != "forkserver":
        return False
    from multiprocessing import forkserver

    if threading.current_thread() is not threading.main_thread():
        forkserver.ensure_running()  # signal handlers can only be set in the main thread
        return True
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        forkserver.ensure_running()
    finally:
        if previous is not None:  # None: a handler not set from Python, left as it is
            signal.signal(signal.SIGINT, previous)
    return True


def stop_worker_server() -> None:
    """Kill the fork server now, if one runs (the next pool starts a new one).

    For a run that ends with an error or an interrupt: the server may still be importing
    (Ctrl-C ignored, see :func:`start_worker_server`) with a worker request queued, which it
    would serve after the command has ended, to a worker that fails on the command's
    vanished semaphores; it would otherwise also finish its imports on a core nobody needs.
    """
    from multiprocessing import forkserver

    pid = getattr(getattr(forkserver, "_forkserver", None), "_forkserver_pid", None)
    if pid is None:
        return
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass  # gone already; ensure_running() reaps it and starts another when asked

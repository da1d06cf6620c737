"""Test helpers: another run holding an output folder, the pid of a process that has ended,
the output of Python code run in a fresh interpreter (what an import loads, a missing package).

Shared by the tests of sem-physics and sem-train (as ``numpy.testing`` serves numpy's);
nothing here is imported by the library itself.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["dead_pid", "folder_held", "python_output"]

_HOLD = """
import sys, time
from sem_physics.locking import output_lock
with output_lock(sys.argv[1], what=sys.argv[2]):
    print("held", flush=True)
    time.sleep(60)
"""


def python_output(code: str, timeout: float = 300) -> str:
    """Standard output of ``code`` run by a fresh interpreter (this one's); AssertionError with
    its stderr when it fails."""
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout, check=False
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


@contextmanager
def folder_held(folder: str | Path, what: str) -> Iterator[subprocess.Popen[str]]:
    """A child process writing into ``folder`` as another run would: it holds the folder's
    lock (:func:`sem_physics.locking.output_lock`), described as ``what``, until the block
    ends (then it is killed) or the caller kills it."""
    child = subprocess.Popen(
        [sys.executable, "-c", _HOLD, str(folder), what], stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None and child.stdout.readline() == "held\n"
        yield child
    finally:
        child.kill()
        child.wait()
        if child.stdout is not None:
            child.stdout.close()

"""Test helpers: another run holding an output folder, the pid of a process that has ended,
the output of Python code run in a fresh interpreter (what an import loads, a missing package),
a symbolic link or a skip where the OS refuses one, the peak memory a call allocates.

Shared by the tests of sem-physics and sem-train (as ``numpy.testing`` serves numpy's);
nothing here is imported by the library itself.
"""

from __future__ import annotations

import ast
import subprocess
import sys
import tracemalloc
import unittest
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "FreshRun",
    "dead_pid",
    "folder_held",
    "main_in_fresh_interpreter",
    "python_output",
    "symlink_or_skip",
    "traced_peak_bytes",
]

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
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=timeout,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@dataclass(frozen=True)
class FreshRun:
    """What :func:`main_in_fresh_interpreter` saw: the exit status ``main`` returned, which of
    the watched modules were imported by then, and the other lines of stdout and stderr."""

    status: int
    loaded: list[str]
    stdout: list[str]
    stderr: list[str]


def main_in_fresh_interpreter(
    module: str,
    argv: Sequence[str],
    watch: Sequence[str] = ("torch",),
    cwd: str | Path | None = None,
) -> FreshRun:
    """``module.main(argv)`` run by a fresh interpreter (in ``cwd``): how a command answers,
    and which of the ``watch`` modules it imported before answering (a refusal that loads
    torch has waited seconds for nothing)."""
    code = (
        f"import sys\nfrom {module} import main\nrc = main({list(argv)!r})\n"
        f"print(rc, [m for m in {tuple(watch)!r} if m in sys.modules])\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=300,
        check=False,
        cwd=cwd,
    )
    assert done.returncode == 0, done.stderr
    *out, last = done.stdout.strip().splitlines()
    status, loaded = last.split(" ", 1)
    return FreshRun(int(status), ast.literal_eval(loaded), out, done.stderr.strip().splitlines())


def symlink_or_skip(
    link: str | Path, target: str | Path, *, target_is_directory: bool = False
) -> Path:
    """Make ``link`` point at ``target``, or skip the calling test where the OS refuses links
    (Windows without Developer Mode or administrator rights: WinError 1314); pytest reports
    ``unittest.SkipTest`` as a skip."""
    link = Path(link)
    try:
        link.symlink_to(target, target_is_directory=target_is_directory)
    except FileExistsError:
        raise
    except (OSError, NotImplementedError) as err:
        raise unittest.SkipTest(f"cannot create a symbolic link here: {err}") from err
    return link


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
        [sys.executable, "-c", _HOLD, str(folder), what],
        stdout=subprocess.PIPE,
        text=True,
        encoding="utf-8",
    )
    try:
        assert child.stdout is not None and child.stdout.readline() == "held\n"
        yield child
    finally:
        child.kill()
        child.wait()
        if child.stdout is not None:
            child.stdout.close()


def traced_peak_bytes(run: Callable[[], object]) -> int:
    """Peak bytes traced by :mod:`tracemalloc` during ``run()`` (numpy's and Python's
    allocations; what the memory bounds of the tests are stated in)."""
    tracemalloc.start()
    try:
        run()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()

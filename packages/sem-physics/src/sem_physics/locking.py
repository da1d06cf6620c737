"""One run at a time per output folder: :func:`output_lock`.

Every command that writes into an output folder (``sem-degrade``, ``sem restore``, ``sem
train``, ``sem benchmark``, ``sem demo``) holds an exclusive operating-system lock on the
hidden file ``<folder>/.sem-lock`` while it writes; a second run into the same folder stops
at once with :class:`OutputFolderBusyError` naming the first run (its pid and command line,
which the holder writes into the file). The lock is non-blocking: nobody waits.

The operating system releases the lock when its process ends, however it ends (``kill -9``
included), so a crashed run never blocks the next one. The lock file is removed when the run
ends normally; a run that was killed leaves it behind, hidden and harmless (the next run takes
it over). Removing it is safe: a run that opened the file before it was removed gets the lock
only after its holder is gone, then sees that the folder's ``.sem-lock`` is no longer the file
it locked and starts again on the new one. A folder the lock had to create is removed again
at the end if the run left it empty (a run that failed before writing leaves no trace).

The lock is held per thread and is re-entrant there: a library function that takes it
(:func:`sem_physics.degrade_files`) may run inside a command that already holds it.

A run that replaces outputs puts the marker file ``<folder>/INCOMPLETE`` there
(:func:`mark_incomplete`) just before its first output is written, and removes it
(:func:`clear_incomplete`) once its record (manifest) is in place: a folder holding it mixes
outputs of an interrupted run, and the next run finds it.
"""

from __future__ import annotations

import datetime as _dt
import errno
import json
import os
import stat
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .atomic import OutputWriteError, atomic_write_text

__all__ = [
    "INCOMPLETE_MARKER",
    "LOCK_NAME",
    "OutputFolderBusyError",
    "clear_incomplete",
    "mark_incomplete",
    "output_lock",
]

LOCK_NAME = ".sem-lock"
#: The marker of a folder whose run has not finished (same name as the benchmark's).
INCOMPLETE_MARKER = "INCOMPLETE"
_LOCK_OFFSET = 1 << 30  # Windows locks a byte range: one far past the holder's note
_ATTEMPTS = 50  # a new lock file per attempt; more than one only if a holder just left

_guard = threading.Lock()
_held: dict[str, int] = {}  # real path of a folder this process holds -> the holding thread


class OutputFolderBusyError(RuntimeError):
    """Another run is writing into the output folder; the message names it (one line).

    A run failure, not a bad input: ``sem`` exits with status 1 (``describe_error`` maps the
    project's own RuntimeError subclasses there) and so does ``sem-degrade``.
    """

    def __init__(self, folder: Path, pid: int | None, command: str | None) -> None:
        who = ", ".join(str(x) for x in (f"pid {pid}" if pid else None, command) if x)
        super().__init__(
            f"{folder}: another run ({who or 'pid unknown'}) is writing into this output "
            "folder; wait for it to finish or choose another output folder"
        )
        self.folder = folder
        self.pid = pid
        self.command = command

    def __reduce__(self) -> tuple[type, tuple[Path, int | None, str | None]]:
        return type(self), (self.folder, self.pid, self.command)  # survives pickling


def _command_line() -> str:
    argv = sys.argv or ["python"]
    words = [os.path.basename(argv[0]) or "python", *argv[1:]]
    text = " ".join(words).replace("\n", " ").replace("\r", " ")
    return text if len(text) <= 160 else text[:157] + "..."


def _make_folder(folder: Path) -> list[Path]:
    """Create ``folder`` (and missing parents); return the folders created, deepest first."""
    if folder.exists() and not folder.is_dir():
        raise NotADirectoryError(
            errno.ENOTDIR, f"output folder {folder} exists and is not a folder", str(folder)
        )
    missing = [p for p in (folder, *folder.parents) if not p.exists()]
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OutputWriteError(
            err.errno or 0, f"cannot create the output folder {folder}: {err.strerror or err}"
        ) from err
    return missing


def _try_lock(fd: int) -> bool:
    """Take the exclusive lock on ``fd`` without waiting; False when another process has it."""
    try:
        if sys.platform == "win32":
            import msvcrt

            os.lseek(fd, _LOCK_OFFSET, os.SEEK_SET)
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        else:
            import fcntl

            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as err:
        if err.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK, errno.EDEADLK):
            return False
        raise
    return True


def _names_file(fd: int, path: Path) -> bool:
    """Whether ``path`` still names the file open as ``fd`` (not removed by its last holder)."""
    try:
        on_disk = os.stat(path)
    except FileNotFoundError:
        return False
    mine = os.fstat(fd)
    return (mine.st_dev, mine.st_ino) == (on_disk.st_dev, on_disk.st_ino)


def _holder(fd: int) -> tuple[int | None, str | None]:
    """(pid, command) the holder wrote into the lock file, as far as it can be read."""
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        note = json.loads(os.read(fd, 4096).decode("utf-8", "replace"))
        pid = note.get("pid")
        command = note.get("command")
        return (
            pid if isinstance(pid, int) else None,
            str(command).splitlines()[0][:200] if command else None,
        )
    except (OSError, ValueError, AttributeError, IndexError):
        return None, None  # not written yet, or not ours


#: Never through a symbolic link (one planted in a shared folder would have the note written
#: into the file it points to), and not inherited by child processes.
_OPEN_FLAGS = getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)


def _open(path: Path) -> int:
    if path.is_symlink():
        raise OSError(errno.ELOOP, f"{path} is a symbolic link, not a lock file; remove it")
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | _OPEN_FLAGS, 0o666)
    except PermissionError:
        if not path.is_file():
            raise
        fd = os.open(path, os.O_RDONLY | _OPEN_FLAGS)  # another user's: locking needs no write
    if not stat.S_ISREG(os.fstat(fd).st_mode):  # a fifo or device at the lock's name
        os.close(fd)
        raise OSError(errno.EINVAL, f"{path} is not a regular file; remove it")
    return fd


def _write_note(fd: int, command: str) -> None:
    """Write this run's pid and command into the lock file, for a second run's message."""
    try:
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, (json.dumps({"pid": os.getpid(), "command": command}) + "\n").encode())
    except OSError:
        pass  # a read-only lock file: the lock holds all the same, the message says less


def _acquire(folder: Path, what: str | None) -> tuple[int, list[Path]]:
    created = _make_folder(folder)
    path = folder / LOCK_NAME
    for _ in range(_ATTEMPTS):
        try:
            fd = _open(path)
        except FileNotFoundError:  # the folder went with a run that just ended
            created += _make_folder(folder)
            continue
        except OSError as err:
            raise OutputWriteError(
                err.errno or 0, f"cannot write into the output folder {folder}: {err.strerror}"
            ) from err
        try:
            if not _try_lock(fd):
                raise OutputFolderBusyError(folder, *_holder(fd))
            if not _names_file(fd, path):  # removed by the run that held it: start again
                os.close(fd)
                continue
            _write_note(fd, what or _command_line())
        except BaseException:
            os.close(fd)
            raise
        return fd, created
    raise OutputFolderBusyError(folder, None, "runs starting and ending there in quick succession")


def _release(fd: int, folder: Path, created: list[Path]) -> None:
    path = folder / LOCK_NAME
    if sys.platform == "win32":  # an open file cannot be removed: close first (see the module)
        import msvcrt

        try:
            os.lseek(fd, _LOCK_OFFSET, os.SEEK_SET)
            msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)
        finally:
            os.close(fd)
        try:
            path.unlink()
        except OSError:
            pass
    else:  # removed while still locked, so a waiting opener finds it gone (see the module)
        try:
            if _names_file(fd, path):
                path.unlink()
        except OSError:
            pass
        os.close(fd)
    for made in created:  # deepest first; stops at the first folder that holds something
        try:
            made.rmdir()
        except OSError:
            break


@contextmanager
def output_lock(folder: str | Path, *, what: str | None = None) -> Iterator[Path]:
    """Hold the output folder ``folder`` for one run (created if missing); yields it.

    ``what`` describes this run to a second one that finds the folder busy (default: this
    process's command line). Raises :class:`OutputFolderBusyError` at once when another run
    (another process, or another thread of this one) holds the folder, and
    :class:`NotADirectoryError` when ``folder`` is a file. Nested use in one thread is a no-op.

    >>> with output_lock(tmp / "out"):  # doctest: +SKIP
    ...     write_outputs(tmp / "out")
    """
    folder = Path(folder)
    key = os.path.realpath(folder)
    me = threading.get_ident()
    with _guard:
        holder = _held.get(key)
    if holder == me:  # already held here, further up the call stack
        yield folder
        return
    if holder is not None:
        raise OutputFolderBusyError(folder, os.getpid(), "another thread of this process")
    fd, created = _acquire(folder, what)
    with _guard:
        _held[key] = me
    try:
        yield folder
    finally:
        with _guard:
            del _held[key]
        _release(fd, folder, created)


def mark_incomplete(folder: str | Path, what: str | None = None) -> Path:
    """Write ``folder/INCOMPLETE`` (atomically): one line naming the run (``what``, default
    this process's command line) and when it started writing; return its path."""
    when = _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
    line = (
        f"{what or _command_line()} (pid {os.getpid()}, writing since {when}): this folder "
        "mixes outputs of an interrupted run; rerun the command"
    )
    return atomic_write_text(Path(folder) / INCOMPLETE_MARKER, line.replace("\n", " ") + "\n")


def clear_incomplete(folder: str | Path) -> None:
    """Remove ``folder/INCOMPLETE`` (:func:`mark_incomplete`), if it is there."""
    (Path(folder) / INCOMPLETE_MARKER).unlink(missing_ok=True)

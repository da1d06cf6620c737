"""Atomic file output: a reader never sees a half-written file, a failure leaves no debris.

Every file the toolkit writes goes through :func:`atomic_write`: the content is written to a
hidden temporary name in the destination folder, flushed to disk (``fsync``) and renamed over
the destination with :func:`os.replace`, which is atomic on POSIX and Windows. If writing fails
(disk full, permission denied, an exception in the writer) the temporary file is removed and
the destination, if it existed, is unchanged.

Only a process killed outright (``kill -9``, power loss) can leave its temporary behind;
:func:`remove_stale_temporaries` removes those of processes that no longer run, and a program
that owns a folder (a training run its output folder) calls it when it starts there.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path

from .cli_support import plain_text

__all__ = [
    "OutputWriteError",
    "atomic_write",
    "atomic_write_bytes",
    "atomic_write_text",
    "free_bytes",
    "process_umask",
    "remove_stale_temporaries",
]

#: Free bytes below which a write error without errno (numpy's and tifffile's "65536 requested
#: and 24336 written") is taken for a full disk.
NEARLY_FULL_BYTES = 1 << 20

#: The name :func:`atomic_write` gives the temporary of ``<stem><suffix>``:
#: ``.<stem>.<pid>.tmp<suffix>`` (the suffix is empty or one dot and no further dot).
_TEMPORARY = re.compile(r"\.(?P<stem>.+)\.(?P<pid>[0-9]+)\.tmp(?P<suffix>\.[^.]+)?")


class OutputWriteError(OSError):
    """An output file could not be written; the message names the file and the cause."""

    def __str__(self) -> str:  # the message alone, without OSError's "[Errno N]" prefix
        return str(self.strerror) if self.strerror else super().__str__()


def _fsync_file(path: Path) -> None:
    with open(path, "rb+") as fh:
        os.fsync(fh.fileno())


def process_umask() -> int:
    """This process's umask, read without changing it where the system says it (Linux)."""
    try:
        for line in Path("/proc/self/status").read_text(encoding="utf-8").splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)  # elsewhere: read by setting it, restored at once
    os.umask(mask)
    return mask


def _usual_mode(path: Path) -> None:
    """Give a written file the permissions of any new file (``0o666 & ~umask``): some writers
    (safetensors, ``tempfile``) create theirs readable by the owner only."""
    if os.name == "posix":
        try:
            os.chmod(path, 0o666 & ~process_umask())
        except OSError:  # a file system without POSIX modes (vfat, some CIFS/NFS): as written
            pass


def _temporary(path: Path, pid: int) -> Path:
    return path.with_name(f".{path.stem}.{pid}.tmp{path.suffix}")


def _claim(tmp: Path) -> None:
    """Create ``tmp`` afresh as an empty regular file of this process before a writer opens
    it by name: whatever stood at that predictable name (a crashed run's leftover, or a
    symbolic link planted in a shared folder, which the writer would follow) goes first."""
    if os.path.lexists(tmp):
        tmp.unlink()
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    os.close(os.open(tmp, flags, 0o600))


def free_bytes(folder: str | Path) -> int | None:
    """Bytes this user may still write in the file system of ``folder`` (None: not known)."""
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return None


def _space_exhausted(tmp: Path) -> bool:
    """Whether a write into ``tmp`` (still there) failed for want of space: the file system
    holds (nearly) no free bytes (:data:`NEARLY_FULL_BYTES`), or ``tmp`` reached the file size
    limit (``RLIMIT_FSIZE``, ``ulimit -f``)."""
    free = free_bytes(tmp.parent)
    if free is not None and free < NEARLY_FULL_BYTES:
        return True
    try:
        import resource
    except ImportError:  # Windows
        return False
    try:
        limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
        return limit != resource.RLIM_INFINITY and tmp.stat().st_size >= limit
    except (OSError, ValueError):
        return False


def atomic_write(path: str | Path, writer: Callable[[Path], object]) -> Path:
    """Call ``writer(tmp)`` to write a temporary file, fsync it, then rename it to ``path``.

    ``writer`` receives the temporary path (same folder, same suffix, so format detection by
    extension keeps working). Returns ``path``. Raises :class:`OutputWriteError` naming
    ``path`` on any OS error; a full disk says so (``ENOSPC``, ``EDQUOT``, and an error without
    errno or ``EFBIG`` when the file system has no space left or the file size limit was hit);
    the temporary file never survives.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OutputWriteError(
            err.errno or 0, f"cannot create the folder for {path}: {err.strerror or err}"
        ) from err
    tmp = _temporary(path, os.getpid())
    try:
        _claim(tmp)
        writer(tmp)
        _usual_mode(tmp)
        _fsync_file(tmp)
        os.replace(tmp, path)
    except OSError as err:
        full = err.errno in (errno.ENOSPC, errno.EDQUOT) or (
            err.errno in (None, 0, errno.EFBIG)
            and not isinstance(err, OutputWriteError)
            and _space_exhausted(tmp)
        )
        tmp.unlink(missing_ok=True)
        if isinstance(err, OutputWriteError):  # a nested atomic write: name this path
            if str(tmp) not in str(err.strerror):
                raise
            text = str(err.strerror).replace(str(tmp), str(path))
            raise OutputWriteError(err.errno or 0, text) from err
        if full:
            raise OutputWriteError(
                err.errno or errno.ENOSPC, f"no space left on the device while writing {path}"
            ) from err
        raise OutputWriteError(
            err.errno or 0, f"cannot write {path}: {err.strerror or err}"
        ) from err
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_write`)."""
    return atomic_write(path, lambda tmp: tmp.write_bytes(data))


def atomic_write_text(path: str | Path, text: str, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` atomically (see :func:`atomic_write`); a file name in it that
    is not valid UTF-8 (surrogate-escaped) is written with ``\\xNN`` for its bytes."""
    text = plain_text(text)
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding=encoding))


def _pid_alive(pid: int) -> bool:
    """Whether process ``pid`` runs on this machine (True when that cannot be told safely)."""
    if pid == os.getpid():
        return True
    if os.name != "posix" or pid <= 0:  # on Windows, os.kill(pid, 0) sends a Ctrl-C event
        return True
    try:
        os.kill(pid, 0)  # signal 0: an existence and permission check, nothing is sent
    except ProcessLookupError:
        return False
    except (OSError, OverflowError):  # PermissionError: it runs under another user
        return True
    return True


def remove_stale_temporaries(
    folder: str | Path, unowned: re.Pattern[str] | None = None
) -> list[Path]:
    """Remove the temporaries that :func:`atomic_write` left in ``folder`` when its process
    was killed; return the removed paths.

    Only regular files directly in ``folder`` (no recursion, symbolic links neither followed
    nor removed) whose name is exactly ``.<stem>.<pid>.tmp<suffix>`` and whose ``pid`` is no
    running process are removed: a write in progress, of this or another live process, keeps
    its temporary. A missing folder removes nothing. On Windows, where a process cannot be
    checked safely, nothing is removed.

    ``unowned``: names of temporaries that carry no pid (a library's own, e.g. safetensors'
    ``.tmpXXXXXX``), removed whenever they match the whole name: only for a folder that no
    running process writes into (one the caller holds).
    """
    folder = Path(folder)
    removed: list[Path] = []
    try:
        with os.scandir(folder) as scan:
            entries = list(scan)
    except OSError:  # missing, not a folder, unreadable
        return removed
    for entry in sorted(entries, key=lambda e: e.name):
        if not entry.is_file(follow_symlinks=False):
            continue
        if unowned is None or unowned.fullmatch(entry.name) is None:
            match = _TEMPORARY.fullmatch(entry.name)
            if match is None:
                continue
            pid = int(match["pid"])
            original = Path(f"{match['stem']}{match['suffix'] or ''}")
            if _temporary(original, pid).name != entry.name or _pid_alive(pid):
                continue  # not a name atomic_write gives, or its writer still runs
        path = Path(entry.path)
        try:
            path.unlink()
        except OSError:  # removed meanwhile, or a read-only folder: a courtesy, not a must
            continue
        removed.append(path)
    return removed

"""Atomic file output: a reader never sees a half-written file, a failure leaves no debris.

Every file the toolkit writes goes through :func:`atomic_write`: the content is written to a
hidden temporary name in the destination folder, flushed to disk (``fsync``) and renamed over
the destination with :func:`os.replace`, which is atomic on POSIX and Windows. If writing fails
(disk full, permission denied, an exception in the writer) the temporary file is removed and
the destination, if it existed, is unchanged.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from pathlib import Path

__all__ = ["OutputWriteError", "atomic_write", "atomic_write_bytes", "atomic_write_text"]


class OutputWriteError(OSError):
    """An output file could not be written; the message names the file and the cause."""

    def __str__(self) -> str:  # the message alone, without OSError's "[Errno N]" prefix
        return str(self.strerror) if self.strerror else super().__str__()


def _fsync_file(path: Path) -> None:
    with open(path, "rb+") as fh:
        os.fsync(fh.fileno())


def atomic_write(path: str | Path, writer: Callable[[Path], object]) -> Path:
    """Call ``writer(tmp)`` to write a temporary file, fsync it, then rename it to ``path``.

    ``writer`` receives the temporary path (same folder, same suffix, so format detection by
    extension keeps working). Returns ``path``. Raises :class:`OutputWriteError` naming
    ``path`` on any OS error (a full disk says so); the temporary file never survives.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OutputWriteError(
            err.errno or 0, f"cannot create the folder for {path}: {err.strerror or err}"
        ) from err
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")
    try:
        writer(tmp)
        _fsync_file(tmp)
        os.replace(tmp, path)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        if isinstance(err, OutputWriteError):  # a nested atomic write: name this path
            if str(tmp) not in str(err.strerror):
                raise
            text = str(err.strerror).replace(str(tmp), str(path))
            raise OutputWriteError(err.errno or 0, text) from err
        if err.errno in (errno.ENOSPC, errno.EDQUOT):
            raise OutputWriteError(
                err.errno, f"no space left on the device while writing {path}"
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
    """Write ``text`` to ``path`` atomically (see :func:`atomic_write`)."""
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding=encoding))

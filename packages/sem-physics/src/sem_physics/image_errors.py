"""How the image modules report a file: :class:`ImageReadError` when it cannot be read or
written, :func:`warn_once` for a note about it logged once per process (training reads each file
every epoch). Shared by :mod:`sem_physics.io` and :mod:`sem_physics.levels`; the log keeps the
name ``sem_physics.io``.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

__all__ = ["ImageReadError", "warn_once"]

_log = logging.getLogger("sem_physics.io")  # the reader's log, wherever the note comes from


class ImageReadError(ValueError):
    """An image file cannot be read or written; the message names the file and the problem."""


_WARNED: set[tuple[str, str]] = set()  # (resolved path, note) already logged by this process
_WARNED_LOCK = threading.Lock()


def warn_once(path: Path, note: str) -> None:
    """Log ``note`` about ``path`` once per process: training reads each file every epoch."""
    key = (str(Path(path).resolve()), note)
    with _WARNED_LOCK:
        if key in _WARNED:
            return
        _WARNED.add(key)
    _log.warning("%s: %s", path, note)

"""Console scripts that stop quietly when their reader goes away (``sem-psf IMG | head -1``).

When the process at the other end of stdout exits early, the next write raises
``BrokenPipeError``; Python would print a traceback and, at shutdown, an "Exception ignored"
line. :func:`quiet_broken_pipe` wraps a ``main(argv) -> int`` entry point so that the command
instead points stdout at the null device and exits with status 141 (128 + SIGPIPE, the status a
shell reports for ``yes | head -1``), printing nothing. The SIGPIPE signal itself is left alone:
restoring its default action would also kill the process silently on any closed socket.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable, Sequence

__all__ = ["EXIT_BROKEN_PIPE", "quiet_broken_pipe"]

EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE (13)

Main = Callable[[Sequence[str] | None], int]


def _silence_stdout() -> None:
    """Point file descriptor 1 at the null device so that the final flush cannot fail."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):  # no real descriptor (captured in tests)
        pass


def quiet_broken_pipe(main: Main) -> Main:
    """``main`` that returns :data:`EXIT_BROKEN_PIPE` instead of failing on a closed stdout."""

    @functools.wraps(main)
    def wrapper(argv: Sequence[str] | None = None) -> int:
        try:
            try:
                return main(argv)
            finally:  # buffered output reaches the pipe here, also after argparse's SystemExit
                sys.stdout.flush()
        except BrokenPipeError:
            _silence_stdout()
            return EXIT_BROKEN_PIPE

    return wrapper

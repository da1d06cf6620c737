"""Console scripts that stop quietly when their reader goes away (``sem-psf IMG | head -1``).

When the process at the other end of stdout exits early, the next write raises
``BrokenPipeError``; Python would print a traceback and, at shutdown, an "Exception ignored"
line. :func:`quiet_broken_pipe` wraps a ``main(argv) -> int`` entry point so that the command
instead points stdout at the null device and exits with status 141 (128 + SIGPIPE, the status a
shell reports for ``yes | head -1``), printing nothing. The SIGPIPE signal itself is left alone:
restoring its default action would also kill the process silently on any closed socket.

:func:`console_main` adds the other way a command ends early, Ctrl-C: one line
``<prog>: interrupted`` on stderr and status 130 (128 + SIGINT), or the traceback with
``--debug``. Every console script of the toolkit is decorated with it.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable, Sequence

__all__ = ["EXIT_BROKEN_PIPE", "EXIT_INTERRUPTED", "console_main", "quiet_broken_pipe"]

EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE (13)
EXIT_INTERRUPTED = 130  # 128 + SIGINT (2): what a shell reports for a command stopped by Ctrl-C

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


def console_main(prog: str) -> Callable[[Main], Main]:
    """Decorate the ``main(argv) -> int`` of console script ``prog``: a closed stdout ends it
    quietly (:func:`quiet_broken_pipe`), Ctrl-C with ``<prog>: interrupted`` and
    :data:`EXIT_INTERRUPTED` (with ``--debug`` among the arguments: the traceback)."""

    def decorate(main: Main) -> Main:
        @functools.wraps(main)
        def wrapper(argv: Sequence[str] | None = None) -> int:
            try:
                return main(argv)
            except KeyboardInterrupt:
                if "--debug" in (sys.argv[1:] if argv is None else argv):
                    raise
                print(f"{prog}: interrupted", file=sys.stderr)
                return EXIT_INTERRUPTED

        return quiet_broken_pipe(wrapper)

    return decorate

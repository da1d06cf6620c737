"""Console scripts that stop quietly when their reader goes away (``sem-psf IMG | head -1``).

When the process at the other end of stdout exits early, the next write raises
``BrokenPipeError``; Python would print a traceback and, at shutdown, an "Exception ignored"
line. :func:`quiet_broken_pipe` wraps a ``main(argv) -> int`` entry point so that the command
instead points stdout at the null device and exits with status 141 (128 + SIGPIPE, the status a
shell reports for ``yes | head -1``), printing nothing. The SIGPIPE signal itself is left alone:
restoring its default action would also kill the process silently on any closed socket.

:func:`console_main` adds the other way a command ends early, Ctrl-C: one line
``<prog>: interrupted`` on stderr and status 130 (128 + SIGINT), or the traceback with
``--debug``. Every console script of the toolkit is decorated with it. It also makes stdout
UTF-8 when it is not a terminal (:func:`utf8_stdout`): on Windows a pipe or file gets the ANSI
code page, which cannot write "→" and would make ``--json > results.json`` cp1252.
"""

from __future__ import annotations

import codecs
import functools
import os
import sys
from collections.abc import Callable, Sequence
from typing import Protocol

__all__ = [
    "EXIT_BROKEN_PIPE",
    "EXIT_INTERRUPTED",
    "console_main",
    "quiet_broken_pipe",
    "utf8_stdout",
]

EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE (13)
EXIT_INTERRUPTED = 130  # 128 + SIGINT (2): what a shell reports for a command stopped by Ctrl-C


class Main(Protocol):
    """A console script's ``main(argv=None) -> int`` (``argv`` None: ``sys.argv[1:]``)."""

    def __call__(self, argv: Sequence[str] | None = None) -> int: ...


def _silence_stdout() -> None:
    """Point file descriptor 1 at the null device so that the final flush cannot fail."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):  # no real descriptor (captured in tests)
        pass


def utf8_stdout() -> None:
    """Write stdout as UTF-8 when it is redirected, so machine-readable output is UTF-8 whatever
    the locale; a terminal keeps its encoding but shows ``?`` for what it cannot encode."""
    stream = sys.stdout
    try:
        tty = stream.isatty()
        utf8 = codecs.lookup(stream.encoding).name == "utf-8"
    except (AttributeError, LookupError, OSError, TypeError, ValueError):
        return  # no real stream (None, closed, or a replacement without these)
    if utf8 or not hasattr(stream, "reconfigure"):
        return
    if tty:
        stream.reconfigure(errors="replace")
    else:
        stream.reconfigure(encoding="utf-8")


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
    :data:`EXIT_INTERRUPTED` (with ``--debug`` among the arguments: the traceback); a redirected
    stdout is UTF-8 (:func:`utf8_stdout`)."""

    def decorate(main: Main) -> Main:
        @functools.wraps(main)
        def wrapper(argv: Sequence[str] | None = None) -> int:
            utf8_stdout()
            try:
                return main(argv)
            except KeyboardInterrupt:
                if "--debug" in (sys.argv[1:] if argv is None else argv):
                    raise
                print(f"{prog}: interrupted", file=sys.stderr)
                return EXIT_INTERRUPTED

        return quiet_broken_pipe(wrapper)

    return decorate

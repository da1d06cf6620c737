"""Console scripts that stop quietly when their reader goes away (``sem-psf IMG | head -1``).

When the process at the other end of stdout exits early, the next write raises
``BrokenPipeError``; Python would print a traceback and, at shutdown, an "Exception ignored"
line. :func:`quiet_broken_pipe` wraps a ``main(argv) -> int`` entry point so that the command
instead points stdout at the null device and exits with status 141 (128 + SIGPIPE, the status a
shell reports for ``yes | head -1``), printing nothing. The SIGPIPE signal itself is left alone:
restoring its default action would also kill the process silently on any closed socket.

:func:`console_main` adds the other ways a command ends early, and is what every console script
of the toolkit is decorated with:

* Ctrl-C: one line ``<prog>: interrupted`` on stderr and status 130 (128 + SIGINT), or the
  traceback with ``--debug``.
* SIGTERM (``kill``, a batch system's time limit): the same path as Ctrl-C (the same cleanup of
  locks and ``INCOMPLETE`` markers, by the same ``finally`` blocks), one line
  ``<prog>: terminated`` and status 143 (128 + SIGTERM). The handler is installed only when
  SIGTERM has its default action when the command starts (a program that set its own, e.g.
  to save a checkpoint, keeps it; one that sets its own later overrides this one while it
  runs; :func:`sigterm_is_default` tells it that this one may be replaced). It raises
  :class:`Terminated` once, in the process that installed it; a second SIGTERM kills the
  process as the default action does.
* stdout that cannot be written (``--json > /dev/full``, a closed stdout ``>&-``): one line
  ``<prog>: error: cannot write to stdout: <why>`` and status 1 (:class:`StdoutWriteError`,
  raised by every write or flush of ``sys.stdout`` while the command runs; a BaseException, so
  a command's own ``except Exception`` does not take it for an error of its input).
* ``OMP_NUM_THREADS`` that OpenMP rejects (``0``, ``abc``, empty): dropped from the environment
  before numpy or torch loads, with one note, instead of libgomp's warning.

While the command runs, a Python warning or a log record of any library (the image reader's
note on a JPEG or a multi-page TIFF) is one line ``<prog>: warning: ...`` on stderr
(:func:`sem_physics.cli_support.one_line_warnings`, :func:`~sem_physics.cli_support.one_line_logs`),
as every line a command prints there carries its name and a kind.

It also makes stdout UTF-8 when it is not a terminal (:func:`utf8_stdout`): on Windows a pipe or
file gets the ANSI code page, which cannot write "→" and would make ``--json > results.json``
cp1252.
"""

from __future__ import annotations

import codecs
import functools
import os
import signal
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from types import FrameType
from typing import Any, Protocol, TextIO

from .cli_support import one_line_logs, one_line_warnings

__all__ = [
    "EXIT_BROKEN_PIPE",
    "EXIT_INTERRUPTED",
    "EXIT_STDOUT_ERROR",
    "EXIT_TERMINATED",
    "StdoutWriteError",
    "Terminated",
    "console_main",
    "quiet_broken_pipe",
    "sigterm_is_default",
    "utf8_stdout",
]

EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE (13)
EXIT_INTERRUPTED = 130  # 128 + SIGINT (2): what a shell reports for a command stopped by Ctrl-C
EXIT_TERMINATED = 143  # 128 + SIGTERM (15)
EXIT_STDOUT_ERROR = 1  # stdout could not be written (full disk, closed)


class Main(Protocol):
    """A console script's ``main(argv=None) -> int`` (``argv`` None: ``sys.argv[1:]``)."""

    def __call__(self, argv: Sequence[str] | None = None) -> int: ...


class Terminated(KeyboardInterrupt):
    """SIGTERM arrived: raised where Ctrl-C's KeyboardInterrupt would be, so the same cleanup
    runs; :func:`console_main` then says ``<prog>: terminated`` and exits 143."""


class StdoutWriteError(BaseException):
    """stdout cannot be written (full disk, closed); the message says why. A BaseException:
    a command's ``except Exception`` must not report it as an error of its input."""


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


class _GuardedStdout:
    """``sys.stdout`` while a command runs: a write or flush that fails for another reason than
    a closed pipe raises :class:`StdoutWriteError`; everything else is the stream's own."""

    def __init__(self, stream: TextIO | None) -> None:
        self._stream = stream

    def _fail(self, err: BaseException | None) -> StdoutWriteError:
        if err is None:
            why = "it is closed"
        elif isinstance(err, OSError) and err.strerror:
            why = err.strerror
        else:
            why = str(err) or type(err).__name__
        return StdoutWriteError(f"cannot write to stdout: {why}")

    def _closed(self) -> bool:
        return bool(getattr(self._stream, "closed", False))

    def write(self, text: str) -> int:
        if self._stream is None:
            raise self._fail(None)
        try:
            return self._stream.write(text)
        except BrokenPipeError:
            raise
        except OSError as err:
            raise self._fail(err) from err
        except ValueError as err:  # "I/O operation on closed file"; else (encoding) its own
            if not self._closed():
                raise
            raise self._fail(None) from err

    def writelines(self, lines: Iterable[str]) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        if self._stream is None:
            return
        try:
            self._stream.flush()
        except BrokenPipeError:
            raise
        except OSError as err:
            raise self._fail(err) from err
        except ValueError as err:
            if not self._closed():
                raise
            raise self._fail(None) from err

    def __getattr__(self, name: str) -> Any:
        if self._stream is None:
            raise AttributeError(name)
        return getattr(self._stream, name)


def _hold_closed_descriptors() -> None:
    """Open the null device on a closed descriptor 1 or 2 (``cmd >&-``): else the next file the
    command opens would get it, and whatever writes to stdout would write into that file."""
    for fd in (1, 2):
        try:
            os.fstat(fd)
        except OSError:
            try:
                got = os.open(os.devnull, os.O_WRONLY)
            except OSError:
                return
            if got != fd:  # a lower descriptor was free too: not ours to fill
                os.close(got)


@contextmanager
def _guarded_stdout() -> Iterator[None]:
    """``sys.stdout`` raises :class:`StdoutWriteError` on a failed write while the block runs."""
    original = sys.stdout
    if original is None:
        _hold_closed_descriptors()
    sys.stdout = _GuardedStdout(original)  # type: ignore[assignment]
    try:
        yield
    finally:
        if isinstance(sys.stdout, _GuardedStdout):  # else replaced meanwhile: left as it is
            sys.stdout = original


def sigterm_is_default() -> bool:
    """Whether SIGTERM has its default action or :func:`console_main`'s (which a program may
    replace by its own, e.g. one saving a checkpoint first, and restore afterwards)."""
    current = signal.getsignal(signal.SIGTERM)
    return current == signal.SIG_DFL or getattr(current, "_sem_console_main", False)


def _sigterm_handler(pid: int) -> Callable[[int, FrameType | None], None]:
    def handler(signum: int, frame: FrameType | None) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a second SIGTERM kills
        if os.getpid() != pid:  # a forked child (a worker): die as by default
            os.kill(os.getpid(), signal.SIGTERM)
            return
        raise Terminated()

    handler._sem_console_main = True  # type: ignore[attr-defined]
    return handler


@contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM raises :class:`Terminated` while the block runs, unless SIGTERM already has a
    handler (then nothing changes); the default action is restored afterwards."""
    try:
        installed = signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
        if installed:
            signal.signal(signal.SIGTERM, _sigterm_handler(os.getpid()))
    except (ValueError, OSError, AttributeError):  # not the main thread; no SIGTERM
        installed = False
    try:
        yield
    finally:
        if installed:
            try:
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
            except (ValueError, OSError):
                pass


def _omp_threads_note(prog: str) -> None:
    """Drop an ``OMP_NUM_THREADS`` OpenMP rejects (it is read when libgomp loads, after this),
    with one note, instead of libgomp's warning; a valid one (``4``, ``4,2``) is kept."""
    value = os.environ.get("OMP_NUM_THREADS")
    if value is None:
        return
    parts = [p.strip() for p in value.split(",")]
    if all(p.isascii() and p.isdigit() and int(p) > 0 for p in parts):
        return
    del os.environ["OMP_NUM_THREADS"]
    print(
        f"{prog}: note: OMP_NUM_THREADS={value!r} is not a positive number of threads; ignored",
        file=sys.stderr,
    )


def _debug(argv: Sequence[str] | None) -> bool:
    return "--debug" in (sys.argv[1:] if argv is None else argv)


def console_main(prog: str) -> Callable[[Main], Main]:
    """Decorate the ``main(argv) -> int`` of console script ``prog``: a closed stdout ends it
    quietly (:func:`quiet_broken_pipe`), Ctrl-C with ``<prog>: interrupted`` and
    :data:`EXIT_INTERRUPTED` (with ``--debug`` among the arguments: the traceback), SIGTERM
    with ``<prog>: terminated`` and :data:`EXIT_TERMINATED`, stdout that cannot be written with
    one line and :data:`EXIT_STDOUT_ERROR`; Python warnings and log records are one line
    ``<prog>: warning: ...``; a redirected stdout is UTF-8 (:func:`utf8_stdout`) and an invalid
    ``OMP_NUM_THREADS`` is dropped with a note."""

    def decorate(main: Main) -> Main:
        @functools.wraps(main)
        def run(argv: Sequence[str] | None = None) -> int:
            try:
                return main(argv)
            except Terminated:
                if _debug(argv):
                    import traceback

                    traceback.print_exc()
                print(f"{prog}: terminated", file=sys.stderr)
                return EXIT_TERMINATED
            except KeyboardInterrupt:
                if _debug(argv):
                    raise
                print(f"{prog}: interrupted", file=sys.stderr)
                return EXIT_INTERRUPTED

        quiet = quiet_broken_pipe(run)

        @functools.wraps(main)
        def wrapper(argv: Sequence[str] | None = None) -> int:
            _omp_threads_note(prog)
            utf8_stdout()
            try:
                with (
                    _sigterm_as_interrupt(),
                    _guarded_stdout(),
                    one_line_warnings(prog),
                    one_line_logs(prog),
                ):
                    return quiet(argv)
            except StdoutWriteError as err:
                _silence_stdout()
                print(f"{prog}: error: {err}", file=sys.stderr)
                return EXIT_STDOUT_ERROR

        return wrapper

    return decorate

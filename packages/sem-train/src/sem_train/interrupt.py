"""Ctrl-C during training: finish the step, save a checkpoint there, stop.

A Ctrl-C that lands inside a step would otherwise lose every step since the newest periodic
checkpoint (up to ``checkpoint_every_steps``). While :class:`GracefulInterrupt` is active, the
first SIGINT only asks the loop to stop: it completes the optimizer step it is in, saves a
checkpoint at that step (so ``--resume`` continues exactly from it) and raises
:class:`TrainingInterrupted`; a Ctrl-C in the run's last step (``max_steps``) lets it end as
it would have. A second Ctrl-C stops at once, without saving, as a plain
:class:`KeyboardInterrupt`; a second SIGINT within :data:`SAME_REQUEST_S` of the first is
taken as the same request (``uv run`` without a terminal forwards the group's SIGINT to the
child that already got it: one Ctrl-C, two signals microseconds apart; a person pressing
Ctrl-C twice takes longer). Under DDP the ranks agree on the step to stop at (the request
travels with the step's gradient-norm check: no extra collective per step). ``torchrun`` starts its
workers in sessions of their own: they get the Ctrl-C it forwards once, and it kills them
after its ``--shutdown-timeout`` (30 s by default), so where a step plus its checkpoint (or an
epoch's validation) takes longer, raise it or the newest periodic checkpoint is what stays.

SIGTERM (a batch scheduler's or a container's stop) is taken as the first Ctrl-C: the step
is finished, a checkpoint saved, and the command exits with :data:`EXIT_TERMINATED` (143);
the handler is installed for the loop and the previous one restored after it. Outside the
loop (and in ``sem restore``, ``demo``, ``benchmark``) the console script's handler
(:func:`sem_physics.pipes.console_main`) makes SIGTERM unwind the command (locks released,
temporaries removed) with one line and 143.

DataLoader workers ignore SIGINT (:func:`ignore_sigint`): a Ctrl-C reaches every process of
the terminal's group, and a worker that died of it would fail the step the loop finishes.
"""

from __future__ import annotations

import signal
import sys
import threading
import time
from types import FrameType, TracebackType
from typing import Any

from sem_physics.pipes import EXIT_TERMINATED as _EXIT_TERMINATED

__all__ = [
    "EXIT_TERMINATED",
    "SAME_REQUEST_S",
    "GracefulInterrupt",
    "TrainingInterrupted",
    "ignore_sigint",
]

#: Exit status of a command stopped by SIGTERM (128 + 15, as a shell reports it).
EXIT_TERMINATED = _EXIT_TERMINATED

#: A second SIGINT this soon (seconds) after the first is the same Ctrl-C delivered twice.
SAME_REQUEST_S = 0.5


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C stopped a run after saving a checkpoint at ``global_step``."""

    def __init__(self, global_step: int, epoch: int, signum: int = signal.SIGINT) -> None:
        super().__init__(f"interrupted; checkpoint saved at step {global_step}")
        self.global_step = global_step
        self.epoch = epoch
        self.signum = signum  # SIGINT (Ctrl-C) or SIGTERM


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def ignore_sigint(_worker_id: int = 0) -> None:
    """DataLoader ``worker_init_fn``: the worker ignores Ctrl-C and SIGTERM (a scheduler may
    signal every process of the job); its parent decides, and the worker exits with it."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


class GracefulInterrupt:
    """Context in which the first Ctrl-C or SIGTERM sets :attr:`requested` (and
    :attr:`signum`) instead of raising.

    Active only in the main thread. SIGINT only over Python's default handler (a caller's
    own handler, or a process that ignores SIGINT, is left alone); SIGTERM over the default
    action or a Python handler (a console script's, :func:`sem_physics.pipes.console_main`), not where
    it is ignored. The previous handlers are restored on exit. ``announce``: print one line
    when the request arrives (the main rank).
    """

    def __init__(self, announce: bool = True) -> None:
        self.announce = announce
        self.requested = False
        self.signum: int = signal.SIGINT
        self._first_at: float | None = None
        self._previous: dict[int, Any] = {}

    @property
    def _installed(self) -> bool:
        return bool(self._previous)

    def __enter__(self) -> GracefulInterrupt:
        if not _main_thread():
            return self
        if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
            self._previous[signal.SIGINT] = signal.signal(signal.SIGINT, self._handle)
        term = signal.getsignal(signal.SIGTERM)
        if term is signal.SIG_DFL or callable(term):
            self._previous[signal.SIGTERM] = signal.signal(signal.SIGTERM, self._handle)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._restore()

    def _restore(self) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)
        self._previous = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        now = time.monotonic()
        if self.requested and self._first_at is not None and now - self._first_at < SAME_REQUEST_S:
            return  # the same Ctrl-C, delivered twice (uv run forwards it without a terminal)
        if not self.requested:
            self.requested = True
            self.signum = signum
            self._first_at = now
            if self.announce:
                what = "SIGTERM" if signum == signal.SIGTERM else "Ctrl-C"
                print(  # on a line of its own: a progress bar may hold the current one
                    f"\nsem: {what}: finishing this step and saving a checkpoint "
                    f"({what} again stops at once, without saving)",
                    file=sys.stderr,
                    flush=True,
                )
            return
        self._restore()
        raise KeyboardInterrupt

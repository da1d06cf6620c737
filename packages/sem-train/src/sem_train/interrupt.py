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

__all__ = ["SAME_REQUEST_S", "GracefulInterrupt", "TrainingInterrupted", "ignore_sigint"]

#: A second SIGINT this soon (seconds) after the first is the same Ctrl-C delivered twice.
SAME_REQUEST_S = 0.5


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C stopped a run after saving a checkpoint at ``global_step``."""

    def __init__(self, global_step: int, epoch: int) -> None:
        super().__init__(f"interrupted; checkpoint saved at step {global_step}")
        self.global_step = global_step
        self.epoch = epoch


def ignore_sigint(_worker_id: int = 0) -> None:
    """DataLoader ``worker_init_fn``: the worker ignores Ctrl-C; its parent decides."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


class GracefulInterrupt:
    """Context in which the first Ctrl-C sets :attr:`requested` instead of raising.

    Active only in the main thread and only over Python's default SIGINT handler (a caller's
    own handler, or a process that ignores SIGINT, is left alone). ``announce``: print one
    line when the request arrives (the main rank).
    """

    def __init__(self, announce: bool = True) -> None:
        self.announce = announce
        self.requested = False
        self._first_at: float | None = None
        self._previous: Any = None
        self._installed = False

    def __enter__(self) -> GracefulInterrupt:
        if (
            threading.current_thread() is threading.main_thread()
            and signal.getsignal(signal.SIGINT) is signal.default_int_handler
        ):
            self._previous = signal.signal(signal.SIGINT, self._handle)
            self._installed = True
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._installed:
            signal.signal(signal.SIGINT, self._previous)
            self._installed = False

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        now = time.monotonic()
        if self.requested and self._first_at is not None and now - self._first_at < SAME_REQUEST_S:
            return  # the same Ctrl-C, delivered twice (uv run forwards it without a terminal)
        if not self.requested:
            self.requested = True
            self._first_at = now
            if self.announce:
                print(  # on a line of its own: a progress bar may hold the current one
                    "\nsem: Ctrl-C: finishing this step and saving a checkpoint "
                    "(Ctrl-C again stops at once, without saving)",
                    file=sys.stderr,
                    flush=True,
                )
            return
        signal.signal(signal.SIGINT, self._previous)
        self._installed = False
        raise KeyboardInterrupt

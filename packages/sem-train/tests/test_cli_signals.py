"""``sem`` and SIGTERM: a command unwinds (no lock left) with one line and 143; ``sem train``
exits 143 after the checkpoint a SIGTERM asked for; torch's INFO logs stay quiet."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import tifffile
from sem_physics import make_sample
from sem_physics.locking import LOCK_NAME


def _python(code: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=cwd,
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=300,
    )


@pytest.mark.skipif(sys.platform == "win32", reason="SIGTERM: POSIX")
def test_sigterm_in_sem_restore_leaves_no_lock_and_says_one_line(tmp_path: Path) -> None:
    tifffile.imwrite(tmp_path / "a.tif", make_sample("lines", (48, 64), seed=0).astype(np.uint8))
    done = _python(
        """
        import os, signal, sys
        from sem_train.restoration import batch
        from sem_train.cli import main

        def terminated(*args, **kwargs):
            os.kill(os.getpid(), signal.SIGTERM)
            import time; time.sleep(5)
            raise AssertionError("SIGTERM did not stop the run")

        batch._restore_one = terminated
        sys.exit(main(["restore", "a.tif", "-o", "out", "--method", "wiener"]))
        """,
        tmp_path,
    )
    assert done.returncode == 128 + signal.SIGTERM, done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("sem: terminated")
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "out" / LOCK_NAME).exists()


def test_a_sigterm_stop_of_sem_train_exits_143() -> None:
    from sem_physics.pipes import Terminated  # SIGTERM before the loop
    from sem_train.commands.train import _stop_status
    from sem_train.interrupt import TrainingInterrupted

    assert _stop_status(TrainingInterrupted(5, 1, signal.SIGTERM)) == 143
    assert _stop_status(TrainingInterrupted(5, 1)) == 130
    assert _stop_status(KeyboardInterrupt()) == 130
    assert _stop_status(Terminated()) == 143


def test_torch_info_logs_are_not_shown_by_sem(tmp_path: Path) -> None:
    """torch's INFO lines (its FakeTensor cache stats at exit after an interrupt) stay out of
    a command's output, even when torch's own logging setup never ran."""
    done = _python(
        """
        import logging
        from sem_train.cli import main

        main(["restore", "missing.tif", "-o", "out"])
        logging.getLogger("torch._subclasses.fake_tensor").info("FakeTensor cache stats:")
        """,
        tmp_path,
    )
    assert "FakeTensor" not in done.stderr, done.stderr

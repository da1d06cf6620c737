"""Session-wide test settings: offline hubs, a throw-away TORCH_HOME, real-data folders.

The real-data folders come from the environment or from ``../shared/data`` beside the clone.
"""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import tempfile
from pathlib import Path

import pytest

# Nothing in the test run may download: hubs offline, torch's cache in a fresh temporary folder
# (removed when the run ends).
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
_TORCH_HOME = tempfile.mkdtemp(prefix="sem-test-torch-home-")
atexit.register(shutil.rmtree, _TORCH_HOME, ignore_errors=True)
os.environ["TORCH_HOME"] = _TORCH_HOME
os.environ.setdefault("MPLBACKEND", "Agg")

# A test run started in the background of a shell without job control (`cmd &`, `nohup`)
# inherits SIGINT ignored, and so would every command the tests start: the Ctrl-C tests need
# Ctrl-C as a terminal delivers it. (A run that ignores SIGINT on purpose is tested by setting
# SIG_IGN itself.)
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

# Real SEM images are never committed; CI points at the shared folder beside the clone.
_shared = Path(__file__).resolve().parent.parent / "shared" / "data"
for _var, _sub in (("SEM_REAL_DATA", "sem"), ("SEM_CORPUS_DATA", "sem_corpus")):
    if not os.environ.get(_var) and (_shared / _sub).is_dir():
        os.environ[_var] = str(_shared / _sub)


_REAL_DATA_VARS = ("SEM_REAL_DATA", "SEM_CORPUS_DATA")


@pytest.hookimpl(optionalhook=True)  # pytest-xdist's hook; without the plugin, never called
def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """``-n auto``: one test process per core this run may use, at most 8 (each holds its own
    torch; more add memory, not speed, to a run that is mostly process starts). A run of named
    test files (or tests) runs in this process (0: no worker processes): starting the workers
    (about 10 s here) would cost more than it saves; `-n 2` asks for them all the same."""
    if config.args and all(str(arg).split("::", 1)[0].endswith(".py") for arg in config.args):
        return 0
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return min(8, usable or 1)


@pytest.fixture(scope="session", autouse=True)
def _session_temp(tmp_path_factory):
    """Temporary files of the code under test (e.g. the NIQE parameter cache), in-process and
    in the CLIs' subprocesses, go below pytest's base folder, never to the system's /tmp."""
    folder = tmp_path_factory.mktemp("tmpdir")
    saved_env, saved_dir = os.environ.get("TMPDIR"), tempfile.tempdir
    os.environ["TMPDIR"], tempfile.tempdir = str(folder), str(folder)
    yield folder
    tempfile.tempdir = saved_dir
    if saved_env is None:
        os.environ.pop("TMPDIR", None)
    else:
        os.environ["TMPDIR"] = saved_env


@pytest.fixture(autouse=True)
def _private_cache(monkeypatch, tmp_path_factory):
    """Image-index caches go to a throw-away folder, never to the user's ~/.cache."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("xdg_cache")))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    """With ``SEM_REQUIRE_REAL_DATA=1`` (set by CI) a real-data test may not skip: it fails.

    The tests on real micrographs skip where the data is absent (it is never committed); in CI
    the data is always beside the clone, so a skip there would hide a broken data path.
    """
    outcome = yield
    report = outcome.get_result()
    if not report.skipped or os.environ.get("SEM_REQUIRE_REAL_DATA") != "1":
        return
    reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
    if any(var in reason for var in _REAL_DATA_VARS):
        report.outcome = "failed"
        report.longrepr = f"real-data test skipped although SEM_REQUIRE_REAL_DATA=1: {reason}"

"""Methods in worker processes: longest jobs first, restore-only methods split per case, the
merged run equal to one run on all cases."""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys
import textwrap
import time
from concurrent.futures import Future
from functools import partial

import numpy as np
import pytest
from sem_baselines import registry_entry
from sem_train.evaluation import build_s2s, run_method, sample_images
from sem_train.evaluation.methods import merge_runs, trains_here
from sem_train.evaluation.results import MethodRun
from sem_train.evaluation.workers import (
    MethodJob,
    RunningJobs,
    beside_workers,
    stop_workers,
    worker_pool,
)


@pytest.fixture(scope="module")
def cases():
    pool = sample_images(1, (64, 80), seed=5)
    return build_s2s(pool, n_train=0, n_eval=len(pool), settings=("midpoint",))[3]


class _InlinePool:
    """A pool running each job at once, recording what was submitted, in order."""

    def __init__(self) -> None:
        self.submitted: list[tuple[str, list[str]]] = []

    def submit(self, fn, **kwargs) -> Future:
        self.submitted.append((fn.args[0], [c.case_id for c in kwargs["cases"]]))
        fut: Future = Future()
        fut.set_result(fn(**kwargs))
        return fut


def test_training_methods_go_first_and_restore_only_methods_split_per_case(cases):
    job = partial(run_method, train_images=[], val_images=[])
    jobs = [
        MethodJob("wiener", partial(job, "wiener"), trains=False),
        MethodJob("input", partial(job, "input"), trains=False),
        MethodJob("richardson-lucy", partial(job, "richardson-lucy"), trains=True),  # as if
    ]
    pool = _InlinePool()
    running = RunningJobs(pool, jobs, cases)  # type: ignore[arg-type]
    ids = [c.case_id for c in cases]
    assert len(ids) == 3
    assert pool.submitted == [
        ("richardson-lucy", ids),
        *[("wiener", [i]) for i in ids],
        *[("input", [i]) for i in ids],
    ]
    runs = dict(running)
    assert set(runs) == {"wiener", "input", "richardson-lucy"}
    whole = run_method("wiener", cases, [])
    assert list(runs["wiener"].outputs) == ids  # in case order, as one run on all cases
    for i in ids:
        np.testing.assert_array_equal(runs["wiener"].outputs[i], whole.outputs[i])
    assert runs["wiener"].failed is None and not runs["wiener"].case_errors


def test_merged_failures_read_as_one_run_on_all_cases(cases):
    ids = [c.case_id for c in cases]
    out = np.zeros((4, 4), np.float32)
    ok = MethodRun("m", outputs={ids[0]: out}, restore_seconds=1.5, fit_seconds=0.2, notes=["a"])
    bad = [MethodRun("m", case_errors={i: f"ValueError: {i}"}, restore_seconds=1.0) for i in ids]
    merged = merge_runs([bad[2], ok, bad[1]], cases)
    assert merged.failed is None and list(merged.outputs) == [ids[0]]
    assert merged.case_errors == {ids[1]: f"ValueError: {ids[1]}", ids[2]: f"ValueError: {ids[2]}"}
    assert merged.restore_seconds == pytest.approx(3.5) and merged.fit_seconds == 0.2
    assert merged.notes == ["a"]
    # every case failed: the first case's reason, whatever order the parts came back in
    assert merge_runs(bad[::-1], cases).failed == f"every case failed: ValueError: {ids[0]}"
    # a part that could not even be built fails the method with its reason and notes
    unbuilt = MethodRun("m", failed="could not be built or trained: X", notes=["give --set"])
    merged = merge_runs([ok, unbuilt], cases)
    assert merged.failed == "could not be built or trained: X" and merged.notes == ["give --set"]
    with pytest.raises(ValueError, match="at least one"):
        merge_runs([], cases)


def test_trains_here_follows_the_registry():
    assert trains_here("n2v", {}) and not trains_here("wiener", {})
    assert registry_entry("sem-foundation").finetune_field == "finetune_here"
    assert trains_here("sem-foundation", {"finetune_here": True})
    assert not trains_here("sem-foundation", {"finetune_here": False})
    assert trains_here("mae-sem", {})  # no checkpoint: pretrained on the protocol's images
    assert not trains_here("mae-sem", {"checkpoint_dir": "runs/x"})
    assert trains_here("mae-imagenet", {"weights_path": "w.pth"})  # always fine-tuned here


@pytest.mark.parametrize("workers", [1, 2, 64])
def test_the_coordinating_process_keeps_only_the_cores_the_workers_leave(workers):
    import torch

    before = torch.get_num_threads()
    cores = os.cpu_count() or 1
    worker_threads = workers * max(1, cores // workers)  # what the pool's workers hold
    with beside_workers(workers):
        assert torch.get_num_threads() == max(1, cores - worker_threads)
    assert torch.get_num_threads() == before


@pytest.mark.skipif(
    "forkserver" not in multiprocessing.get_all_start_methods(),
    reason="no fork server on this platform (Windows): workers are spawned",
)
def test_workers_come_from_the_fork_server_a_command_starts_early():
    import multiprocessing.forkserver as fs

    from sem_train.evaluation import workers
    from sem_train.worker_server import PRELOAD, start_worker_server

    assert workers.__name__ in PRELOAD  # the server imports what the workers run
    assert start_worker_server() is True
    server = fs._forkserver._forkserver_pid
    assert server is not None
    with worker_pool(1) as pool:
        assert pool.submit(os.getppid).result() == server  # forked from that server
        for module in ("sem_train.evaluation.workers", "torch"):  # imported before the fork
            preloaded = f"{module!r} in __import__('sys').modules"
            assert pool.submit(partial(eval, preloaded)).result() is True, module
    assert fs._forkserver._forkserver_pid == server  # the same server, not a second one


@pytest.mark.parametrize(
    ("cores", "workers", "left"), [(64, 2, 1), (10, 3, 1), (9, 2, 1), (8, 3, 2)]
)
def test_on_many_cores_the_coordinating_process_takes_only_the_remainder(
    monkeypatch, cores, workers, left
):
    import torch

    monkeypatch.setattr(os, "cpu_count", lambda: cores)
    before = torch.get_num_threads()
    with beside_workers(workers):  # workers hold workers * (cores // workers) threads
        assert torch.get_num_threads() == left
    assert torch.get_num_threads() == before


def _alive(pid: int) -> bool:
    try:
        # a zombie (exited, not yet reaped) is not alive
        with open(f"/proc/{pid}/stat", encoding="utf-8") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _wait_running(futures, timeout=60.0):
    end = time.monotonic() + timeout
    while not all(f.running() for f in futures):
        assert time.monotonic() < end, "the jobs did not start"
        time.sleep(0.05)


@pytest.mark.skipif(sys.platform != "linux", reason="/proc and the fork server are Linux's")
def test_workers_ignore_ctrl_c_and_stop_at_once_when_told():
    """Ctrl-C reaches every process of the group: the workers go on (the parent decides), and
    stop_workers ends running jobs at once instead of waiting for them as shutdown() does."""
    pool = worker_pool(2)
    jobs = [pool.submit(time.sleep, 120) for _ in range(2)]
    _wait_running(jobs)
    pids = list(pool._processes)
    assert len(pids) == 2
    for pid in pids:
        os.kill(pid, signal.SIGINT)
    time.sleep(1.0)
    assert not any(j.done() for j in jobs)  # a KeyboardInterrupt would have ended the sleep
    import multiprocessing.forkserver as fs

    server = fs._forkserver._forkserver_pid
    t0 = time.monotonic()
    stop_workers(pool)
    assert time.monotonic() - t0 < 10.0
    assert not any(_alive(pid) for pid in pids)
    end = time.monotonic() + 5.0  # the fork server too: it would serve a queued request late
    while _alive(server) and time.monotonic() < end:
        time.sleep(0.05)
    assert not _alive(server)
    with worker_pool(1) as again:  # the next run starts a new one
        assert again.submit(os.getppid).result() not in (server, os.getpid())


@pytest.mark.skipif(sys.platform != "linux", reason="/proc and the fork server are Linux's")
def test_a_stopped_pool_lets_the_process_exit_with_a_job_stuck_in_its_queue(tmp_path):
    """A job queued behind a running one (a case's images: MBs) blocks the pool's feeder thread
    in a write to the job pipe; with a read end of that pipe still open somewhere (here: a
    duplicate this process keeps), nothing ever reads it, and a process that stopped its
    workers must still exit instead of joining that thread at exit."""
    script = textwrap.dedent(
        """
        import os, sys, time
        import numpy as np
        from sem_train.evaluation.workers import stop_workers, worker_pool
        pool = worker_pool(1)
        busy = pool.submit(time.sleep, 120)
        while not busy.running():
            time.sleep(0.05)
        stuck = pool.submit(np.sum, np.ones(2_000_000))  # 16 MB: far past a pipe's buffer
        time.sleep(1.0)
        held = os.dup(pool._call_queue._reader.fileno())  # a read end nobody reads
        stop_workers(pool)
        print("stopped", flush=True)
        """
    )
    t0 = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, encoding="utf-8", timeout=90
    )
    assert proc.stdout.strip() == "stopped", proc.stderr[-2000:]
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert time.monotonic() - t0 < 60.0


@pytest.mark.skipif(sys.platform != "linux", reason="/proc and the fork server are Linux's")
def test_workers_exit_when_the_process_that_started_them_is_killed(tmp_path):
    """kill -9 of the command leaves no worker running its job to the end (nor, through it,
    the fork server)."""
    script = textwrap.dedent(
        """
        import sys, time
        from sem_train.evaluation.workers import worker_pool
        pool = worker_pool(1)
        job = pool.submit(time.sleep, 120)
        while not job.running():
            time.sleep(0.05)
        print(*pool._processes, flush=True)
        time.sleep(120)
        """
    )
    err = tmp_path / "stderr.txt"  # its resource tracker warns about the killed parent's locks
    with open(err, "w", encoding="utf-8") as err_file:
        parent = subprocess.Popen(
            [sys.executable, "-c", script],
            stdout=subprocess.PIPE,
            stderr=err_file,
            text=True,
            encoding="utf-8",
        )
    try:
        line = parent.stdout.readline()
        assert line.strip(), err.read_text()
        worker = int(line)
        assert _alive(worker)
    finally:
        parent.kill()
        parent.wait()
    end = time.monotonic() + 10.0
    while _alive(worker) and time.monotonic() < end:
        time.sleep(0.1)
    assert not _alive(worker)


@pytest.mark.parametrize("inside", [True, False])
def test_a_workers_notes_print_as_the_commands_own(inside):
    """A worker is a fresh interpreter (fork server or spawn): inside a command's one-line
    block its log records and Python warnings print as ``sem: warning: ...`` like the
    command's own (they printed bare, or with file and line); a library call keeps Python's
    own form."""
    script = textwrap.dedent(
        f"""
        import contextlib, logging, warnings
        from sem_physics.cli_support import one_line_logs
        from sem_train.evaluation.workers import stop_workers, worker_pool
        with one_line_logs("sem") if {inside} else contextlib.nullcontext():
            pool = worker_pool(1)
            pool.submit(logging.getLogger("sem_physics.io").warning, "a worker's note").result()
            pool.submit(warnings.warn, "a worker's warning").result()
            stop_workers(pool)
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = [line for line in proc.stderr.splitlines() if "worker's" in line]
    if inside:
        assert lines == ["sem: warning: a worker's note", "sem: warning: a worker's warning"]
    else:
        assert "a worker's note" in lines and not any(s.startswith("sem:") for s in lines)
        assert any("UserWarning: a worker's warning" in s for s in lines)

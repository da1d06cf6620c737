"""Atomic output: the destination is either the old file or the complete new one."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import unittest

import pytest
from sem_physics.atomic import (
    OutputWriteError,
    atomic_write,
    atomic_write_bytes,
    atomic_write_text,
    remove_stale_temporaries,
)
from sem_physics.testing import dead_pid, symlink_or_skip

posix_only = pytest.mark.skipif(os.name != "posix", reason="process checks are POSIX-only")


def test_writes_and_leaves_no_temporary(tmp_path):
    out = atomic_write_text(tmp_path / "sub" / "a.json", '{"x": 1}')
    assert out.read_text() == '{"x": 1}'
    assert sorted(p.name for p in out.parent.iterdir()) == ["a.json"]


def test_failing_writer_keeps_old_file_and_removes_temporary(tmp_path):
    dest = tmp_path / "a.tif"
    atomic_write_bytes(dest, b"old")

    def writer(tmp):
        tmp.write_bytes(b"partial")
        raise RuntimeError("crash while writing")

    with pytest.raises(RuntimeError):
        atomic_write(dest, writer)
    assert dest.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.tif"]


def test_disk_full_is_reported_with_the_path(tmp_path):
    dest = tmp_path / "b.png"

    def writer(tmp):
        tmp.write_bytes(b"x")
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OutputWriteError, match=r"no space left.*b\.png"):
        atomic_write(dest, writer)
    assert list(tmp_path.iterdir()) == []


def test_temporary_keeps_the_suffix(tmp_path):
    seen = []
    atomic_write(tmp_path / "c.tif", lambda tmp: (seen.append(tmp.suffix), tmp.write_bytes(b"1")))
    assert seen == [".tif"]


def test_a_nested_write_failure_names_the_destination_without_errno_prefix(tmp_path):
    dest = tmp_path / "d.png"

    def writer(tmp):  # a writer that itself writes atomically (as image writers do)
        def inner(tmp2):
            raise PermissionError(errno.EACCES, "Permission denied")

        atomic_write(tmp, inner)

    with pytest.raises(OutputWriteError) as info:
        atomic_write(dest, writer)
    assert str(info.value) == f"cannot write {dest}: Permission denied"
    assert info.value.errno == errno.EACCES and list(tmp_path.iterdir()) == []


@posix_only
def test_a_write_killed_outright_leaves_a_temporary_that_the_sweep_removes(tmp_path):
    """kill -9 inside the writer skips every cleanup: the temporary stays until swept."""
    dest = tmp_path / "step-00000040.safetensors"
    code = (
        "import os, signal, sys; from pathlib import Path; "
        "from sem_physics.atomic import atomic_write; "
        "atomic_write(Path(sys.argv[1]), "
        "lambda tmp: (tmp.write_bytes(b'x' * 1000), os.kill(os.getpid(), signal.SIGKILL)))"
    )
    proc = subprocess.Popen([sys.executable, "-c", code, str(dest)])
    assert proc.wait() == -9
    (left,) = tmp_path.iterdir()
    assert left.name == f".step-00000040.{proc.pid}.tmp.safetensors" and not dest.exists()
    assert remove_stale_temporaries(tmp_path) == [left]
    assert list(tmp_path.iterdir()) == []


@pytest.fixture
def other_live_pid():
    """The pid of another process that runs while the test does."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        yield proc.pid
    finally:
        proc.kill()
        proc.wait()


@posix_only
def test_the_sweep_removes_only_dead_writers_temporaries_directly_in_the_folder(
    tmp_path, other_live_pid
):
    dead, live = dead_pid(), os.getpid()
    stale = [
        f".step-00000040.{dead}.tmp.safetensors",
        f".step-00000040.state.{dead}.tmp.pt",
        f".config.{dead}.tmp.json",
        f".model.{dead}.tmp",  # a destination without suffix
    ]
    kept = [
        f".latest.{live}.tmp.json",  # a write in progress (this process)
        f".best.{other_live_pid}.tmp.json",  # a write in progress (another process)
        "step-00000040.safetensors",
        f"config.{dead}.tmp.json",  # no leading dot: not a temporary's name
        f".config.{dead}.tmp.json.bak",
        f".config.0{dead}.tmp.json",  # atomic_write never pads a pid
        f".config.{dead}.tmpx.json",
        ".hidden",
    ]
    for name in stale + kept:
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / f".export.{dead}.tmp").mkdir()  # folders are not atomic_write temporaries
    sub = tmp_path / "sub"
    sub.mkdir()
    (sub / f".config.{dead}.tmp.json").write_bytes(b"x")  # not a direct child
    target = tmp_path / "target.json"
    target.write_bytes(b"keep")
    symlink_or_skip(tmp_path / f".link.{dead}.tmp.json", target)  # never followed nor removed

    removed = remove_stale_temporaries(tmp_path)
    assert sorted(p.name for p in removed) == sorted(stale)
    left = {p.name for p in tmp_path.iterdir()}
    assert left == {*kept, f".export.{dead}.tmp", "sub", "target.json", f".link.{dead}.tmp.json"}
    assert (sub / f".config.{dead}.tmp.json").is_file() and target.read_bytes() == b"keep"
    assert remove_stale_temporaries(tmp_path / "missing") == []


def test_the_incomplete_marker_is_one_line_naming_the_run_and_goes_again(tmp_path):
    from sem_physics.locking import INCOMPLETE_MARKER, clear_incomplete, mark_incomplete

    assert INCOMPLETE_MARKER == "INCOMPLETE"  # the benchmark's marker has the same name
    marker = mark_incomplete(tmp_path, "sem-degrade in\n-o out")
    assert marker == tmp_path / INCOMPLETE_MARKER and list(tmp_path.iterdir()) == [marker]
    (line,) = marker.read_text().splitlines()
    assert line.startswith(f"sem-degrade in -o out (pid {os.getpid()}, writing since 20")
    assert line.endswith("this folder mixes outputs of an interrupted run; rerun the command")
    assert "sem-degrade" not in mark_incomplete(tmp_path).read_text()  # default: command line
    clear_incomplete(tmp_path)
    clear_incomplete(tmp_path)  # already gone: nothing to do
    assert list(tmp_path.iterdir()) == []


def test_the_sweep_removes_a_librarys_unowned_temporaries_only_when_asked(tmp_path):
    """A library's temporaries carry no pid (safetensors': ``.tmpXXXXXX``): removed by name
    for a folder the caller holds, and only files, never links or folders."""
    import re

    pattern = re.compile(r"\.tmp[A-Za-z0-9]{6}")
    (tmp_path / ".tmpAbC123").write_bytes(b"x")
    (tmp_path / ".tmpAbC1234").write_bytes(b"x")  # not the whole name
    (tmp_path / ".tmpDir123").mkdir()
    symlink_or_skip(tmp_path / ".tmpLnK123", tmp_path / ".tmpAbC1234")
    assert remove_stale_temporaries(tmp_path) == []  # not atomic_write's: kept by default
    assert remove_stale_temporaries(tmp_path, unowned=pattern) == [tmp_path / ".tmpAbC123"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".tmpAbC1234", ".tmpDir123", ".tmpLnK123"]


@posix_only
@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_written_files_get_the_usual_permissions(tmp_path, umask) -> None:
    """A file an owner-only writer made (as safetensors and tempfile do) gets ``0o666 & ~umask``
    like any new file, so that a group can read shared checkpoints and reports."""
    import stat

    previous = os.umask(umask)
    try:
        from sem_physics.atomic import process_umask

        assert process_umask() == umask

        def owner_only(tmp) -> None:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT, 0o600)
            os.write(fd, b"weights")
            os.close(fd)

        path = atomic_write(tmp_path / "model.safetensors", owner_only)
        text = atomic_write_text(tmp_path / "notes.txt", "hello")
    finally:
        os.umask(previous)
    for p in (path, text):
        assert stat.S_IMODE(p.stat().st_mode) == 0o666 & ~umask


def test_a_link_planted_at_the_temporary_name_is_not_followed(tmp_path):
    """The temporary's name is predictable (``.<stem>.<pid>.tmp<suffix>``): a symbolic link
    planted there had the writer write through it into the file it named."""
    import os

    from sem_physics.atomic import atomic_write_text

    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    target = tmp_path / "out" / "report.md"
    target.parent.mkdir()
    symlink_or_skip(target.parent / f".report.{os.getpid()}.tmp.md", victim)
    atomic_write_text(target, "new report")
    assert victim.read_text() == "precious" and target.read_text() == "new report"
    assert sorted(p.name for p in target.parent.iterdir()) == ["report.md"]


def test_symlink_or_skip_skips_where_links_are_refused(tmp_path, monkeypatch) -> None:
    """Windows without Developer Mode refuses links (WinError 1314): the test skips, saying so."""
    assert symlink_or_skip(tmp_path / "a", tmp_path).is_symlink()
    with pytest.raises(FileExistsError):  # a test's own mistake still fails
        symlink_or_skip(tmp_path / "a", tmp_path)

    def refuse(self, target, target_is_directory=False):
        raise OSError(1314, "A required privilege is not held by the client")

    monkeypatch.setattr(type(tmp_path), "symlink_to", refuse)
    with pytest.raises(unittest.SkipTest, match="cannot create a symbolic link"):
        symlink_or_skip(tmp_path / "b", tmp_path)

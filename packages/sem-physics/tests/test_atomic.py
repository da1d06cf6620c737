"""Atomic output: the destination is either the old file or the complete new one."""

from __future__ import annotations

import errno

import pytest
from sem_physics.atomic import OutputWriteError, atomic_write, atomic_write_bytes, atomic_write_text


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

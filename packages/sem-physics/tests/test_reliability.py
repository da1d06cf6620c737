"""``sem-degrade`` as a careless user and a hostile file would use it: inputs are never
changed, bad input never exits 0, errors are one line, a bad file in a batch is skipped."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path

import numpy as np
import pytest
import sem_physics.protocol as protocol
from sem_physics import (
    DegradationParams,
    ImageReadError,
    Manifest,
    ParameterRanges,
    degrade_files,
    locking,
    read_image,
    write_image,
    write_samples,
)
from sem_physics.atomic import OutputWriteError
from sem_physics.cli import main
from sem_physics.locking import LOCK_NAME, OutputFolderBusyError, output_lock
from sem_physics.protocol import ProtocolError
from sem_physics.testing import dead_pid, folder_held, symlink_or_skip

SMALL = ["--rx-px", "2", "--ry-px", "2"]


def _snapshot(folder: Path) -> dict[str, str]:
    """sha256 of every file under ``folder`` (relative path -> hash)."""
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _errors(capsys: pytest.CaptureFixture[str]) -> list[str]:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return [line for line in err.splitlines() if line.startswith("sem-degrade: error: ")]


@pytest.fixture()
def src(tmp_path: Path) -> Path:
    write_samples(tmp_path / "src", n_per_kind=1, shape=(48, 64), seed=1)
    return tmp_path / "src"


# --- data loss --------------------------------------------------------------------------------


def test_output_folder_equal_to_the_input_folder_is_refused(
    src: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = _snapshot(src)
    assert main([str(src), *SMALL, "-o", str(src)]) == 2
    (line,) = _errors(capsys)
    assert "is the input folder" in line
    assert _snapshot(src) == before
    # The same folder reached through a symlink is the same folder.
    link = src.parent / "link"
    symlink_or_skip(link, src, target_is_directory=True)
    assert main([str(src), *SMALL, "-o", str(link)]) == 2
    assert "is the input folder" in _errors(capsys)[0]
    assert _snapshot(src) == before


def test_an_output_name_equal_to_an_input_is_refused(
    tmp_path: Path, src: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    first = sorted(src.iterdir())[0]
    out = tmp_path / "out"
    out.mkdir()
    victim = out / f"0000_{first.stem}.tif"  # the name output 0 would get
    write_image(victim, np.full((48, 64), 7.0), "float32")
    other = tmp_path / "other.png"
    os.link(first, other)  # a hard link: same file, other name
    before = {p: p.read_bytes() for p in (first, victim)}
    assert main([str(first), str(victim), *SMALL, "-o", str(out)]) == 2
    assert "would overwrite the input" in _errors(capsys)[0]
    # An existing output name that is a symlink to an input is caught too.
    victim.unlink()
    symlink_or_skip(victim, first)
    assert main([str(first), *SMALL, "-o", str(out)]) == 2
    assert "would overwrite the input" in _errors(capsys)[0]
    assert first.read_bytes() == before[first]
    assert not (out / "manifest.json").exists()


def test_reruns_do_not_degrade_earlier_outputs(
    tmp_path: Path, src: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = src / "degraded"  # inside the input folder: folders are listed without recursion
    for _ in range(2):
        assert main([str(src), *SMALL, "-o", str(out)]) == 0
        assert sorted(p.name for p in out.iterdir())[-1] == "manifest.json"
        assert len(list(out.iterdir())) == 4  # 3 outputs + manifest, no temporaries
    capsys.readouterr()
    # A folder whose own manifest lists its images as outputs is not taken as input again...
    again = tmp_path / "again"
    assert main([str(out), *SMALL, "-o", str(again)]) == 2
    assert "other than the outputs its manifest lists" in _errors(capsys)[0]
    # ... unless a new image joins them, and an output given by name is still accepted.
    write_samples(out, n_per_kind=1, shape=(48, 64), seed=9)
    assert main([str(out), *SMALL, "-o", str(again)]) == 0
    assert "left out 3 images: an output listed in" in capsys.readouterr().err
    assert len(Manifest.load(again / "manifest.json").entries) == 3


@pytest.mark.parametrize("output", ["../escaped.tif", "/tmp/escaped_abs.tif", "a/../../x.tif"])
def test_replay_refuses_outputs_outside_the_folder(
    tmp_path: Path, src: Path, capsys: pytest.CaptureFixture[str], output: str
) -> None:
    run = tmp_path / "run"
    assert main([str(src), *SMALL, "-o", str(run)]) == 0
    doc = json.loads((run / "manifest.json").read_text())
    doc["entries"][0]["output"] = output
    (run / "manifest.json").write_text(json.dumps(doc))
    capsys.readouterr()
    replay = tmp_path / "replay"
    assert main(["--replay", str(run / "manifest.json"), "-o", str(replay)]) == 2
    assert "output must be a relative path inside the manifest's folder" in _errors(capsys)[0]
    assert not (tmp_path / "escaped.tif").exists() and not Path("/tmp/escaped_abs.tif").exists()
    assert not replay.exists()


def test_replay_refuses_a_symlink_out_of_the_folder(
    tmp_path: Path, src: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    assert main([str(src), *SMALL, "--format", "uint16-png", "-o", str(run)]) == 0
    doc = json.loads((run / "manifest.json").read_text())
    doc["entries"][0]["output"] = "sub/x.png"
    (run / "manifest.json").write_text(json.dumps(doc))
    replay, elsewhere = tmp_path / "replay", tmp_path / "elsewhere"
    replay.mkdir()
    elsewhere.mkdir()
    symlink_or_skip(replay / "sub", elsewhere, target_is_directory=True)
    capsys.readouterr()
    assert main(["--replay", str(run / "manifest.json"), "-o", str(replay)]) == 2
    assert "outside" in _errors(capsys)[0]
    assert not list(elsewhere.iterdir()) and not (replay / "0001_lines_000.png").exists()
    # Replaying into the source folder would overwrite a source: refused.
    doc["entries"][0]["output"] = sorted(src.iterdir())[0].name
    (run / "manifest.json").write_text(json.dumps(doc))
    before = _snapshot(src)
    assert main(["--replay", str(run / "manifest.json"), "-o", str(src)]) == 2
    assert "is a source image" in _errors(capsys)[0]
    assert _snapshot(src) == before


def test_a_failed_write_leaves_no_output_and_no_temporary(
    tmp_path: Path, src: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import tifffile

    real = tifffile.imwrite
    calls = []

    def disk_full(path: Path, data: np.ndarray, **kw: object) -> None:
        calls.append(path)
        if len(calls) == 2:  # the second output: half a file, then ENOSPC
            Path(path).write_bytes(b"II*\x00" + b"\x00" * 100)
            raise OSError(errno.ENOSPC, "No space left on device")
        real(path, data, **kw)

    monkeypatch.setattr(tifffile, "imwrite", disk_full)
    out = tmp_path / "out"
    before = _snapshot(src)
    assert main([str(src), *SMALL, "-o", str(out)]) == 1  # the run failed, as in sem
    (line,) = _errors(capsys)
    assert "no space left on the device while writing" in line and "0001_" in line
    assert not out.exists()  # the failed run removed its first output and the folder it made
    assert _snapshot(src) == before
    calls[:] = [Path()]  # the next write fails half-way
    with pytest.raises(OutputWriteError, match=r"single\.tif"):
        write_image(tmp_path / "single.tif", np.zeros((4, 4)), "float32")
    assert not (tmp_path / "single.tif").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


# --- batches ----------------------------------------------------------------------------------


def _add_corrupt(folder: Path) -> Path:
    bad = folder / "broken.tif"
    bad.write_bytes(b"II*\x00" + bytes(range(200)))
    return bad


def test_one_corrupt_file_is_skipped_and_recorded(
    tmp_path: Path, src: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = _add_corrupt(src)
    out = tmp_path / "out"
    assert main([str(src), *SMALL, "-o", str(out)]) == 0
    err = capsys.readouterr().err
    assert f"sem-degrade: error: {bad}: TIFF file has no image pages" in err
    assert "3 images (explicit), 1 skipped" in err
    manifest = Manifest.load(out / "manifest.json")
    assert [f.source for f in manifest.failed] == [str(bad)]
    assert manifest.failed[0].reason.startswith(f"{bad}: TIFF")
    assert len(manifest.entries) == 3 and len(list(out.glob("*.tif"))) == 3
    # Seeds follow the input position, so the skipped file does not shift the others.
    indices = [e.index for e in manifest.entries]
    assert indices == [1, 2, 3]  # broken.tif sorts first
    assert [e.seed for e in manifest.entries] == [protocol.derive_seed(0, i) for i in indices]
    assert protocol.replay_manifest(out / "manifest.json").ok
    # --strict: the same run exits 1, the manifest still says what happened.
    assert main([str(src), *SMALL, "-o", str(tmp_path / "strict"), "--strict"]) == 1
    assert "1 of 4 inputs failed (--strict)" in _errors(capsys)[-1]
    assert len(Manifest.load(tmp_path / "strict" / "manifest.json").failed) == 1


def test_nothing_processed_exits_non_zero_without_outputs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "bad"
    folder.mkdir()
    _add_corrupt(folder)
    (folder / "tiny.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    out = tmp_path / "out"
    assert main([str(folder), *SMALL, "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert "none of the 2 images could be degraded" in err
    assert err.count("sem-degrade: error: ") == 3  # each file, then nothing degraded
    assert not out.exists() or not list(out.iterdir())
    with pytest.raises(ProtocolError, match="none of the 2 images"):
        degrade_files(sorted(folder.iterdir()), out, mode="midpoint")
    with pytest.raises(ImageReadError, match=r"broken\.tif"):
        degrade_files(sorted(folder.iterdir()), out, mode="midpoint", on_error="raise")


# --- silent wrong results and tracebacks -------------------------------------------------------


def test_out_of_paper_range_values_warn(
    tmp_path: Path, src: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([str(src), *SMALL, "--dose", "0.5", "-o", str(tmp_path / "o")]) == 0
    err = capsys.readouterr().err
    assert "sem-degrade: warning: dose=0.5 outside the paper's range [1, 50]" in err


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["--seed", "abc"], "argument --seed: invalid int value"),
        (["--format", "jpeg"], "argument --format: invalid choice"),
        (["--max-pixels", "0"], "--max-pixels must be >= 1"),
        (["--dose", "nan"], "argument --dose: expected a finite number, got 'nan'"),
        (["--offset", "inf"], "argument --offset: expected a finite number, got 'inf'"),
        (["--rx-px", "1e300"], "--rx-px must be in (0, 1000], got 1e300"),
    ],
)
def test_usage_errors_are_one_line(
    tmp_path: Path, src: Path, capsys: pytest.CaptureFixture[str], argv: list[str], words: str
) -> None:
    try:
        status = main([str(src), "-o", str(tmp_path / "o"), *argv])
    except SystemExit as stop:  # argparse exits itself
        status = int(stop.code or 0)
    assert status == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("sem-degrade: error: ") and words in err[0]
    assert not (tmp_path / "o").exists()


def test_max_pixels_flag_and_unexpected_errors(
    tmp_path: Path, src: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    one = sorted(src.iterdir())[0]
    assert main([str(one), *SMALL, "--max-pixels", "100", "-o", str(tmp_path / "o")]) == 2
    line = _errors(capsys)[0]
    assert "above the limit of 100 px" in line and "0.0 Mpx" not in line

    def broken(*args: object, **kwargs: object) -> None:
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(protocol, "degrade_files", broken)
    assert main([str(one), *SMALL, "-o", str(tmp_path / "o")]) == 1  # named by its type
    assert _errors(capsys) == ["sem-degrade: error: ZeroDivisionError: a bug"]


def test_outputs_read_back_as_written(tmp_path: Path, src: Path) -> None:
    out = tmp_path / "o"
    assert main([str(src), *SMALL, "--format", "uint16-png", "-o", str(out)]) == 0
    for entry in Manifest.load(out / "manifest.json").entries:
        img = read_image(out / entry.output)
        assert img.source_dtype == "uint16" and np.isfinite(img.data).all()


def test_replay_checks_every_destination_first_and_cleans_up(
    tmp_path: Path, src: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    assert main([str(src), *SMALL, "-o", str(run)]) == 0
    path = run / "manifest.json"
    doc = json.loads(path.read_text())
    replay = tmp_path / "replay"
    doc["entries"][1]["output"] = "manifest.json"  # not an image: refused before any write
    path.write_text(json.dumps(doc))
    capsys.readouterr()
    assert main(["--replay", str(path), "-o", str(replay)]) == 2
    assert "does not end in .tif" in _errors(capsys)[0]
    assert not replay.exists()
    doc["entries"][1]["output"] = "0001_x.tif"
    doc["entries"][1]["source_sha256"] = "0" * 64  # the second source "changed": its file
    doc["entries"][1]["source_pixels_sha256"] = "0" * 64  # and its pixels
    path.write_text(json.dumps(doc))
    assert main(["--replay", str(path), "-o", str(replay)]) == 2
    assert "sha256 differs from the manifest" in _errors(capsys)[0]
    assert not replay.exists()  # the first replayed output was removed again, and the folder


# --- one run per output folder; no stale manifest ----------------------------------------------

_TRY = (
    "import sys\nfrom sem_physics.locking import output_lock\nwith output_lock(sys.argv[1]): pass"
)


@pytest.fixture()
def hold() -> Iterator[Callable[..., subprocess.Popen[str]]]:
    """``hold(folder)``: a child process writing into ``folder`` (it holds its lock)."""
    with ExitStack() as stack:

        def start(folder: Path, what: str = "sem-degrade src -o out") -> subprocess.Popen[str]:
            return stack.enter_context(folder_held(folder, what))

        yield start


def test_a_second_run_into_a_busy_output_folder_stops_at_once(
    tmp_path: Path, src: Path, hold: Callable[..., subprocess.Popen[str]], capsys
) -> None:
    out = tmp_path / "out"
    child = hold(out)
    assert main([str(src), *SMALL, "-o", str(out)]) == 1  # a run failure, not a bad input
    (line,) = _errors(capsys)
    assert line.startswith(f"sem-degrade: error: {out}: another run (pid {child.pid}, sem-deg")
    assert [p.name for p in out.iterdir()] == [LOCK_NAME]  # nothing written
    run = tmp_path / "run"
    assert main([str(src), *SMALL, "-o", str(run)]) == 0
    capsys.readouterr()
    assert main(["--replay", str(run / "manifest.json"), "-o", str(out)]) == 1
    assert f"pid {child.pid}" in _errors(capsys)[0]
    with pytest.raises(OutputFolderBusyError, match=r"another run .* choose another output"):
        degrade_files(sorted(src.iterdir()), out, mode="midpoint")  # the Python API too
    assert [p.name for p in out.iterdir()] == [LOCK_NAME]


def test_a_killed_run_leaves_its_output_folder_free(
    tmp_path: Path, src: Path, hold: Callable[..., subprocess.Popen[str]]
) -> None:
    out = tmp_path / "out"
    child = hold(out)
    child.kill()  # kill -9: the operating system drops its lock, the lock file stays
    child.wait()
    assert (out / LOCK_NAME).exists()
    assert main([str(src), *SMALL, "-o", str(out)]) == 0
    outputs = [e.output for e in Manifest.load(out / "manifest.json").entries]
    names = sorted(p.name for p in out.iterdir())  # taken over, then removed; never an input
    assert names == sorted([*outputs, "manifest.json"])


def test_output_lock_is_reentrant_in_its_thread_and_busy_for_others(tmp_path: Path) -> None:
    out = tmp_path / "new" / "out"
    refused: list[BaseException] = []

    def other_thread() -> None:
        try:
            with output_lock(out):
                pass
        except OutputFolderBusyError as err:
            refused.append(err)

    with output_lock(out) as held:
        with output_lock(out):  # degrade_files inside a command that already holds the folder
            assert held.is_dir()
        worker = threading.Thread(target=other_thread)
        worker.start()
        worker.join()
        assert len(refused) == 1 and (out / LOCK_NAME).is_file()
    assert not (tmp_path / "new").exists()  # made for the run and left empty: removed again
    (tmp_path / "file").write_text("keep me")
    with pytest.raises(NotADirectoryError, match=r"file exists and is not a folder"):
        with output_lock(tmp_path / "file"):
            pass
    assert (tmp_path / "file").read_text() == "keep me"


@pytest.mark.skipif(os.name != "posix", reason="the race is shown with POSIX file descriptors")
def test_a_lock_file_removed_by_its_last_holder_is_never_shared(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    with output_lock(out):
        stale = os.open(out / LOCK_NAME, os.O_RDWR)  # a second run opened it, then had to wait
    # Its holder is gone (and removed the file): the waiting run now locks the old file...
    real_open, opened = os.open, []

    def opening(path: object, flags: int, mode: int = 0o777) -> int:
        opened.append(path)
        return stale if len(opened) == 1 else real_open(path, flags, mode)

    monkeypatch.setattr(locking.os, "open", opening)
    with output_lock(out):
        monkeypatch.undo()
        assert len(opened) == 2  # ... sees the folder's lock file is not that one, starts again
        third = subprocess.run(
            [sys.executable, "-c", _TRY, str(out)],
            capture_output=True,
            text=True,
            encoding="utf-8",
            timeout=60,
        )
        assert third.returncode != 0 and "OutputFolderBusyError" in third.stderr


def test_an_interrupted_rerun_leaves_no_manifest_naming_changed_outputs(
    tmp_path: Path, src: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    out = tmp_path / "out"
    assert main([str(src), *SMALL, "-o", str(out)]) == 0
    manifest = (out / "manifest.json").read_text()
    # A rerun that writes nothing (every input refused) leaves the earlier, still true, manifest.
    assert main([str(src), *SMALL, "--max-pixels", "100", "-o", str(out)]) == 2
    assert (out / "manifest.json").read_text() == manifest
    real, written = protocol.write_image, []

    def interrupted(path: Path, *args: object, **kwargs: object) -> Path:
        if written:
            raise KeyboardInterrupt  # Ctrl-C after the first new output
        written.append(path)
        return real(path, *args, **kwargs)

    monkeypatch.setattr(protocol, "write_image", interrupted)
    assert main([str(src), "--rx-px", "3", "--ry-px", "3", "-o", str(out)]) == 130
    assert written and not written[0].exists()  # the run's own output went with it...
    assert not (out / "manifest.json").exists()  # ... and no manifest lists what it replaced
    # the earlier outputs left lie beside the marker naming the interrupted run
    marker = out / locking.INCOMPLETE_MARKER
    assert "interrupted run; rerun the command" in marker.read_text()
    assert sorted(p.name for p in out.iterdir() if p.suffix == ".tif") == [
        "0001_lines_000.tif",
        "0002_texture_000.tif",
    ]
    monkeypatch.undo()
    assert main([str(src), "--rx-px", "3", "--ry-px", "3", "-o", str(out)]) == 0
    assert not marker.exists() and (out / "manifest.json").is_file()
    capsys.readouterr()


def test_a_run_marks_its_folder_incomplete_until_its_manifest_is_written(
    tmp_path: Path, src: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    out = tmp_path / "out"
    marker = out / locking.INCOMPLETE_MARKER
    real, seen = protocol.write_image, []

    def interrupted(path: Path, *args: object, **kwargs: object) -> Path:
        seen.append(marker.is_file())  # marked before every output, the first included
        if len(seen) > 1:
            raise KeyboardInterrupt  # Ctrl-C after the first output
        return real(path, *args, **kwargs)

    monkeypatch.setattr(protocol, "write_image", interrupted)
    # a fresh folder: its outputs and the marker go, and so does the folder the run made
    assert main([str(src), *SMALL, "-o", str(out)]) == 130
    assert seen == [True, True] and not out.exists()
    assert capsys.readouterr().err == "sem-degrade: interrupted\n"  # nothing left to complete
    # a folder holding other files keeps the marker beside them, and the one line says so
    out.mkdir()
    (out / "notes.tif").write_bytes(b"a file of the user's")
    seen.clear()
    assert main([str(src), *SMALL, "-o", str(out)]) == 130
    assert seen == [True, True] and marker.is_file()
    assert sorted(p.name for p in out.iterdir()) == ["INCOMPLETE", "notes.tif"]
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("sem-degrade: interrupted: ")
    assert f"{out} is marked INCOMPLETE" in lines[0] and "rerun the command" in lines[0]
    # the marker is no input (and no output): a folder holding it degrades as before
    (src / locking.INCOMPLETE_MARKER).write_text("an interrupted run\n")
    monkeypatch.undo()
    assert main([str(src), *SMALL, "-o", str(out)]) == 0
    assert "left out" not in capsys.readouterr().err
    assert not marker.exists()
    assert len(Manifest.load(out / "manifest.json").entries) == 3


@pytest.mark.skipif(os.name != "posix", reason="process checks are POSIX-only")
def test_a_run_removes_the_temporaries_a_killed_run_left_in_its_folder(
    tmp_path: Path, src: Path
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    stale = out / f".0000_contacts_000.{dead_pid()}.tmp.tif"
    live = out / f".0009_lines_000.{os.getpid()}.tmp.tif"  # a write in progress: kept
    for path in (stale, live):
        path.write_bytes(b"x" * 100)
    assert main([str(src), *SMALL, "-o", str(out)]) == 0
    assert not stale.exists() and live.is_file()


def _visible(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))


def _degrade(files: list[Path], out: Path) -> Manifest:
    """``degrade_files`` with a PSF small enough for the 48x64 px samples."""
    small = DegradationParams(
        **{**ParameterRanges().midpoint().model_dump(), "rx_px": 2, "ry_px": 2}
    )
    return degrade_files(files, out, mode="explicit", params=small)


def test_a_rerun_removes_the_earlier_outputs_its_manifest_no_longer_lists(
    tmp_path: Path, src: Path
) -> None:
    out = tmp_path / "out"
    images = sorted(src.iterdir())  # contacts, lines, texture
    first = _degrade(images, out)
    assert len(first.entries) == 3
    (out / "notes.tif").write_bytes(b"the user's own file, named by no manifest")
    elsewhere = tmp_path / "elsewhere.tif"
    elsewhere.write_bytes(b"not in the folder")
    links = os.name == "posix"  # a link the manifest names is never followed nor removed
    if links:
        doc = json.loads((out / "manifest.json").read_text())
        doc["entries"].append({**doc["entries"][0], "output": "link.tif"})
        (out / "manifest.json").write_text(json.dumps(doc))
        (out / "link.tif").symlink_to(elsewhere)
    # fewer inputs, one of them an earlier output given by name: it is a source, so it stays
    rerun = [out / "0001_lines_000.tif", images[2]]
    second = _degrade(rerun, out)
    assert [e.output for e in second.entries] == ["0000_0001_lines_000.tif", "0001_texture_000.tif"]
    assert _visible(out) == [
        "0000_0001_lines_000.tif",
        "0001_lines_000.tif",  # the source of this run
        "0001_texture_000.tif",
        *(["link.tif"] if links else []),
        "manifest.json",
        "notes.tif",
    ]
    assert elsewhere.read_bytes() == b"not in the folder"
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == []  # no note left
    # a manifest that cannot be parsed names nothing: its folder's files are left alone
    (out / "manifest.json").write_text("{not json")
    _degrade([images[0]], out)
    assert "0001_texture_000.tif" in _visible(out) and "0000_contacts_000.tif" in _visible(out)


def test_an_interrupted_rerun_still_removes_the_earlier_outputs_on_the_next_run(
    tmp_path: Path, src: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "out"
    images = sorted(src.iterdir())
    _degrade(images, out)
    earlier = _visible(out)

    def killed(*args: object, **kwargs: object) -> Path:
        raise KeyboardInterrupt  # stopped before its first output: the manifest already went

    monkeypatch.setattr(protocol, "write_image", killed)
    with pytest.raises(KeyboardInterrupt):
        _degrade([images[2]], out)
    monkeypatch.undo()
    marker = out / locking.INCOMPLETE_MARKER
    left = [name for name in earlier if name != "manifest.json"]  # beside the marker, no manifest
    assert _visible(out) == sorted([*left, locking.INCOMPLETE_MARKER])
    # the next complete run still knows the earlier outputs (a hidden note), and removes them
    _degrade([images[2]], out)
    assert _visible(out) == ["0000_texture_000.tif", "manifest.json"]
    assert not marker.exists()

    # stopped while removing them: the new manifest and its outputs stay, so does the marker
    _degrade(images, out)
    real = protocol.remove_earlier_outputs

    def interrupted(*args: object, **kwargs: object) -> list[Path]:
        raise KeyboardInterrupt

    monkeypatch.setattr(protocol, "remove_earlier_outputs", interrupted)
    with pytest.raises(KeyboardInterrupt):
        _degrade([images[1]], out)
    monkeypatch.setattr(protocol, "remove_earlier_outputs", real)
    assert [e.output for e in Manifest.load(out / "manifest.json").entries] == [
        "0000_lines_000.tif"
    ]
    assert (out / "0000_lines_000.tif").is_file() and marker.is_file()
    assert (out / "0001_lines_000.tif").is_file()  # earlier ones beside the marker, known
    _degrade([images[1]], out)
    assert _visible(out) == ["0000_lines_000.tif", "manifest.json"]
    assert not marker.exists()


def test_a_replay_into_a_folder_marks_it_incomplete_while_it_writes(
    tmp_path: Path, src: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    run = tmp_path / "run"
    assert main([str(src), *SMALL, "-o", str(run)]) == 0
    replay = tmp_path / "replay"
    marker = replay / locking.INCOMPLETE_MARKER
    real, seen, interrupt = protocol.write_image, [], False

    def watched(path: Path, *args: object, **kwargs: object) -> Path:
        seen.append((path.parent / locking.INCOMPLETE_MARKER).is_file())  # before each output
        if interrupt and len(seen) > 1:
            raise KeyboardInterrupt  # Ctrl-C after the first output
        return real(path, *args, **kwargs)

    monkeypatch.setattr(protocol, "write_image", watched)
    assert main(["--replay", str(run / "manifest.json"), "-o", str(replay)]) == 0
    assert seen == [True, True, True] and not marker.exists()  # cleared when done
    # interrupted in a folder holding files: the marker stays beside them
    seen.clear()
    interrupt = True
    assert main(["--replay", str(run / "manifest.json"), "-o", str(replay)]) == 130
    assert seen == [True, True] and "interrupted run" in marker.read_text()
    assert not (replay / "0000_contacts_000.tif").exists()  # its own output went with it
    # interrupted in a fresh folder: outputs, marker and folder go
    seen.clear()
    fresh = tmp_path / "fresh"
    assert main(["--replay", str(run / "manifest.json"), "-o", str(fresh)]) == 130
    assert seen == [True, True] and not fresh.exists()
    capsys.readouterr()


def test_a_lock_file_that_is_a_symlink_is_refused_and_its_target_kept(tmp_path: Path) -> None:
    """A `.sem-lock` symbolic link planted in a shared output folder: the run refuses it in one
    line, and the file it points to is not truncated or written (it was, before)."""
    victim = tmp_path / "victim.txt"
    victim.write_text("export IMPORTANT=1\n")
    out = tmp_path / "out"
    out.mkdir()
    symlink_or_skip(out / LOCK_NAME, victim)
    with pytest.raises(OutputWriteError, match=r"\.sem-lock is a symbolic link.*remove it"):
        with output_lock(out):
            pass
    assert victim.read_text() == "export IMPORTANT=1\n"
    os.mkfifo(tmp_path / "fifo_out_lock")
    fifo_out = tmp_path / "fifo_out"
    fifo_out.mkdir()
    os.replace(tmp_path / "fifo_out_lock", fifo_out / LOCK_NAME)
    with pytest.raises(OutputWriteError, match="not a regular file"):
        with output_lock(fifo_out):
            pass

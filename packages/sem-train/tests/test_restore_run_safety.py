"""``sem restore`` on awkward folders and failing disks: names that are not UTF-8, a full
disk (the run stops, what was written is recorded), another run's output folder inside the
input, dangling links and FIFOs, and the record's provenance."""

from __future__ import annotations

import errno
import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile
from sem_physics import make_sample
from sem_physics.atomic import OutputWriteError
from sem_physics.locking import INCOMPLETE_MARKER, LOCK_NAME
from sem_train.cli import main
from sem_train.restoration import MANIFEST_NAME
from sem_train.restoration import batch as batch_module

PSF = ["--psf", "2,2,0,2"]


def run(*argv: object) -> int:
    return main(["restore", *map(str, argv), *PSF, "--method", "wiener"])


def picture(path: Path, seed: int = 0) -> Path:
    tifffile.imwrite(path, make_sample("lines", (48, 64), seed=seed).astype(np.uint8))
    return path


def record(out: Path) -> dict:
    return json.loads((out / MANIFEST_NAME).read_text(encoding="utf-8"))


@pytest.mark.skipif(sys.platform != "linux", reason="byte names: Linux file systems")
def test_a_name_that_is_not_utf8_is_recorded_escaped(tmp_path: Path, capsys) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    picture(Path(os.fsdecode(bytes(folder) + b"/bad\xffname.tif")))
    out = tmp_path / "out"
    assert run(folder, "-o", out) == 0
    doc = record(out)
    (item,) = doc["restored"]
    assert item["input"].endswith("bad\\xffname.tif") and item["output"] == "bad\\xffname.tif"
    assert not (out / INCOMPLETE_MARKER).exists()
    assert (out / os.fsdecode(b"bad\xffname.tif")).is_file()


def test_a_full_disk_stops_the_run_and_records_what_was_written(
    tmp_path: Path, capsys, monkeypatch
) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(3):
        picture(folder / f"p{i}.tif", seed=i)
    real = batch_module.write_restored
    calls: list[Path] = []

    def filling(path: Path, *args: object, **kwargs: object) -> Path:
        calls.append(path)
        if len(calls) == 2:
            raise OutputWriteError(
                errno.ENOSPC, f"no space left on the device while writing {path}"
            )
        return real(path, *args, **kwargs)

    monkeypatch.setattr(batch_module, "write_restored", filling)
    out = tmp_path / "out"
    assert run(folder, "-o", out) == 1
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("sem: error")]
    assert len(err) == 1 and "no space left" in err[0] and str(out / "p1.tif") in err[0]
    assert len(calls) == 2  # the third image is never tried
    doc = record(out)
    assert [r["output"] for r in doc["restored"]] == ["p0.tif"] and doc["failed"] == []
    assert any(n.startswith("stopped: ") for n in doc["notes"])
    assert (out / INCOMPLETE_MARKER).is_file() and not (out / LOCK_NAME).exists()


def test_an_unreadable_input_still_fails_alone(tmp_path: Path, capsys) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    picture(folder / "a.tif")
    (folder / "b.tif").write_bytes(b"not a tiff")
    assert run(folder, "-o", tmp_path / "out") == 0
    doc = record(tmp_path / "out")
    assert len(doc["restored"]) == 1 and len(doc["failed"]) == 1


def test_another_runs_output_folder_is_not_restored_again(tmp_path: Path, capsys) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    picture(folder / "a.tif")
    assert run(folder, "-o", folder / "restored") == 0
    capsys.readouterr()
    assert run(folder, "-o", folder / "restored2") == 0
    doc = record(folder / "restored2")
    assert [r["output"] for r in doc["restored"]] == ["a.tif"]
    err = capsys.readouterr().err
    assert err.count(f"holds {MANIFEST_NAME}") == 1 and "restored" in err


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="FIFOs: POSIX")
def test_dangling_links_and_fifos_are_failed_inputs_with_their_reason(
    tmp_path: Path, capsys
) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    picture(folder / "a.tif")
    (folder / "gone.tif").symlink_to(tmp_path / "nowhere.tif")
    os.mkfifo(folder / "pipe.tif")
    assert run(folder, "-o", tmp_path / "out") == 0
    failed = {Path(f["input"]).name: f["reason"] for f in record(tmp_path / "out")["failed"]}
    assert set(failed) == {"gone.tif", "pipe.tif"}
    assert "dangling symbolic link" in failed["gone.tif"]
    assert "not a regular file" in failed["pipe.tif"]


def test_the_record_says_threads_versions_and_weights(tmp_path: Path, capsys) -> None:
    path = picture(tmp_path / "a.tif")
    assert run(path, "-o", tmp_path / "out") == 0
    prov = record(tmp_path / "out")["provenance"]
    assert prov["fft_threads"] >= 1 and prov["cpu_count"] == os.cpu_count()
    assert "torch_threads" in prov and prov["weights"] is None  # wiener: no weights
    assert {"sem-train", "torch", "numpy", "scipy"} <= set(prov["versions"])
    assert prov["versions"]["numpy"] == np.__version__
    assert list(prov) == ["torch_threads", "fft_threads", "cpu_count", "versions", "weights"]


def test_the_shipped_weights_file_of_a_learned_method_is_found() -> None:
    from sem_train.restoration.methods import method_needs, weights_file

    shipped = weights_file(method_needs("sem-foundation"), {}, None)
    assert shipped is not None and shipped.name == "model.safetensors" and shipped.is_file()
    assert weights_file(method_needs("wiener"), {}, None) is None


def test_thread_provenance_names_the_threads_per_worker(monkeypatch) -> None:
    from sem_train.evaluation import workers

    monkeypatch.setattr(workers.os, "cpu_count", lambda: 8)
    two = workers.thread_provenance(2)
    assert two["threads_per_worker"] == 4 and two["cpu_count"] == 8 and two["workers"] == 2
    assert workers.thread_provenance(1)["threads_per_worker"] is None
    assert two["torch_threads"] >= 1 and "torch" in two["versions"]
    assert list(two) == ["workers", "threads_per_worker", "torch_threads", "cpu_count", "versions"]


def test_the_threads_cores_and_versions_of_a_record_come_from_one_place(monkeypatch) -> None:
    """What ``sem restore``'s and an evaluation's provenance share is
    :func:`~sem_train.runinfo.runtime_provenance`'s: torch's threads (None while torch is not
    loaded; it is not imported for the record), the cores and the package versions."""
    import torch
    from sem_train.evaluation import workers
    from sem_train.runinfo import package_versions, runtime_provenance

    monkeypatch.setattr(os, "cpu_count", lambda: 6)
    shared = runtime_provenance()
    assert shared == {
        "torch_threads": torch.get_num_threads(),
        "cpu_count": 6,
        "versions": package_versions(),
    }
    evaluation = workers.thread_provenance(3)
    assert {k: evaluation[k] for k in shared} == shared
    monkeypatch.delitem(sys.modules, "torch")
    assert runtime_provenance()["torch_threads"] is None and "torch" not in sys.modules


@pytest.mark.skipif(sys.platform != "linux", reason="byte names: Linux file systems")
def test_an_evaluation_input_not_named_in_utf8_is_recorded_escaped(tmp_path: Path) -> None:
    """``sem demo --images`` / ``sem benchmark``: the name and source of such a file are
    JSON-ready (the manifest of the inputs is written before any method runs)."""
    from sem_train.evaluation.sources import load_images

    path = Path(os.fsdecode(bytes(tmp_path) + b"/bad\xffname.tif"))
    tifffile.imwrite(path, make_sample("lines", (96, 96), seed=0).astype(np.uint8))
    (image,), skipped = load_images([path], crop_fraction=0.0)
    assert image.name == "bad\\xffname" and image.source.endswith("bad\\xffname.tif")
    assert skipped == []
    json.dumps([image.name, image.source]).encode("utf-8")


def test_a_failed_input_is_named_once_in_its_line_and_its_record(tmp_path: Path, capsys) -> None:
    """A failed input's path is its record's ``input`` and is not repeated in its ``reason``;
    its printed line is ``sem: error: PATH: REASON`` with that reason (a read error, a
    dangling link, a FIFO where there are FIFOs; on Linux a name that is not UTF-8,
    recorded escaped)."""
    from sem_physics.cli_support import path_text

    folder = tmp_path / "in"
    folder.mkdir()
    picture(folder / "a.tif")
    bad = [folder / "corrupt.tif", folder / "gone.tif"]
    bad[0].write_bytes(b"II*\x00" + b"\xff" * 64)
    bad[1].symlink_to(tmp_path / "nowhere.tif")
    if hasattr(os, "mkfifo"):  # POSIX
        bad.append(folder / "pipe.tif")
        os.mkfifo(bad[-1])
    if sys.platform == "linux":
        bad.append(Path(os.fsdecode(bytes(folder) + b"/bad\xffname.tif")))
        bad[-1].write_bytes(b"not a tiff")
    assert run(folder, "-o", tmp_path / "out") == 0
    lines = [line for line in capsys.readouterr().err.splitlines() if "sem: error" in line]
    failed = {f["input"]: f["reason"] for f in record(tmp_path / "out")["failed"]}
    assert sorted(failed) == sorted(path_text(p) for p in bad)
    for path in bad:
        shown, reason = path_text(path), failed[path_text(path)]
        assert reason and path_text(path.name) not in reason, reason
        said = [line for line in lines if shown in line]
        assert said == [f"sem: error: {shown}: {reason}"], lines
        assert said[0].count(path_text(path.stem)) == 1
    assert len(lines) == len(bad)

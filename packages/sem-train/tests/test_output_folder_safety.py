"""Output folders keep the user's files: ``sem demo`` / ``sem benchmark`` write a report only
into a new, empty or earlier report folder, ``sem train baseline`` replaces only a ``model/``
holding a saved restorer; and the training index skips an image whose header declares more
pixels than the reader accepts, with the reader's reason."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest
import yaml
from sem_physics.io import ImageReadError, read_image
from sem_physics.locking import LOCK_NAME, mark_incomplete
from sem_train.cli import main

DEMO = ["demo", "--quick", "--methods", "input", "--metrics", "psnr", "--settings", "midpoint"]


def _user_folder(root: Path) -> Path:
    """A folder of the user's own: notes named like a report's files."""
    (root / "panels").mkdir(parents=True)
    (root / "report.md").write_text("notes")
    (root / "panels" / "thesis_fig.png").write_text("keep")
    return root


def _tree(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): p.read_text() for p in root.rglob("*") if p.is_file()}


def test_a_report_into_a_folder_of_the_users_files_is_refused_untouched(tmp_path, capsys):
    out = _user_folder(tmp_path / "userdir")
    before = _tree(out)
    cfg = tmp_path / "bench.yaml"
    cfg.write_text(yaml.safe_dump({"out": str(out), "methods": ["input"]}))
    for argv in ([*DEMO, "--out", str(out), "--no-progress"], ["benchmark", "--config", str(cfg)]):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1, err
        assert f"output folder {str(out)!r} is not empty (panels, report.md)" in err[0]
        assert "choose a new or empty --out folder" in err[0]
        assert _tree(out) == before
        assert sorted(p.name for p in out.iterdir()) == ["panels", "report.md"]


def test_the_report_writer_refuses_a_folder_of_the_users_files(tmp_path):
    from sem_train.evaluation.report import write_report

    out = _user_folder(tmp_path / "userdir")
    before = _tree(out)
    with pytest.raises(ValueError, match="holds no earlier evaluation"):
        write_report(out, None)  # type: ignore[arg-type]  (refused before it is read)
    assert _tree(out) == before


@pytest.mark.parametrize(
    "layout",
    [
        "missing",
        "empty",
        "lock only",
        "earlier evaluation",
        "record deleted",
        "interrupted first run",
    ],
)
def test_an_empty_or_earlier_evaluation_folder_is_accepted(tmp_path, layout):
    out = tmp_path / "out"
    if layout != "missing":
        out.mkdir()
    if layout == "lock only":
        (out / LOCK_NAME).write_text("")
    if layout == "earlier evaluation":  # extra files of the user's do not matter there
        _user_folder(out)
        (out / "mine.txt").write_text("keep")
        (out / "methods").mkdir()
        (out / "methods" / "manifest.json").write_text("{}")
    if layout == "record deleted":  # as the error of an unreadable record says to
        _user_folder(out)
        (out / "methods" / "input").mkdir(parents=True)
        (out / "methods" / "input" / "result.json").write_text("{}")
    if layout == "interrupted first run":  # stopped between the marker and the record
        (out / LOCK_NAME).write_text("")
        mark_incomplete(out, "sem demo")
        (out / "methods").mkdir()
    from sem_train.evaluation.sources import check_report_folder

    check_report_folder(out)


def test_another_commands_interrupted_folder_is_not_an_evaluation(tmp_path):
    out = tmp_path / "restored"
    out.mkdir()
    mark_incomplete(out, "sem restore")
    (out / "manifest.json").write_text("{}")
    (out / "a.tif").write_text("")
    from sem_train.evaluation.sources import check_report_folder

    with pytest.raises(ValueError, match=r"not empty \(INCOMPLETE, a.tif, manifest.json\)"):
        check_report_folder(out)


def test_a_demo_runs_into_a_lock_only_folder_and_reruns_there(tmp_path, capsys):
    out = tmp_path / "report"
    out.mkdir()
    (out / LOCK_NAME).write_text("")  # left by a killed run
    assert main([*DEMO, "--out", str(out), "--no-progress"]) == 0
    (out / "mine.txt").write_text("keep")
    first = (out / "methods" / "manifest.json").read_text()
    assert main([*DEMO, "--out", str(out), "--no-progress"]) == 0
    capsys.readouterr()
    assert (out / "mine.txt").read_text() == "keep"
    assert (out / "report.md").is_file() and not (out / "INCOMPLETE").exists()
    assert (out / "methods" / "manifest.json").read_text() == first


# ---- sem train baseline: model/ ------------------------------------------------------------


def _saved_restorer(folder: Path) -> Path:
    from sem_baselines import get_restorer

    return get_restorer("n2v", device="cpu").save(folder)


def test_a_baseline_run_refuses_a_model_folder_of_the_users_before_training(
    tmp_path, folder_writer, capsys
):
    image_folder = tmp_path / "images"
    folder_writer(image_folder, 6, size=80)  # above the preset's 64-px training crop
    out = tmp_path / "buser"
    (out / "model").mkdir(parents=True)
    (out / "model" / "notes.txt").write_text("notes")
    argv = ["train", "baseline", "n2v", "--config", "cpu-small", "--data", str(image_folder)]
    argv += ["--output-dir", str(out), "--max-steps", "2", "--device", "cpu"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(out / "model") in err[0] and "(notes.txt)" in err[0], err
    assert (out / "model" / "notes.txt").read_text() == "notes"
    assert sorted(p.name for p in out.iterdir()) == ["model"]  # no training started


@pytest.mark.parametrize(
    ("files", "needle"),
    [
        ({"notes.txt": "notes"}, r"\(notes.txt\)"),
        ({"config.json": '{"epochs": 3}', "model.safetensors": ""}, r"\(config.json, model"),
        ({"config.json": "not json"}, r"\(config.json\)"),
    ],
)
def test_only_a_saved_restorer_is_replaced_by_the_best_model(tmp_path, files, needle):
    from sem_train.baselines import _publish, check_model_folder

    best = _saved_restorer(tmp_path / "best")
    dest = tmp_path / "run" / "model"
    dest.mkdir(parents=True)
    for name, text in files.items():
        (dest / name).write_text(text)
    with pytest.raises(ValueError, match=needle):
        check_model_folder(dest)
    with pytest.raises(ValueError, match="choose another --output-dir"):
        _publish(best, dest)
    assert {p.name: p.read_text() for p in dest.iterdir()} == files
    (dest.parent / "file").write_text("")
    with pytest.raises(ValueError, match="is a file or a link"):
        check_model_folder(dest.parent / "file")


def test_a_saved_restorer_or_an_empty_model_folder_is_replaced(tmp_path):
    from sem_train.baselines import _publish

    best = _saved_restorer(tmp_path / "best")
    dest = tmp_path / "run" / "model"
    dest.mkdir(parents=True)
    _publish(best, dest)  # empty
    (dest / "model.safetensors").write_bytes(b"old")
    _publish(best, dest)  # an earlier run's restorer
    assert (dest / "model.safetensors").read_bytes() == (best / "model.safetensors").read_bytes()
    assert json.loads((dest / "config.json").read_text())["restorer"] == "n2v"


def test_publishing_removes_the_temporary_folder_a_killed_publish_left(tmp_path):
    """A baseline run killed while copying its best model to model/ left
    ``.model.<pid>.tmp`` in the run folder for good; the next publish (its resume) removes
    it, and leaves other hidden folders alone."""
    from sem_train.baselines import _publish

    best = _saved_restorer(tmp_path / "best")
    run = tmp_path / "run"
    stale = run / ".model.4242.tmp"
    stale.mkdir(parents=True)
    (stale / "model.safetensors").write_bytes(b"half")
    (run / ".model.notes.tmp").mkdir()
    _publish(best, run / "model")
    assert sorted(p.name for p in run.iterdir()) == [".model.notes.tmp", "model"]


# ---- the training index: the reader's pixel limit --------------------------------------------


def _declaring(path: Path, side: int) -> Path:
    """A small TIFF whose header declares ``side`` x ``side`` px (its data stays 64 x 64)."""
    import tifffile

    tifffile.imwrite(path, np.zeros((64, 64), np.uint8))
    data = bytearray(path.read_bytes())
    with tifffile.TiffFile(path) as tif:
        for name in ("ImageWidth", "ImageLength", "RowsPerStrip"):
            tag = tif.pages[0].tags[name]
            fmt = tif.byteorder + {3: "H", 4: "I"}[int(tag.dtype)]
            struct.pack_into(fmt, data, tag.valueoffset, side)
    path.write_bytes(bytes(data))
    return path


def test_the_index_skips_a_header_above_the_pixel_limit_with_the_readers_reason(tmp_path):
    from sem_train.data.index import build_index
    from sem_train.data.io import check_header

    root = tmp_path / "data"
    root.mkdir()
    big = _declaring(root / "big.tif", 60000)
    (root / "ok.tif").write_bytes(_declaring(tmp_path / "ok.tif", 64).read_bytes())
    assert check_header(root / "ok.tif") == (64, 64)
    with pytest.raises(ImageReadError, match="declares 60000x60000 px") as refused:
        check_header(big)
    with pytest.raises(ImageReadError) as read:
        read_image(big)
    assert str(refused.value) == str(read.value)
    index = build_index(root, cache_dir=tmp_path / "cache")
    assert index.files == ["ok.tif"]
    assert index.rejected == {"big.tif": f"ImageReadError: {read.value}"}


def test_the_header_check_follows_the_configured_limit(tmp_path, monkeypatch, folder_writer):
    from sem_train.data.io import check_header

    paths = folder_writer(tmp_path / "images", 5)  # TIFF, 16-bit TIFF, PNG, JPEG, BMP
    monkeypatch.setenv("SEM_MAX_PIXELS", "1000")
    for path in paths:
        with pytest.raises(ImageReadError, match=r"above the limit of 1,000 px") as refused:
            check_header(path)
        with pytest.raises(ImageReadError) as read:
            read_image(path)
        assert str(refused.value) == str(read.value)


def test_a_cached_index_is_not_reused_under_another_pixel_limit(tmp_path, monkeypatch):
    """The verdict on a file depends on SEM_MAX_PIXELS: an index built under one limit is not
    reused under another (a file counted under a high limit would stay counted)."""
    from sem_physics import write_image
    from sem_train.data import build_index

    folder = tmp_path / "imgs"
    write_image(folder / "a.tif", np.full((64, 96), 100.0, np.float32))
    monkeypatch.setenv("SEM_MAX_PIXELS", "100000")
    assert len(build_index(folder).paths()) == 1
    monkeypatch.setenv("SEM_MAX_PIXELS", "1000")  # 64 x 96 px is now above the limit
    assert build_index(folder).paths() == []

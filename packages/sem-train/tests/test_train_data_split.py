"""What a run trains on and says about it: ``data_split.json`` (with the files it skipped) is
the run's, a ``--resume`` over changed data is refused and leaves it as it was, a refused run
leaves nothing behind, images smaller than the training crop are skipped alike in every
command, dim 16-bit pictures are named, and the start line gives the counts."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
import yaml
from PIL import Image
from sem_models.testing import MICRO_MAE
from sem_physics.samples import make_sample, write_samples
from sem_train.cli import main
from sem_train.config import load_config

TINY = {k: v for k, v in MICRO_MAE.items() if k != "img_size"} | {"depth": 1}
#: the run's own lines (progress notes, a skipped file's warning) beside its outcome
RUN_LINES = ("sem: note: ", "sem: warning: ")


def _config(path: Path, **run) -> Path:
    body = {
        "preset": "cpu-small",
        "model": {"preset": "tiny", "overrides": TINY},
        "data": {"image_size_px": 32, "val_fraction": 0.25},
        "optim": {"lr": 1e-3, "warmup_steps": 1},
        "run": {"epochs": 2, "batch_size_per_process": 2, "progress": False,
                "tensorboard": False, "checkpoint_every_steps": 2, **run},
    }  # fmt: skip
    path.write_text(yaml.safe_dump(body), encoding="utf-8")
    return path


def _argv(cfg: Path, images: Path, out: Path, *more: str) -> list[str]:
    return ["train", "pretrain", "--stage", "1", "--config", str(cfg), "--data", str(images),
            "--output-dir", str(out), *more]  # fmt: skip


def _files(folder: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def started(tmp_path, capsys) -> tuple[Path, Path, Path]:
    """(config, data folder, run folder) of a Stage-1 run stopped after 1 step."""
    images = tmp_path / "images"
    write_samples(images, n_per_kind=2, shape=(48, 56), seed=0)
    cfg = _config(tmp_path / "s1.yaml")
    out = tmp_path / "run"
    assert main(_argv(cfg, images, out, "--max-steps", "1")) == 0, capsys.readouterr().err
    capsys.readouterr()
    return cfg, images, out


def _change_added(images: Path) -> str:
    extra = images / "zz_added_later.png"
    Image.fromarray(make_sample("lines", (48, 56), seed=99).astype(np.uint8)).save(extra)
    return "zz_added_later.png"


def _change_removed(images: Path) -> str:
    victim = sorted(p for p in images.rglob("*") if p.is_file())[0]
    victim.unlink()
    return victim.name


def _change_unreadable(images: Path) -> str:
    victim = sorted(p for p in images.rglob("*") if p.is_file())[-1]
    victim.write_bytes(b"")
    return victim.name


@pytest.mark.parametrize(
    "change",
    [_change_added, _change_removed, _change_unreadable],
    ids=["added", "removed", "unreadable"],
)
def test_a_resume_over_changed_data_is_refused_and_keeps_the_split(started, capsys, change):
    """Finding 1: any change of the file list refuses the resume with one line naming the
    file and the way out; the run folder (data_split.json included) is left as it was."""
    cfg, images, out = started
    before = _files(out)
    name = change(images)
    assert main(_argv(cfg, images, out, "--resume", "--max-steps", "2")) == 2
    err = capsys.readouterr().err.splitlines()  # the run's notes and warnings aside
    (line,) = [x for x in err if x.startswith("sem:") and not x.startswith(RUN_LINES)]
    assert line.startswith(f"sem: error: --resume: the data changed since {out}")
    assert name in line and "--init-from" in line and "--output-dir" in line
    assert _files(out) == before


def test_a_library_resume_over_changed_data_is_refused_too(started):
    """The same rule when the stage is called from Python (no command checked before)."""
    from sem_train.datasplit import ResumeDataError
    from sem_train.stages import run_stage1

    cfg_path, images, out = started
    _change_added(images)
    data = yaml.safe_load(cfg_path.read_text())
    data["data"]["root"] = str(images)
    data["run"]["output_dir"] = str(out)
    data["run"]["max_steps"] = 2
    before = (out / "data_split.json").read_bytes()
    with pytest.raises(ResumeDataError, match="1 file"):
        run_stage1(load_config(data, "stage1"), resume=True)
    assert (out / "data_split.json").read_bytes() == before


def test_a_resume_over_unchanged_data_keeps_the_split_and_records_the_code(started, capsys):
    """Finding 8: the resume entry carries the git commit and package versions, as the start
    record does; the split file is the run's own."""
    cfg, images, out = started
    before = (out / "data_split.json").read_bytes()
    assert main(_argv(cfg, images, out, "--resume", "--max-steps", "2")) == 0
    assert (out / "data_split.json").read_bytes() == before
    info = json.loads((out / "run_info.json").read_text())
    (entry,) = info["resumes"]
    assert set(entry["packages"]) == set(info["packages"]) and "commit" in entry["git"]


def test_a_resume_with_changed_settings_is_refused_before_indexing(started, monkeypatch):
    """Finding 10: the changed setting is refused before the data folder is looked at."""
    import sem_train.data.index as index

    cfg, images, out = started
    seen = []
    monkeypatch.setattr(index, "build_index", lambda *a, **k: seen.append(a) or 1 / 0)
    assert main(_argv(cfg, images, out, "--resume", "--epochs", "3")) == 2
    assert seen == []


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_a_run_refused_for_a_missing_gpu_leaves_nothing(tmp_path, capsys):
    images = tmp_path / "images"
    write_samples(images, n_per_kind=1, shape=(48, 56), seed=0)
    out = tmp_path / "run"
    cfg = _config(tmp_path / "s1.yaml")
    assert main(_argv(cfg, images, out, "--device", "cuda")) == 2
    assert "no CUDA device" in capsys.readouterr().err
    assert not out.exists() or not any(out.rglob("*"))
    assert main(_argv(cfg, images, out, "--max-steps", "1")) == 0  # nothing blocks the folder
    from sem_train.stages import run_stage1  # the training code alone: nothing written either

    data = yaml.safe_load(cfg.read_text())
    data["data"]["root"] = str(images)
    data["run"].update(output_dir=str(tmp_path / "lib"), device="cuda")
    with pytest.raises(ValueError, match="no CUDA device"):
        run_stage1(load_config(data, "stage1"))
    assert not (tmp_path / "lib").exists() or not any((tmp_path / "lib").rglob("*"))


def _noise(shape: tuple[int, int], seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, shape).astype(np.uint8)


def _mixed_folder(root: Path) -> dict[str, tuple[int, int]]:
    """Readable images of several sizes and two unreadable files; {name: (rows, cols)}."""
    root.mkdir(parents=True)
    sizes = {"a.png": (48, 56), "b.png": (60, 40), "tiny.png": (30, 50), "c.png": (70, 70),
             "d.png": (52, 64), "strip.png": (40, 400), "e.png": (64, 64)}  # fmt: skip
    for k, (name, shape) in enumerate(sizes.items()):
        Image.fromarray(_noise(shape, k)).save(root / name)
    (root / "empty.tif").write_bytes(b"")
    (root / "text.tif").write_text("not an image")
    return sizes


@pytest.mark.parametrize("crop", [32, 48])
@pytest.mark.parametrize("kind", ["stage1", "finetune", "baseline"])
def test_images_smaller_than_the_crop_are_skipped_alike_in_every_command(
    tmp_path, caplog, crop, kind
):
    """Finding 2 and 3: one rule in every command: a readable image whose side after the
    info-bar crop is below the training crop is left out with one warning naming it and its
    size; data_split.json lists every skipped file with its reason, and every other file is
    in the split."""
    from sem_train.datasplit import split_record

    sizes = _mixed_folder(tmp_path / "img")
    data = {"root": str(tmp_path / "img"), "image_size_px": 16 if kind == "baseline" else crop,
            "val_fraction": 0.2, "cache_dir": str(tmp_path / "cache")}  # fmt: skip
    body: dict = {"data": data}
    if kind == "baseline":
        body.update(patch_size_px=crop, n_train_images=100)
    if kind == "finetune":
        body.update(init_from=str(tmp_path), n_train_images=1, n_val_images=1)
    cfg = load_config(body, kind)
    fraction = cfg.data.info_bar_fraction
    small = {n for n, (r, c) in sizes.items() if min(r - round(fraction * r), c) < crop}
    assert small, "the case needs an image too small"
    with caplog.at_level(logging.WARNING):
        record = split_record(kind, cfg)
    skipped = {Path(p).name: why for p, why in record["skipped"].items()}
    assert set(skipped) == small | {"empty.tif", "text.tif"}
    used = set(record.get("files", record["train"] + record["validation"]))
    assert {Path(p).name for p in used} == set(sizes) - small
    for name in small:
        rows, cols = sizes[name]
        size = f"{rows - round(fraction * rows)}x{cols} px"
        assert size in skipped[name] and f"{crop}-px" in skipped[name]
        (warned,) = [r.getMessage() for r in caplog.records if name in r.getMessage()]
        assert size in warned


def test_a_baseline_skips_a_small_image_instead_of_aborting(tmp_path, caplog):
    """The loader's own check (an info bar from the file's metadata, a header not read):
    the image is skipped with its warning, the others are kept."""
    from sem_train.baselines import _images

    root = tmp_path / "img"
    root.mkdir()
    for name, shape in {"big.png": (64, 64), "small.png": (30, 200)}.items():
        Image.fromarray(_noise(shape, 1)).save(root / name)
    with caplog.at_level(logging.WARNING):
        images = _images([root / "big.png", root / "small.png"], 0.0667, 32)
    assert [im.shape for im in images] == [(60, 64)]
    assert any("small.png" in r.getMessage() and "28x200 px" in r.getMessage()
               for r in caplog.records)  # fmt: skip


@pytest.mark.parametrize("shape", [(60, 4000), (3000, 50)])
def test_the_crop_of_an_elongated_image_moves_along_its_long_axis(shape):
    """Finding 2: where no box of the allowed aspect fits, the square is drawn at a random
    place along the long axis (both ends reached over seeds), and a seed gives one crop."""
    from sem_train.data.augment import random_resized_crop

    long = max(shape)
    ramp = torch.linspace(0, 1, long)
    img = (ramp[None, :] if shape[1] == long else ramp[:, None]).expand(*shape)[None].clone()
    means = [
        float(random_resized_crop(img, 32, torch.Generator().manual_seed(s)).mean())
        for s in range(40)
    ]
    assert min(means) < 0.15 and max(means) > 0.85  # the ends of the image are seen
    again = random_resized_crop(img, 32, torch.Generator().manual_seed(7))
    assert torch.equal(again, random_resized_crop(img, 32, torch.Generator().manual_seed(7)))


@pytest.mark.parametrize(
    ("dtype", "scale", "dim"),
    [("uint16", 16, True), ("uint16", 257, False), ("uint8", 0.1, False)],
    ids=["12-bit-in-16", "full-16-bit", "dark-8-bit"],
)
def test_a_dim_16_bit_picture_is_named_once(tmp_path, caplog, dtype, scale, dim):
    """Finding 4: the dim-picture rule of ``sem restore`` names a file of more than 8 bits
    whose grey levels fill a small part of the range (once, however often it is read)."""
    from sem_train.data.dataset import load_image_tensor

    path = tmp_path / f"pic-{dtype}-{scale}.tif"
    pixels = make_sample("lines", (48, 56), seed=3)
    tifffile.imwrite(path, np.clip(pixels * scale, 0, np.iinfo(dtype).max).astype(dtype))
    with caplog.at_level(logging.WARNING, logger="sem_train.data.io"):
        for _ in range(3):
            load_image_tensor(path, 0.0667)
    lines = [r.getMessage() for r in caplog.records if "dim" in r.getMessage()]
    assert len(lines) == (1 if dim else 0)
    if dim:
        bits = int(tifffile.imread(path).max()).bit_length()  # 12: counts up to 255 x 16
        assert str(path) in lines[0] and f"needs {bits} of the file's 16 bits" in lines[0]
        assert f"multiply the counts by {2 ** (16 - bits)}" in lines[0]


def test_the_start_line_counts_what_the_run_uses(started, capsys, caplog, tmp_path):
    """Finding 6: one line gives the training / validation images, the files skipped and the
    samples each epoch leaves out, from the run's own data_split.json."""
    _, images, _ = started
    (images / "empty.tif").write_bytes(b"")
    cfg = _config(tmp_path / "b3.yaml", batch_size_per_process=4)
    out = tmp_path / "counted"
    with caplog.at_level(logging.INFO, logger="sem_train.engine"):
        assert main(_argv(cfg, images, out, "--max-steps", "1")) == 0
    split = json.loads((out / "data_split.json").read_text())
    n_train, n_val = len(split["train"]), len(split["validation"])
    (line,) = [r.getMessage() for r in caplog.records if "training /" in r.getMessage()]
    assert line.startswith(f"{n_train} training / {n_val} validation images (1 skipped")
    assert str(images / "empty.tif") in split["skipped"]
    steps = n_train // 4
    assert f"{steps} step(s) per epoch" in line
    dropped = n_train - 4 * steps
    assert (f"{dropped} of the {n_train} training samples are left out" in line) == (dropped > 0)


def test_progress_bars_follow_the_terminal_unless_set(monkeypatch):
    """Finding 5: bars default to off when stderr is not a terminal; run.progress decides
    when set."""
    import sys

    from sem_train.config import RunConfig
    from sem_train.engine import _progress_on

    for tty in (True, False):
        monkeypatch.setattr(sys.stderr, "isatty", lambda tty=tty: tty, raising=False)
        assert _progress_on(RunConfig()) is tty
        assert _progress_on(RunConfig(progress=True)) is True
        assert _progress_on(RunConfig(progress=False)) is False

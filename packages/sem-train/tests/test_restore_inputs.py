"""``sem restore`` with unusual inputs: the size limit option, the jitter check's time in the
record, an 8-bit palette's value scale and the dim-picture rule shared with sem_physics."""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import numpy as np
import pytest
import tifffile
from sem_physics import levels as sem_levels
from sem_physics import make_sample
from sem_physics.testing import symlink_or_skip
from sem_train import restore
from sem_train.cli import main
from sem_train.restoration import MANIFEST_NAME, RestoreWarning
from sem_train.restoration.levels import input_scale

PSF = ["--psf", "2,2,0,2"]


def run(*argv: object) -> int:
    return main(["restore", *map(str, argv)])


def lines(shape: tuple[int, int] = (64, 80)) -> np.ndarray:
    return make_sample("lines", shape, seed=0)


def test_max_pixels_named_by_the_size_error_is_an_option_of_sem_restore(
    tmp_path: Path, capsys
) -> None:
    path = tmp_path / "x.tif"
    tifffile.imwrite(path, lines().astype(np.uint8))  # 5,120 px
    assert run(path, "-o", tmp_path / "small", *PSF, "--max-pixels", 1000) == 2
    err = capsys.readouterr().err
    assert "above the limit of 1,000 px" in err and "--max-pixels" in err
    assert run(path, "-o", tmp_path / "ok", *PSF, "--max-pixels", 5120) == 0


def test_the_jitter_check_is_timed_in_the_record(tmp_path: Path) -> None:
    out = restore(lines(), psf="2,2,0,2")
    assert out.timings.jitter_s > 0
    timings = out.record()["timings_s"]
    parts = timings["estimate"] + timings["restore"] + timings["load"] + timings["jitter"]
    assert timings["total"] == pytest.approx(parts)


def test_an_8_bit_palette_is_recorded_with_the_scale_of_its_entries(tmp_path: Path) -> None:
    path = tmp_path / "pal.tif"
    cmap = np.tile(np.arange(256, dtype=np.uint16) * 257, (3, 1))
    tifffile.imwrite(path, lines().astype(np.uint8), photometric="palette", colormap=cmap)
    assert run(path, "-o", tmp_path / "out", *PSF) == 0
    (item,) = json.loads((tmp_path / "out" / MANIFEST_NAME).read_text())["restored"]
    assert item["input_dtype"] == "uint8" and item["input_value_scale"] == 1.0


def test_learned_restore_and_the_commands_share_one_dim_rule(monkeypatch) -> None:
    picture = np.full((32, 32), 100.0, np.float32)  # bright under the default rule
    assert input_scale(picture)[0] == 1
    monkeypatch.setattr(sem_levels, "DIM_BELOW", 120.0)  # the rule sem-degrade and sem-psf use
    assert input_scale(picture)[0] == 2


@pytest.mark.parametrize(("method", "psf"), [("wiener", "2,2,0,2"), ("sem-foundation", "auto")])
def test_an_estimate_made_inside_the_method_is_timed_as_estimate(monkeypatch, method, psf) -> None:
    """With a given PSF the deconvolution still estimates the noise level itself, and a guided
    model without one makes its guides' blind estimate itself: that time is the record's
    estimate, not its restore. A guided model given the PSF estimates nothing (its guides take
    fixed balances, no noise level)."""
    import time

    import sem_physics

    real = sem_physics.estimate_degradation
    pause_s = 0.5
    calls = []

    def slow(image, **kw):
        calls.append(image.shape)
        time.sleep(pause_s)
        return real(image, **kw)

    monkeypatch.setattr(sem_physics, "estimate_degradation", slow)
    with warnings.catch_warnings():  # a blind estimate of 96 px says it is small
        warnings.simplefilter("ignore", RestoreWarning)
        out = restore(make_sample("lines", (96, 96), seed=1), method, psf=psf)
    assert out.timings.estimate_s >= pause_s
    assert out.timings.restore_s < out.timings.total_s - pause_s
    if method == "sem-foundation":
        calls.clear()
        given = restore(make_sample("lines", (96, 96), seed=1), method, psf="2,2,0,2")
        assert not calls and given.estimate is None and given.timings.estimate_s < pause_s


def test_a_folder_of_linked_folders_is_restored_and_a_loop_named(tmp_path: Path, capsys) -> None:
    """``sem restore FOLDER`` reads a folder as ``sem train --data`` does: a linked folder's
    images are restored (they were passed over, and a folder of links held "no images"); a
    link loop is not followed, named in one note and in the record."""
    root, lab = tmp_path / "corpus", tmp_path / "other_disk" / "lab A"
    lab.mkdir(parents=True)
    tifffile.imwrite(lab / "x.tif", lines().astype(np.uint8))
    root.mkdir()
    symlink_or_skip(root / "lab A", lab, target_is_directory=True)
    symlink_or_skip(root / "loop", root, target_is_directory=True)
    assert run(root, "-o", tmp_path / "out", *PSF) == 0
    assert (tmp_path / "out" / "lab A" / "x.tif").is_file()
    record = json.loads((tmp_path / "out" / MANIFEST_NAME).read_text())
    assert [Path(r["input"]) for r in record["restored"]] == [root / "lab A" / "x.tif"]
    said = (
        f"1 linked folder(s) under {root} not followed: loop (a link loop: it leads to "
        f"{os.path.realpath(root)}, which holds it)"
    )
    assert said in record["notes"]
    assert capsys.readouterr().err.count("not followed") == 1
    # a folder holding only the loop: the one error line says why nothing was found
    (lab / "x.tif").unlink()
    assert run(root, "-o", tmp_path / "out2", *PSF) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "folder holds no images" in err[0] and said in err[0]

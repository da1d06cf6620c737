"""Grey levels around a method: dim pictures for learned models, the brightness policy."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from sem_models import RestorationModel, build_mae, save_model
from sem_models.testing import MICRO_MAE
from sem_physics import DegradationParams, degrade, make_sample
from sem_train import restore
from sem_train.cli import main
from sem_train.restoration import MANIFEST_NAME, RestoreWarning, prepare
from sem_train.restoration.levels import input_scale

WINDOW = {"window_px": 32, "overlap_px": 8, "device": "cpu"}


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    """A tiny random-weight sem-models restoration export (what ``mae-sem`` loads)."""
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("ckpt") / "mae-sem-export"
    save_model(RestorationModel(build_mae("tiny", in_chans=1, **{**MICRO_MAE, "depth": 1})), folder)
    return folder


def blurred(shape=(64, 96), seed=0) -> np.ndarray:
    clean = make_sample("lines", shape, seed=seed)
    p = DegradationParams(
        rx_px=3, ry_px=3, beta=2.0, theta_rad=0.0, gain=1.0, offset=0.0, sigma=0.5, dose=1e4
    )
    return degrade(clean, p, rng=np.random.default_rng(seed)).astype(np.float32)


def test_input_scale_is_the_smallest_power_of_two_reaching_128():
    y = blurred()
    p = float(np.percentile(y, 99.9))
    assert 128 <= p < 256  # the sample: not dim
    assert input_scale(y)[0] == 1
    assert input_scale(y / 16)[0] == 16  # p/16 in [8, 16): 16 brings it to [128, 256)
    assert input_scale(np.zeros((16, 16), np.float32))[0] == 1  # nothing to scale
    for k, factor in enumerate([1 / 2, 1 / 5, 1 / 40, 1 / 1000]):
        s, level = input_scale(y * factor)
        assert level == pytest.approx(np.percentile(y * factor, 99.9))
        if level >= 64:
            assert s == 1, k
        else:
            capped = float(np.max(y * factor)) * s * 2 > 255  # the brightest pixel's limit
            assert (level * s >= 128 or capped) and level * s / 2 < 128, k
            assert float(np.max(y * factor)) * s <= 255, k


@pytest.mark.parametrize(
    ("method", "psf"), [("wiener", "3,3,0,2"), ("richardson-lucy", "3,3,0,2"), ("bm3d", "auto")]
)
def test_every_method_restores_a_dim_picture_as_the_full_range_one(method, psf):
    """A picture at 1/256 of the range (e.g. 24-bit counts in a 32-bit file) is restored as the
    full-range one, scaled: a deconvolution with a given PSF used to floor its noise variance
    at 1/12 of a grey level and return a nearly flat picture (15.8 dB against 33.6 here)."""
    y = np.clip(blurred((96, 128)) + np.random.default_rng(1).normal(0, 3, (96, 128)), 0, 255)
    y = y.astype(np.float32)
    full = restore(y, method, psf=psf)
    with pytest.warns(RestoreWarning, match="dim picture") as issued:
        dim = restore(y / np.float32(256), method, psf=psf)
    # only the note on the scaling: a picture on 0..1 like this one is no longer called a slip
    assert [(w.category, str(w.message)) for w in issued] == [
        (RestoreWarning, w) for w in dim.warnings
    ]
    assert dim.input_scale == 256 and full.input_scale == 1
    np.testing.assert_allclose(dim.image * 256, full.image, rtol=1e-5, atol=1e-3)


def test_highlights_limit_the_scale_and_keep_their_values(tiny_model):
    """A dim picture with a highlight far above its 99.9th percentile (a particle at the
    detector's top): the scale stops where the highlight reaches 255, so the picture is
    accepted and the highlight comes back as the model draws it, not clipped."""
    y = blurred() / np.float32(16)
    y[20:24, 30:34] = 60.0  # ~4x the percentile of the dim picture
    scale, level = input_scale(y)
    assert level * 16 >= 128 and scale == 4  # 60 x 4 = 240 <= 255 < 60 x 8
    method = prepare("mae-sem", checkpoint=tiny_model, brightness="method", **WINDOW)
    with pytest.warns(RestoreWarning, match="dim picture") as issued:
        out = method(y)
    assert [str(w.message) for w in issued] == list(out.warnings)
    assert out.input_scale == 4
    ref = prepare("mae-sem", checkpoint=tiny_model, brightness="method", clip=False, **WINDOW)
    np.testing.assert_allclose(
        out.image, np.clip(ref(y * np.float32(4)).image / 4, 0, 255), rtol=1e-5, atol=1e-5
    )


def test_a_bright_mark_that_holds_a_dim_picture_unscaled_is_said(tiny_model):
    """12-bit data with a mark burnt in at the 16-bit top (255 grey levels): the mark keeps the
    scale at 1, so the method sees the picture at 0..16; that is said, naming the mark's level
    and the fix, rather than left to a silently poor restoration."""
    y = blurred() / np.float32(16)
    y[2, 2:6] = 255.0  # 4 px of 6144: fewer than the 0.1 % above the 99.9th percentile
    level = float(np.percentile(y, 99.9))
    assert level < 16 and input_scale(y) == (1, pytest.approx(level))
    method = prepare("mae-sem", checkpoint=tiny_model, **WINDOW)
    with pytest.warns(RestoreWarning, match="scaled by only 1") as issued:
        out = method(y)
    (note,) = [str(w.message) for w in issued]
    assert note in out.warnings and out.input_scale == 1
    assert f"at {level:.3g} of 255" in note and "(255 grey levels" in note and "rescale" in note
    y[2, 2:6] = level  # without the mark: scaled to the target, only the scaling said
    with pytest.warns(RestoreWarning, match="dim picture") as issued:
        unmarked = method(y)
    assert unmarked.input_scale == 16 and len(issued) == 1
    assert not any("scaled by only" in w for w in unmarked.warnings)


def test_the_input_brightness_is_kept_under_clipping_without_a_plateau(tiny_model):
    """The method runs unclipped, the shift is added, then the output is clipped with a shift
    solved so that the clipped mean is the input's: no flat level at the shift where the
    method would have cut at 0, and the mean kept."""
    y = blurred()
    y = np.clip(y - 60.0, 0.0, 255.0).astype(np.float32)  # dark spaces at 0
    out = restore(y, "mae-sem", checkpoint=tiny_model, **WINDOW)
    assert out.brightness["output_mean"] == pytest.approx(float(np.mean(y)), abs=1e-3)
    assert 0.0 <= float(out.image.min()) and float(out.image.max()) <= 255.0
    at_shift = np.mean(np.isclose(out.image, out.brightness["shift"], atol=1e-4))
    assert at_shift < 0.01
    assert out.parameters["clip"] is False  # the method's own clip was off


def test_a_dim_picture_restores_as_the_undimmed_one_scaled(tiny_model):
    """12-bit data in a 16-bit file reads as 0..16 grey levels: a learned model then sees it
    on the 0..255 scale it learned and its output is scaled back, exactly."""
    y = blurred()
    method = prepare("mae-sem", checkpoint=tiny_model, brightness="method", **WINDOW)
    full = method(y)
    with pytest.warns(RestoreWarning, match="dim picture"):
        dim = method(y / np.float32(16))
    assert full.input_scale == 1 and dim.input_scale == 16
    np.testing.assert_allclose(dim.image, full.image / 16, rtol=1e-5, atol=1e-5)
    assert np.mean(dim.image <= 0) < 0.05 and np.mean(dim.image <= 0) <= np.mean(full.image <= 0)
    assert any("dim picture" in w and "16" in w for w in dim.warnings)
    assert json.loads(json.dumps(dim.record()))["input_scale"] == 16


def test_brightness_input_shifts_the_output_mean_to_the_input_mean(tiny_model):
    y = blurred()
    kept = restore(y, "mae-sem", checkpoint=tiny_model, brightness="method", **WINDOW)
    raw = restore(y, "mae-sem", checkpoint=tiny_model, brightness="method", clip=False, **WINDOW)
    matched = restore(y, "mae-sem", checkpoint=tiny_model, **WINDOW)  # the default: input
    assert kept.brightness["policy"] == "method" and kept.brightness["shift"] == 0.0
    np.testing.assert_array_equal(kept.image, np.clip(raw.image, 0, 255))
    shift = matched.brightness["shift"]
    assert matched.brightness["policy"] == "input"
    assert abs(shift) > 1.0  # a random model changes the brightness
    np.testing.assert_allclose(matched.image, np.clip(raw.image + shift, 0, 255), atol=1e-3)
    assert float(matched.image.mean()) == pytest.approx(float(y.mean()), abs=1e-3)


@pytest.mark.parametrize("method", ["wiener", "richardson-lucy"])
def test_a_deconvolution_barely_moves_under_the_brightness_policy(method):
    y = blurred()
    raw = restore(y, method, psf="3,3,0,2", brightness="method", clip=False)
    matched = restore(y, method, psf="3,3,0,2")
    shift = matched.brightness["shift"]
    assert abs(shift) < 0.5
    np.testing.assert_allclose(matched.image, np.clip(raw.image + shift, 0, 255), atol=1e-3)
    assert float(matched.image.mean()) == pytest.approx(float(y.mean()), abs=1e-3)


def test_a_bad_brightness_policy_is_one_line():
    with pytest.raises(ValueError, match=r"^brightness must be one of input, method, got 'x'$"):
        prepare("wiener", brightness="x")


def test_cli_records_scale_and_brightness_and_says_them(tmp_path, tiny_model, capsys):
    y = blurred()
    src = tmp_path / "twelve_bit.tif"
    tifffile.imwrite(src, np.rint(y / 255 * 4095).astype(np.uint16))  # 12-bit in 16-bit
    tifffile.imwrite(tmp_path / "eight_bit.tif", np.rint(y).astype(np.uint8))
    out = tmp_path / "out"
    argv = ["restore", str(tmp_path), "-o", str(out), "--method", "mae-sem"]
    argv += ["--checkpoint", str(tiny_model), "--set", "window_px=32", "--set", "overlap_px=8"]
    assert main(argv) == 0
    err = capsys.readouterr().err
    rec = json.loads((out / MANIFEST_NAME).read_text())
    eight, item = rec["restored"]  # sorted by name
    assert rec["brightness"] == "input" and item["brightness"]["policy"] == "input"
    assert item["input_scale"] == 16 and eight["input_scale"] == 1
    assert abs(eight["brightness"]["shift"]) > 1.0
    assert f"sem: warning: {src}: dim picture" in err
    assert "mean grey level of 1 image(s) was shifted to the input's" in err
    assert "--brightness method" in err
    restored = tifffile.imread(out / "twelve_bit.tif")
    assert restored.dtype == np.uint16 and np.mean(restored == 0) < 0.05
    assert main([*argv[:3], str(tmp_path / "kept"), *argv[4:], "--brightness", "method"]) == 0
    kept = json.loads((tmp_path / "kept" / MANIFEST_NAME).read_text())
    assert kept["brightness"] == "method"
    assert all(r["brightness"]["shift"] == 0.0 for r in kept["restored"])
    assert "shifted" not in capsys.readouterr().err


def _said_shift(err: str) -> str:
    """What the brightness note says the shift was: the text between "by" and "grey levels"."""
    (note,) = [line for line in err.splitlines() if "was shifted to the input's by" in line]
    return note.split("input's by ", 1)[1].split(" grey levels", 1)[0]


def test_the_brightness_note_gives_one_value_when_every_shift_rounds_the_same(
    tmp_path, tiny_model, capsys
):
    """Equal shifts (the same picture twice) are said as one value, not "by X to X"; shifts
    that differ are said as the range of the values in restore.json."""
    model = ["--method", "mae-sem", "--checkpoint", str(tiny_model)]
    model += ["--set", "window_px=32", "--set", "overlap_px=8"]
    said = {}
    for kind, seeds in (("same", (0, 0)), ("other", (0, 1))):
        folder, out = tmp_path / kind, tmp_path / f"out-{kind}"
        folder.mkdir()
        for name, seed in zip(("a.tif", "b.tif"), seeds, strict=True):
            tifffile.imwrite(folder / name, np.rint(blurred(seed=seed)).astype(np.uint8))
        assert main(["restore", str(folder), "-o", str(out), *model]) == 0
        restored = json.loads((out / MANIFEST_NAME).read_text())["restored"]
        shifts = [r["brightness"]["shift"] for r in restored]
        assert len(shifts) == 2 and all(abs(s) > 1.0 for s in shifts)  # both said
        said[kind] = (_said_shift(capsys.readouterr().err), shifts)
    text, shifts = said["same"]
    assert shifts[0] == shifts[1] and text == f"{shifts[0]:+.1f}"
    text, shifts = said["other"]
    low, high = f"{min(shifts):+.1f}", f"{max(shifts):+.1f}"
    assert low != high and text == f"{low} to {high}"

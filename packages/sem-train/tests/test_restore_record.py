"""``restore.json`` records what each method chose and ran, checked against the restorers."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sem_baselines import get_restorer
from sem_physics import DegradationParams, PSFParams, degrade, make_sample
from sem_train import restore
from sem_train.cli import main
from sem_train.restoration import MANIFEST_NAME, RestoreWarning

PSF = PSFParams(rx_px=3.0, ry_px=3.0, theta_rad=0.0, beta=1.95)


def blurred(shape=(64, 96), seed=0) -> np.ndarray:
    clean = make_sample("lines", shape, seed=seed)
    p = DegradationParams(
        rx_px=3, ry_px=3, beta=1.95, theta_rad=0.0, gain=1.0, offset=0.0, sigma=1.0, dose=200
    )
    return degrade(clean, p, rng=np.random.default_rng(seed)).astype(np.float32)


def direct(name: str, y: np.ndarray, **config) -> dict:
    """What the registered restorer chose, called directly (no sem_train in between)."""
    restorer = get_restorer(name, psf=PSF, **config)
    restorer.restore(y)
    return restorer.last_params


def test_wiener_with_a_given_psf_records_the_balance_it_chose():
    y = blurred()
    rec = json.loads(json.dumps(restore(y, "wiener", psf=PSF).record()))
    chosen = direct("wiener", y)
    params = rec["parameters"]
    assert params["balance"] is None  # the setting: left to the discrepancy principle
    assert params["per_image"]["balance"] == pytest.approx(chosen["balance"], rel=1e-12)
    assert params["per_image"]["noise_var"] == pytest.approx(chosen["noise_var"], rel=1e-12)
    assert params["per_image"]["estimate"]["sigma"] > 0  # the noise estimate it was made from
    assert "not_used" not in params
    assert rec["psf_source"] == "given" and rec["estimate"] is None


def test_richardson_lucy_records_the_iterations_it_ran_and_what_stopped_them():
    y = blurred()
    rec = json.loads(json.dumps(restore(y, "richardson-lucy", psf=PSF).record()))
    chosen = direct("richardson-lucy", y)
    per_image = rec["parameters"]["per_image"]
    assert rec["parameters"]["iterations"] is None
    assert per_image["iterations"] == chosen["iterations"] >= 1
    assert per_image["stopped_by"] == chosen["stopped_by"] in ("discrepancy", "stall")
    assert per_image["residual_var"] == pytest.approx(chosen["residual_var"], rel=1e-12)


def test_a_fixed_iteration_count_says_which_settings_did_not_apply(tmp_path):
    import tifffile

    y = blurred()
    tifffile.imwrite(tmp_path / "a.tif", np.rint(y).astype(np.uint8))
    out = tmp_path / "out"
    argv = ["restore", tmp_path / "a.tif", "-o", out, "--psf", "3,3,0,1.95"]
    assert main([*map(str, argv), "--set", "iterations=150"]) == 0
    params = json.loads((out / MANIFEST_NAME).read_text())["restored"][0]["parameters"]
    assert params["iterations"] == 150 and params["max_iterations"] == 100  # the settings
    assert params["per_image"]["iterations"] == 150  # what ran
    assert params["per_image"]["stopped_by"] == "fixed count"
    assert set(params["not_used"]) == {"max_iterations", "noise_var", "tau"}
    assert "noise_var" not in params["per_image"]  # no placeholder noise level


def test_plain_richardson_lucy_is_recorded_and_the_paper_preset_does_not_accelerate(tmp_path):
    import tifffile

    y = blurred()
    tifffile.imwrite(tmp_path / "a.tif", np.rint(y).astype(np.uint8))
    argv = ["restore", tmp_path / "a.tif", "--psf", "3,3,0,1.95", "--set"]
    assert main([*map(str, argv), "accelerate=false", "-o", str(tmp_path / "plain")]) == 0
    rec = json.loads((tmp_path / "plain" / MANIFEST_NAME).read_text())["restored"][0]
    assert rec["parameters"]["accelerate"] is False and "not_used" not in rec["parameters"]
    plain = direct("richardson-lucy", y, accelerate=False)
    assert rec["parameters"]["per_image"]["iterations"] == plain["iterations"]
    assert plain["iterations"] != direct("richardson-lucy", y)["iterations"]  # not the default
    assert main([*map(str, argv), "preset=paper", "-o", str(tmp_path / "paper")]) == 0
    rec = json.loads((tmp_path / "paper" / MANIFEST_NAME).read_text())["restored"][0]
    assert "accelerate" in rec["parameters"]["not_used"]


def test_blind_psf_per_image_values_do_not_repeat_the_psf():
    y = blurred()
    with pytest.warns(RestoreWarning, match="too small") as issued:
        out = restore(y, "wiener")
    rec = out.record()
    assert [str(w.message) for w in issued] == rec["warnings"]
    assert rec["psf_source"] == "blind" and rec["estimate"] is not None
    per_image = rec["parameters"]["per_image"]
    assert "psf" not in per_image and "psf_source" not in per_image and "estimate" not in per_image
    assert per_image["balance"] > 0


def test_bm3d_keeps_its_noise_level():
    y = blurred((48, 48))
    rec = restore(y, "bm3d", profile="lc").record()
    assert rec["parameters"]["per_image"]["sigma"] > 0


def test_a_given_psf_is_recorded_as_an_object_and_an_older_record_still_reads(tmp_path):
    """The run's ``psf`` is the given PSF itself (a JSON object with the fields of each image's
    ``psf``), not JSON text inside a string; ``auto`` stays the string; a record of an earlier
    version, which held the PSF as JSON text, reads as the object."""
    import tifffile
    from sem_train.restoration import RestoreManifest

    tifffile.imwrite(tmp_path / "a.tif", np.rint(blurred()).astype(np.uint8))
    argv = ["restore", str(tmp_path / "a.tif"), "--method", "wiener"]
    assert main([*argv, "--psf", "3,2.5,0.3,1.5", "-o", str(tmp_path / "given")]) == 0
    record = json.loads((tmp_path / "given" / MANIFEST_NAME).read_text())
    given = PSFParams(rx_px=3.0, ry_px=2.5, theta_rad=0.3, beta=1.5)
    assert isinstance(record["psf"], dict)
    assert PSFParams(**record["psf"]) == given
    assert record["psf"] == record["restored"][0]["psf"]  # the one the image was restored with
    assert main([*argv, "--psf", "auto", "-o", str(tmp_path / "auto")]) == 0
    assert json.loads((tmp_path / "auto" / MANIFEST_NAME).read_text())["psf"] == "auto"
    older = {**record, "psf": json.dumps(record["psf"])}
    assert RestoreManifest.model_validate(older).psf == record["psf"]

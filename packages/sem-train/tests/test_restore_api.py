"""``sem_train.restore``: every registered method, given and blind PSFs, checkpoints, bad input."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import sem_physics
import torch
from sem_baselines import get_restorer, list_restorers
from sem_baselines.classical.deconv import UNIFORM_IMAGE_NOTE
from sem_models import RestorationModel, build_mae, save_model
from sem_models.testing import MICRO_MAE
from sem_physics import DegradationParams, PSFParams, degrade, make_sample
from sem_train import restore
from sem_train.restoration import (
    DEFAULT_METHOD,
    CheckpointMismatchError,
    RestoreWarning,
    method_needs,
    parse_psf,
    prepare,
)

# A small ViT-MAE (32-px windows, 8-px patches) standing in for trained weights.
MAE_ARCH = {**MICRO_MAE, "depth": 1}
WINDOW = {"window_px": 32, "overlap_px": 8, "device": "cpu"}
# Tiny networks for the saved learned restorers (any other registered one: its defaults).
TINY = {
    "n2n": {"unet": {"depth": 2, "width": 4}},
    "n2v": {"unet": {"depth": 2, "width": 4}},
    "mrn": {"net": {"width": 4}},
}


def restore_warned(*args, notes: int = 0, **kwargs):
    """``restore(*args, **kwargs)`` and the RestoreWarnings it issued, which must be ``notes``
    notes on the model (a dense export standing in for the MAE + MoE) and then exactly the
    warnings its result records (the conftest turns any other RestoreWarning into an error)."""
    with pytest.warns(RestoreWarning) as issued:
        out = restore(*args, **kwargs)
    messages = [str(w.message) for w in issued]
    assert messages[notes:] == list(out.warnings), messages
    return out, messages[:notes]


DENSE_NOTE = "is a dense model (no Mixture-of-Experts)"


def psnr(ref: np.ndarray, x: np.ndarray) -> float:
    mse = float(np.mean((ref.astype(np.float64) - x.astype(np.float64)) ** 2))
    return 10 * np.log10(255.0**2 / mse)


def blurred(shape=(96, 128), r_px=3.0, sigma=0.5, dose=1e4, seed=0):
    clean = make_sample("lines", shape, seed=seed)
    p = DegradationParams(
        rx_px=r_px, ry_px=r_px, beta=2.0, theta_rad=0.0, gain=1.0, offset=0.0,
        sigma=sigma, dose=dose,
    )  # fmt: skip
    return clean, degrade(clean, p, rng=np.random.default_rng(seed))


def make_checkpoint(name: str, root: Path) -> tuple[Path, dict]:
    """A tiny random-weight checkpoint of the kind method ``name`` loads, and its options."""
    kind = method_needs(name).checkpoint
    torch.manual_seed(0)
    if kind == "restorer":  # a saved restorer, as ``sem train baseline`` writes it
        folder = root / f"{name}-run" / "model"
        get_restorer(name, device="cpu", **TINY.get(name, {})).save(folder)
        return folder.parent, {}
    if kind == "checkpoint_dir":  # a sem-models restoration export (a fine-tuned model)
        folder = root / f"{name}-export"
        save_model(RestorationModel(build_mae("tiny", in_chans=1, **MAE_ARCH)), folder)
        return folder, dict(WINDOW)
    if kind == "weights_path":  # an encoder weights file in the facebookresearch layout
        mae = build_mae("tiny", in_chans=3, **MAE_ARCH)
        state = {k: v for k, v in mae.state_dict().items() if not k.startswith("decoder")}
        torch.save({"model": state}, root / f"{name}.pth")
        return root / f"{name}.pth", {"preset": "tiny", "overrides": MAE_ARCH, **WINDOW}
    raise AssertionError(f"{name} needs no checkpoint")


@dataclass
class FakeEstimate:
    """Stands in for sem_physics.DegradationEstimate (same fields and psf_params())."""

    rx_px: float
    ry_px: float
    theta_rad: float
    beta: float
    sigma: float
    dose: float
    noise_floor: float = 0.25

    def model_dump(self, mode: str = "python") -> dict:
        return dataclasses.asdict(self)

    def psf_params(self) -> PSFParams:
        return PSFParams(
            rx_px=self.rx_px, ry_px=self.ry_px, theta_rad=self.theta_rad, beta=self.beta
        )


def test_default_method_is_a_registered_deconvolution():
    needs = method_needs(DEFAULT_METHOD)
    assert needs.takes_psf and not needs.learned


@pytest.mark.parametrize("method", ["richardson-lucy", "wiener"])
def test_deconvolution_with_the_true_psf_beats_the_input(method):
    clean, y = blurred()
    out = restore(y, method, psf="3,3,0,2")
    assert out.image.shape == y.shape and out.image.dtype == np.float32
    assert psnr(clean, out.image) > psnr(clean, y) + 1.0
    assert out.psf == PSFParams(rx_px=3, ry_px=3, theta_rad=0, beta=2)
    assert out.psf_source == "given" and out.estimate is None
    assert out.parameters["psf"] == out.psf.model_dump(mode="json")  # what the restorer used
    rec = json.loads(json.dumps(out.record()))
    assert rec["psf_source"] == "given" and rec["timings_s"]["total"] >= 0


def test_blind_psf_comes_from_the_estimator_and_is_recorded(monkeypatch):
    seen = []

    def fake(image):
        seen.append(image.shape)
        return FakeEstimate(rx_px=3.0, ry_px=2.5, theta_rad=0.3, beta=1.95, sigma=0.5, dose=1e4)

    monkeypatch.setattr(sem_physics, "estimate_degradation", fake, raising=False)
    _, y = blurred()
    out = restore(y, "richardson-lucy")  # psf="auto" is the default
    assert seen == [y.shape]
    assert out.psf_source == "blind"
    assert out.psf == PSFParams(rx_px=3.0, ry_px=2.5, theta_rad=0.3, beta=1.95)
    assert out.parameters["psf"]["ry_px"] == 2.5
    assert out.record()["estimate"]["dose"] == 1e4
    # the same PSF given explicitly gives the same pixels
    given = restore(y, "richardson-lucy", psf=out.psf)
    np.testing.assert_array_equal(given.image, out.image)


def test_blind_psf_failure_is_one_clear_error(monkeypatch):
    def flat(image):
        raise ValueError("no PSF estimate: flat image\nmore detail")

    monkeypatch.setattr(sem_physics, "estimate_degradation", flat, raising=False)
    with pytest.raises(
        ValueError,
        match=r"^blind PSF estimate failed \(no PSF estimate: flat image\); give the PSF as --psf",
    ) as err:
        restore(np.arange(256, dtype=np.float32).reshape(16, 16), "wiener")
    assert "\n" not in str(err.value)


def test_a_uniform_image_is_refused_with_advice_that_can_help():
    """No PSF changes a uniform image (the blur of a constant is that constant): the error says
    there is nothing to restore and to check the file, not to give --psf."""
    with pytest.raises(
        ValueError, match=r"^uniform image \(every pixel the same\): nothing to restore"
    ) as e:
        restore(np.full((64, 64), 120.0, np.float32), "richardson-lucy")
    assert "--psf" not in str(e.value) and "check that the file" in str(e.value)
    assert str(e.value) == UNIFORM_IMAGE_NOTE  # the words of the deconvolution's note
    given, _ = restore_warned(np.full((64, 64), 120.0, np.float32), "richardson-lucy", psf="2,2")
    np.testing.assert_allclose(given.image, 120.0, atol=1e-3)  # --psf: the same image back
    assert given.warnings and UNIFORM_IMAGE_NOTE in given.warnings[0]
    assert not any("noise_var" in w for w in given.warnings)  # nor advice that cannot help


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("auto", "auto"),
        ("AUTO", "auto"),
        ("4,5", PSFParams(rx_px=4, ry_px=5)),
        ("4, 5, 0.5, 1.9", PSFParams(rx_px=4, ry_px=5, theta_rad=0.5, beta=1.9)),
    ],
)
def test_parse_psf(text, expected):
    assert parse_psf(text) == expected


@pytest.mark.parametrize("text", ["", "4", "a,b", "4,5,0,2,9", "-1,4", "4,nan", "4,4,0,11"])
def test_parse_psf_refuses_with_the_accepted_form(text):
    with pytest.raises(ValueError, match=r"--psf") as err:
        parse_psf(text)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("method", list_restorers())
def test_every_registered_method_restores_any_image_size(method, tmp_path):
    """Classical ones with a given PSF, learned ones from a tiny checkpoint; 37x53 px input."""
    needs = method_needs(method)
    y = make_sample("contacts", (37, 53), seed=3)
    kwargs: dict = {}
    if needs.takes_psf:
        kwargs["psf"] = "2,2,0,2"
    if needs.learned:
        ckpt, options = make_checkpoint(method, tmp_path)
        kwargs.update(checkpoint=ckpt, **options)
    # the tiny stand-ins of the paper's model are dense: restore says so
    dense = method.startswith("sem-foundation")
    with (
        pytest.warns(RestoreWarning, match=re.escape(DENSE_NOTE))
        if dense
        else contextlib.nullcontext()
    ):
        out = restore(y, method, **kwargs)
    assert out.image.shape == y.shape and np.all(np.isfinite(out.image))
    assert out.method == method
    assert (out.psf is not None) == needs.takes_psf
    assert (out.checkpoint is not None) == needs.learned
    json.dumps(out.record())


def test_learned_restorer_from_a_run_folder_equals_the_saved_one(tmp_path):
    ckpt, _ = make_checkpoint("n2v", tmp_path)
    y = make_sample("lines", (40, 48), seed=1)
    ref = get_restorer("n2v").load(ckpt / "model").restore(y)
    assert ref.shape == y.shape
    for source in (ckpt, ckpt / "model", ckpt / "model" / "model.safetensors"):
        out = restore(y, "n2v", checkpoint=source, brightness="method")
        np.testing.assert_array_equal(out.image, ref)
    # the default brightness policy shifts the same output to the input's mean grey level
    shifted = restore(y, "n2v", checkpoint=ckpt)
    shift = shifted.brightness["shift"]
    np.testing.assert_allclose(shifted.image, ref + shift, atol=1e-3)
    assert shift == pytest.approx(float(y.mean()) - float(ref.mean()), abs=1e-3)


def test_sem_train_run_folder_resolves_to_its_best_export(tmp_path):
    """A ``sem train`` run folder: checkpoints/best.json points at the export to use."""
    export, options = make_checkpoint("mae-sem", tmp_path)
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    export.rename(run / "checkpoints" / "best-00000010")
    (run / "checkpoints" / "best.json").write_text(json.dumps({"dir": "best-00000010"}))
    y = make_sample("texture", (50, 70), seed=2)
    out = restore(y, "mae-sem", checkpoint=run, **options)
    direct = restore(y, "mae-sem", checkpoint=run / "checkpoints" / "best-00000010", **options)
    np.testing.assert_array_equal(out.image, direct.image)
    assert out.parameters["checkpoint_dir"].endswith("best-00000010")


def test_weights_given_as_the_methods_own_setting_are_loaded(tmp_path):
    """``checkpoint_dir=`` / ``weights_path=`` (the registry fields, as ``--set`` gives them)
    load like ``checkpoint=``; they were dropped ("needs its weights") before."""
    export, options = make_checkpoint("mae-sem", tmp_path)
    y = make_sample("texture", (50, 70), seed=2)
    direct = restore(y, "mae-sem", checkpoint=export, **options)
    prepared = prepare("mae-sem", checkpoint_dir=str(export), **options)
    np.testing.assert_array_equal(prepared(y).image, direct.image)
    assert prepared.checkpoint == str(export)
    assert prepared.weights_record()["path"].startswith(str(export))
    with pytest.raises(ValueError, match="give one"):
        prepare("mae-sem", checkpoint=export, checkpoint_dir=str(export), **options)
    garbage = tmp_path / "mae_pretrain_vit_large.pth"
    garbage.write_bytes(b"\x00" * 256)
    with pytest.raises(Exception) as err:  # reaches the loader, which refuses the file
        prepare("mae-imagenet", weights_path=str(garbage), preset="tiny")
    assert "needs its weights" not in str(err.value) and str(garbage) in str(err.value)


def test_inference_options_apply_to_a_loaded_restorer(tmp_path):
    ckpt, _ = make_checkpoint("n2n", tmp_path)
    prepared = prepare("n2n", checkpoint=ckpt, tile_px=64, margin_px=8)
    assert prepared(make_sample("lines", (80, 90))).parameters["tile_px"] == 64
    with pytest.raises(ValueError, match="architecture is fixed"):
        prepare("n2n", checkpoint=ckpt, unet={"depth": 2, "width": 8})


def _one_line(err: pytest.ExceptionInfo) -> str:
    text = str(err.value)
    assert "\n" not in text, text
    return text


def test_wrong_checkpoints_give_one_line(tmp_path):
    n2n, _ = make_checkpoint("n2n", tmp_path)
    export, options = make_checkpoint("mae-sem", tmp_path)
    with pytest.raises(CheckpointMismatchError) as err:  # another learned method's weights
        prepare("n2v", checkpoint=n2n)
    assert "'n2n'" in _one_line(err)
    with pytest.raises(CheckpointMismatchError) as err:  # not a saved restorer at all
        prepare("n2v", checkpoint=export)
    assert "no saved restorer" in _one_line(err)
    with pytest.raises(CheckpointMismatchError) as err:  # a restorer folder, not a model export
        prepare("mae-sem", checkpoint=n2n / "model", **options)
    _one_line(err)
    # same method, weights of another shape
    folder = tmp_path / "wide" / "model"
    get_restorer("n2v", unet={"width": 8}).save(folder)
    meta = json.loads((folder / "config.json").read_text())
    meta["config"]["unet"]["width"] = 4
    (folder / "config.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointMismatchError) as err:
        prepare("n2v", checkpoint=folder)
    assert "cannot load it as method 'n2v'" in _one_line(err)
    with pytest.raises(CheckpointMismatchError, match="does not exist"):
        prepare("n2v", checkpoint=tmp_path / "nowhere")


def test_a_checkpoint_file_is_the_file_loaded_or_refused(tmp_path):
    """A file given as the checkpoint is the ``model.safetensors`` the method loads (its
    provenance names it) or is refused naming that file: another file of the same folder
    was once replaced by the folder, and the folder's weights loaded in its place."""
    export, options = make_checkpoint("mae-sem", tmp_path)
    y = make_sample("texture", (40, 48), seed=3)
    weights = export / "model.safetensors"
    by_file = prepare("mae-sem", checkpoint=weights, **options)
    assert by_file.weights_record()["path"] == str(weights)
    np.testing.assert_array_equal(
        by_file(y).image, restore(y, "mae-sem", checkpoint=export, **options).image
    )
    (export / "model_v2.safetensors").write_bytes(np.random.default_rng(0).bytes(1000))
    (tmp_path / "inp").mkdir()
    (tmp_path / "inp" / "garbage.tif").write_bytes(b"II*\0 not an image")
    lone = tmp_path / "lone" / "model.safetensors"
    lone.parent.mkdir()
    lone.write_bytes(weights.read_bytes())
    for given, why in [
        (export / "model_v2.safetensors", "not model.safetensors"),
        (export / "config.json", "not model.safetensors"),
        (tmp_path / "inp" / "garbage.tif", "not model.safetensors"),
        (lone, "no config.json beside it"),
    ]:
        with pytest.raises(CheckpointMismatchError) as err:
            prepare("mae-sem", checkpoint=given, **options)
        assert _one_line(err).startswith(f"--checkpoint={given}: {why}"), err.value
        assert "takes a 'sem train' run folder, an export folder" in str(err.value)
    # a saved restorer (n2v): its model.safetensors loads, any other file is refused
    run, _ = make_checkpoint("n2v", tmp_path)
    saved = run / "model" / "model.safetensors"
    assert prepare("n2v", checkpoint=saved).weights_record()["path"] == str(saved)
    other = run / "model" / "best.safetensors"
    other.write_bytes(saved.read_bytes())
    with pytest.raises(CheckpointMismatchError) as err:
        prepare("n2v", checkpoint=other)
    assert _one_line(err).startswith(f"--checkpoint {other}: not model.safetensors")
    assert "a saved restorer folder (config.json + model.safetensors)" in str(err.value)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: prepare("no-such-method"), r"unknown method 'no-such-method'; available: input"),
        (lambda: prepare("n2v"), r"needs --checkpoint"),
        (lambda: prepare("bm3d", checkpoint="x"), r"takes no --checkpoint"),
        (lambda: prepare("wiener", psf="3,3", checkpoint="x"), r"takes no --checkpoint"),
        (lambda: prepare("bm3d", psf="3,3"), r"takes no --psf"),
        (
            lambda: prepare("wiener", psf="3,3", balance=-1),
            re.escape("setting balance must be in (0, 1e6], got -1"),
        ),
        (lambda: prepare("wiener", psf="3,3", no_such_field=1), r"no_such_field"),
    ],
)
def test_bad_method_settings_are_refused_before_any_work(call, match):
    with pytest.raises(ValueError, match=match) as err:
        call()
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    ("image", "match"),
    [
        (np.zeros((1, 1), np.float32), r"1x1 px; restoration needs at least 8x8"),
        (np.zeros((4, 100), np.float32), r"4x100 px"),
        (np.full((16, 16), np.nan, np.float32), r"NaN"),
        (np.zeros((16, 16, 3), np.float32), r"2-D"),
    ],
)
def test_bad_images_are_refused(image, match):
    with pytest.raises(ValueError, match=match):
        restore(image, "wiener", psf="2,2")


def test_shipped_foundation_model_needs_no_checkpoint(tmp_path, monkeypatch):
    """``sem-foundation`` without --checkpoint restores with the model shipped with the
    toolkit (here a tiny stand-in put into a redirected shipped-model folder)."""
    from sem_models import pretrained

    monkeypatch.setattr(pretrained, "_ROOT", tmp_path)
    y = make_sample("lines", (40, 56), seed=4)
    with pytest.raises(FileNotFoundError, match="sem train recipe --config cpu-base"):
        restore(y, "sem-foundation", **WINDOW)
    torch.manual_seed(0)
    model = RestorationModel(build_mae("tiny", in_chans=1, **MAE_ARCH), residual=True)
    model.start_as_identity()
    save_model(model, tmp_path / "sem-foundation")
    with pytest.warns(RestoreWarning, match=re.escape(DENSE_NOTE)):
        out = restore(y, "sem-foundation", **WINDOW)
    # The stand-in starts as the identity: the shipped model was used, not something else.
    np.testing.assert_allclose(out.image, y, atol=0.05)


def test_true_psf_methods_need_the_psf_and_then_deconvolve_with_it():
    """The evaluation's oracle rows take no blind estimate: without --psf they are refused
    (they used to run blind silently); with it they equal the method given the same PSF."""
    _, y = blurred(seed=2)
    with pytest.raises(ValueError, match=r"true PSF.*--psf RX,RY") as err:
        prepare("richardson-lucy-true-psf")
    assert "\n" not in str(err.value)
    oracle = restore(y, "richardson-lucy-true-psf", psf="3,3,0,2")
    same = restore(y, "richardson-lucy", psf="3,3,0,2")
    assert oracle.psf_source == "given" and oracle.psf == same.psf
    np.testing.assert_array_equal(oracle.image, same.image)


def _guided_export(root: Path) -> Path:
    torch.manual_seed(0)
    mae = build_mae("tiny", in_chans=1, **MAE_ARCH)
    net = RestorationModel(mae, residual=True, refiner_width=4, guide_balances=(0.3,))
    save_model(net, root / "guided")
    return root / "guided"


def test_a_guided_model_records_its_guides_psf_and_takes_a_known_one(tmp_path):
    """``sem-foundation`` deconvolves through its physics guides: restore.json names the PSF
    they used (the blind estimate, computed independently here), and --psf replaces it."""
    _, y = blurred(shape=(64, 80), r_px=3.0, seed=5)
    folder = _guided_export(tmp_path)
    blind, notes = restore_warned(y, "sem-foundation", checkpoint=folder, notes=1, **WINDOW)
    assert DENSE_NOTE in notes[0] and any("too small" in w for w in blind.warnings)
    expected = sem_physics.estimate_degradation(y).psf_params()
    assert blind.psf_source == "blind" and blind.psf == expected
    assert blind.estimate is not None and blind.record()["estimate"]["rx_px"] == expected.rx_px
    with pytest.warns(RestoreWarning, match=re.escape(DENSE_NOTE)) as issued:
        given = restore(y, "sem-foundation", checkpoint=folder, psf="1.5,4,0.3,2", **WINDOW)
    # the blind estimate (made for the noise level) does not speak of a PSF it did not give
    assert len(issued) == 1 and not given.warnings
    assert given.psf_source == "given"
    assert given.psf == PSFParams(rx_px=1.5, ry_px=4, theta_rad=0.3, beta=2)
    assert np.abs(given.image - blind.image).max() > 1e-3  # other guides, another output
    plain = tmp_path / "plain"
    save_model(RestorationModel(build_mae("tiny", in_chans=1, **MAE_ARCH)), plain)
    with pytest.raises(ValueError, match=r"no physics guides.*takes no --psf"):
        prepare("sem-foundation", checkpoint=plain, psf="2,2", **WINDOW)
    assert restore_warned(y, "sem-foundation", checkpoint=plain, notes=1, **WINDOW)[0].psf is None
    # refused from the export's config.json, before any weights load
    (plain / "model.safetensors").write_bytes(b"not weights")
    with pytest.raises(ValueError, match=r"no physics guides.*takes no --psf"):
        prepare("sem-foundation", checkpoint=plain, psf="2,2", **WINDOW)


def test_a_guided_model_says_when_its_guides_fell_back_to_the_paper_psf(tmp_path):
    """Too small for a blind estimate (31 rows, below its 32), the guides use the paper's fixed
    PSF: the record says "paper" with a warning, not "blind"; a given PSF stays "given" there."""
    y = make_sample("lines", (32, 32), seed=1)[:31]
    folder = _guided_export(tmp_path)
    fallback, _ = restore_warned(y, "sem-foundation", checkpoint=folder, notes=1, **WINDOW)
    assert fallback.psf_source == "paper" and fallback.estimate is None
    assert fallback.psf == PSFParams(rx_px=15.5, ry_px=15.5, beta=1.95, theta_rad=0.0)
    assert any("paper's fixed PSF" in w for w in fallback.warnings)
    # the guides take no noise level: no note that its floor was used, nor a noise_var to give
    # (a setting the model refuses)
    assert [w for w in fallback.warnings if "noise" in w] == []
    given, notes = restore_warned(
        y, "sem-foundation", checkpoint=folder, psf="2,2", notes=1, **WINDOW
    )
    assert DENSE_NOTE in notes[0]
    assert given.psf_source == "given" and given.psf == PSFParams(rx_px=2, ry_px=2)
    # the guides take fixed balances, no noise level: nothing estimated, nothing said (a note
    # that the noise floor was used, with a noise_var setting the model lacks, was said before)
    assert given.estimate is None and not given.warnings


@pytest.mark.parametrize("method", ["wiener", "richardson-lucy"])
def test_a_strip_too_small_for_a_noise_estimate_is_said_to_use_the_floor(method):
    """31 rows: no noise estimate; with a given PSF the deconvolution regularises with the
    floor 1/12 grey level² (little regularisation for a noisy picture) and says so."""
    _, y = blurred(shape=(64, 300), r_px=3.0, seed=4)
    strip = y[:31]
    with pytest.warns(RestoreWarning, match="noise level not estimated") as issued:
        out = restore(strip, method, psf="3,3")
    assert [str(w.message) for w in issued] == list(out.warnings)
    assert out.record()["parameters"]["per_image"]["noise_var"] == pytest.approx(1 / 12)
    given = restore(strip, method, psf="3,3", noise_var=9.0)  # given: no note, no warning
    assert not given.warnings and given.record()["parameters"]["per_image"]["noise_var"] == 9.0


@pytest.mark.parametrize("method", ["wiener", "richardson-lucy"])
def test_preset_paper_deconvolves_with_the_papers_fixed_psf(method):
    """``preset=paper`` without --psf is the paper's fixed setting: no blind estimate, the same
    output as the restorer itself with that preset, and the record says "paper"."""
    _, y = blurred(shape=(64, 80), r_px=3.0, seed=5)
    got = restore(y, method, preset="paper", brightness="method")
    expected = get_restorer(method, preset="paper").restore(y)
    np.testing.assert_array_equal(got.image, expected)
    assert got.psf_source == "paper" and got.estimate is None
    assert got.psf == PSFParams(rx_px=15.5, ry_px=15.5, theta_rad=0.0, beta=1.95)


def test_fft_threads_change_nothing_but_the_speed(monkeypatch):
    """The blind estimate and the deconvolutions run on every allowed core: the output is
    bit-identical to one thread's, and OMP_NUM_THREADS caps the count."""
    import scipy.fft
    from sem_train.restoration import threads

    _, y = blurred(shape=(96, 128), r_px=3.0, seed=2)
    seen = []
    fft = scipy.fft.rfft2

    def spy(*args, **kwargs):
        seen.append(scipy.fft.get_workers())
        return fft(*args, **kwargs)

    monkeypatch.setattr(scipy.fft, "rfft2", spy)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    one, _ = restore_warned(y, "wiener")  # 96 x 128 px: "too small" for a blind estimate
    assert threads.fft_threads() == 1 and set(seen) == {1}
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    seen.clear()
    two, _ = restore_warned(y, "wiener")
    assert set(seen) == {2}
    np.testing.assert_array_equal(one.image, two.image)
    assert one.psf == two.psf
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert threads.fft_threads() >= 1


def test_an_image_with_no_blur_found_says_a_deconvolution_only_smooths_it(real_image):
    """The focused real resist lines: the blind estimate finds 1.6 px and flags itself,
    Richardson-Lucy stops after one iteration from its flat start and halves the fine detail;
    the warning says so. The same crop blurred by R = 4 px gets no such warning."""
    from sem_physics.io import read_image

    sharp = read_image(real_image("lines_euv_resist_0p827nm.tif")).data[:256, 300:556]
    sharp = sharp.astype(np.float32)
    with pytest.warns(RestoreWarning) as issued:  # also as Python warnings (notebooks)
        out = restore(sharp, "richardson-lucy")
    assert any("looks in focus (at most 1.6 px" in w for w in out.warnings), out.warnings
    assert [str(w.message) for w in issued] == list(out.warnings)
    assert all(w.filename == __file__ for w in issued)  # pointing at the caller's line
    with pytest.warns(RestoreWarning) as again:
        prepare("richardson-lucy")(sharp)  # a prepared method warns the same way
    assert [str(w.message) for w in again] == list(out.warnings)

    def fine(x):
        return float(np.mean(np.diff(x, axis=1) ** 2))

    assert fine(out.image) < 0.7 * fine(sharp)  # what the warning is about
    p = DegradationParams(
        rx_px=4.0, ry_px=4.0, beta=2.0, theta_rad=0.0, gain=1.0, offset=0.0, sigma=3.0, dose=20.0
    )
    y = degrade(sharp, p, rng=np.random.default_rng(0)).astype(np.float32)
    blurred_out, _ = restore_warned(y, "richardson-lucy")  # warns of its low signal-to-noise
    assert not any("looks in focus" in w for w in blurred_out.warnings)

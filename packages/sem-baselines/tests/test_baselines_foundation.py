"""The paper's own rows: ``sem-foundation`` (few-shot) and ``sem-foundation-zero-shot``.

Tiny MAE + MoE checkpoints made here stand in for the shipped weights; the shipped folder is
pointed at a temporary one, so the tests hold with or without the real weights installed.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from baselines_testkit import MAE_ARCH, MAE_WINDOW, lines_image
from pydantic import BaseModel
from sem_baselines import RestorerConfigError, get_restorer, load_restorer, registry_entry
from sem_baselines.restorer import register
from sem_models import (
    MoEConfig,
    RestorationModel,
    build_mae,
    grid_averaging_overlap,
    load_model,
    moe_layers,
    save_model,
    sliding_window,
)
from sem_models import pretrained as pretrained_mod
from sem_models.pretrained import ShippedModelMissingError

IMAGE = lines_image((45, 70), seed=2)


def _mae(moe: bool = True, seed: int = 0):
    torch.manual_seed(seed)
    extra = {"moe": MoEConfig(num_experts=2)} if moe else {}
    return build_mae("tiny", in_chans=1, **extra, **MAE_ARCH)


@pytest.fixture
def shipped(tmp_path, monkeypatch):
    """The shipped-model folder, redirected to an empty temporary one."""
    root = tmp_path / "pretrained"
    root.mkdir()
    monkeypatch.setattr(pretrained_mod, "_ROOT", root)
    return root


def _expected(network, image=IMAGE, window=32, overlap=8):
    return np.clip(sliding_window(network, image / 255.0, window, overlap) * 255.0, 0, 255)


def test_default_is_the_shipped_fine_tuned_model(shipped):
    model = RestorationModel(_mae(), residual=True)
    save_model(model, shipped / "sem-foundation")
    r = get_restorer("sem-foundation", **MAE_WINDOW)
    assert r.network.config.moe is not None and moe_layers(r.network)
    np.testing.assert_allclose(r.restore(IMAGE), _expected(model), rtol=1e-5, atol=1e-3)
    assert any("shipped" in n for n in r.notes)
    assert not any("dense" in n for n in r.notes)


def test_a_saved_restorer_keeps_its_notes(shipped, tmp_path):
    """load_restorer gives back what the model said of itself when built: the shipped-model
    line, the dense-model caution (the saved folder has no source left to say it again)."""
    save_model(RestorationModel(_mae(), residual=True), shipped / "sem-foundation")
    r = get_restorer("sem-foundation", **MAE_WINDOW)
    assert r.notes == ["the 'sem-foundation' model shipped with sem-models"]
    assert load_restorer(r.save(tmp_path / "shipped")).notes == r.notes
    save_model(RestorationModel(_mae(moe=False), residual=True), tmp_path / "dense")
    d = get_restorer("sem-foundation", checkpoint_dir=str(tmp_path / "dense"), **MAE_WINDOW)
    assert len(d.notes) == 1 and "dense model" in d.notes[0]
    again = load_restorer(d.save(tmp_path / "saved-dense"))
    assert again.notes == d.notes
    # load() replaces the notes with the saved model's: the fresh restorer's were of another
    fresh = get_restorer("sem-foundation", **MAE_WINDOW)
    assert fresh.load(tmp_path / "saved-dense").notes == d.notes
    meta_file = tmp_path / "saved-dense" / "config.json"
    meta = json.loads(meta_file.read_text())
    meta_file.write_text(json.dumps({**meta, "notes": "dense"}))
    with pytest.raises(RestorerConfigError, match="'notes' must be a list of strings"):
        load_restorer(tmp_path / "saved-dense")


def test_absent_shipped_model_says_where_and_how(shipped):
    for name in ("sem-foundation", "sem-foundation-zero-shot"):
        with pytest.raises(ShippedModelMissingError) as err:
            get_restorer(name, **MAE_WINDOW)
        text = str(err.value)
        assert text.startswith(f"{name}: checkpoint_dir not set")
        assert str(shipped) in text and "cpu-base" in text and "\n" not in text
    with pytest.raises(ShippedModelMissingError, match="sem-foundation-zero-shot"):
        get_restorer("sem-foundation", finetune_here=True)  # starts from the pretrained MAE


def test_a_dense_checkpoint_is_accepted_and_noted(tmp_path):
    save_model(RestorationModel(_mae(moe=False), residual=True), tmp_path / "dense")
    r = get_restorer("sem-foundation", checkpoint_dir=str(tmp_path / "dense"), **MAE_WINDOW)
    assert any("dense model (no Mixture-of-Experts)" in n for n in r.notes)
    save_model(_mae(moe=False), tmp_path / "dense-mae")
    z = get_restorer(
        "sem-foundation-zero-shot", checkpoint_dir=str(tmp_path / "dense-mae"), **MAE_WINDOW
    )
    assert any("dense model" in n for n in z.notes)


def test_a_pretrained_mae_needs_finetune_here(tmp_path, shipped):
    mae = _mae()
    save_model(mae, tmp_path / "mae")
    with pytest.raises(RestorerConfigError, match="finetune_here=true"):
        get_restorer("sem-foundation", checkpoint_dir=str(tmp_path / "mae"))
    # finetune_here: the MAE gets a restoration decoder, encoder frozen, routing trainable
    # after sem-train's fine-tune; the default start is the shipped pretrained MAE
    save_model(mae, shipped / "sem-foundation-zero-shot")
    r = get_restorer("sem-foundation", finetune_here=True, head="paper", **MAE_WINDOW)
    assert isinstance(r.network, RestorationModel) and r.network.freeze_encoder
    assert not any(p.requires_grad for p in r.network.mae.encoder_parameters())
    torch.testing.assert_close(r.network.mae.state_dict(), mae.state_dict())
    assert (r.network.residual, r.network.refiner_width, r.network.guide_balances) == (
        False,
        0,
        (),
    )
    # the default head is the shipped fine-tuned model's, which must then be installed
    with pytest.raises(ShippedModelMissingError, match="head=paper"):
        get_restorer("sem-foundation", finetune_here=True, **MAE_WINDOW)


def test_finetune_here_copies_the_shipped_models_head_onto_the_pretrained_mae(shipped):
    mae, tuned = (
        _mae(),
        RestorationModel(_mae(), residual=True, refiner_width=8, guide_balances=(0.1, 1.0)),
    )
    save_model(mae, shipped / "sem-foundation-zero-shot")
    save_model(tuned, shipped / "sem-foundation")
    r = get_restorer("sem-foundation", finetune_here=True, **MAE_WINDOW)
    net = r.network
    assert (net.residual, net.refiner_width, tuple(net.guide_balances)) == (True, 8, (0.1, 1.0))
    assert net.guide_channels == 2 and net.freeze_encoder
    # the pretrained MAE, its output layer zeroed: the new residual head starts as the identity
    ours, start = net.mae.state_dict(), mae.state_dict()
    assert start["decoder_pred.weight"].any()
    for k in ("decoder_pred.weight", "decoder_pred.bias"):
        assert not ours.pop(k).any()
        start.pop(k)
    torch.testing.assert_close(ours, start)
    assert any("restoration head of the shipped 'sem-foundation' model" in n for n in r.notes)


def test_zero_shot_predicts_every_patch_while_it_is_masked(shipped):
    """Each patch comes from the passes that hide it (an MAE's decoder is trained on masked
    patches only), checked against the MAE's own forward with other tie-breaking noise."""
    mae = _mae()
    save_model(mae, shipped / "sem-foundation-zero-shot")
    r = get_restorer("sem-foundation-zero-shot", **MAE_WINDOW, clip=False)
    assert r.network.residual is False and r.network.masked_ensemble == 4
    x = torch.from_numpy(IMAGE[:32, :32] / np.float32(255.0))[None, None]
    loaded = load_model(shipped / "sem-foundation-zero-shot").eval()
    p = loaded.patch_size
    gh, gw = 32 // p, 32 // p
    group = torch.tensor([2 * (i % 2) + (j % 2) for i in range(gh) for j in range(gw)])
    total, count = 0.0, 0.0
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        from sem_models import denormalize

        for k in range(4):
            keep = group == k
            noise = torch.rand(1, gh * gw, generator=g) * 0.1 + (~keep).float()
            ratio = 1 - (int(keep.sum()) + 0.5) / (gh * gw)
            _, pred, mask = loaded(x, mask_ratio=ratio, noise=noise)
            assert torch.equal(mask[0].bool(), ~keep)
            total = total + pred * mask[..., None]
            count = count + mask[..., None]
        direct = denormalize(loaded.unpatchify(total / count, (gh, gw)))
    out = r.restore(IMAGE[:32, :32])
    np.testing.assert_allclose(out, direct[0, 0].numpy() * 255.0, rtol=1e-4, atol=2e-3)


def test_zero_shot_refuses_a_fine_tuned_model(tmp_path):
    save_model(RestorationModel(_mae(), residual=True), tmp_path / "ft")
    with pytest.raises(RestorerConfigError, match="zero-shot form takes the pretrained MAE"):
        get_restorer("sem-foundation-zero-shot", checkpoint_dir=str(tmp_path / "ft"))


def test_save_reload_and_load_network(tmp_path):
    save_model(RestorationModel(_mae(), residual=True), tmp_path / "a")
    r = get_restorer("sem-foundation", checkpoint_dir=str(tmp_path / "a"), **MAE_WINDOW)
    out = r.restore(IMAGE)
    r.save(tmp_path / "saved")
    (tmp_path / "a" / "model.safetensors").unlink()  # reloads without its source
    np.testing.assert_array_equal(load_restorer(tmp_path / "saved").restore(IMAGE), out)
    # load_network swaps in another model (sem-train's fine-tune result) and settings
    other = RestorationModel(_mae(seed=5), residual=True)
    save_model(other, tmp_path / "b")
    assert r.load_network(tmp_path / "b", window_px=16) is r
    assert r.window_px == 16 and r.config.checkpoint_dir == str(tmp_path / "a")
    np.testing.assert_allclose(r.restore(IMAGE), _expected(other, window=16), atol=1e-3)
    with pytest.raises(RestorerConfigError, match="not a restoration checkpoint"):
        save_model(_mae(), tmp_path / "mae")
        r.load_network(tmp_path / "mae")


def test_window_defaults_to_the_model_input_size(tmp_path):
    save_model(RestorationModel(_mae(), residual=True), tmp_path / "a")
    r = get_restorer("sem-foundation", checkpoint_dir=str(tmp_path / "a"), device="cpu")
    assert r.config.window_px is None and r.window_px == MAE_ARCH["img_size"]
    overlap = grid_averaging_overlap(r.window_px, MAE_ARCH["patch_size"])
    assert r.config.overlap_px is None and r.overlap_px == overlap
    expected = _expected(r.network, window=r.window_px, overlap=overlap)
    np.testing.assert_allclose(r.restore(IMAGE), expected, atol=1e-3)


def _along_line_peak(image: np.ndarray, period: int = 8) -> float:
    """Power at ``1 / period`` cycles/px along vertical lines over its neighbours' median."""
    o = image - image.mean(axis=0, keepdims=True)  # the line profile removed
    n = 256
    segments = [o[i : i + n] for i in range(0, o.shape[0] - n + 1, 64)]
    taper = np.hanning(n)[:, None]
    spec = np.mean([np.abs(np.fft.rfft(s * taper, axis=0)) ** 2 for s in segments], 0).mean(1)
    k = n // period
    return float(spec[k] / np.median(spec[k - 6 : k + 7]))


def test_the_shipped_model_leaves_no_patch_grid_in_the_blend():
    """Generated lines at the paper's midpoint setting, restored by the shipped model: with the
    paper's 8-px overlap the 16-px patch grid leaves a peak at 1/8 cycles/px along the lines
    (several times its neighbours); the default tiling averages it away."""
    from sem_physics import ParameterRanges, degrade, make_sample

    focused = make_sample("lines", (480, 640), seed=7000)
    y = np.asarray(
        degrade(focused, ParameterRanges().midpoint(), np.random.default_rng(1)), np.float32
    )
    paper = get_restorer("sem-foundation", device="cpu", overlap_px=8).restore(y)
    default = get_restorer("sem-foundation", device="cpu").restore(y)
    assert _along_line_peak(focused) < 1.5  # the focused lines have no such peak
    assert _along_line_peak(paper) > 2.5
    assert _along_line_peak(default) < 1.5


def test_registry_says_who_is_fine_tuned_here():
    few = registry_entry("sem-foundation")
    assert (few.fitting, few.checkpoint_field, few.finetune_field) == (
        "finetune",
        "checkpoint_dir",
        "finetune_here",
    )
    cfg = few.config_cls()
    assert not few.fine_tunes(cfg)  # the shipped model is used as it is
    assert few.fine_tunes(cfg.model_copy(update={"finetune_here": True}))
    imagenet = registry_entry("mae-imagenet")
    assert imagenet.fitting == "finetune" and imagenet.checkpoint_field == "weights_path"
    assert imagenet.fine_tunes(imagenet.config_cls(weights_path="w.pth"))  # always adapted
    assert registry_entry("sem-foundation-zero-shot").fitting == "none"
    assert not registry_entry("mae-sem").fine_tunes(registry_entry("mae-sem").config_cls())


def test_register_checks_the_finetune_declaration():
    class Cfg(BaseModel):
        flag: bool = False
        level: int = 0

    class NoLoad:
        network = None

    class Loads(NoLoad):
        def load_network(self, folder, **config):
            return self

    with pytest.raises(RuntimeError, match="needs load_network"):
        register("x-no-load", Cfg, fitting="finetune")(NoLoad)
    with pytest.raises(RuntimeError, match="bool config field"):
        register("x-int-switch", Cfg, fitting="finetune", finetune_field="level")(Loads)
    with pytest.raises(RuntimeError, match="bool config field"):
        register("x-switch-none", Cfg, finetune_field="flag")(Loads)
    with pytest.raises(RuntimeError, match="needs checkpoint_field"):
        register("x-pretrained", Cfg, fitting="pretrained")(Loads)
    with pytest.raises(RestorerConfigError, match="unknown restorer 'x-no-load'"):
        registry_entry("x-no-load")  # nothing half-registered


def test_the_refiner_runs_channels_last_with_the_same_output():
    import copy

    from sem_physics import make_sample

    r = get_restorer("sem-foundation", device="cpu")
    conv = next(m for m in r.network.refiner.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    plain = copy.deepcopy(r.network)
    for p in plain.parameters():
        p.data = p.data.contiguous()
    y = make_sample("contacts", (96, 160), seed=3).astype(np.float32)
    fast = r.restore(y)
    r.network = plain
    np.testing.assert_allclose(fast, r.restore(y), atol=0.05)


def test_guides_are_computed_on_the_networks_device(shipped, monkeypatch):
    """A guided model's full-frame deconvolutions run where the network runs (on a GPU the
    FFTs of a large frame would otherwise wait on the CPU), with the same output."""
    from sem_baselines import mae as mae_mod
    from sem_baselines.guides import guide_channels
    from sem_physics import PSFParams
    from sem_physics.batched import wiener_batch

    psf = PSFParams(rx_px=3, ry_px=2, beta=1.9, theta_rad=0.2)
    img = IMAGE / 255.0
    ch = guide_channels(img, psf, (0.1, 1.0), "cpu")
    assert isinstance(ch, torch.Tensor) and ch.shape == (3, *IMAGE.shape)
    np.testing.assert_array_equal(ch[0].numpy(), img.astype(np.float32))
    from sem_physics import airy_psf

    x = torch.from_numpy(img.astype(np.float32))[None, None]
    ref = wiener_batch(x, torch.from_numpy(airy_psf(psf)).float(), (0.1, 1.0))[0]
    torch.testing.assert_close(ch[1:], ref, rtol=0, atol=0)

    model = RestorationModel(_mae(), residual=True, refiner_width=8, guide_balances=(0.1, 1.0))
    save_model(model, shipped / "sem-foundation")
    r = get_restorer("sem-foundation", **MAE_WINDOW)
    seen = []

    def recording(*args):
        seen.append(args[-1])
        return guide_channels(*args)

    monkeypatch.setattr(mae_mod, "guide_channels", recording)
    out = r.restore(IMAGE)
    assert seen == [r.device] and out.shape == IMAGE.shape and out.dtype == np.float32

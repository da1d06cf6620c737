"""The ViT-MAE registry entries: loading, clear errors, sliding-window restore, save/reload."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from baselines_testkit import MAE_ARCH, MAE_WINDOW, lines_image, mae_registry_config
from sem_baselines import RestorerConfigError, get_restorer, load_restorer
from sem_models import (
    CheckpointError,
    MissingWeightsError,
    MoEConfig,
    build_mae,
    save_model,
    sliding_window,
)


def test_imagenet_weights_are_loaded_into_the_encoder(tmp_path_factory):
    cfg = mae_registry_config("mae-imagenet", tmp_path_factory)
    r = get_restorer("mae-imagenet", **cfg)
    saved = torch.load(cfg["weights_path"], weights_only=True)["model"]
    ours = r.network.mae.state_dict()
    for key, value in saved.items():
        torch.testing.assert_close(ours[key], value)
    # the encoder is frozen for fine-tuning, the decoder trainable
    assert not any(p.requires_grad for p in r.network.mae.encoder_parameters())
    assert any(p.requires_grad for p in r.network.parameters())


def test_imagenet_missing_file_names_it(tmp_path):
    with pytest.raises(MissingWeightsError, match=r"mae_pretrain_vit_large\.pth"):
        get_restorer("mae-imagenet", weights_path=str(tmp_path / "mae_pretrain_vit_large.pth"))
    with pytest.raises(RestorerConfigError, match="weights_path"):
        get_restorer("mae-imagenet")


def test_sem_checkpoint_errors(tmp_path):
    with pytest.raises(RestorerConfigError, match="checkpoint_dir"):
        get_restorer("mae-sem")
    with pytest.raises(CheckpointError, match=r"config\.json"):
        get_restorer("mae-sem", checkpoint_dir=str(tmp_path / "absent"))
    moe = build_mae("tiny", in_chans=1, moe=MoEConfig(num_experts=2), **MAE_ARCH)
    save_model(moe, tmp_path / "moe")
    with pytest.raises(RestorerConfigError, match="without MoE") as refused:
        get_restorer("mae-sem", checkpoint_dir=str(tmp_path / "moe"))
    # what to give instead: a dense model, pretrained or fine-tuned, not only a Stage-1 MAE
    assert "a dense fine-tune (sem train recipe --dense" in str(refused.value)


@pytest.mark.parametrize("name", ["mae-imagenet", "mae-sem"])
def test_restore_is_the_sliding_window_of_the_network(name, tmp_path, tmp_path_factory):
    r = get_restorer(name, **mae_registry_config(name, tmp_path_factory), clip=False)
    img = lines_image((45, 70), seed=2)
    out = r.restore(img)
    ref = sliding_window(r.network, img / 255.0, 32, 8) * 255.0
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-3)
    r.save(tmp_path / "saved")
    # reloads without the original weights source
    again = load_restorer(tmp_path / "saved")
    np.testing.assert_array_equal(again.restore(img), out)


def test_window_settings_are_validated():
    with pytest.raises(RestorerConfigError, match="window_px"):
        get_restorer(
            "mae-sem", window_px=4, **{k: v for k, v in MAE_WINDOW.items() if k != "window_px"}
        )


@pytest.mark.parametrize("window", [None, 32])
def test_an_overlap_of_the_window_or_more_is_refused_not_run_one_pixel_apart(
    window, tmp_path, tmp_path_factory
):
    # clamped to window - 1 it ran a window per pixel: 1.2k forward passes for 48 x 40 px
    cfg = {**mae_registry_config("mae-sem", tmp_path_factory), "window_px": window}
    for overlap in (32, 200):
        with pytest.raises(RestorerConfigError, match=rf"overlap_px={overlap} .* 0\.\.31"):
            get_restorer("mae-sem", **{**cfg, "overlap_px": overlap})
    r = get_restorer("mae-sem", **{**cfg, "overlap_px": 31})  # the largest that is accepted
    assert r.overlap_px == 31
    save_model(r.network, tmp_path / "tuned")  # a fine-tuned network handed back
    with pytest.raises(RestorerConfigError, match="overlap_px=40"):
        r.load_network(tmp_path / "tuned", overlap_px=40)
    with pytest.raises(RestorerConfigError, match="window_px"):  # not pydantic's bare error
        r.load_network(tmp_path / "tuned", window_px=4)


def test_the_meta_device_is_refused_when_the_restorer_is_made(tmp_path_factory):
    cfg = {**mae_registry_config("mae-sem", tmp_path_factory), "device": "meta"}
    with pytest.raises(RestorerConfigError, match="device='meta' holds no weights"):
        get_restorer("mae-sem", **cfg)
    with pytest.raises(RestorerConfigError, match="device='meta' holds no weights"):
        get_restorer("n2v", unet={"depth": 2, "width": 4}, device="meta")

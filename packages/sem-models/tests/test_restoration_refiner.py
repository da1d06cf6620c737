"""The convolutional refiner of RestorationModel: identity at start, saved and reloaded,
trainable, and its correction reaches across patch borders (no patch-wise output)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sem_models import RestorationModel, build_mae, load_model, save_model


def _model(width: int = 8) -> RestorationModel:
    torch.manual_seed(0)
    mae = build_mae("tiny", patch_size=16, img_size=32, in_chans=1, depth=1, decoder_depth=1)
    return RestorationModel(mae, freeze_encoder=True, residual=True, refiner_width=width)


@pytest.mark.parametrize("shape", [(32, 32), (30, 45), (17, 64)])
def test_residual_model_with_refiner_starts_as_the_identity(shape):
    model = _model().start_as_identity()
    x = torch.rand(2, 1, *shape)
    with torch.no_grad():
        y = model(x)
    assert y.shape == x.shape
    assert torch.allclose(y, x, atol=1e-5)


def test_refiner_is_saved_and_reloaded(tmp_path):
    model = _model(width=6)
    with torch.no_grad():
        for p in model.refiner.parameters():
            p.add_(0.05 * torch.randn_like(p))
    save_model(model, tmp_path / "m")
    again = load_model(tmp_path / "m")
    assert isinstance(again, RestorationModel) and again.refiner_width == 6
    x = torch.rand(1, 1, 32, 48)
    with torch.no_grad():
        assert torch.equal(again(x), model(x))


def test_refiner_trains_and_its_correction_crosses_patch_borders():
    model = _model().start_as_identity()
    x = torch.rand(1, 1, 32, 32, requires_grad=True)
    model(x).sum().backward()
    assert model.refiner.out.weight.grad is not None
    assert float(model.refiner.out.weight.grad.abs().sum()) > 0
    # With non-zero weights, the output at the last pixel of patch 0 depends on pixels of
    # the neighbouring patch (a patch-wise head could not see them).
    with torch.no_grad():
        for p in model.refiner.parameters():
            p.add_(0.1 * torch.randn_like(p))
    model.mae.requires_grad_(False)
    x = torch.rand(1, 1, 32, 32, requires_grad=True)
    model(x)[0, 0, 8, 15].backward()
    assert float(x.grad[0, 0, 6:11, 16:19].abs().sum()) > 0


def test_negative_refiner_width_is_refused():
    mae = build_mae("tiny", patch_size=16, img_size=32, in_chans=1, depth=1, decoder_depth=1)
    with pytest.raises(ValueError, match="refiner_width"):
        RestorationModel(mae, refiner_width=-1)


def _guided(balances=(0.1, 1.0)) -> RestorationModel:
    torch.manual_seed(0)
    mae = build_mae("tiny", patch_size=16, img_size=32, in_chans=1, depth=1, decoder_depth=1)
    return RestorationModel(
        mae, freeze_encoder=True, residual=True, refiner_width=6, guide_balances=balances
    ).start_as_identity()


def test_guided_model_reads_its_guide_channels_and_returns_the_image_channels(tmp_path):
    model = _guided()
    x = torch.rand(2, 3, 32, 40)  # image + 2 guides
    with torch.no_grad():
        y = model(x)
    assert y.shape == (2, 1, 32, 40)
    # zero-initialised decoder output and refiner: the middle guide (balance 1.0) itself
    assert torch.allclose(y, x[:, 2:3], atol=1e-5)
    with torch.no_grad():
        for p in model.refiner.parameters():
            p.add_(0.05 * torch.randn_like(p))
    x.requires_grad_(True)
    model(x)[0, 0, 10, 10].backward()
    assert float(x.grad[0, 1:].abs().sum()) > 0  # the guides reach the output
    save_model(model, tmp_path / "g")
    again = load_model(tmp_path / "g")
    assert again.guide_balances == (0.1, 1.0)
    with torch.no_grad():
        assert torch.equal(again(x.detach()), model(x.detach()))


def test_with_three_guides_the_untrained_output_is_the_middle_one():
    """The shipped head reads three balances (0.03, 0.3, 3): it starts as the middle one."""
    torch.manual_seed(0)
    mae = build_mae("tiny", patch_size=16, img_size=32, in_chans=1, depth=1, decoder_depth=1)
    model = RestorationModel(
        mae, residual=True, refiner_width=6, guide_balances=(0.03, 0.3, 3.0)
    ).start_as_identity()
    x = torch.rand(2, 4, 32, 40)  # image + 3 guides
    with torch.no_grad():
        y = model(x)
    assert torch.allclose(y, x[:, 2:3], atol=1e-5)
    assert not torch.allclose(y, x[:, 3:4], atol=0.1)


def test_guided_model_refuses_inputs_without_guides_and_guides_without_refiner():
    model = _guided()
    with pytest.raises(ValueError, match="2 guide channel"):
        model(torch.rand(1, 2, 32, 32))
    mae = build_mae("tiny", patch_size=16, img_size=32, in_chans=1, depth=1, decoder_depth=1)
    with pytest.raises(ValueError, match="refiner"):
        RestorationModel(mae, residual=True, guide_balances=(1.0,))
    with pytest.raises(ValueError, match="guide_balances"):
        RestorationModel(mae, residual=True, refiner_width=4, guide_balances=(0.0,))


def test_sliding_window_of_a_guided_model_equals_one_pass_and_blends_windows():
    from sem_models import sliding_window

    model = _guided()
    with torch.no_grad():
        for p in model.refiner.parameters():
            p.add_(0.05 * torch.randn_like(p))
    x = torch.rand(3, 32, 32)
    with torch.no_grad():
        whole = model(x[None])[0]
    one = sliding_window(model, x, window=32, overlap=8)
    assert one.shape == (1, 32, 32)
    assert torch.allclose(one, whole, atol=1e-5)
    big = sliding_window(model, torch.rand(3, 50, 70), window=32, overlap=8)
    assert big.shape == (1, 50, 70) and torch.isfinite(big).all()


@pytest.mark.parametrize("residual", [False, True])
def test_the_restored_image_stays_float32_under_bf16_autocast(tiny_mae, residual):
    """On a GPU inference runs under bf16 autocast: the decoder's patches come out in bf16,
    and a direct (non-residual) head must not hand the image on in bf16 (about 1 grey level
    of rounding on the 0..255 scale, too coarse for edge metrology)."""
    model = RestorationModel(tiny_mae, residual=residual).eval()
    x = torch.rand(1, 1, 64, 64)
    with torch.no_grad():
        full = model(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            mixed = model(x)
    assert mixed.dtype == torch.float32
    # the decoder's own bf16 rounding stays (0.9 grey levels here); rounding the image once
    # more to bf16 doubled it (2.1)
    assert float((mixed - full).abs().max()) * 255 < 1.5


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ({"residual": "no"}, "residual must be True or False; got 'no'"),  # truthy: residual
        ({"freeze_encoder": "false"}, "freeze_encoder must be True or False"),
        ({"refiner_width": 4.5}, "refiner_width must be a whole number >= 0"),  # was 4
        ({"refiner_width": 4, "guide_balances": 0.3}, "guide_balances is a sequence"),
        ({"refiner_width": 4, "guide_balances": "0.3"}, "guide_balances is a sequence"),
        ({"refiner_width": 4, "guide_balances": [True]}, "guide_balances must be numbers"),
    ],
)
def test_settings_of_the_wrong_type_are_refused_by_name(setting, message):
    mae = build_mae("tiny", patch_size=16, img_size=32, in_chans=1, depth=1, decoder_depth=1)
    with pytest.raises(ValueError, match=message):
        RestorationModel(mae, **setting)
    # numpy scalars and arrays, what a notebook computes them as, are taken
    model = RestorationModel(
        mae,
        residual=np.True_,
        refiner_width=np.int64(4),
        guide_balances=np.array([0.1, 1.0]),
    )
    assert model.residual is True and model.refiner_width == 4
    assert model.guide_balances == (0.1, 1.0)

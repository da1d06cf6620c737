"""Model entries: any float dtype is cast to the parameters' (autocast left alone), integer,
empty and non-finite images are refused in one line naming the argument."""

from __future__ import annotations

import pytest
import sem_models as sm
import torch
from sem_models.testing import MICRO_MAE

TINY = {"in_chans": 1, **MICRO_MAE}
FLOATS = [torch.bfloat16, torch.float16, torch.float64]


def _mae(**kw) -> sm.MaskedAutoencoder:
    torch.manual_seed(0)
    return sm.build_mae("tiny", **{**TINY, **kw}).eval()


def _x(shape=(2, 1, 32, 32), dtype=torch.float32) -> torch.Tensor:
    return torch.rand(shape, generator=torch.Generator().manual_seed(1)).to(dtype)


@pytest.mark.parametrize("dtype", FLOATS)
def test_the_mae_casts_any_float_input_to_its_parameters(dtype):
    mae, x, noise = _mae(), _x(), torch.rand(2, 16)
    loss, pred, _ = mae(x.to(dtype), noise=noise)
    assert pred.dtype == torch.float32 and torch.isfinite(loss)
    # the same as the float32 image rounded to ``dtype``
    torch.testing.assert_close(pred, mae(x.to(dtype).float(), noise=noise)[1], rtol=0, atol=0)


@pytest.mark.parametrize("dtype", [*FLOATS, torch.float32])
def test_restoration_models_cast_any_float_input(dtype):
    rm = sm.RestorationModel(_mae(), refiner_width=4).eval()
    x = _x((1, 1, 20, 27))
    out = rm(x.to(dtype))
    assert out.shape == x.shape and out.dtype == torch.float32
    torch.testing.assert_close(out, rm(x.to(dtype).float()), rtol=0, atol=0)


@pytest.mark.parametrize("input_dtype", [torch.float32, torch.bfloat16, torch.float64])
def test_a_bf16_model_takes_float_inputs(input_dtype):
    mae = _mae().to(torch.bfloat16)
    assert mae(_x(dtype=input_dtype))[1].dtype == torch.bfloat16
    rm = sm.RestorationModel(mae, refiner_width=4, residual=True).eval()
    assert torch.isfinite(rm(_x((1, 1, 20, 27), input_dtype))).all()


def test_the_moe_layer_casts_its_input_to_its_parameters():
    torch.manual_seed(0)
    layer = sm.MoEMlp(32, 64, num_experts=4, top_k=2).eval()
    h = torch.randn(5, 32)
    out = layer(h.to(torch.bfloat16))
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, layer(h.to(torch.bfloat16).float()), rtol=0, atol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_under_autocast_the_input_is_left_to_autocast(dtype, monkeypatch):
    """bf16 autocast on the CPU still computes in bf16 (bf16 pred), with the values the model
    gives without any entry cast."""
    mae, x, noise = _mae(), _x(dtype=dtype), torch.rand(2, 16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        _, pred, _ = mae(x, noise=noise)
        monkeypatch.setattr(mae, "_input", lambda imgs, name="imgs": imgs)
        _, raw, _ = mae(x, noise=noise)
    assert pred.dtype == torch.bfloat16
    torch.testing.assert_close(pred, raw, rtol=0, atol=0)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16])
def test_dtypes_autocast_cannot_mix_are_cast_for_the_parameters(dtype):
    """Under bf16 autocast float64 and fp16 inputs are cast to float32 first."""
    mae, x, noise = _mae(), _x(dtype=dtype), torch.rand(2, 16)
    rm = sm.RestorationModel(mae, refiner_width=4).eval()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        pred = mae(x, noise=noise)[1]
        assert pred.dtype == torch.bfloat16
        torch.testing.assert_close(pred, mae(x.float(), noise=noise)[1], rtol=0, atol=0)
        torch.testing.assert_close(rm(x), rm(x.float()), rtol=0, atol=0)


@pytest.mark.parametrize("dtype", [torch.uint8, torch.int64, torch.bool])
def test_integer_images_are_refused_naming_the_argument(dtype):
    mae = _mae()
    x = torch.zeros(1, 1, 32, 32, dtype=dtype)
    with pytest.raises(ValueError, match=r"imgs must be a float tensor scaled 0\.\.1; got dtype"):
        mae(x)
    with pytest.raises(ValueError, match=r"x must be a float tensor scaled 0\.\.1; got dtype"):
        sm.RestorationModel(mae)(x)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_images_are_refused_naming_the_argument(bad):
    mae = _mae()
    x = _x((1, 1, 32, 32))
    x[0, 0, 3, 5] = bad
    with pytest.raises(ValueError, match="imgs holds NaN or inf values"):
        mae(x)
    with pytest.raises(ValueError, match="x holds NaN or inf values"):
        sm.RestorationModel(mae)(x)


@pytest.mark.parametrize("shape", [(1, 1, 0, 0), (1, 1, 0, 32), (1, 1, 16, 0)])
def test_an_empty_image_is_refused_by_the_restoration_model(shape):
    with pytest.raises(ValueError, match="x is an empty image"):
        sm.RestorationModel(_mae())(torch.rand(shape))


@pytest.mark.parametrize("channels", [2, 3, 4])
def test_a_wrong_channel_count_is_refused_naming_the_argument_and_the_count(channels):
    """A 1-channel MAE takes ``imgs`` of 1 channel (the RGB statistics of another count would
    be a message about ``channels=``); a restoration model takes gray or RGB ``x``."""
    mae = _mae()
    x = _x((1, channels, 32, 32))
    with pytest.raises(ValueError, match=r"^imgs must be images \(N, 1, H, W\) for this 1-channel"):
        mae(x)
    with pytest.raises(ValueError, match=r"^imgs must be images \(N, 1, H, W\)"):
        mae.forward_encoder(x, 0.5)
    if channels != 3:
        with pytest.raises(
            ValueError, match=rf"^x has {channels} channel\(s\); this model takes 1 or 3"
        ):
            sm.RestorationModel(mae)(x)
        with pytest.raises(
            ValueError,
            match=r"^images must be one or more images \(N, C, H, W\) of C = 1 \(gray\) or 3",
        ):
            sm.extract_embeddings(mae, x)


def test_a_guided_model_names_the_image_and_guide_channels_it_takes():
    model = sm.RestorationModel(_mae(), refiner_width=4, guide_balances=(0.1, 1.0))
    for channels in (1, 2, 4):
        with pytest.raises(
            ValueError, match=rf"x has {channels} channel\(s\); this model takes 3 or 5 "
        ):
            model(_x((1, channels, 32, 32)))
    assert model(_x((1, 3, 32, 32))).shape == (1, 1, 32, 32)
    assert model(_x((1, 5, 32, 32))).shape == (1, 3, 32, 32)


@pytest.mark.parametrize("size", [(0, 0), (0, 32), (4, 4), (36, 32)])
def test_an_mae_image_off_the_patch_grid_is_refused_naming_imgs_and_the_patch(size):
    """Empty images reached the patch convolution (a torch message about kernel sizes)."""
    with pytest.raises(
        ValueError,
        match=r"^imgs of \d+x\d+ px: .* multiple of the patch size 8 px, at least one patch",
    ):
        _mae()(torch.rand(1, 1, *size))

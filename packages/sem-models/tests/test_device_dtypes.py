"""One code path for every device and dtype: float64 models keep float64, statistics work on a
device without float64 (Apple's ``mps``, the CPU standing in for it), attention is fused."""

from __future__ import annotations

import pytest
import sem_models as sm
import torch
import torch.nn.functional as F
from sem_models.imaging import denormalize, normalize
from sem_models.masking import reconstruction
from sem_models.testing import MICRO_MAE, cpu_without_float64
from sem_models.upcycle import router_weights
from timm.layers import Attention


def _mae(**kw) -> sm.MaskedAutoencoder:
    torch.manual_seed(0)
    return sm.build_mae("tiny", in_chans=1, **{**MICRO_MAE, **kw})


def _x(shape=(2, 1, 32, 32)) -> torch.Tensor:
    return torch.rand(shape, generator=torch.Generator().manual_seed(1))


def test_statistics_accumulate_in_float64_except_on_a_device_without_it():
    assert sm.accumulation_dtype("cpu") == sm.accumulation_dtype("cuda:1") == torch.float64
    assert sm.accumulation_dtype(torch.device("mps")) == torch.float32


def test_a_float64_restoration_model_computes_in_float64():
    """The decoder's prediction of a float64 model is not rounded to float32 on its way out:
    the output equals its float64 composition to float64 rounding (float32 would be ~1e-7)."""
    mae = _mae().double().eval()
    rm = sm.RestorationModel(mae, residual=True).eval()
    x = _x((2, 1, 32, 32)).double()
    with torch.no_grad():
        out = rm(x)
        zn = normalize(x)
        latent, _, ids, hw = mae.forward_encoder(zn, 0.0)
        expected = denormalize(zn + mae.unpatchify(mae.forward_decoder(latent, ids, hw), hw))
    assert out.dtype == torch.float64
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-12)


def test_a_float64_mae_has_a_float64_loss_and_reconstruction():
    mae = _mae().double()
    x, noise = _x().double(), torch.rand(2, 16, dtype=torch.float64)
    loss, pred, mask = mae(x, noise=noise)
    per_patch = (pred - mae.target(x)).abs().mean(-1)
    expected = (per_patch * mask).sum() / mask.sum()
    assert loss.dtype == torch.float64
    torch.testing.assert_close(loss, expected, rtol=0, atol=1e-14)
    recon = reconstruction(mae, x, pred)
    assert recon.dtype == torch.float64
    torch.testing.assert_close(recon, denormalize(mae.unpatchify(pred, (4, 4))), rtol=0, atol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_lower_precision_outputs_still_leave_as_float32(dtype):
    mae = _mae().to(dtype)
    x, noise = _x().to(dtype), torch.rand(2, 16)
    loss, pred, _ = mae(x, noise=noise)
    assert loss.dtype == torch.float32
    assert reconstruction(mae, x.float(), pred).dtype == torch.float32
    out = sm.RestorationModel(mae, residual=True).eval()(x)
    assert out.dtype == torch.float32


def test_moe_statistics_work_on_a_device_without_float64():
    """A training-mode MoE forward, its routing statistics as device tensors and the balance
    totals of a validation pass create no float64 tensor there, and give the float64 values."""
    mae = _mae(moe={"num_experts": 4, "top_k": 1})
    x, noise = _x(), torch.rand(2, 16, generator=torch.Generator().manual_seed(2))

    def run() -> tuple[dict[str, torch.Tensor], float]:
        totals = sm.BalanceTotals(mae)
        for _ in range(2):
            mae(x, noise=noise)
            totals.add()
        return sm.routing_stats(mae, per_expert=True, tensors=True), totals.loss()

    wide, wide_loss = run()
    with cpu_without_float64():
        narrow, narrow_loss = run()
    assert {v.dtype for v in narrow.values()} == {torch.float32}
    assert {v.dtype for v in wide.values()} == {torch.float64}
    assert narrow.keys() == wide.keys()
    for key, value in narrow.items():
        torch.testing.assert_close(value.double(), wide[key], rtol=1e-6, atol=1e-6)
    assert narrow_loss == pytest.approx(wide_loss, rel=1e-6)


def test_router_calibration_gives_float32_routers_on_a_device_without_float64():
    """Same seed, same routers (drawn on the CPU), computed in the device's float32."""
    h = torch.randn(64, 16, generator=torch.Generator().manual_seed(3)) + 2.0
    torch.manual_seed(4)
    wide = router_weights(h, 4)
    with cpu_without_float64(forbid=False):
        torch.manual_seed(4)
        narrow = router_weights(h, 4)
    assert wide.dtype == torch.float64 and narrow.dtype == torch.float32
    torch.testing.assert_close(narrow.double(), wide, rtol=1e-4, atol=1e-5)


def test_every_attention_layer_runs_fused_scaled_dot_product_attention(monkeypatch):
    """The ViT's attention is torch's fused kernel (flash / memory-efficient on a GPU), not an
    explicit softmax(QK^T) matrix: every block calls it once per forward."""
    mae = _mae(moe={"num_experts": 2}).eval()
    layers = [m for m in mae.modules() if isinstance(m, Attention)]
    assert len(layers) == 3 and all(m.fused_attn for m in layers)  # 2 encoder + 1 decoder
    calls = []
    fused = F.scaled_dot_product_attention

    def counting(*args, **kwargs):
        calls.append(args[0].shape)
        return fused(*args, **kwargs)

    monkeypatch.setattr(F, "scaled_dot_product_attention", counting)
    with torch.no_grad():
        mae(_x(), noise=torch.rand(2, 16))
        sm.RestorationModel(mae).eval()(_x((1, 1, 32, 32)))
    assert len(calls) == 2 * len(layers)

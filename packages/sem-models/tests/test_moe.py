"""Mixture-of-Experts layer: exactness, dispatch, capacity, balance losses, timm integration."""

from __future__ import annotations

import math

import pytest
import torch
from sem_models import MoEMlp, balance_loss
from timm.layers import Mlp
from timm.models.vision_transformer import Block


def _moe(d=16, hidden=32, k=4, **kw) -> MoEMlp:
    torch.manual_seed(0)
    return MoEMlp(d, hidden, num_experts=k, **kw)


def _naive(layer: MoEMlp, x: torch.Tensor) -> torch.Tensor:
    """Per-token reference: route each token alone, evaluate its chosen experts one by one."""
    out = []
    for h in x.reshape(-1, x.shape[-1]):
        p = torch.softmax(h.float() @ layer.gate.weight.float().T, dim=-1)
        top_p, top_i = p.topk(layer.top_k)
        w = top_p / top_p.sum()
        out.append(sum(w[j] * layer.experts[int(top_i[j])](h[None])[0] for j in range(layer.top_k)))
    return torch.stack(out).reshape(*x.shape[:-1], -1)


def _force_routing(layer: MoEMlp, experts: torch.Tensor, d: int) -> torch.Tensor:
    """Tokens that route to the given experts: one-hot inputs and a gate that reads them."""
    with torch.no_grad():
        layer.gate.weight.zero_()
        layer.gate.weight[:, : layer.num_experts] = 10 * torch.eye(layer.num_experts)
    x = torch.zeros(len(experts), d)
    x[torch.arange(len(experts)), experts] = 1.0
    return x


def test_identical_experts_equal_the_dense_ffn():
    torch.manual_seed(0)
    dense = Mlp(16, 32).double()
    layer = MoEMlp.from_dense(dense, num_experts=8, noise_std=0.0)
    x = torch.randn(3, 20, 16, dtype=torch.float64)
    torch.testing.assert_close(layer(x), dense(x), rtol=0, atol=1e-12)
    layer.float()
    dense.float()
    torch.testing.assert_close(layer(x.float()), dense(x.float()), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("top_k", [1, 2])
def test_grouped_dispatch_equals_naive_per_token_reference(top_k):
    layer = _moe(top_k=top_k).double()
    x = torch.randn(2, 30, 16, dtype=torch.float64)
    # The router runs in float32 in both, so agreement is to float32 rounding of the weights.
    torch.testing.assert_close(layer(x), _naive(layer, x), rtol=1e-6, atol=1e-6)


def test_each_expert_sees_only_its_own_tokens():
    layer = _moe(k=4, top_k=1)
    seen = []
    for e in layer.experts:
        e.register_forward_hook(lambda m, i, o: seen.append(i[0].shape[0]))
    x = torch.randn(50, 16)
    layer(x)
    assert sum(seen) == 50  # top_k * tokens rows in total, not K * tokens
    counts = (layer.stats["token_fraction"] * 50).round().long()
    assert sorted(seen) == sorted(c for c in counts.tolist() if c > 0)


def test_capacity_drops_tokens_beyond_capacity_in_token_order():
    layer = _moe(d=8, k=4, capacity_factor=1.0)
    x = _force_routing(layer, torch.tensor([0, 0, 0, 0, 0, 1, 2, 3]), 8)
    # capacity = ceil(1.0 * 8 tokens * 1 / 4 experts) = 2 per expert.
    assert layer.capacity(8) == 2
    y = layer(x)
    for t in range(8):
        e = int(x[t].argmax())
        if t in (2, 3, 4):  # third to fifth tokens of expert 0: dropped, exactly zero
            assert torch.equal(y[t], torch.zeros(16 // 2))
        else:
            torch.testing.assert_close(y[t], layer.experts[e](x[t : t + 1])[0])
    assert layer.stats["dropped_fraction"].item() == pytest.approx(3 / 8)
    # No-drop mode computes every token.
    layer.capacity_factor = None
    assert (layer(x).abs().sum(-1) > 0).all()


def test_dropped_tokens_pass_through_the_residual_of_a_timm_block():
    torch.manual_seed(0)
    blk = Block(
        8,
        2,
        mlp_ratio=2.0,
        mlp_layer=lambda **kw: MoEMlp(**kw, num_experts=4, capacity_factor=0.25),
    )
    x = torch.randn(1, 16, 8)
    y = blk(x)
    after_attn = x + blk.attn(blk.norm1(x))
    mlp_out = y - after_attn
    dropped = mlp_out.abs().sum(-1)[0] < 1e-6
    assert blk.mlp.capacity(16) == 1
    assert int(dropped.sum()) >= 16 - 4  # at most one token per expert is computed
    torch.testing.assert_close(y[0, dropped], after_attn[0, dropped])


@pytest.mark.parametrize("kind,minimum", [("paper", 1.0), ("switch", 1.0), ("entropy", 0.0)])
def test_balance_loss_minimal_at_uniform_routing_and_larger_when_imbalanced(kind, minimum):
    k, t = 4, 400
    uniform = torch.full((t, k), 1 / k)
    balanced_assign = torch.arange(t).remainder(k)[:, None]
    assert balance_loss(uniform, balanced_assign, kind).item() == pytest.approx(minimum, abs=1e-6)
    skew = torch.softmax(torch.tensor([3.0, 0.0, 0.0, 0.0]), 0).expand(t, k)
    collapsed = torch.zeros(t, 1, dtype=torch.long)
    assert balance_loss(skew, collapsed, kind) > minimum + 0.1
    # Random routings are never below the minimum.
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        p = torch.softmax(3 * torch.randn(t, k, generator=g), -1)
        assert balance_loss(p, p.argmax(-1, keepdim=True), kind) >= minimum - 1e-6


def test_switch_loss_sees_hard_collapse_that_the_paper_loss_misses():
    k, t = 4, 100
    # Every token slightly prefers expert 0, but the mean probability is almost uniform.
    p = torch.full((t, k), 1 / k) + torch.tensor([0.003, -0.001, -0.001, -0.001])
    hard = p.argmax(-1, keepdim=True)
    assert balance_loss(p, hard, "paper").item() == pytest.approx(1.0, abs=1e-3)
    assert balance_loss(p, hard, "switch").item() == pytest.approx(k * 0.253, rel=1e-3)


def test_routing_statistics_and_aux_loss_are_recorded():
    layer = _moe(d=8, k=4, z_loss_weight=0.1)
    x = _force_routing(layer, torch.tensor([0, 0, 1, 1, 1, 1, 0, 0]), 8)
    layer(x)
    s = layer.stats
    torch.testing.assert_close(s["token_fraction"], torch.tensor([0.5, 0.5, 0.0, 0.0]))
    assert int(s["unused_experts"]) == 2
    probs = torch.softmax(x @ layer.gate.weight.T, -1)
    ent = -(probs * probs.log()).sum(-1).mean()
    torch.testing.assert_close(s["routing_entropy"], ent)
    expect = (
        4 * (probs.mean(0) ** 2).sum()
        + 0.1 * torch.logsumexp(x @ layer.gate.weight.T, -1).pow(2).mean()
    )
    torch.testing.assert_close(layer.aux_loss, expect)


def test_straight_through_weight_is_one_yet_trains_the_router():
    torch.manual_seed(0)
    dense = Mlp(8, 16)
    layer = MoEMlp.from_dense(dense, num_experts=4, noise_std=0.0)
    x = torch.randn(10, 8)
    y = layer(x)
    # Identical experts and a combine weight of exactly 1: the dense output (up to row-subset
    # matmul rounding).
    torch.testing.assert_close(y, dense(x), rtol=1e-6, atol=1e-6)
    y.pow(2).sum().backward()
    assert layer.gate.weight.grad is not None and layer.gate.weight.grad.abs().sum() > 0
    raw = MoEMlp.from_dense(dense, num_experts=4, gate_weighting="raw")
    raw.gate.load_state_dict(layer.gate.state_dict())
    p = torch.softmax(x @ layer.gate.weight.T, -1).max(-1).values
    torch.testing.assert_close(raw(x), p[:, None] * dense(x))


def test_idle_experts_still_receive_gradients_for_ddp():
    layer = _moe(d=8, k=4)
    x = _force_routing(layer, torch.tensor([0, 0, 1]), 8)
    layer(x).sum().backward()
    assert all(p.grad is not None for p in layer.parameters())
    assert layer.experts[3].fc1.weight.grad.abs().sum() == 0


def test_router_runs_in_float32_under_bfloat16_autocast():
    layer = _moe()
    x = torch.randn(2, 5, 16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = layer(x)
        probs, logits = layer.route(x.reshape(-1, 16))
    assert probs.dtype == logits.dtype == torch.float32
    assert y.shape == (2, 5, 16) and torch.isfinite(y).all()


def test_accepts_timm_mlp_layer_keywords_and_ignores_unknown_ones():
    layer = MoEMlp(
        in_features=8,
        hidden_features=24,
        act_layer=torch.nn.GELU,
        norm_layer=None,
        bias=True,
        drop=0.0,
        use_conv=False,
        some_future_kw=1,
        num_experts=2,
    )
    assert layer.experts[0].fc1.weight.shape == (24, 8)
    assert math.isclose(layer(torch.randn(3, 8)).shape[-1], 8)
    with pytest.raises(ValueError, match="top_k"):
        MoEMlp(8, 16, num_experts=2, top_k=3)

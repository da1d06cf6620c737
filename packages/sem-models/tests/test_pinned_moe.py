"""Pinned against independent computations and closed forms (MoE capacity rounding)."""

from __future__ import annotations

import math

import pytest
import torch
from sem_models import MoEMlp


def _moe(d=8, hidden=16, k=4, **kw) -> MoEMlp:
    torch.manual_seed(0)
    return MoEMlp(d, hidden, num_experts=k, **kw)


@pytest.mark.parametrize(
    ("cf", "tokens", "top_k"), [(1.0, 10, 1), (1.25, 7, 2), (0.3, 9, 1), (2.0, 5, 3)]
)
def test_capacity_rounds_up_when_the_share_is_fractional(cf, tokens, top_k):
    """C = ceil(cf * T * top_k / K) (Switch/GShard): the existing tests only use integer shares
    (8/4, 4*2/4, 16*0.25/4), where ceil and floor agree."""
    layer = _moe(top_k=top_k, capacity_factor=cf)
    expected = math.ceil(cf * tokens * top_k / 4)
    assert cf * tokens * top_k / 4 != expected  # the share is fractional
    assert layer.capacity(tokens) == expected


def test_all_tokens_on_one_expert_keep_exactly_ceil_capacity():
    """10 tokens all routed to expert 0, K = 4, cf = 1: capacity ceil(2.5) = 3, so exactly
    tokens 0-2 are computed and 7 of 10 assignments dropped (dropped_fraction 0.7). Capacity
    applies in training (without gradient here: no runner-up expert evaluated)."""
    layer = _moe(capacity_factor=1.0)
    with torch.no_grad():
        layer.gate.weight.zero_()
        layer.gate.weight[:, :4] = 10 * torch.eye(4)
    x = torch.zeros(10, 8)
    x[:, 0] = 1.0
    assert layer.training
    with torch.no_grad():
        y = layer(x)
    kept = (y.abs().sum(-1) > 0).tolist()
    assert kept == [True] * 3 + [False] * 7
    assert layer.stats["dropped_fraction"].item() == pytest.approx(0.7)


def test_straight_through_router_gradient_equals_a_hand_written_reference():
    """``straight_through``: w = p_top / p_top.detach() (value 1), so the router gradient is that
    of y = (p_top / stop_grad(p_top)) FFN_top(h). A naive per-token reference gives the exact
    gate gradient; the existing test only checks that some gradient is non-zero."""
    torch.manual_seed(0)
    layer = MoEMlp(8, 16, num_experts=4, gate_weighting="straight_through").double()
    x = torch.randn(12, 8, dtype=torch.float64)
    target = torch.randn(12, 8, dtype=torch.float64)
    ((layer(x) - target) ** 2).sum().backward()
    got = layer.gate.weight.grad.clone()

    gate = layer.gate.weight.detach().clone().requires_grad_(True)
    p = torch.softmax(x.float() @ gate.float().T, -1).double()
    top_p, top_i = p.max(-1)
    w = top_p / top_p.detach()
    ys = torch.stack([layer.experts[int(e)](x[t : t + 1])[0] for t, e in enumerate(top_i)])
    ((w[:, None] * ys - target) ** 2).sum().backward()
    assert gate.grad.abs().max() > 1e-3
    torch.testing.assert_close(got, gate.grad, rtol=1e-4, atol=1e-6)


def test_top_k_equal_to_num_experts_trains_the_router_like_the_softmax_mixture():
    """With top_k = K every expert is chosen and w_k = p_k / sum p = p_k: the layer is the dense
    softmax mixture sum_k p_k FFN_k(h), and the router's gradient is that mixture's gradient
    (computed here by hand); a detached weight would give the router no task gradient."""
    torch.manual_seed(1)
    layer = MoEMlp(8, 16, num_experts=3, top_k=3).double()
    x = torch.randn(10, 8, dtype=torch.float64)
    target = torch.randn(10, 8, dtype=torch.float64)
    ((layer(x) - target) ** 2).sum().backward()
    got = layer.gate.weight.grad.clone()

    gate = layer.gate.weight.detach().clone().requires_grad_(True)
    p = torch.softmax(x.float() @ gate.float().T, -1).double()
    y = sum(p[:, e : e + 1] * layer.experts[e](x) for e in range(3))
    ((y - target) ** 2).sum().backward()
    assert gate.grad.abs().max() > 1e-3
    torch.testing.assert_close(got, gate.grad, rtol=1e-4, atol=1e-6)

"""MoE inference fast path: outputs bit-identical to the previous dispatch (scatter-add into
zeros, every idle expert's parameter sums computed), checked against that computation."""

from __future__ import annotations

import pytest
import torch
from sem_models import MoEMlp


def _layer(k: int = 4, top_k: int = 1, d: int = 24) -> MoEMlp:
    torch.manual_seed(0)
    layer = MoEMlp(d, 2 * d, num_experts=k, top_k=top_k, expert_dispatch="loop")
    with torch.no_grad():  # a router that spreads random tokens over the experts
        layer.gate.weight.normal_(std=1.0)
    return layer.eval()


def _previous(layer: MoEMlp, x: torch.Tensor) -> torch.Tensor:
    """The dispatch before the fast path, written out: assignments in priority order, one
    call per non-empty expert, weighted rows scatter-added (``index_add``) into zeros."""
    h = x.reshape(-1, x.shape[-1])
    probs, _ = layer.route(h)
    top_p, top_i = probs.topk(layer.top_k, dim=-1)
    weights, _ = layer._combine_weights(top_p, False)
    expert = top_i.t().reshape(-1)
    token = torch.arange(h.shape[0]).repeat(layer.top_k)
    order = torch.argsort(expert, stable=True)
    sizes = torch.bincount(expert, minlength=layer.num_experts).tolist()
    chunks = torch.split(h.index_select(0, token[order]), sizes)
    y = torch.cat([layer.experts[e](c) for e, c in enumerate(chunks) if c.shape[0]])
    y = y * weights.t().reshape(-1)[order, None]
    out = h.new_zeros(h.shape[0], layer.out_features).index_add(0, token[order], y)
    return out.reshape(*x.shape[:-1], -1)


@pytest.mark.parametrize("top_k", [1, 2])
@pytest.mark.parametrize("mode", ["inference", "no_grad"])
def test_inference_output_is_bit_identical_to_the_previous_dispatch(top_k, mode):
    layer = _layer(top_k=top_k)
    x = torch.randn(3, 37, 24)
    ctx = torch.inference_mode() if mode == "inference" else torch.no_grad()
    with ctx:
        got, want = layer(x), _previous(layer, x)
    assert got.dtype == want.dtype and got.shape == want.shape
    assert torch.equal(got.view(torch.int32), want.view(torch.int32))  # bits, signs of zero too


def test_placing_equals_scatter_add_into_zeros_bit_for_bit_with_negative_zeros():
    layer = _layer()
    torch.manual_seed(1)
    perm = torch.randperm(50)
    y = torch.randn(50, layer.out_features)
    y[::7] = -0.0  # 0 + (-0.0) is +0.0: a plain gather would keep the minus sign
    y[3, 5] = float("nan")
    want = torch.zeros(50, layer.out_features).index_add(0, perm, y)
    got = layer._place(torch.zeros(50, 24), perm, y, one_each=True)
    assert torch.equal(got.view(torch.int32), want.view(torch.int32))
    assert not torch.signbit(got[perm[0]]).any()  # row 0 of y was -0.0 everywhere
    dup = torch.tensor([0, 0, 1])  # not a permutation: the scatter-add path sums
    summed = layer._place(torch.zeros(3, 24), dup, y[:3], one_each=False)
    assert torch.equal(summed[0], y[0] + y[1]) and torch.equal(summed[2], torch.zeros(24))


def test_idle_expert_costs_nothing_without_a_graph_and_joins_it_in_training(monkeypatch):
    layer = _layer()
    with torch.no_grad():  # every token to expert 0: experts 1-3 idle
        layer.gate.weight.zero_()
        layer.gate.weight[0] = 1.0
    x = torch.rand(10, 24) + 0.1
    calls = []
    original = MoEMlp._touch

    def counting(self: MoEMlp, e: int, rows: int) -> torch.Tensor:
        calls.append(e)
        return original(self, e, rows)

    monkeypatch.setattr(MoEMlp, "_touch", counting)
    with torch.inference_mode():
        fast = layer(x)
    assert calls == []  # no parameter sums for the idle experts
    layer.train()
    out = layer(x)  # grad enabled: the idle experts join the graph through _touch
    assert sorted(set(calls)) == [1, 2, 3]
    out.sum().backward()
    assert all(
        p.grad is not None and not p.grad.any()
        for e in (1, 2, 3)
        for p in layer.experts[e].parameters()
    )
    layer.eval()
    with torch.no_grad():
        assert torch.equal(layer(x), fast)


def test_no_tokens_gives_an_empty_output():
    layer = _layer()
    with torch.inference_mode():
        out = layer(torch.zeros(0, 24))
    assert out.shape == (0, 24)

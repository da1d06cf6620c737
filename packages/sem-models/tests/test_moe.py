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
    layer.eval()  # (training also evaluates each token's runner-up expert, without gradient)
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
    layer = _moe(d=8, k=4, z_loss_weight=0.1, balance_loss="paper")
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


def test_switch_aux_loss_with_top2_is_k_times_sum_of_fraction_times_probability():
    """Switch loss ``K * sum_k f_k P_k`` with ``f_k`` the share of the T*top_k assignments that
    go to expert k (so uniform routing gives 1 for any top-k), written out independently."""
    layer = _moe(d=8, k=4, top_k=2, balance_loss="switch")
    x = torch.randn(64, 8, generator=torch.Generator().manual_seed(3))
    layer(x)
    probs = torch.softmax(x @ layer.gate.weight.T, -1)
    chosen = probs.topk(2, dim=-1).indices
    frac = torch.stack([(chosen == e).sum() for e in range(4)]).float() / chosen.numel()
    expect = 4 * (frac * probs.mean(0)).sum()
    torch.testing.assert_close(layer.aux_loss, expect)
    torch.testing.assert_close(layer.aux_loss, balance_loss(probs, chosen, "switch"))
    torch.testing.assert_close(layer.stats["token_fraction"], frac)


def test_straight_through_weight_is_one_yet_trains_the_router():
    torch.manual_seed(0)
    dense = Mlp(8, 16)
    layer = MoEMlp.from_dense(
        dense, num_experts=4, noise_std=0.0, gate_weighting="straight_through"
    )
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


def _prefer(layer: MoEMlp, first: list[int], second: list[int], d: int) -> torch.Tensor:
    """Tokens whose first and second choices are the given experts (logits 10 and 5)."""
    with torch.no_grad():
        layer.gate.weight.zero_()
        layer.gate.weight[:, : layer.num_experts] = 10 * torch.eye(layer.num_experts)
    x = torch.zeros(len(first), d)
    x[torch.arange(len(first)), torch.tensor(first)] = 1.0
    x[torch.arange(len(first)), torch.tensor(second)] = 0.5
    return x


def test_capacity_first_choices_take_priority_over_second_choices():
    layer = _moe(d=8, k=4, top_k=2, capacity_factor=1.0)
    # Expert 0 is the second choice of tokens 0 and 1 and the first choice of tokens 2 and 3;
    # capacity = ceil(1.0 * 4 tokens * 2 / 4 experts) = 2 slots per expert.
    x = _prefer(layer, first=[1, 1, 0, 0], second=[0, 0, 2, 3], d=8)
    assert layer.capacity(4) == 2
    y = layer(x)
    p = torch.softmax(x @ layer.gate.weight.T, -1)
    top_p = p.topk(2).values
    w = top_p / top_p.sum(-1, keepdim=True)
    e = [layer.experts[i] for i in range(4)]
    # Tokens 0 and 1: first choice (expert 1) kept, second choice (expert 0) dropped (weight 0).
    for t in (0, 1):
        torch.testing.assert_close(y[t], w[t, 0] * e[1](x[t : t + 1])[0])
    # Tokens 2 and 3: first choice expert 0 kept although the second choices came first in
    # token order, and their second choices (experts 2 and 3, uncontested) kept too.
    for t, second in ((2, 2), (3, 3)):
        expect = w[t, 0] * e[0](x[t : t + 1])[0] + w[t, 1] * e[second](x[t : t + 1])[0]
        torch.testing.assert_close(y[t], expect)
    assert layer.stats["dropped_fraction"].item() == pytest.approx(2 / 8)


def _host_reads(layer: MoEMlp, x: torch.Tensor) -> list[str]:
    from torch.overrides import TorchFunctionMode

    reads = {"tolist", "item", "__bool__", "__int__", "__float__", "__index__", "nonzero", "cpu"}
    seen: list[str] = []

    class Record(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            name = getattr(func, "__name__", "")
            if name in reads:
                seen.append(name)
            return func(*args, **(kwargs or {}))

    with Record():
        layer(x).sum().backward()
    return seen


def test_capacity_forward_reads_nothing_back_from_the_device():
    """With a capacity the dispatch has static shapes: no tensor is read back to the host
    (no ``.tolist()``, ``.item()``, ``bool()``, ``nonzero``), so a GPU never waits on the CPU."""
    for gate_weighting in ("straight_through", "runner_up"):
        layer = _moe(d=8, k=4, top_k=2, capacity_factor=1.25, gate_weighting=gate_weighting)
        assert _host_reads(layer, torch.randn(3, 10, 8)) == []
    # The recorder does see a host read where one exists: dropless dispatch sizes its groups.
    assert "tolist" in _host_reads(_moe(d=8, k=4), torch.randn(3, 10, 8))


@pytest.mark.parametrize("capacity_factor", [None, 1.0])
def test_every_expert_is_in_the_graph_even_when_routing_collapses(capacity_factor):
    """DDP without find_unused_parameters needs a gradient (possibly 0) for every parameter."""
    layer = _moe(d=8, k=4, capacity_factor=capacity_factor)
    x = _force_routing(layer, torch.tensor([0, 0, 0, 0]), 8)
    layer(x).sum().backward()
    assert all(p.grad is not None for p in layer.parameters())
    assert layer.experts[3].fc1.weight.grad.abs().sum() == 0


def test_runner_up_gradient_compares_the_chosen_expert_with_the_next():
    layer = _moe(d=8, hidden=16, k=4, gate_weighting="runner_up").double()
    x = torch.randn(12, 8, dtype=torch.float64)
    target = torch.randn(12, 8, dtype=torch.float64)
    y = layer(x)
    # Value: the chosen expert's output, weight exactly 1 (top-1 renormalised).
    p = torch.softmax(x.float() @ layer.gate.weight.float().T, -1).double()
    top_p, top_i = p.topk(2)
    outs = torch.stack([e(x) for e in layer.experts], 1)  # (T, K, D)
    e1 = outs[torch.arange(12), top_i[:, 0]]
    e2 = outs[torch.arange(12), top_i[:, 1]]
    torch.testing.assert_close(y, e1)
    # Gradient: that of the softmax mixture of the chosen expert and the runner-up, so the
    # logit of the chosen expert moves by q1 q2 <dL/dy, E1 - E2> (the shared part cancels).
    g = 2 * (y - target)
    (y - target).pow(2).sum().backward()
    q = top_p / top_p.sum(-1, keepdim=True)
    dlogit = torch.zeros(12, 4, dtype=torch.float64)
    s = q[:, 0] * q[:, 1] * ((g * (e1 - e2)).sum(-1))
    dlogit[torch.arange(12), top_i[:, 0]] = s
    dlogit[torch.arange(12), top_i[:, 1]] = -s
    expect = dlogit.T @ x  # d logits / d G = x
    torch.testing.assert_close(layer.gate.weight.grad, expect, rtol=1e-4, atol=1e-6)
    # Evaluation: the runner-up is not computed and the output is unchanged.
    layer.eval()
    with torch.no_grad():
        torch.testing.assert_close(layer(x), e1)


def test_calibrated_routers_split_tokens_that_share_a_common_component():
    """Tokens with a large shared component: a random router sends them all to one expert,
    the calibrated one spreads them about evenly and sends similar tokens together."""
    from sem_models import calibrate_routers

    torch.manual_seed(0)
    d, k = 32, 4
    layer = MoEMlp(d, 64, num_experts=k)
    common = 4.0 * torch.randn(d)
    x = common + torch.randn(2000, d)
    layer(x)
    assert layer.stats["token_fraction"].min() < 0.01  # experts starved before calibration
    calibrate_routers(layer, x)
    layer(x)
    frac = layer.stats["token_fraction"]
    assert frac.min() > 0.1, frac
    # Content-dependent: a token and a slightly perturbed copy mostly go to the same expert.
    a = layer.route(x)[0].argmax(-1)
    b = layer.route(x + 0.05 * torch.randn_like(x))[0].argmax(-1)
    assert (a == b).float().mean() > 0.9


def test_router_weights_follow_the_tokens_device_and_not_the_draw():
    """Calibration on a GPU: the routers are computed beside the tokens (here the meta device,
    which refuses to mix with CPU tensors as CUDA does), from CPU draws: the same seed gives
    the same routers on every device."""
    from sem_models.upcycle import router_weights

    h = torch.randn(500, 16)
    w = router_weights(h.to("meta"), 4)
    assert w.device.type == "meta" and w.shape == (4, 16) and w.dtype == torch.float64
    torch.manual_seed(3)
    a = router_weights(h, 4)
    torch.manual_seed(3)
    b = router_weights(h.float(), 4)
    torch.testing.assert_close(a, b)
    logits = h.double() @ a.T
    torch.testing.assert_close(logits.std(0), torch.ones(4, dtype=torch.float64))


def test_routing_stats_as_device_tensors_equal_the_floats():
    """tensors=True leaves every statistic on the device (no host read in a training step);
    the floats are the same values, read in one transfer."""
    from sem_models import routing_stats

    torch.manual_seed(1)
    model = torch.nn.Sequential(
        MoEMlp(16, 32, num_experts=4), MoEMlp(16, 32, num_experts=4, top_k=2)
    )
    model(torch.randn(50, 16))
    floats = routing_stats(model, per_expert=True)
    held = routing_stats(model, per_expert=True, tensors=True)
    assert list(held) == list(floats) and len(floats) == 2 * (6 + 8) + 6
    assert all(isinstance(v, torch.Tensor) and v.ndim == 0 for v in held.values())
    assert all(isinstance(v, float) for v in floats.values())
    assert {k: float(v) for k, v in held.items()} == floats
    frac = model[1].stats["token_fraction"]
    assert floats["1/max_token_fraction"] == float(frac.max())
    assert floats["mean/max_token_fraction"] == pytest.approx(
        (float(model[0].stats["token_fraction"].max()) + float(frac.max())) / 2
    )


@pytest.mark.parametrize("z_loss_weight", [0.0, 0.1])
def test_balance_totals_over_batches_equal_the_aux_loss_of_the_whole_set(z_loss_weight):
    """A batch's balance term is a statistic of the batch: the totals of three uneven batches
    (and a simulated second rank's, added by ``reduce``) give the aux loss of one forward over
    every token, whatever the batching; an empty rank contributes zeros."""
    from sem_models import BalanceTotals

    layer = _moe(d=8, k=4, z_loss_weight=z_loss_weight, capacity_factor=1.0)
    x = torch.randn(40, 8)
    with torch.no_grad():
        layer(x)
        whole = float(layer.aux_loss)
        mine, theirs = BalanceTotals(layer), BalanceTotals(layer)
        per_batch = []
        for part in (x[:7], x[7:20]):
            layer(part)
            mine.add()
            per_batch.append(float(layer.aux_loss))
        layer(x[20:])
        theirs.add()
        per_batch.append(float(layer.aux_loss))
        other = theirs.total.clone()
        got = mine.loss(lambda t: t.add_(other))
    assert got == pytest.approx(whole, rel=1e-6)
    assert abs(sum(per_batch) / 3 - whole) > 1e-3 * whole  # what a per-batch mean would give
    assert BalanceTotals(layer).loss() == 0.0  # nothing seen: no term
    assert BalanceTotals(torch.nn.Linear(2, 2)).loss() == 0.0  # a dense model has none


def test_an_inference_pass_leaves_the_training_balance_loss_in_place():
    """A preview under inference_mode inside a training loop records nothing: the training
    forward's aux loss (with its graph), stats and sums stay those of the training step."""
    import sem_models as sm
    from sem_models.testing import MICRO_MAE

    torch.manual_seed(0)
    model = sm.upcycle(sm.build_mae("tiny", in_chans=1, **MICRO_MAE), num_experts=4, every_n=1)
    model.train()
    model(torch.rand(2, 1, 32, 32))
    layers = [m for _, m in sm.moe_layers(model)]
    before = [(m.aux_loss, m.stats, m.sums) for m in layers]
    aux = sm.collect_aux_loss(model)
    with torch.inference_mode():
        model(torch.rand(3, 1, 32, 32))
    assert all(
        m.aux_loss is a and m.stats is st and m.sums is su
        for m, (a, st, su) in zip(layers, before, strict=True)
    )
    after = sm.collect_aux_loss(model)
    assert after.grad_fn is not None and torch.equal(after, aux)
    after.backward()  # the training step's balance loss still trains the routers
    assert all(m.gate.weight.grad is not None for m in layers)


def test_a_no_grad_forward_records_its_routing_for_validation():
    """Validation runs under no_grad and reads the balance sums and routing stats."""
    layer = _moe().eval()
    with torch.no_grad():
        layer(torch.randn(7, 16))
    assert layer.sums["tokens"].item() == 7 and layer.aux_loss is not None and layer.stats


def test_a_logit_spread_that_is_not_a_finite_number_is_refused():
    from sem_models import calibrate_routers

    torch.manual_seed(0)
    layer = MoEMlp(8, 16, num_experts=2)
    before = layer.gate.weight.clone()
    for bad in (float("nan"), float("inf"), 0.0):  # NaN and inf gave every router NaN rows
        with pytest.raises(ValueError, match=rf"logit_std={bad} must be finite and > 0"):
            calibrate_routers(layer, torch.randn(20, 8), logit_std=bad)
    assert torch.equal(layer.gate.weight, before)

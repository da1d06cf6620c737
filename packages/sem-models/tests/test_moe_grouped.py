"""Dropless MoE by grouped GEMM: equal to the per-expert loop, and no host read of the routing."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from sem_models import MoEMlp, load_model, moe_layers
from sem_models.pretrained import shipped_model_dir

HOST_READS = ("tolist", "item", "cpu", "numpy", "nonzero", "__bool__", "__int__", "__index__",
              "__float__")  # fmt: skip


def _pair(top_k: int, gate_weighting: str = "runner_up", d: int = 16, hidden: int = 32, k: int = 4):
    """The same layer twice: grouped GEMM and per-expert loop dispatch."""
    torch.manual_seed(0)
    grouped = MoEMlp(
        d, hidden, num_experts=k, top_k=top_k, gate_weighting=gate_weighting,
        expert_dispatch="grouped",
    )  # fmt: skip
    with torch.no_grad():  # a router that spreads random tokens over the experts
        grouped.gate.weight.normal_(std=1.0 / math.sqrt(d))
    loop = copy.deepcopy(grouped)
    loop.expert_dispatch = "loop"
    return grouped, loop


def _tokens_avoiding(layer: MoEMlp, shape: tuple[int, ...], idle: int) -> torch.Tensor:
    """Random tokens with feature 0 = 1 and a gate that gives expert ``idle`` logit -100 on it."""
    x = torch.randn(*shape)
    x[..., 0] = 1.0
    with torch.no_grad():
        layer.gate.weight[idle, 0] = -100.0
    return x


def _naive(layer: MoEMlp, x: torch.Tensor) -> torch.Tensor:
    """Per-token reference: each token through its top-k experts, renormalised weights."""
    out = []
    for h in x.reshape(-1, x.shape[-1]):
        top_p, top_i = torch.softmax(h.float() @ layer.gate.weight.float().T, -1).topk(layer.top_k)
        w = top_p / top_p.sum()
        out.append(sum(w[j] * layer.experts[int(top_i[j])](h[None])[0] for j in range(len(w))))
    return torch.stack(out).reshape(*x.shape[:-1], -1)


@pytest.mark.parametrize("top_k", [1, 2])
@pytest.mark.parametrize("gate_weighting", ["runner_up", "raw"])
@pytest.mark.parametrize("shape", [(3, 13), (1,)])  # 39 tokens, and a single one
def test_grouped_equals_loop_outputs_and_every_gradient(top_k, gate_weighting, shape):
    grouped, loop = _pair(top_k, gate_weighting)
    x = _tokens_avoiding(grouped, (*shape, 16), idle=3)
    loop.gate.load_state_dict(grouped.gate.state_dict())
    assert grouped.uses_grouped_mm(x) and not loop.uses_grouped_mm(x)
    target = torch.randn(*shape, 16)
    y_g, y_l = grouped(x), loop(x)
    torch.testing.assert_close(y_g, y_l, rtol=1e-5, atol=1e-6)
    assert grouped.stats["token_fraction"][3] == 0  # expert 3 is idle
    (y_g - target).pow(2).sum().backward()
    (y_l - target).pow(2).sum().backward()
    for (name, p_g), p_l in zip(grouped.named_parameters(), loop.parameters(), strict=True):
        assert p_g.grad is not None, name
        torch.testing.assert_close(p_g.grad, p_l.grad, rtol=1e-5, atol=1e-6, msg=name)
    # The idle expert joins the graph with an exact-zero gradient (DDP sees every parameter).
    for p in grouped.experts[3].parameters():
        assert p.grad is not None and torch.count_nonzero(p.grad) == 0
    for e in torch.nonzero(grouped.stats["token_fraction"]).flatten().tolist():
        assert grouped.experts[e].fc1.weight.grad.abs().sum() > 0  # experts that were used


@pytest.mark.parametrize("top_k", [1, 2])
def test_grouped_equals_the_per_token_reference(top_k):
    grouped, _ = _pair(top_k, d=16, hidden=48, k=5)
    grouped.eval()
    x = torch.randn(2, 17, 16)
    torch.testing.assert_close(grouped(x), _naive(grouped, x), rtol=1e-5, atol=1e-6)


def test_grouped_runs_under_bf16_autocast_like_the_loop():
    grouped, loop = _pair(2, d=16, hidden=32)
    x = torch.randn(4, 9, 16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert grouped.uses_grouped_mm(x)
        y_g, y_l = grouped(x), loop(x)
    assert y_g.dtype == y_l.dtype
    y_g.float().pow(2).sum().backward()
    y_l.float().pow(2).sum().backward()
    # bf16 has 8 significant bits: agreement to a few bf16 steps, and to the fp32 result.
    torch.testing.assert_close(y_g.float(), y_l.float(), rtol=3e-2, atol=3e-2)
    with torch.no_grad():
        torch.testing.assert_close(y_g.float(), loop(x), rtol=5e-2, atol=5e-2)
    for p_g, p_l in zip(grouped.parameters(), loop.parameters(), strict=True):
        assert p_g.grad is not None and torch.isfinite(p_g.grad).all()
        scale = p_l.grad.abs().max().clamp_min(1e-3)
        assert (p_g.grad - p_l.grad).abs().max() <= 0.05 * scale
    # bf16 needs widths that are multiples of 8 values (16 bytes): 36 is not, so it falls back.
    g36, l36 = _pair(1, d=16, hidden=36)
    assert g36.uses_grouped_mm(x)  # fp32: 36 values = 144 bytes
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not g36.uses_grouped_mm(x)
        torch.testing.assert_close(g36(x), l36(x), rtol=0, atol=0)


def test_grouped_forward_and_backward_never_read_the_routing_on_the_host(monkeypatch):
    """``.tolist()``, ``.item()``, ``.cpu()``, ``bool()``, ``int()``... raise during the step."""

    def forbidden(name):
        def read(*args, **kwargs):
            raise RuntimeError(f"host read: Tensor.{name}")

        return read

    grouped, loop = _pair(2, "runner_up")  # training mode: also the runner-up dispatch
    x = torch.randn(3, 11, 16)
    with monkeypatch.context() as patch:
        for name in HOST_READS:
            patch.setattr(torch.Tensor, name, forbidden(name))
        grouped(x).sum().backward()
        with pytest.raises(RuntimeError, match=r"host read: Tensor\.tolist"):
            loop(x)  # the patch bites: the loop reads the group sizes
    assert all(p.grad is not None for p in grouped.parameters())


def test_when_the_grouped_path_is_taken():
    x = torch.randn(5, 16)
    grouped, _ = _pair(1)
    auto = MoEMlp(16, 32, num_experts=4)
    assert auto.expert_dispatch == "auto" and grouped.uses_grouped_mm(x)
    assert not auto.uses_grouped_mm(x)  # CPU: the loop (faster there; no sync to remove)
    assert not grouped.double().uses_grouped_mm(x.double())  # grouped_mm has no float64
    assert not _pair(1, d=6, hidden=32)[0].uses_grouped_mm(torch.randn(5, 6))  # 24-byte rows
    normed = MoEMlp(16, 32, num_experts=4, norm_layer=torch.nn.LayerNorm, expert_dispatch="grouped")
    assert not normed.uses_grouped_mm(x)  # per-expert hidden norm: the loop
    assert normed(x).shape == (5, 16)
    with pytest.raises(ValueError, match="expert_dispatch"):
        MoEMlp(16, 32, expert_dispatch="fast")


def test_auto_takes_the_grouped_path_only_where_torch_keeps_offsets_on_the_gpu(monkeypatch):
    """auto = grouped for bf16 on CUDA compute capability 9.x/10.x, else the loop (where torch's
    grouped kernel would copy the offsets to the host itself). Decided from metadata only, so
    a stand-in with a CUDA device checks the rule on a machine without a GPU."""

    class OnCuda:
        device = torch.device("cuda")

    layer = MoEMlp(16, 32, num_experts=4)
    for capability, dtype, hip, expected in [
        ((9, 0), torch.bfloat16, None, True),
        ((10, 0), torch.bfloat16, None, True),
        ((8, 0), torch.bfloat16, None, False),  # pre-Hopper: fallback syncs
        ((12, 0), torch.bfloat16, None, False),
        ((9, 0), torch.float32, None, False),  # fp32: fallback syncs
        ((9, 4), torch.bfloat16, "6.4", False),  # ROCm
    ]:
        monkeypatch.setattr(
            torch.cuda, "get_device_capability", lambda device=None, c=capability: c
        )
        monkeypatch.setattr(torch.version, "hip", hip)
        layer.to(dtype)
        assert layer.uses_grouped_mm(OnCuda()) is expected, (capability, dtype, hip)


@pytest.mark.parametrize("name", ["sem-foundation", "sem-foundation-zero-shot"])
def test_shipped_model_gives_the_same_output_with_either_dispatch(name):
    model = load_model(shipped_model_dir(name)).eval()
    layers = [m for _, m in moe_layers(model)]
    assert layers and all(m.capacity_factor is None for m in layers)  # dropless MoE
    g = torch.Generator().manual_seed(0)
    if name == "sem-foundation":
        x = torch.rand(1, 1 + len(model.guide_balances), 128, 160, generator=g)
        run = lambda: model(x)  # noqa: E731
    else:
        x = torch.rand(1, 1, 128, 128, generator=g)
        noise = torch.rand(1, 64, generator=g)
        run = lambda: model(x, noise=noise)[1]  # noqa: E731  (the prediction)
    outputs = {}
    for dispatch in ("loop", "grouped"):
        for m in layers:
            m.expert_dispatch = dispatch
        with torch.no_grad():
            outputs[dispatch] = run()
        h = torch.zeros(4, layers[0].experts[0].fc1.in_features)
        assert layers[0].uses_grouped_mm(h) == (dispatch == "grouped")
    torch.testing.assert_close(outputs["grouped"], outputs["loop"], rtol=1e-5, atol=1e-5)

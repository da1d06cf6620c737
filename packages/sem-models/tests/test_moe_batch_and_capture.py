"""MoE inference that does not depend on the batch, and graphs (torch.compile, torch.jit.trace)
that route every input by its own scores."""

from __future__ import annotations

import numpy as np
import pytest
import sem_models as sm
import torch
from sem_models import MoEMlp
from sem_models.testing import MICRO_MAE


def _layer(capacity_factor: float | None = None, top_k: int = 1) -> MoEMlp:
    torch.manual_seed(0)
    layer = MoEMlp(16, 32, num_experts=4, top_k=top_k, capacity_factor=capacity_factor)
    with torch.no_grad():  # a router that spreads random tokens over the experts
        layer.gate.weight.normal_(std=1.0)
    return layer


def _per_token(layer: MoEMlp, h: torch.Tensor) -> torch.Tensor:
    """Every token through its top-k experts on its own (renormalised weights): no capacity."""
    rows = []
    for t in h:
        p = torch.softmax(t.float() @ layer.gate.weight.float().T, -1)
        top_p, top_i = p.topk(layer.top_k)
        w = top_p / top_p.sum()
        rows.append(sum(w[j] * layer.experts[int(top_i[j])](t[None])[0] for j in range(len(w))))
    return torch.stack(rows)


@pytest.mark.parametrize("top_k", [1, 2])
def test_in_eval_mode_a_capacity_layer_drops_nothing(top_k):
    """A capacity counts the tokens of one forward, so what it drops depends on the rest of the
    batch; in eval mode every token gets its experts, as computed for it alone."""
    layer = _layer(capacity_factor=0.5, top_k=top_k)
    h = torch.randn(40, 16)
    with torch.no_grad():
        layer.train()
        trained = layer(h)  # cf 0.5: at most half of the assignments fit
        assert layer.stats["dropped_fraction"].item() >= 0.5
        layer.eval()
        out = layer(h)
        assert layer.stats["dropped_fraction"].item() == 0.0
        torch.testing.assert_close(out, _per_token(layer, h), rtol=1e-5, atol=1e-6)
    assert not torch.allclose(trained, out)  # training still drops


def test_eval_outputs_of_a_capacity_model_do_not_depend_on_the_batch():
    torch.manual_seed(0)
    mae = sm.build_mae("tiny", in_chans=1, **MICRO_MAE)
    sm.upcycle(mae, num_experts=4, top_k=2, every_n=1, placement="both", capacity_factor=1.0)
    for _, layer in sm.moe_layers(mae):  # routers that do not split tokens evenly
        layer.gate.weight.data.normal_(std=1.0)
    mae.eval()
    x, noise = torch.rand(5, 1, 32, 32), torch.rand(5, 16)
    model = sm.RestorationModel(mae).eval()
    with torch.no_grad():
        batch = mae(x, noise=noise)[1]
        alone = torch.cat([mae(x[i : i + 1], noise=noise[i : i + 1])[1] for i in range(5)])
        torch.testing.assert_close(batch, alone, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(
            model(x), torch.cat([model(x[i : i + 1]) for i in range(5)]), rtol=1e-5, atol=1e-5
        )
    # what sliding_window's docstring promises: the result does not depend on batch_size
    img = np.random.default_rng(0).uniform(0, 1, (70, 60)).astype(np.float32)
    one = sm.sliding_window(model, img, window=32, overlap=8, batch_size=1)
    many = sm.sliding_window(model, img, window=32, overlap=8, batch_size=8)
    np.testing.assert_allclose(one, many, rtol=1e-5, atol=1e-5)


# torch.jit.trace is deprecated (a FutureWarning), and the balance statistics' token count is
# traced as a constant (a TracerWarning): neither touches the layer's output, checked here.
@pytest.mark.filterwarnings("ignore:`torch.jit.trace:FutureWarning")
@pytest.mark.filterwarnings("ignore:Converting a tensor to a Python float:torch.jit.TracerWarning")
def test_a_traced_dropless_layer_routes_each_input_by_its_own_scores():
    """The loop reads the group sizes on the host; a trace would freeze the example's sizes
    and split every later input by them. Under tracing auto takes the grouped path."""
    layer = _layer().eval()
    x1, x2 = torch.randn(2, 9, 16), torch.randn(2, 9, 16)
    with torch.no_grad():
        counts = [
            torch.bincount(layer.route(x.reshape(-1, 16))[0].argmax(-1), minlength=4)
            for x in (x1, x2)
        ]
        assert not torch.equal(counts[0], counts[1])  # the two inputs group differently
        traced = torch.jit.trace(layer, x1, check_trace=False)
        torch.testing.assert_close(traced(x2), layer(x2), rtol=1e-5, atol=1e-6)
    assert layer.expert_dispatch == "auto" and not layer.uses_grouped_mm(x1)  # eager: the loop


@pytest.mark.parametrize("train", [False, True])
def test_torch_compile_captures_a_dropless_layer_in_one_graph(train):
    """``fullgraph=True`` refuses any graph break: the loop's ``counts.tolist()`` would be one."""
    torch._dynamo.reset()
    layer = _layer(top_k=2).train(train)
    compiled = torch.compile(layer, backend="aot_eager", fullgraph=True)
    h = torch.randn(3, 11, 16, requires_grad=train)
    out = compiled(h)
    torch.testing.assert_close(out, layer(h), rtol=1e-5, atol=1e-6)
    if train:
        out.sum().backward()
        assert all(p.grad is not None for p in layer.parameters())
    torch._dynamo.reset()

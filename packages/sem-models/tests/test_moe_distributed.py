"""MoE under torch.distributed (2 Gloo ranks on CPU): balance statistics of the global batch.

Two ranks with half a batch each must give the same balance loss and, after DDP's gradient
averaging, the same gradients as one process with the whole batch; every expert is in the
graph, so DDP runs with ``find_unused_parameters=False`` even when an expert gets no token
(per-expert loop, capacity slots, and grouped GEMM dispatch alike).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from sem_models import MoEMlp, global_aux_loss
from sem_models.testing import run_torchrun
from torch import nn


class _Wrap(nn.Module):
    """A model holding one MoE layer (``global_aux_loss`` looks for MoE sub-modules)."""

    def __init__(self, kind: str, capacity_factor: float | None, dispatch: str = "auto") -> None:
        super().__init__()
        torch.manual_seed(0)
        self.moe = MoEMlp(
            8, 16, num_experts=4, balance_loss=kind, z_loss_weight=0.1,
            capacity_factor=capacity_factor, expert_dispatch=dispatch,
        )  # fmt: skip
        with torch.no_grad():  # input feature 0 is 3.0: expert 3 (logit -15 + ...) gets none
            self.moe.gate.weight[:, 0] = 0.0
            self.moe.gate.weight[3, 0] = -5.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.moe(x)


def _step(model: nn.Module, x: torch.Tensor, target: torch.Tensor):
    y = model(x)
    aux = global_aux_loss(model.module if hasattr(model, "module") else model)
    loss = (y - target).pow(2).mean() + 0.5 * aux
    loss.backward()
    return float(aux.detach())


def _data():
    g = torch.Generator().manual_seed(1)
    x, t = torch.randn(8, 6, 8, generator=g), torch.randn(8, 6, 8, generator=g)
    x[..., 0] = 3.0
    return x, t


CONFIGS = [("switch", None, "loop"), ("paper", 2.0, "auto"), ("switch", None, "grouped")]


def _name(kind: str, cf: float | None, dispatch: str) -> str:
    return f"{kind}-{cf}-{dispatch}"


def worker_main(configs: list[tuple[str, float | None, str]], out: str) -> None:
    """Body of each torchrun rank: half the batch, DDP without find_unused_parameters, for
    every configuration in turn (one launch: each rank's start, importing torch, dominates)."""
    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    try:
        for kind, cf, dispatch in configs:
            model = nn.parallel.DistributedDataParallel(
                _Wrap(kind, cf, dispatch), find_unused_parameters=False
            )
            x, t = _data()
            half = slice(4 * rank, 4 * rank + 4)
            aux = _step(model, x[half], t[half])
            result = {
                "aux": torch.tensor(aux),
                "fraction": model.module.moe.stats["token_fraction"].clone(),
                **{n: p.grad.clone() for n, p in model.module.named_parameters()},
            }
            folder = Path(out) / _name(kind, cf, dispatch)
            folder.mkdir(parents=True, exist_ok=True)
            torch.save(result, folder / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def ranks_out(tmp_path_factory) -> Path:
    """The two ranks' results for every configuration, from one torchrun launch."""
    out = tmp_path_factory.mktemp("moe_ddp")
    proc = run_torchrun(__file__, "worker_main", CONFIGS, str(out), workdir=out, timeout_s=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


@pytest.mark.parametrize("kind,cf,dispatch", CONFIGS)
def test_two_ranks_with_half_batches_equal_one_process_with_the_whole_batch(
    kind, cf, dispatch, ranks_out
):
    single = _Wrap(kind, cf, dispatch)
    x, t = _data()
    aux = _step(single, x, t)
    frac = single.moe.stats["token_fraction"]
    assert frac[3] == 0  # an expert without tokens: DDP must still see its parameters
    assert single.moe.uses_grouped_mm(x) == (dispatch == "grouped")
    name = _name(kind, cf, dispatch)
    for rank in (0, 1):
        r = torch.load(ranks_out / name / f"rank{rank}.pt", weights_only=True)
        assert float(r["aux"]) == pytest.approx(aux, rel=1e-6), f"{name}, rank {rank}"
        torch.testing.assert_close(r["fraction"], frac, msg=lambda m: f"{name}: {m}")
        for n, p in single.named_parameters():
            torch.testing.assert_close(
                r[n], p.grad, rtol=1e-5, atol=1e-7, msg=lambda m, n=n: f"{name}, {n}: {m}"
            )

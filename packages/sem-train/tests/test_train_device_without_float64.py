"""Training on a device without float64 (Apple's ``mps``, which ``run.device`` accepts).

There a float64 tensor can be neither made nor moved. The CPU stands in for such a device
(:func:`sem_models.testing.cpu_without_float64`): every torch operation returning float64
fails in the block. The training step, the values read back per step, the batch's move to the
device and validation run there, and give what the float64 path gives.
"""

from __future__ import annotations

import contextlib
import types

import pytest
import sem_models as sm
import torch
from sem_models.testing import MICRO_MAE, cpu_without_float64
from sem_physics import batched
from sem_train.config import LossConfig, RunConfig
from sem_train.distributed import DistContext
from sem_train.engine import _host_values, _to_device, validate
from sem_train.finetune import RestorationTask
from sem_train.stages.common import MAELossWeights, MAETask

CPU = torch.device("cpu")


def _moe_task() -> MAETask:
    torch.manual_seed(0)
    mae = sm.build_mae("tiny", in_chans=1, moe={"num_experts": 4}, **MICRO_MAE)
    return MAETask(mae, mask_ratio=0.5, weights=MAELossWeights(lb=0.01))


def _items(n: int) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(5)
    return [
        {
            "image": torch.rand(1, 32, 32, generator=g),
            "seed": torch.tensor(10 + i, dtype=torch.int64),
            "index": torch.tensor(i, dtype=torch.int64),
        }
        for i in range(n)
    ]


class _Images(torch.utils.data.Dataset):
    """Items addressed as the engine's samplers address them, ``(index, seed)``."""

    def __init__(self, n: int) -> None:
        self.items = _items(n)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, key: tuple[int, int]) -> dict[str, torch.Tensor]:
        return self.items[key[0]]


def _batch(items: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    return {k: torch.stack([it[k] for it in items]) for k in items[0]}


def test_a_training_step_and_its_logged_values_need_no_float64():
    """An MoE pretraining step (masks, balance loss, routing statistics), the values a step
    reads back (:func:`_host_values`) and the per-step sum over ranks."""
    task, batch = _moe_task(), _batch(_items(2))
    ctx = DistContext()

    def step() -> tuple[dict[str, float], list[float]]:
        loss, parts = task.training_loss(task.model, batch)
        loss.backward()
        read = ctx.sum_over_ranks([loss.detach(), 3.0, torch.tensor(0.0)], CPU)
        return _host_values({"loss": loss.detach(), **parts}), read

    wide, wide_read = step()
    with cpu_without_float64(batched):
        narrow, narrow_read = step()
    assert "max_token_fraction" in narrow and narrow.keys() == wide.keys()
    assert narrow == pytest.approx(wide, rel=1e-5, abs=1e-6)
    assert narrow_read == pytest.approx(wide_read, rel=1e-6)


def test_validation_sums_without_float64(tmp_path):
    """Loss (with the balance term of the whole set), PSNR and SSIM of a validation pass."""
    task = _moe_task()
    run = RunConfig(batch_size_per_process=2, output_dir=tmp_path, device="cpu", progress=False)
    loop = types.SimpleNamespace(
        run=run, ctx=DistContext(), device=CPU, task=task, amp=contextlib.nullcontext
    )
    val_set = _Images(5)
    wide = validate(loop, val_set)  # type: ignore[arg-type]
    with cpu_without_float64(batched):
        narrow = validate(loop, val_set)  # type: ignore[arg-type]
    assert narrow == pytest.approx(wide, rel=1e-5)


def test_float64_batch_entries_become_float32_before_they_move():
    """A pair's PSF is float64 on the host; moved to a device without float64 it is float32
    (cast on the host first), elsewhere it stays float64. Seeds stay on the host."""
    psf = torch.tensor([[3.25, 2.5, 1.1, 0.3]], dtype=torch.float64)
    batch = {"psf": psf, "input": torch.rand(1, 1, 8, 8), "seed": torch.tensor([7])}
    assert _to_device(batch, CPU)["psf"].dtype == torch.float64
    with cpu_without_float64():
        moved = _to_device({**batch, "psf": psf}, CPU)
    assert moved["psf"].dtype == torch.float32
    torch.testing.assert_close(moved["psf"], psf.float(), rtol=0, atol=0)
    assert moved["seed"] is batch["seed"] and moved["input"] is batch["input"]


def test_a_guided_fine_tuning_step_synthesises_its_pairs_without_float64():
    """Pairs synthesised in the step (settings, kernels, blur, noise) and the physics guides
    (jittered PSF, Wiener-Hunt) on the device; validation guides equal the float64 ones."""
    torch.manual_seed(0)
    mae = sm.build_mae("tiny", in_chans=1, **MICRO_MAE)
    model = sm.RestorationModel(mae, residual=True, refiner_width=4, guide_balances=(0.1, 1.0))
    task = RestorationTask(model, LossConfig())
    target = torch.rand(2, 1, 32, 32, generator=torch.Generator().manual_seed(1))
    batch = {"target": target, "seed": torch.tensor([3, 4])}
    pair = {
        "input": target.clone(),
        "psf": torch.tensor([[2.0, 1.5, 1.0, 0.2], [3.0, 3.0, 1.2, 0.0]], dtype=torch.float64),
        "seed": batch["seed"],
    }
    wide_guides = task.guides(pair, train=False)["input"]
    with cpu_without_float64(batched):
        loss, _ = task.training_loss(model, batch)
        loss.backward()
        narrow_pair = _to_device(pair, CPU)
        narrow_guides = task.guides(narrow_pair, train=False)["input"]
        task.guides(narrow_pair, train=True)  # the jittered PSF of training too
    assert torch.isfinite(loss)
    torch.testing.assert_close(narrow_guides, wide_guides, rtol=1e-4, atol=1e-4)

"""MRN baseline: multi-scale refocus network trained on synthetic defocus pairs.

Supervised: input ``y = N(a (x ⊛ h) + b)``, targets the focused patch ``x`` average-pooled to
1/4, 1/2 and full scale; loss ``sum_s mean |f_s(y) - pool_s(x)|`` (L1 at all three scales).
Adam, lr 5e-5, batch 4 by default; the best epoch by validation loss is kept (see
:mod:`.training`). The architecture is our reading of the paper (no public MRN code exists):
see :mod:`sem_baselines.nets.mrn`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field
from sem_physics import DegradationParams, degrade_torch
from torch import nn

from ..nets.mrn import SCALES, MRNConfig, MultiScaleRefocusNet
from ..restorer import register
from .base import SCALE, LearnedConfig, NetworkRestorer

__all__ = ["MRNRestorer", "MRNRestorerConfig"]


class MRNRestorerConfig(LearnedConfig):
    """MRN settings."""

    net: MRNConfig = Field(default_factory=MRNConfig)


@register("mrn", MRNRestorerConfig)
class MRNRestorer(NetworkRestorer):
    """Multi-scale refocus network (coarse-to-fine, outputs at 1/4, 1/2, 1)."""

    config: MRNRestorerConfig
    default_lr = 5e-5
    default_batch_size = 4

    def build_network(self) -> nn.Module:
        return MultiScaleRefocusNet(self.config.net)

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        return self.network(x)[-1]

    def make_batch(
        self, clean: torch.Tensor, params: list[DegradationParams], generator: torch.Generator
    ) -> dict[str, torch.Tensor]:
        y = degrade_torch(clean, params, generator)
        return {"input": y / SCALE, "target": clean / SCALE}

    def training_loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        outs = self.network(batch["input"])
        target = batch["target"]
        loss = torch.zeros((), device=target.device)
        for out, s in zip(outs, SCALES, strict=True):
            ref = F.avg_pool2d(target, s) if s > 1 else target
            loss = loss + F.l1_loss(out.float(), ref)
        return loss

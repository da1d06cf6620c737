"""The three pretraining stages (arXiv 2604.05960, Sec. 3); each starts from the previous stage's best model."""

from collections.abc import Callable
from typing import Any

from .common import MAELossWeights, MAETask
from .stage1 import build_stage1_task, run_stage1
from .stage2 import build_stage2_task, run_stage2
from .stage3 import build_stage3_task, run_stage3

__all__ = [
    "MAELossWeights",
    "MAETask",
    "build_stage1_task",
    "build_stage2_task",
    "build_stage3_task",
    "run_pretrain_stage",
    "run_stage1",
    "run_stage2",
    "run_stage3",
]


def run_pretrain_stage(stage: int, cfg, *, resume: bool = False):
    """Dispatch to Stage 1, 2 or 3."""
    runners: dict[int, Callable[..., Any]] = {1: run_stage1, 2: run_stage2, 3: run_stage3}
    if stage not in runners:
        raise ValueError(f"--stage must be 1, 2 or 3, got {stage}")
    return runners[stage](cfg, resume=resume)

"""Stage 2: MoE upcycling, gates only, distillation from the frozen Stage-1 teacher.

``L_joint = L_MAE + lambda L_KD + mu L_LB`` (eq. 10); ``L_KD`` is the masked L1 between student
and teacher reconstructions under the same mask (eq. 7); only router parameters are trained.
"""

from __future__ import annotations

import copy

from .. import modeling
from ..config import Stage2Config
from ..engine import FitResult, fit_config
from .common import MAELossWeights, MAETask, image_datasets

__all__ = ["build_stage2_task", "run_stage2"]


def build_stage2_task(cfg: Stage2Config) -> MAETask:
    """Teacher = the Stage-1 model (frozen); student = its upcycled copy with only gates trainable."""
    if cfg.init_from is None:
        raise ValueError("stage 2 needs init_from: the Stage-1 run directory")
    teacher = modeling.load_model(modeling.resolve_model_dir(cfg.init_from))
    student = modeling.upcycle(
        copy.deepcopy(teacher), cfg.moe, noise_std=cfg.noise_std, seed=cfg.run.seed
    )
    modeling.freeze_all_but_gates(student)
    weights = MAELossWeights(kd=cfg.kd_weight, lb=cfg.lb_weight)
    return MAETask(
        student,
        mask_ratio=cfg.mask_ratio,
        weights=weights,
        teacher=teacher,
    )


def run_stage2(cfg: Stage2Config, *, resume: bool = False) -> FitResult:
    """Train Stage 2 from ``cfg.init_from`` (resume restores the student's weights too)."""
    task = build_stage2_task(cfg)  # first: a missing init_from fails before the data is indexed
    train, val, _ = image_datasets(cfg.data, cfg.run.output_dir)
    return fit_config(task, train, val, cfg, resume=resume)

"""Stage 3: frequency-aware refinement, all parameters (arXiv 2604.05960, Sec. 4.3, Eq. 11-16).

``L_final = L_joint + nu L_freq`` (Eq. 16) with ``L_joint = L_MAE + lambda L_KD + mu L_LB``
(Eq. 10): the masked L1 to the frozen Stage-1 teacher (Eq. 7) stays in the objective, next to
the masked error spectrum (Eq. 12) and the ring-averaged power spectra of the masked
reconstruction and target (Eq. 13-14). The teacher is ``teacher_from``, by default the
Stage-1 run that the Stage-2 run (``init_from``) started from; the run records the teacher it
used (absolute) as its ``teacher_from``.
"""

from __future__ import annotations

from .. import modeling
from ..config import Stage3Config
from ..datasplit import prepare_split
from ..engine import FitResult, fit_config
from ..preflight import (
    check_run_start,
    stage3_teacher_dir,
    stage3_teacher_setting,
    start_model_dir,
    with_teacher,
)
from .common import MAELossWeights, image_datasets
from .stage2 import MoETask

__all__ = ["build_stage3_task", "run_stage3", "stage3_teacher_dir"]


def build_stage3_task(cfg: Stage3Config, *, teacher_setting: str | None = None) -> MoETask:
    """The Stage-2 model with every parameter unfrozen, distilled from the Stage-1 teacher
    (named ``teacher_setting`` in errors, default :func:`stage3_teacher_setting` of ``cfg``)."""
    assert cfg.init_from is not None  # Stage3Config requires it
    model = modeling.load_model(start_model_dir("stage3", cfg.init_from))
    modeling.unfreeze_all(model)
    teacher = None
    if cfg.kd_weight > 0:
        teacher = modeling.load_model(stage3_teacher_dir(cfg, teacher_setting))
    weights = MAELossWeights(
        kd=cfg.kd_weight,
        lb=cfg.lb_weight,
        fft=cfg.fft_weight,
        psd=cfg.psd_weight,
        psd_bins=cfg.psd_bins,
    )
    return MoETask(model, mask_ratio=cfg.mask_ratio, weights=weights, teacher=teacher)


def run_stage3(cfg: Stage3Config, *, resume: bool = False) -> FitResult:
    """Train Stage 3 from ``cfg.init_from``, distilled from the teacher it records."""
    setting = stage3_teacher_setting(cfg)  # errors say whether the teacher was given or derived
    cfg = with_teacher(cfg)  # the teacher found once: the one trained with is the one recorded
    check_run_start("stage3", cfg, resume)  # the folder and a resume's settings, before any load
    task = build_stage3_task(cfg, teacher_setting=setting)  # init_from fails before the data
    split = prepare_split("stage3", cfg, resume)  # a resume over other data refused
    train, val, _ = image_datasets(cfg.data, cfg.run.output_dir, split)
    return fit_config(task, train, val, cfg, resume=resume, split=split)

"""Stage 3: frequency-aware refinement, all parameters (arXiv 2604.05960, Sec. 4.3, Eq. 11-16).

``L_final = L_joint + nu L_freq`` (Eq. 16) with ``L_joint = L_MAE + lambda L_KD + mu L_LB``
(Eq. 10): the masked L1 to the frozen Stage-1 teacher (Eq. 7) stays in the objective, next to
the masked error spectrum (Eq. 12) and the ring-averaged power spectra of the masked
reconstruction and target (Eq. 13-14). The teacher is ``teacher_from``, by default the
Stage-1 run that the Stage-2 run (``init_from``) started from; the run records the teacher it
used (absolute) as its ``teacher_from``. That teacher is found by the path the Stage-2 run
recorded, so it is checked to be the model that run was upcycled from (a folder renamed and
replaced by another Stage-1 run since would otherwise be distilled from without a word).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from .. import modeling
from ..config import Stage3Config
from ..datasplit import prepare_split
from ..engine import FitResult, fit_config, unwrap
from ..preflight import (
    check_run_start,
    stage3_teacher_dir,
    stage3_teacher_setting,
    start_model_dir,
    with_teacher,
)
from ..runinfo import read_run_config
from .common import MAELossWeights, image_datasets
from .stage2 import MoETask

__all__ = ["build_stage3_task", "check_derived_teacher", "run_stage3", "stage3_teacher_dir"]


def _frozen_in_stage2_differ(student: nn.Module, teacher: nn.Module) -> tuple[list[str], int]:
    """The tensors ``student`` (a Stage-2 model) shares with ``teacher`` (same name and shape)
    that differ from it, and how many it shares: Stage 2 trains only the routers, so the model
    it was upcycled from equals it on every shared tensor (the experts are renamed copies)."""
    mine = unwrap(student).state_dict()
    theirs = unwrap(teacher).state_dict()
    shared = [k for k, t in theirs.items() if k in mine and mine[k].shape == t.shape]
    differ = [k for k in shared if not torch.equal(mine[k], theirs[k].to(mine[k].dtype))]
    return differ, len(shared)


def check_derived_teacher(cfg: Stage3Config, model: nn.Module, teacher: nn.Module) -> None:
    """Refuse a teacher found through a Stage-2 run's record (``cfg.init_from``) that is not
    the model that run was upcycled from: its Stage-1 folder was renamed or moved and another
    model now stands at the recorded path. A ValueError names both folders and what to set."""
    assert cfg.init_from is not None  # Stage3Config requires it
    record = read_run_config(Path(cfg.init_from))
    if record is None or record.get("stage") != 2:
        return  # only a Stage-2 run keeps its start model's tensors unchanged
    differ, shared = _frozen_in_stage2_differ(model, teacher)
    if differ:
        raise ValueError(
            f"teacher_from (the Stage-1 model behind {cfg.init_from})={cfg.teacher_from} is not "
            f"the model {cfg.init_from} was trained from: {len(differ)} of the {shared} tensors "
            f"Stage 2 keeps frozen differ (e.g. {differ[0]}), so that folder holds another "
            "model since; set teacher_from to the Stage-1 run it started from (moved or "
            "renamed), or kd_weight: 0"
        )


def build_stage3_task(
    cfg: Stage3Config, *, teacher_setting: str | None = None, teacher_derived: bool | None = None
) -> MoETask:
    """The Stage-2 model with every parameter unfrozen, distilled from the Stage-1 teacher
    (named ``teacher_setting`` in errors, default :func:`stage3_teacher_setting` of ``cfg``).

    A teacher derived from the Stage-2 run's record (``teacher_derived``; default: ``cfg``
    sets no ``teacher_from``) must be the model that run started from
    (:func:`check_derived_teacher`)."""
    assert cfg.init_from is not None  # Stage3Config requires it
    if teacher_derived is None:
        teacher_derived = cfg.teacher_from is None
    model = modeling.load_model(start_model_dir("stage3", cfg.init_from))
    modeling.unfreeze_all(model)
    teacher = None
    if cfg.kd_weight > 0:
        teacher = modeling.load_model(stage3_teacher_dir(cfg, teacher_setting))
        if teacher_derived:
            check_derived_teacher(with_teacher(cfg), model, teacher)
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
    derived = cfg.teacher_from is None
    cfg = with_teacher(cfg)  # the teacher found once: the one trained with is the one recorded
    check_run_start("stage3", cfg, resume)  # the folder and a resume's settings, before any load
    # init_from fails before the data
    task = build_stage3_task(cfg, teacher_setting=setting, teacher_derived=derived)
    split = prepare_split("stage3", cfg, resume)  # a resume over other data refused
    train, val, _ = image_datasets(cfg.data, cfg.run.output_dir, split)
    return fit_config(task, train, val, cfg, resume=resume, split=split)

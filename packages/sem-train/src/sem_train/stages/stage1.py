"""Stage 1: dense MAE pretraining with the masked reconstruction loss (eq. 4)."""

from __future__ import annotations

import torch

from .. import modeling
from ..config import Stage1Config
from ..datasplit import prepare_split
from ..engine import FitResult, fit_config
from ..preflight import check_run_start, start_model_dir
from .common import MAETask, image_datasets

__all__ = ["build_stage1_task", "run_stage1"]


def build_stage1_task(cfg: Stage1Config) -> MAETask:
    """A fresh MAE of ``cfg.model`` for ``cfg.data``'s channels and input size, or the
    Stage-1 model of ``cfg.init_from`` (a new run training it further)."""
    torch.manual_seed(cfg.run.seed)  # the initial weights are part of the run's seed
    if cfg.init_from is not None:
        model = modeling.load_model(start_model_dir("stage1", cfg.init_from, cfg))
    else:
        model = modeling.build_mae(
            cfg.model, channels=cfg.data.channels, image_size_px=cfg.data.image_size_px
        )
    return MAETask(model, mask_ratio=cfg.mask_ratio)


def run_stage1(cfg: Stage1Config, *, resume: bool = False) -> FitResult:
    """Train Stage 1; writes checkpoints, metrics and the best model under ``cfg.run.output_dir``."""
    check_run_start("stage1", cfg, resume)  # the folder and a resume's settings, before any load
    task = build_stage1_task(cfg)  # a missing init_from fails before the data is indexed
    split = prepare_split("stage1", cfg, resume)  # a resume over other data refused
    train, val, _ = image_datasets(cfg.data, cfg.run.output_dir, split)
    return fit_config(task, train, val, cfg, resume=resume, split=split)

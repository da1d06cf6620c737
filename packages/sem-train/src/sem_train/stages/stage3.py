"""Stage 3: frequency-aware refinement, all parameters (eq. 11-16).

``L = L_MAE + mu L_LB + nu (L_FFT + eta L_PSD)`` with the masked error spectrum (eq. 12) and
the ring-averaged power spectra of the masked reconstruction and target (eq. 13-14).
"""

from __future__ import annotations

from .. import modeling
from ..config import Stage3Config
from ..engine import FitResult, fit_config
from .common import MAELossWeights, MAETask, image_datasets

__all__ = ["build_stage3_task", "run_stage3"]


def build_stage3_task(cfg: Stage3Config) -> MAETask:
    """The Stage-2 model with every parameter unfrozen."""
    if cfg.init_from is None:
        raise ValueError("stage 3 needs init_from: the Stage-2 run directory")
    model = modeling.load_model(modeling.resolve_model_dir(cfg.init_from))
    modeling.unfreeze_all(model)
    weights = MAELossWeights(
        lb=cfg.lb_weight, fft=cfg.fft_weight, psd=cfg.psd_weight, psd_bins=cfg.psd_bins
    )
    return MAETask(model, mask_ratio=cfg.mask_ratio, weights=weights)


def run_stage3(cfg: Stage3Config, *, resume: bool = False) -> FitResult:
    """Train Stage 3 from ``cfg.init_from``."""
    task = build_stage3_task(cfg)  # first: a missing init_from fails before the data is indexed
    train, val, _ = image_datasets(cfg.data, cfg.run.output_dir)
    return fit_config(task, train, val, cfg, resume=resume)

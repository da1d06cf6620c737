"""sem_train: SEM foundation-model pretraining (Stages 1-3), low-shot fine-tuning, the ``sem`` CLI.

The same code trains a tiny model on one CPU and the paper's ViT-L + MoE on many GPUs
(``torchrun``): typed configs, a deterministic resumable data order, atomic checkpoints.

Names are imported on first use (PEP 562), so ``import sem_train.cli`` and ``sem --help``
do not load torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS: dict[str, str] = {
    **dict.fromkeys(("CheckpointWriteError", "RunExistsError"), "checkpoint"),
    **dict.fromkeys(
        (
            "PRESETS",
            "AugmentConfig",
            "BaselineTrainConfig",
            "ConfigError",
            "DataConfig",
            "FinetuneConfig",
            "LossConfig",
            "ModelSpec",
            "OptimConfig",
            "RunConfig",
            "Stage1Config",
            "Stage2Config",
            "Stage3Config",
            "load_config",
            "preset",
        ),
        "config",
    ),
    **dict.fromkeys(
        (
            "DefocusPairDataset",
            "EpochBatchSampler",
            "SEMImageDataset",
            "build_index",
            "split_index",
        ),
        "data",
    ),
    **dict.fromkeys(("FitResult", "NonFiniteLossError", "Task", "TrainState", "fit"), "engine"),
    **dict.fromkeys(
        (
            "charbonnier_loss",
            "distillation_loss",
            "edge_loss",
            "fft_amplitude_loss",
            "frequency_loss",
            "psd_loss",
            "radial_psd",
            "restoration_loss",
            "tv_loss",
        ),
        "losses",
    ),
    **dict.fromkeys(("psnr", "ssim"), "metrics"),
    **dict.fromkeys(("RestoredImage", "restore"), "restoration"),
}

__all__ = [
    "PRESETS",
    "AugmentConfig",
    "BaselineTrainConfig",
    "CheckpointWriteError",
    "ConfigError",
    "DataConfig",
    "DefocusPairDataset",
    "EpochBatchSampler",
    "FinetuneConfig",
    "FitResult",
    "LossConfig",
    "ModelSpec",
    "NonFiniteLossError",
    "OptimConfig",
    "RestoredImage",
    "RunConfig",
    "RunExistsError",
    "SEMImageDataset",
    "Stage1Config",
    "Stage2Config",
    "Stage3Config",
    "Task",
    "TrainState",
    "build_index",
    "charbonnier_loss",
    "distillation_loss",
    "edge_loss",
    "fft_amplitude_loss",
    "fit",
    "frequency_loss",
    "load_config",
    "preset",
    "psd_loss",
    "psnr",
    "radial_psd",
    "restoration_loss",
    "restore",
    "split_index",
    "ssim",
    "tv_loss",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'sem_train' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])


if TYPE_CHECKING:  # static analysers see the eager imports
    from .checkpoint import CheckpointWriteError, RunExistsError
    from .config import (
        PRESETS,
        AugmentConfig,
        BaselineTrainConfig,
        ConfigError,
        DataConfig,
        FinetuneConfig,
        LossConfig,
        ModelSpec,
        OptimConfig,
        RunConfig,
        Stage1Config,
        Stage2Config,
        Stage3Config,
        load_config,
        preset,
    )
    from .data import (
        DefocusPairDataset,
        EpochBatchSampler,
        SEMImageDataset,
        build_index,
        split_index,
    )
    from .engine import FitResult, NonFiniteLossError, Task, TrainState, fit
    from .losses import (
        charbonnier_loss,
        distillation_loss,
        edge_loss,
        fft_amplitude_loss,
        frequency_loss,
        psd_loss,
        radial_psd,
        restoration_loss,
        tv_loss,
    )
    from .metrics import psnr, ssim
    from .restoration import RestoredImage, restore

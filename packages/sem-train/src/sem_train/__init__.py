"""sem_train: SEM foundation-model pretraining (Stages 1-3), low-shot fine-tuning, the ``sem`` CLI.

The same code trains a tiny model on one CPU and the paper's ViT-L + MoE on many GPUs
(``torchrun``): typed configs, a deterministic resumable data order, atomic checkpoints.

Names are imported on first use (PEP 562), so ``import sem_train.cli`` and ``sem --help``
do not load torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sem_physics.lazy import lazy_exports

__version__ = "0.1.0"

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


# Each name's submodule comes from the TYPE_CHECKING imports below (one list, read once).
__getattr__, __dir__, _EXPORTS = lazy_exports(__name__, __file__, __all__)

if TYPE_CHECKING:  # static analysers see the eager imports
    from .checkpoint import CheckpointWriteError
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
    from .runfolder import RunExistsError

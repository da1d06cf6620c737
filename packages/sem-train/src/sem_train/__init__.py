"""sem_train: SEM foundation-model pretraining (Stages 1-3), low-shot fine-tuning, the ``sem`` CLI.

The same code trains a tiny model on one CPU and the paper's ViT-L + MoE on many GPUs
(``torchrun``): typed configs, a deterministic resumable data order, atomic checkpoints.
"""

from .checkpoint import CheckpointWriteError
from .config import (
    PRESETS,
    AugmentConfig,
    BaselineTrainConfig,
    DataConfig,
    FinetuneConfig,
    LossConfig,
    ModelSpec,
    MoESpec,
    OptimConfig,
    RunConfig,
    Stage1Config,
    Stage2Config,
    Stage3Config,
    load_config,
    preset,
)
from .data import DefocusPairDataset, EpochBatchSampler, SEMImageDataset, build_index, split_index
from .engine import FitResult, NonFiniteLossError, Task, fit
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

__version__ = "0.1.0"

__all__ = [
    "PRESETS",
    "AugmentConfig",
    "BaselineTrainConfig",
    "CheckpointWriteError",
    "DataConfig",
    "DefocusPairDataset",
    "EpochBatchSampler",
    "FinetuneConfig",
    "FitResult",
    "LossConfig",
    "MoESpec",
    "ModelSpec",
    "NonFiniteLossError",
    "OptimConfig",
    "RestoredImage",
    "RunConfig",
    "SEMImageDataset",
    "Stage1Config",
    "Stage2Config",
    "Stage3Config",
    "Task",
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

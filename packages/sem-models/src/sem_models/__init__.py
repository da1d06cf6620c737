"""ViT masked autoencoder with Mixture-of-Experts upcycling, restoration and tiled inference.

The model of the SEM foundation-model paper (arXiv 2604.05960): a ViT-MAE (Stage 1), upcycled to
Mixture-of-Experts feed-forward layers (Stage 2-3), used as a defocus-to-focus restorer on
full-size micrographs through Hann-blended sliding windows.
"""

from .checkpoint import CheckpointError, CheckpointWriteError, load_model, save_model
from .config import PRESETS, MAEConfig, ModelConfigError, MoEConfig, mae_config
from .embeddings import extract_embeddings
from .external_weights import (
    ExternalWeightsError,
    LoadReport,
    MissingWeightsError,
    load_external_mae,
    read_state_dict,
)
from .imaging import denormalize, from_255, match_channels, normalize, to_255
from .mae import MaskedAutoencoder, build_mae
from .moe import MoEMlp, balance_loss, global_aux_loss, moe_layers, routing_stats
from .pos_embed import resize_pos_embed, sincos_2d
from .restoration import RestorationModel
from .sliding_window import (
    grid_averaging_overlap,
    hann_weights,
    model_device,
    restore_image,
    sliding_window,
)
from .training import FitResult
from .upcycle import (
    calibrate_routers,
    collect_aux_loss,
    freeze_all_but_gates,
    unfreeze_all,
    upcycle,
)

__all__ = [
    "PRESETS",
    "CheckpointError",
    "CheckpointWriteError",
    "ExternalWeightsError",
    "FitResult",
    "LoadReport",
    "MAEConfig",
    "MaskedAutoencoder",
    "MissingWeightsError",
    "MoEConfig",
    "MoEMlp",
    "ModelConfigError",
    "RestorationModel",
    "balance_loss",
    "build_mae",
    "calibrate_routers",
    "collect_aux_loss",
    "denormalize",
    "extract_embeddings",
    "freeze_all_but_gates",
    "from_255",
    "global_aux_loss",
    "grid_averaging_overlap",
    "hann_weights",
    "load_external_mae",
    "load_model",
    "mae_config",
    "match_channels",
    "model_device",
    "moe_layers",
    "normalize",
    "read_state_dict",
    "resize_pos_embed",
    "restore_image",
    "routing_stats",
    "save_model",
    "sincos_2d",
    "sliding_window",
    "to_255",
    "unfreeze_all",
    "upcycle",
]

"""ViT masked autoencoder with Mixture-of-Experts upcycling, restoration and tiled inference.

The model of the SEM foundation-model paper (arXiv 2604.05960): a ViT-MAE (Stage 1), upcycled to
Mixture-of-Experts feed-forward layers (Stage 2-3), used as a defocus-to-focus restorer on
full-size micrographs through Hann-blended sliding windows.

Names are imported on first use (PEP 562): ``sem_models.config`` (the model settings) loads
neither torch nor timm, so a command can check its configuration before seconds of imports.
"""

from __future__ import annotations

import ast
import importlib
import sys
import types
from pathlib import Path
from typing import TYPE_CHECKING, Any

__all__ = [
    "PRESETS",
    "BalanceTotals",
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
    "accumulation_dtype",
    "balance_loss",
    "build_mae",
    "calibrate_routers",
    "checked_device",
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
    "native_bf16",
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


def _exports() -> dict[str, str]:
    """``{name: submodule}`` from the ``TYPE_CHECKING`` imports below (one list, read once)."""
    tree = ast.parse(Path(__file__).read_text(encoding="utf-8"))
    block = next(
        n
        for n in tree.body
        if isinstance(n, ast.If) and getattr(n.test, "id", "") == "TYPE_CHECKING"
    )
    return {
        a.asname or a.name: stmt.module
        for stmt in block.body
        if isinstance(stmt, ast.ImportFrom) and stmt.module
        for a in stmt.names
    }


_EXPORTS = _exports()
if set(_EXPORTS) != set(__all__):
    raise ImportError(f"sem_models: __all__ and the imports differ: {set(_EXPORTS) ^ set(__all__)}")


class _Package(types.ModuleType):
    """This package's module type: importing the submodule ``sliding_window`` would rebind the
    package's attribute of that name, the exported function, to the submodule (Python binds a
    submodule to its package); that binding is skipped, the function stays what it names."""

    def __setattr__(self, name: str, value: Any) -> None:
        if not (isinstance(value, types.ModuleType) and _EXPORTS.get(name) == name):
            super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'sem_models' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))


if TYPE_CHECKING:  # static analysers see the eager imports
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
    from .moe import (
        BalanceTotals,
        MoEMlp,
        balance_loss,
        global_aux_loss,
        moe_layers,
        routing_stats,
    )
    from .pos_embed import resize_pos_embed, sincos_2d
    from .precision import accumulation_dtype, checked_device, native_bf16
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

"""Checkpoints: ``model.safetensors`` (weights) + ``config.json`` (everything to rebuild).

Works for a dense MAE, an upcycled MAE + MoE (the config carries ``moe``) and a
:class:`~sem_models.restoration.RestorationModel` (kind ``restoration``). Loading never
unpickles anything: weights come from safetensors and the config from JSON.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from .config import MAEConfig
from .mae import MaskedAutoencoder
from .restoration import RestorationModel

__all__ = ["CONFIG_NAME", "FORMAT", "WEIGHTS_NAME", "CheckpointError", "load_model", "save_model"]

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
FORMAT = "sem-models/1"


class CheckpointError(ValueError):
    """A checkpoint directory that is missing files, or whose contents do not match."""


def _describe(model: nn.Module) -> dict[str, Any]:
    if isinstance(model, RestorationModel):
        return {
            "format": FORMAT,
            "kind": "restoration",
            "freeze_encoder": model.freeze_encoder,
            "residual": model.residual,
            "mae": model.mae.config.model_dump(mode="json"),
        }
    if isinstance(model, MaskedAutoencoder):
        return {"format": FORMAT, "kind": "mae", "mae": model.config.model_dump(mode="json")}
    raise TypeError(
        f"save_model supports MaskedAutoencoder and RestorationModel; got {type(model).__name__}"
    )


def save_model(model: nn.Module, directory: str | Path) -> None:
    """Write ``directory/model.safetensors`` and ``directory/config.json`` (creates the folder)."""
    meta = _describe(model)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(directory / WEIGHTS_NAME), metadata={"format": FORMAT})
    (directory / CONFIG_NAME).write_text(json.dumps(meta, indent=2) + "\n")


def load_model(directory: str | Path, device: torch.device | str = "cpu") -> nn.Module:
    """Rebuild the model saved by :func:`save_model` (same class, config and weights)."""
    directory = Path(directory)
    cfg_path, w_path = directory / CONFIG_NAME, directory / WEIGHTS_NAME
    for path in (cfg_path, w_path):
        if not path.is_file():
            raise CheckpointError(f"{path} not found; expected a folder written by save_model()")
    try:
        meta = json.loads(cfg_path.read_text())
        cfg = MAEConfig(**meta["mae"])
    except (ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"{cfg_path}: not a valid sem-models config ({exc})") from None
    mae = MaskedAutoencoder(cfg)
    model: nn.Module
    if meta.get("kind") == "restoration":
        model = RestorationModel(
            mae,
            freeze_encoder=bool(meta.get("freeze_encoder", True)),
            residual=bool(meta.get("residual", False)),
        )
    elif meta.get("kind") == "mae":
        model = mae
    else:
        raise CheckpointError(f"{cfg_path}: unknown kind {meta.get('kind')!r} (mae, restoration)")
    state = load_file(str(w_path))
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # shape mismatches
        raise CheckpointError(f"{w_path} does not match {cfg_path}: {exc}") from None
    if missing or unexpected:
        raise CheckpointError(
            f"{w_path} does not match {cfg_path}: missing {sorted(missing)[:5]}, "
            f"unexpected {sorted(unexpected)[:5]}"
        )
    return model.to(device)

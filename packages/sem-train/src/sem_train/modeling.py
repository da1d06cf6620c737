"""The one seam between training and ``sem_models``: build, upcycle, freeze, save, load.

Building, upcycling, freezing, saving and loading models go through this module, so the
stages read as the paper does (build an MAE, upcycle it, freeze all but the gates, ...); the
MAE's masking helpers (seeded noise, pixel masks, reconstructions) are
:mod:`sem_models.masking`.

Conventions of :class:`sem_models.MaskedAutoencoder` that the training code relies on:
inputs are ``[0, 1]`` images, normalised inside the model with the ViT-MAE statistics;
``pred`` and ``model.target(imgs)`` live in that normalised patch space (per-patch
standardised as well with ``norm_pix_loss``); :func:`sem_models.masking.reconstruction`
maps ``pred`` back to ``[0, 1]`` images.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import sem_models
import torch
from sem_models import MaskedAutoencoder, MoEConfig, RestorationModel
from torch import nn

from .config import ModelSpec
from .runfolder import resolve_model_dir  # paths only: the commands check it before torch

__all__ = [
    "build_mae",
    "freeze_all_but_gates",
    "gate_parameter_names",
    "load_model",
    "moe_aux_loss",
    "resolve_model_dir",
    "restoration_model",
    "routing_summary",
    "save_model",
    "unfreeze_all",
    "upcycle",
]


def build_mae(spec: ModelSpec, *, channels: int, image_size_px: int) -> MaskedAutoencoder:
    """A fresh MAE from a sem_models preset, with the data's channels and input size."""
    overrides = {"in_chans": channels, "img_size": image_size_px, **spec.overrides}
    return sem_models.build_mae(spec.preset, **overrides)


def upcycle(model: nn.Module, moe: MoEConfig, *, seed: int = 0) -> nn.Module:
    """Dense MAE -> MAE + MoE with experts copied from each FFN (sparse upcycling).

    ``moe.noise_std`` is the relative noise on the expert copies (symmetry breaking). The
    router initialisation and that noise are drawn from torch's global generator seeded with
    ``seed``, so a run is reproducible.
    """
    torch.manual_seed(seed)
    return sem_models.upcycle(model, moe)


def freeze_all_but_gates(model: nn.Module) -> None:
    """Stage 2: only the MoE routers stay trainable."""
    sem_models.freeze_all_but_gates(model)


def unfreeze_all(model: nn.Module) -> None:
    """Stage 3: every parameter trainable."""
    sem_models.unfreeze_all(model)


def gate_parameter_names(model: nn.Module) -> list[str]:
    """Qualified names of the MoE router parameters (what Stage 2 trains)."""
    return [
        f"{layer}.gate.{p}" if layer else f"gate.{p}"
        for layer, m in sem_models.moe_layers(model)
        for p, _ in m.gate.named_parameters()
    ]


def moe_aux_loss(model: nn.Module) -> torch.Tensor | None:
    """Sum of the MoE layers' load-balancing losses from the last forward (None if dense)."""
    return sem_models.collect_aux_loss(model)


#: Model-wide summaries over the MoE layers that are no layer mean: (per-layer key, reduction).
_OVER_LAYERS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "max_token_fraction": torch.max,
    "min_token_fraction": torch.min,
    "unused_experts": torch.sum,
}


def routing_summary(model: nn.Module, tensors: bool = False) -> dict[str, Any]:
    """Model-wide routing statistics of the last forward; empty for a dense model.

    ``max_token_fraction`` is the largest hard token fraction of any expert in any MoE layer
    (1/K balanced, 1 collapsed), ``min_token_fraction`` the smallest, ``unused_experts`` the
    number of (layer, expert) pairs that received no token: the true values over the layers
    (one collapsed layer among balanced ones reads 1.0, not their mean). ``routing_entropy``,
    ``balance_entropy`` and ``dropped_fraction`` are means over the layers (as every
    ``mean/*`` key of :func:`sem_models.routing_stats`). With ``tensors``, 0-dim tensors left
    on the device (see :func:`sem_models.routing_stats`)."""
    stats = sem_models.routing_stats(model, tensors=True)
    out: dict[str, Any] = {k.split("/", 1)[1]: v for k, v in stats.items() if k.startswith("mean/")}
    for key, reduce in _OVER_LAYERS.items():
        vals = [v for k, v in stats.items() if not k.startswith("mean/") and k.endswith("/" + key)]
        if vals:
            out[key] = reduce(torch.stack(vals))
    if tensors or not out:
        return out
    return dict(zip(out, torch.stack(list(out.values())).tolist(), strict=True))


def save_model(model: nn.Module, directory: Path) -> None:
    """Weights (safetensors) + JSON config in ``directory`` (sem_models format)."""
    sem_models.save_model(model, directory)


def load_model(directory: Path) -> nn.Module:
    """Rebuild a model saved by :func:`save_model`."""
    return sem_models.load_model(directory)


def restoration_model(
    mae: nn.Module,
    *,
    freeze_encoder: bool,
    train_routing: bool,
    residual: bool = True,
    refiner_width: int = 0,
    guide_balances: list[float] | tuple[float, ...] = (),
) -> RestorationModel:
    """Defocus-to-focus model: pretrained encoder (frozen) + decoder predicting every patch.

    With a frozen encoder and ``train_routing``, the routers of MoE layers stay trainable
    (arXiv 2604.05960, Sec. 2.4: the decoder and, for the MoE variant, its routing). With ``residual`` the decoder
    predicts the correction to the input and starts as the identity (its output layer zeroed),
    unless ``mae`` is already a residual restoration model, whose weights are kept (its
    convolutional refiner too, when it has one of the requested width).
    """
    prior = mae if isinstance(mae, RestorationModel) else None
    if prior is not None:
        mae = prior.mae
    if not isinstance(mae, MaskedAutoencoder):
        raise TypeError(f"RestorationModel needs a MaskedAutoencoder; got {type(mae).__name__}")
    model = RestorationModel(
        mae,
        freeze_encoder=freeze_encoder,
        residual=residual,
        refiner_width=refiner_width,
        guide_balances=guide_balances,
    )
    if residual and not (prior is not None and prior.residual):
        model.start_as_identity()
    if prior is not None and prior.refiner is not None and model.refiner is not None:
        if (prior.refiner_width, prior.guide_balances) == (
            model.refiner_width,
            model.guide_balances,
        ):
            model.refiner.load_state_dict(prior.refiner.state_dict())
    if freeze_encoder and train_routing:
        for _, layer in sem_models.moe_layers(model):
            layer.gate.requires_grad_(True)
    return model

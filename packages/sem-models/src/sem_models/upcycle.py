"""Sparse upcycling (Komatsuzaki et al.): dense MAE -> MAE + MoE, and Stage-2/3 freezing.

Each selected block's FFN is copied into ``K`` experts and a fresh router is added. With
``noise_std = 0`` and the default ``straight_through`` combine weights the upcycled model
computes exactly what the dense one did (value of the top-1 weight is 1). Identical copies
trained through the gate alone cannot specialise, so by default every copy gets relative
Gaussian noise ``W + noise_std * std(W) * N(0, 1)`` (``noise_std = 0.01``): the experts
differ slightly, the router has a reason to prefer one, and the model stays within about
1 % of the dense function.
"""

from __future__ import annotations

import warnings
from typing import Any, Literal, cast

import torch
from torch import nn

from .config import MoEConfig
from .mae import MaskedAutoencoder, moe_block_indices
from .moe import MoEMlp, moe_layers

__all__ = ["collect_aux_loss", "freeze_all_but_gates", "unfreeze_all", "upcycle"]


def _core(model: nn.Module) -> MaskedAutoencoder:
    core = getattr(model, "mae", model)
    if not isinstance(core, MaskedAutoencoder):
        raise TypeError(
            f"expected a MaskedAutoencoder (or a model wrapping one as .mae); got {type(model).__name__}"
        )
    return core


def upcycle(
    model: nn.Module,
    num_experts: int = 8,
    top_k: int = 1,
    placement: Literal["encoder", "decoder", "both"] = "encoder",
    every_n: int = 1,
    capacity_factor: float | None = None,
    noise_std: float = 0.01,
    balance_loss: Literal["paper", "switch", "entropy"] = "paper",
    **extra: Any,
) -> nn.Module:
    """Turn the FFNs of a dense MAE into MoE layers in place and return the model.

    ``extra`` takes the remaining :class:`~sem_models.config.MoEConfig` fields
    (``z_loss_weight``, ``gate_weighting``). The model's ``config.moe`` is updated, so
    :func:`~sem_models.save_model` / :func:`~sem_models.load_model` rebuild it as MoE.
    Random draws (router init, copy noise) use torch's global generator: seed it first.
    """
    core = _core(model)
    if core.config.moe is not None:
        raise ValueError("model is already a Mixture-of-Experts model (config.moe is set)")
    if noise_std < 0:
        raise ValueError(f"noise_std={noise_std} must be >= 0")
    moe_cfg = MoEConfig(
        num_experts=num_experts,
        top_k=top_k,
        placement=placement,
        every_n=every_n,
        capacity_factor=capacity_factor,
        balance_loss=balance_loss,
        **extra,
    )
    stacks = {"encoder": [core.blocks], "decoder": [core.decoder_blocks]}
    stacks["both"] = stacks["encoder"] + stacks["decoder"]
    kwargs = moe_cfg.model_dump(
        include={"top_k", "capacity_factor", "z_loss_weight", "gate_weighting"}
    )
    kwargs["balance_loss"] = moe_cfg.balance_loss
    for blocks in stacks[placement]:
        for i in moe_block_indices(len(blocks), every_n):
            block = cast(nn.Module, blocks[i])
            block.mlp = MoEMlp.from_dense(
                cast(nn.Module, block.mlp), num_experts=num_experts, noise_std=noise_std, **kwargs
            )
    core.config = core.config.model_copy(update={"moe": moe_cfg})
    return model


def freeze_all_but_gates(model: nn.Module) -> None:
    """Stage 2: every parameter frozen except the MoE routers ``G``."""
    model.requires_grad_(False)
    layers = moe_layers(model)
    if not layers:
        warnings.warn(
            "freeze_all_but_gates: model has no MoE layers; everything is frozen", stacklevel=2
        )
    for _, layer in layers:
        layer.gate.requires_grad_(True)


def unfreeze_all(model: nn.Module) -> None:
    """Stage 3: every parameter trainable."""
    model.requires_grad_(True)


def collect_aux_loss(model: nn.Module) -> torch.Tensor | None:
    """Sum of the MoE layers' auxiliary (balance + z) losses from the last forward; None if dense."""
    losses = [m.aux_loss for _, m in moe_layers(model) if m.aux_loss is not None]
    if not losses:
        return None
    return torch.stack([loss.float() for loss in losses]).sum()

"""Sparse upcycling (Komatsuzaki et al.): dense MAE -> MAE + MoE, and Stage-2/3 freezing.

Each selected block's FFN is copied into ``K`` experts and a fresh router is added. With
``noise_std = 0`` and the default ``runner_up`` (or ``straight_through``) combine weights the
upcycled model computes what the dense one did to float rounding (value of the top-1 weight
is 1; measured <= 2e-6 on a 2-block tiny model's predictions). Identical copies
trained through the gate alone cannot specialise, so by default every copy gets relative
Gaussian noise ``W + noise_std * std(W) * N(0, 1)`` (``noise_std = 0.01``): the experts
differ slightly, the router has a reason to prefer one, and the model stays within about
1 % of the dense function.
"""

from __future__ import annotations

import math
import warnings
from typing import Any, cast

import torch
from pydantic import ValidationError
from torch import nn

from .config import ModelConfigError, MoEConfig, moe_placement_problem
from .mae import MaskedAutoencoder, moe_block_indices
from .moe import MoEMlp, global_aux_loss, moe_layers
from .precision import accumulation_dtype

__all__ = [
    "calibrate_routers",
    "collect_aux_loss",
    "freeze_all_but_gates",
    "unfreeze_all",
    "upcycle",
]


def _core(model: nn.Module) -> MaskedAutoencoder:
    core = getattr(model, "mae", model)
    if not isinstance(core, MaskedAutoencoder):
        raise TypeError(
            f"expected a MaskedAutoencoder (or a model wrapping one as .mae); got {type(model).__name__}"
        )
    return core


def upcycle(model: nn.Module, config: MoEConfig | None = None, **fields: Any) -> nn.Module:
    """Turn the FFNs of a dense MAE into MoE layers in place and return the model.

    ``config`` (default :class:`~sem_models.config.MoEConfig`) with any of its fields
    overridden by keyword (``num_experts=4``, ``noise_std=0`` ...) says where and how. The
    model's ``config.moe`` is updated, so :func:`~sem_models.save_model` /
    :func:`~sem_models.load_model` rebuild it as MoE. Random draws (router init, copy noise)
    use torch's global generator: seed it first.
    """
    core = _core(model)
    if core.config.moe is not None:
        raise ValueError("model is already a Mixture-of-Experts model (config.moe is set)")
    base = config.model_dump() if config is not None else {}
    try:
        moe_cfg = MoEConfig(**{**base, **fields})
    except ValidationError as exc:
        raise ModelConfigError(f"invalid MoE config: {exc}") from None
    problem = moe_placement_problem(moe_cfg, len(core.blocks), len(core.decoder_blocks))
    if problem:
        raise ModelConfigError(f"invalid MoE config: {problem}")
    num_experts, placement = moe_cfg.num_experts, moe_cfg.placement
    stacks = {"encoder": [core.blocks], "decoder": [core.decoder_blocks]}
    stacks["both"] = stacks["encoder"] + stacks["decoder"]
    kwargs = moe_cfg.model_dump(
        include={"top_k", "capacity_factor", "z_loss_weight", "gate_weighting"}
    )
    kwargs["balance_loss"] = moe_cfg.balance_loss
    for blocks in stacks[placement]:
        for i in moe_block_indices(len(blocks), moe_cfg.every_n):
            block = cast(nn.Module, blocks[i])
            block.mlp = MoEMlp.from_dense(
                cast(nn.Module, block.mlp),
                num_experts=num_experts,
                noise_std=moe_cfg.noise_std,
                **kwargs,
            )
    core.config = core.config.model_copy(update={"moe": moe_cfg})
    return model


def calibrate_routers(
    model: nn.Module, *inputs: Any, logit_std: float = 1.0, **kwargs: Any
) -> None:
    """Data-dependent router initialisation: balanced, content-dependent routing from step 0.

    Runs ``model(*inputs, **kwargs)`` once (no gradients) and reads every MoE layer's input
    tokens ``h``. Transformer tokens share a large common component (the mean token ``mu``,
    to which LayerNorm's bias contributes); a router drawn at random scores that component,
    so one expert wins almost every token before training starts. Here each router row is a
    random direction with the ``mu`` component removed, scaled so that its logit has standard
    deviation ``logit_std`` over the tokens: every logit has mean 0 and the same spread, the
    argmax splits the tokens about evenly, and similar tokens go to the same expert. Random
    draws use torch's global generator: seed it first.
    """
    layers = moe_layers(model)
    if not layers:
        raise ValueError("calibrate_routers: the model has no MoE layers")
    if not 0 < logit_std < math.inf:  # NaN or inf would give every router NaN rows
        raise ValueError(f"logit_std={logit_std} must be finite and > 0")
    seen: dict[str, torch.Tensor] = {}

    def keep(name: str):
        def hook(_module: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
            seen[name] = args[0].detach().reshape(-1, args[0].shape[-1])

        return hook

    handles = [m.register_forward_pre_hook(keep(name)) for name, m in layers]
    try:
        with torch.no_grad():
            model(*inputs, **kwargs)
    finally:
        for handle in handles:
            handle.remove()
    with torch.no_grad():
        for name, m in layers:
            m.gate.weight.copy_(router_weights(seen[name], m.num_experts, logit_std))


def router_weights(h: torch.Tensor, num_experts: int, logit_std: float = 1.0) -> torch.Tensor:
    """Router rows for tokens ``h`` (T, D), float64 on ``h``'s device (float32 on a device
    without float64: :func:`~sem_models.precision.accumulation_dtype`; see
    :func:`calibrate_routers`). The random directions are drawn on the CPU, so every device
    gets the same routers from the same seed."""
    wide = accumulation_dtype(h.device)
    h = h.to(wide)
    mu = h.mean(0)
    w = torch.randn(num_experts, h.shape[1], dtype=torch.float64).to(wide).to(h.device)
    u = mu / mu.norm().clamp_min(1e-12)
    w = w - (w @ u)[:, None] * u[None, :]  # no response to the common component
    spread = (h @ w.T).std(0).clamp_min(1e-12)  # (K,) logit std over the tokens
    return w * (logit_std / spread)[:, None]


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
    """Sum of the MoE layers' auxiliary (balance + z) losses from the last forward; None if dense.

    Under ``torch.distributed`` (training step) the balance statistics are those of the global
    batch; see :func:`~sem_models.moe.global_aux_loss`.
    """
    return global_aux_loss(model)

"""The one seam between training and ``sem_models``: build, upcycle, freeze, save, load.

Every call into ``sem_models`` goes through this module, so the stages read as the paper
does (build an MAE, upcycle it, freeze all but the gates, ...) and a change in the model
package's API touches one file.

Conventions of :class:`sem_models.MaskedAutoencoder` that the training code relies on:
inputs are ``[0, 1]`` images, normalised inside the model with the ViT-MAE statistics;
``pred`` and ``model.target(imgs)`` live in that normalised patch space (per-patch
standardised as well with ``norm_pix_loss``); :func:`reconstruction` maps ``pred`` back to
``[0, 1]`` images.
"""

from __future__ import annotations

from pathlib import Path

import sem_models
import torch
from sem_models import MaskedAutoencoder, RestorationModel
from torch import nn

from .checkpoint import read_pointer
from .config import ModelSpec, MoESpec

__all__ = [
    "build_mae",
    "freeze_all_but_gates",
    "gate_parameter_names",
    "load_model",
    "moe_aux_loss",
    "patch_noise",
    "pixel_mask",
    "reconstruction",
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


def upcycle(model: nn.Module, moe: MoESpec, seed: int = 0) -> nn.Module:
    """Dense MAE -> MAE + MoE with experts copied from each FFN (sparse upcycling).

    The router initialisation and the symmetry-breaking noise on the expert copies are drawn
    from torch's global generator seeded with ``seed``, so a run is reproducible.
    """
    torch.manual_seed(seed)
    return sem_models.upcycle(
        model,
        num_experts=moe.num_experts,
        top_k=moe.top_k,
        placement=moe.placement,
        every_n=moe.every_n,
        capacity_factor=moe.capacity_factor,
        noise_std=moe.noise_std,
        balance_loss=moe.balance_loss,
        **moe.extra,
    )


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


def routing_summary(model: nn.Module) -> dict[str, float]:
    """Model-wide routing statistics of the last forward: entropy, unused experts, the
    largest hard token fraction (1/K balanced, 1 collapsed); empty for a dense model."""
    stats = sem_models.routing_stats(model)
    return {k.split("/", 1)[1]: v for k, v in stats.items() if k.startswith("mean/")}


def patch_noise(seeds: torch.Tensor, num_patches: int, device: torch.device) -> torch.Tensor:
    """Per-sample masking noise (N, L) drawn from each sample's seed (reproducible masks)."""
    rows = [
        torch.rand(num_patches, generator=torch.Generator().manual_seed(int(s) + 1))
        for s in seeds.tolist()
    ]
    return torch.stack(rows).to(device)


def pixel_mask(model: MaskedAutoencoder, mask: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    """Patch mask (N, L), 1 = masked, -> pixel mask (N, C, H, W) on a grid of ``hw`` patches."""
    p, c = int(model.patch_size), int(model.in_chans)
    patches = mask[..., None].expand(*mask.shape, p * p * c).to(torch.float32)
    return model.unpatchify(patches, hw)


def reconstruction(
    model: MaskedAutoencoder, imgs: torch.Tensor, pred: torch.Tensor
) -> torch.Tensor:
    """``pred`` (N, L, p*p*C) in the model's normalised space -> images (N, C, H, W) in [0, 1].

    With ``norm_pix_loss`` the prediction is per-patch standardised; each patch is given back
    the mean and variance of the corresponding input patch (MAE's visualisation convention).
    """
    p = int(model.patch_size)
    hw = (imgs.shape[-2] // p, imgs.shape[-1] // p)
    if model.norm_pix_loss:
        ref = model.patchify(sem_models.normalize(imgs))
        mean, var = ref.mean(-1, keepdim=True), ref.var(-1, keepdim=True)
        pred = pred * (var + 1e-6).sqrt() + mean
    return sem_models.denormalize(model.unpatchify(pred.float(), hw))


def save_model(model: nn.Module, directory: Path) -> None:
    """Weights (safetensors) + JSON config in ``directory`` (sem_models format)."""
    sem_models.save_model(model, directory)


def load_model(directory: Path) -> nn.Module:
    """Rebuild a model saved by :func:`save_model`."""
    return sem_models.load_model(directory)


def resolve_model_dir(path: str | Path, what: str = "init_from") -> Path:
    """A run directory (its best export) or an export directory (``config.json`` + weights).

    ``what`` names the setting in error messages (``init_from``, ``--checkpoint``, ...).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(
            f"{what}={path} does not exist (run the previous stage first, or fix the path)"
        )
    if (path / "config.json").is_file() and (path / "model.safetensors").is_file():
        return path
    best = read_pointer(path / "checkpoints" / "best.json")
    if best is not None:
        return path / "checkpoints" / best["dir"]
    raise FileNotFoundError(
        f"{what}={path}: no exported model found (expected checkpoints/best.json of a "
        f"finished run, or a folder with config.json and model.safetensors)"
    )


def restoration_model(
    mae: nn.Module, *, freeze_encoder: bool, train_routing: bool, residual: bool = True
) -> RestorationModel:
    """Defocus-to-focus model: pretrained encoder (frozen) + decoder predicting every patch.

    With a frozen encoder and ``train_routing``, the routers of MoE layers stay trainable
    (SPEC §3: "decoder and, for the MoE variant, its routing"). With ``residual`` the decoder
    predicts the correction to the input and starts as the identity (its output layer zeroed),
    unless ``mae`` is already a residual restoration model, whose weights are kept.
    """
    prior = mae if isinstance(mae, RestorationModel) else None
    if prior is not None:
        mae = prior.mae
    model = RestorationModel(mae, freeze_encoder=freeze_encoder, residual=residual)
    if residual and not (prior is not None and prior.residual):
        model.start_as_identity()
    if freeze_encoder and train_routing:
        for _, layer in sem_models.moe_layers(model):
            layer.gate.requires_grad_(True)
    return model

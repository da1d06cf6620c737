"""Typed model configurations (pydantic v2) and the named presets.

A config fully determines an architecture: :func:`sem_models.build_mae` turns one into a
model, and checkpoints store it as JSON next to the weights, so a saved model rebuilds
itself without any other information.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

__all__ = [
    "PRESETS",
    "MAEConfig",
    "MoEConfig",
    "ModelConfigError",
    "check_preset",
    "mae_config",
    "moe_placement_problem",
]


class ModelConfigError(ValueError):
    """An invalid model configuration (unknown preset or field, value out of range)."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MoEConfig(_Strict):
    """Where and how the feed-forward networks become Mixture-of-Experts layers."""

    num_experts: int = Field(default=8, ge=1, description="K, experts per MoE layer")
    top_k: int = Field(default=1, ge=1, description="experts each token is sent to")
    placement: Literal["encoder", "decoder", "both"] = Field(
        default="encoder", description="which transformer stack gets MoE layers (paper: encoder)"
    )
    every_n: int = Field(
        default=1, ge=1, description="upcycle blocks n-1, 2n-1, ... (1 = every block)"
    )
    capacity_factor: float | None = Field(
        default=None,
        gt=0,
        allow_inf_nan=False,
        description="expert capacity = ceil(cf * tokens * top_k / K); None = no drop",
    )
    balance_loss: Literal["paper", "switch", "entropy"] = Field(
        default="switch",
        description=(
            "load-balancing term kept as the layer's aux loss: switch K sum f_k P_k (its "
            "gradient follows the hard token fractions f_k), paper K sum P_k^2 (Eq. 9, soft "
            "only), entropy log K - H(P)"
        ),
    )
    z_loss_weight: float = Field(
        default=0.0, ge=0, allow_inf_nan=False, description="router z-loss weight inside aux loss"
    )
    gate_weighting: Literal["runner_up", "straight_through", "renormalise", "raw"] = Field(
        default="runner_up",
        description=(
            "combine weights: runner_up (value = renormalised top-k; router gradient of the "
            "softmax mixture of the top-k and the next expert, which compares them), "
            "p/sum(p_topk).detach() (value = renormalised, gradient to the router), "
            "p/sum(p_topk) (renormalised), or raw softmax p (paper eq. 5 literally)"
        ),
    )
    noise_std: float = Field(
        default=0.01,
        ge=0,
        allow_inf_nan=False,
        description="relative Gaussian noise on each upcycled expert copy (symmetry breaking)",
    )

    @model_validator(mode="after")
    def _check(self) -> MoEConfig:
        if self.top_k > self.num_experts:
            raise ValueError(f"top_k={self.top_k} exceeds num_experts={self.num_experts}")
        return self


class MAEConfig(_Strict):
    """A ViT masked autoencoder: encoder, lightweight decoder, loss and optional MoE."""

    img_size: int = Field(default=224, ge=8, description="input side length in px (square)")
    patch_size: int = Field(default=16, ge=1, description="patch side length in px")
    in_chans: Literal[1, 3] = Field(default=3, description="1 = grayscale, 3 = RGB")
    embed_dim: int = Field(default=1024, ge=8)
    depth: int = Field(default=24, ge=1)
    num_heads: int = Field(default=16, ge=1)
    decoder_embed_dim: int = Field(default=512, ge=8)
    decoder_depth: int = Field(default=8, ge=1)
    decoder_num_heads: int = Field(default=16, ge=1)
    mlp_ratio: float = Field(default=4.0, gt=0, allow_inf_nan=False)
    qkv_bias: bool = True
    loss: Literal["l1_norm", "mse_norm_pix"] = Field(
        default="l1_norm",
        description=(
            "l1_norm: paper eq. 4, L1 on masked patches in normalised pixel space; "
            "mse_norm_pix: MAE's MSE against per-patch normalised targets"
        ),
    )
    mask_ratio: float = Field(
        default=0.75, ge=0, lt=1, description="default fraction of patches removed"
    )
    moe: MoEConfig | None = Field(default=None, description="None = dense feed-forward networks")

    @model_validator(mode="after")
    def _check(self) -> MAEConfig:
        if self.img_size % self.patch_size:
            raise ValueError(
                f"img_size={self.img_size} px is not a multiple of patch_size={self.patch_size} px"
            )
        for dim, heads, name in (
            (self.embed_dim, self.num_heads, ""),
            (self.decoder_embed_dim, self.decoder_num_heads, "decoder_"),
        ):
            if dim % heads:
                raise ValueError(
                    f"{name}embed_dim={dim} is not divisible by {name}num_heads={heads}"
                )
            if dim % 4:
                raise ValueError(f"{name}embed_dim={dim} must be a multiple of 4 (2-D sin-cos)")
        if self.moe is not None:
            problem = moe_placement_problem(self.moe, self.depth, self.decoder_depth)
            if problem:
                raise ValueError(problem)
        return self

    @property
    def norm_pix_loss(self) -> bool:
        """True when targets are per-patch normalised (MAE's ``mse_norm_pix``)."""
        return self.loss == "mse_norm_pix"

    @property
    def grid_size(self) -> int:
        """Patches per side at ``img_size``."""
        return self.img_size // self.patch_size


def moe_placement_problem(moe: MoEConfig, depth: int, decoder_depth: int) -> str | None:
    """Why ``moe`` would leave a stack it names without an MoE layer (``every_n`` beyond the
    stack's depth: the model would claim MoE and be dense there), or None."""
    depths = {"encoder": depth, "decoder": decoder_depth}
    for stack in ("encoder", "decoder"):
        if moe.placement in (stack, "both") and moe.every_n > depths[stack]:
            return (
                f"moe every_n={moe.every_n} selects no block of the {depths[stack]}-block "
                f"{stack} (placement={moe.placement!r}): accepted every_n 1..{depths[stack]}"
            )
    return None


_ARCH = (
    "embed_dim",
    "depth",
    "num_heads",
    "decoder_embed_dim",
    "decoder_depth",
    "decoder_num_heads",
)

#: Architecture presets. ``tiny`` is a CPU-scale model for tests and laptops (not ViT-Ti);
#: ``large`` is the paper's ViT-L/16 with the MAE decoder (8 blocks x 512).
PRESETS: dict[str, dict[str, Any]] = {
    "tiny": dict(zip(_ARCH, (192, 6, 3, 128, 2, 4), strict=True)),
    "small": dict(zip(_ARCH, (384, 12, 6, 256, 4, 8), strict=True)),
    "base": dict(zip(_ARCH, (768, 12, 12, 512, 8, 16), strict=True)),
    "large": dict(zip(_ARCH, (1024, 24, 16, 512, 8, 16), strict=True)),
    "huge": {**dict(zip(_ARCH, (1280, 32, 16, 512, 8, 16), strict=True)), "patch_size": 14},
}


def check_preset(preset: str, overrides: Any = ()) -> None:
    """:class:`ModelConfigError` for an unknown ``preset`` or an override naming no field of
    :class:`MAEConfig` (what a training config can be checked for before a model is built;
    values are checked with the data's size by :func:`mae_config`)."""
    if preset not in PRESETS:
        raise ModelConfigError(f"unknown preset {preset!r}; choose one of {sorted(PRESETS)}")
    unknown = sorted(set(overrides) - set(MAEConfig.model_fields))
    if unknown:
        raise ModelConfigError(
            f"unknown MAE config field(s) {unknown}; accepted: {sorted(MAEConfig.model_fields)}"
        )


def mae_config(preset: str, **overrides: Any) -> MAEConfig:
    """The config of ``preset`` with field ``overrides`` (e.g. ``in_chans=1, img_size=64``).

    Raises :class:`ModelConfigError` for an unknown preset, an unknown field or a value out
    of range, naming the offending entry.
    """
    check_preset(preset, overrides)
    fields = {**PRESETS[preset], **overrides}
    try:
        return MAEConfig(**fields)
    except ValidationError as exc:
        raise ModelConfigError(f"invalid MAE config for preset {preset!r}: {exc}") from None

"""Typed model configurations (pydantic v2) and the named presets.

A config fully determines an architecture: :func:`sem_models.build_mae` turns one into a
model, and checkpoints store it as JSON next to the weights, so a saved model rebuilds
itself without any other information.
"""

from __future__ import annotations

import types
import typing
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails

__all__ = [
    "PRESETS",
    "MAEConfig",
    "MoEConfig",
    "ModelConfigError",
    "NoBoolNumbers",
    "bools_given_for_numbers",
    "check_preset",
    "mae_config",
    "moe_placement_problem",
]


class ModelConfigError(ValueError):
    """An invalid model configuration (unknown preset or field, value out of range)."""


def _expected(choices: tuple[Any, ...]) -> str:
    """``1``, ``1 or 3``, ``1, 2 or 3``: pydantic's wording of a Literal's values."""
    shown = [repr(c) for c in choices]
    return shown[0] if len(shown) == 1 else f"{', '.join(shown[:-1])} or {shown[-1]}"


def bools_given_for_numbers(
    value: Any, annotation: Any, loc: tuple[str | int, ...] = ()
) -> list[InitErrorDetails]:
    """An error at every place where ``value``, validated as ``annotation``, holds a bool
    (``True``, ``numpy.True_``) that pydantic's lax mode would take as a number: for an int,
    a float or an integer Literal, also inside Optional and other unions (unless they admit a
    bool), tuples, lists, mappings and nested models given as mappings (other than
    :class:`NoBoolNumbers` ones, which check themselves). The errors are pydantic's own
    (``int_type``, ``float_type``, ``literal_error``): a bool reads as any other value that
    is no number.

    It mirrors :mod:`sem_physics.fields` (``taken_as_another`` with its default rule), the
    copy the other packages share: sem-models depends on no other package of the workspace.
    """
    tp = annotation
    while typing.get_origin(tp) is Annotated:
        tp = typing.get_args(tp)[0]
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    is_bool = isinstance(value, bool | np.bool_)
    if origin in (typing.Union, types.UnionType):
        members = [a for a in args if a is not type(None)]
        if is_bool and bool in members:
            return []
        for member in members:
            errors = bools_given_for_numbers(value, member, loc)
            if errors:
                return errors
        return []
    if is_bool:
        if tp is int or tp is float:
            return [InitErrorDetails(type=f"{tp.__name__}_type", loc=loc, input=value)]
        if origin is Literal and args and all(type(a) is int for a in args):
            ctx = {"expected": _expected(args)}
            return [InitErrorDetails(type="literal_error", loc=loc, input=value, ctx=ctx)]
        return []
    out: list[InitErrorDetails] = []
    if origin in (tuple, list) and isinstance(value, list | tuple):
        if origin is tuple and not (len(args) == 2 and args[1] is Ellipsis):
            items = list(zip(value, args, strict=False))
        else:
            items = [(v, args[0] if args else Any) for v in value]
        for i, (v, item_type) in enumerate(items):
            out += bools_given_for_numbers(v, item_type, (*loc, i))
    elif origin is dict and len(args) == 2 and isinstance(value, dict):
        for k, v in value.items():
            out += bools_given_for_numbers(v, args[1], (*loc, str(k)))
    elif isinstance(tp, type) and issubclass(tp, BaseModel) and isinstance(value, dict):
        if not issubclass(tp, NoBoolNumbers):
            for name, field in tp.model_fields.items():
                if name in value:
                    out += bools_given_for_numbers(value[name], field.annotation, (*loc, name))
    return out


class NoBoolNumbers(BaseModel):
    """A model whose number fields refuse a bool: pydantic's lax mode takes ``True`` as 1
    (``num_experts=True`` would build one expert). Int, float and integer-Literal fields,
    also Optional ones and numbers inside tuples, lists and mappings
    (:func:`bools_given_for_numbers`); bool fields take bools as usual."""

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_for_a_number(cls, value: Any, info: ValidationInfo) -> Any:
        if info.field_name is not None:
            annotation = cls.model_fields[info.field_name].annotation
            errors = bools_given_for_numbers(value, annotation)
            if errors:
                raise ValidationError.from_exception_data(cls.__name__, errors)
        return value


class _Strict(NoBoolNumbers):
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

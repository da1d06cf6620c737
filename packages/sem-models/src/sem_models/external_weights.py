"""Load public MAE weights from a local file into a :class:`MaskedAutoencoder`.

Supported layouts (both CC-BY-NC 4.0: we never ship or download them, users supply them):

* facebookresearch/mae ``mae_pretrain_vit_{base,large,huge}.pth`` (encoder only) and
  ``mae_visualize_vit_*.pth`` (with decoder): a ``{"model": state_dict}`` pickle;
* timm ``vit_*_patch16_224.mae`` (``pytorch_model.bin`` / ``model.safetensors``): the
  encoder state dict, with ``fc_norm`` / ``head`` entries that an MAE does not use;
* Hugging Face transformers ``ViTMAEForPreTraining`` / ``ViTMAEModel`` (``facebook/vit-mae-*``:
  ``vit.embeddings...``, ``vit.encoder.layer.i.attention.attention.query...``, ``decoder...``),
  whose separate query/key/value projections are stacked into our fused ``qkv``; also the
  names of transformers 5: its modules' ``state_dict()`` (``vit.layers.i.attention.q_proj``,
  ``o_proj``, ``mlp.fc1``) and its ``save_pretrained`` files, whose decoder layers read
  ``decoder.decoder_encoder.layer.i``.

Keys are mapped onto ours (prefixes ``module.`` / ``model.`` stripped; a dense FFN is copied
into every expert of an MoE layer), position embeddings are resampled when the patch grid
differs, and every tensor's shape is checked, as is that the tensors loaded hold no NaN or
inf (:func:`sem_models.checkpoint.nonfinite_tensors`). Pickles are read with
``torch.load(..., weights_only=True)``.

A 3-channel patch embedding is converted for a grayscale model exactly, by summing over RGB
with the per-channel normalisation folded in: a gray image fed to the 1-channel model gives
the same patch tokens as the same image replicated to RGB fed to the original
(``W' = s sum_c W_c / s_c``, ``b' = b + sum_c (m - m_c) / s_c sum_uv W_c``, with ``m, s`` the
gray and ``m_c, s_c`` the RGB statistics of :mod:`sem_models.imaging`). The decoder's
3-channel pixel head, when present, is turned into one that predicts the channel mean.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .checkpoint import nonfinite_message, nonfinite_tensors
from .imaging import norm_stats
from .mae import MaskedAutoencoder
from .pos_embed import resize_pos_embed

__all__ = [
    "ExternalWeightsError",
    "LoadReport",
    "MissingWeightsError",
    "load_external_mae",
    "read_state_dict",
    "refusal_reason",
]

SOURCES = (
    "facebookresearch/mae: https://dl.fbaipublicfiles.com/mae/pretrain/mae_pretrain_vit_large.pth "
    "(also _base, _huge); timm: the Hugging Face Hub repository timm/vit_large_patch16_224.mae "
    "(file model.safetensors); Hugging Face transformers: facebook/vit-mae-large "
    "(file model.safetensors or pytorch_model.bin)"
)
_IGNORED = re.compile(r"^(head|fc_norm|pre_logits|head_drop)\b")


class ExternalWeightsError(ValueError):
    """A weights file that cannot be mapped onto the model (layout or shapes)."""


class MissingWeightsError(FileNotFoundError):
    """The weights file does not exist locally (nothing is downloaded at run time)."""


@dataclass
class LoadReport:
    """What :func:`load_external_mae` did."""

    loaded: list[str] = field(default_factory=list)  # model keys filled from the file
    missing: list[str] = field(default_factory=list)  # model keys left as initialised
    ignored: list[str] = field(default_factory=list)  # file keys with no place in the model
    converted: list[str] = field(default_factory=list)  # resampled or channel-converted keys


def refusal_reason(err: BaseException) -> str:
    """Why a weights-only ``torch.load`` refused a file, in one line, without torch's advice to
    load it with ``weights_only=False`` (which would run whatever code the file carries)."""
    text = str(err).strip()
    if "Weights only load failed" in text or "weights_only" in text:
        return (
            "it holds Python objects beyond tensors, which are never unpickled here (they could "
            "run code); convert it to safetensors on a machine where its source is trusted"
        )
    return (text.splitlines() or [type(err).__name__])[0]


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a local ``.pth``/``.bin`` (weights-only unpickling) or ``.safetensors``."""
    path = Path(path)
    if path.is_dir():
        raise ExternalWeightsError(
            f"{path} is a folder; give the MAE weights file itself (.pth, .bin or .safetensors)"
        )
    if not path.is_file():
        raise MissingWeightsError(
            f"MAE weights file {path} not found. This machine may be offline and nothing is "
            f"downloaded at run time: fetch the file elsewhere ({SOURCES}) and put it at {path}."
        )
    state: Any
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            state = load_file(str(path))
        except Exception as exc:  # SafetensorError: truncated (an interrupted download) or not
            raise ExternalWeightsError(  # a safetensors file
                f"{path}: not a readable safetensors file ({refusal_reason(exc)})"
            ) from None
    else:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise ExternalWeightsError(
                f"{path}: cannot be read as a weights-only checkpoint ({refusal_reason(exc)})"
            ) from None
    for key in ("model", "state_dict"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ExternalWeightsError(
            f"{path}: expected a state dict of tensors (optionally under 'model')"
        )
    out = {}
    for k, v in state.items():
        while k.startswith(("module.", "model.")):  # DDP and wrappers, in any nesting
            k = k.split(".", 1)[1]
        out[k] = v
    if any(k.startswith(("vit.embeddings.", "embeddings.patch_embeddings.")) for k in out):
        try:
            out = _from_transformers(out)
        except ExternalWeightsError as exc:
            raise ExternalWeightsError(f"{path}: {exc}") from None
    return out


_HF_TOP = {
    "embeddings.cls_token": "cls_token",
    "embeddings.position_embeddings": "pos_embed",
    "embeddings.patch_embeddings.projection.weight": "patch_embed.proj.weight",
    "embeddings.patch_embeddings.projection.bias": "patch_embed.proj.bias",
    "layernorm.weight": "norm.weight",
    "layernorm.bias": "norm.bias",
    "decoder.mask_token": "mask_token",
    "decoder.decoder_pos_embed": "decoder_pos_embed",
}
_HF_LAYER = {
    "layernorm_before": "norm1",
    "layernorm_after": "norm2",
    "attention.output.dense": "attn.proj",
    "intermediate.dense": "mlp.fc1",
    "output.dense": "mlp.fc2",
    "attention.o_proj": "attn.proj",  # transformers 5 module names
    "mlp.fc1": "mlp.fc1",
    "mlp.fc2": "mlp.fc2",
}
#: Layer stacks: transformers 4 and the Hub files (``encoder.layer``, ``decoder.decoder_layers``),
#: transformers 5 modules (``layers``) and its ``save_pretrained`` decoder (``decoder_encoder``).
_HF_STACKS = {
    "encoder.layer": "blocks",
    "layers": "blocks",
    "decoder.decoder_layers": "decoder_blocks",
    "decoder.decoder_encoder.layer": "decoder_blocks",
}


def _from_transformers(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Hugging Face ViTMAE names -> ours; query/key/value stacked into ``qkv`` (q, k, v order)."""
    out: dict[str, torch.Tensor] = {}
    qkv: dict[str, dict[str, torch.Tensor]] = {}
    stacks = "|".join(re.escape(name) for name in _HF_STACKS)
    layer = re.compile(rf"^({stacks})\.(\d+)\.(.+)\.(weight|bias)$")
    parts_of = {"q": "query", "k": "key", "v": "value"}
    for key, value in state.items():
        k = key[len("vit.") :] if key.startswith("vit.") else key
        if k in _HF_TOP:
            out[_HF_TOP[k]] = value
            continue
        if k.startswith("decoder.decoder_") and layer.match(k) is None:
            out[k[len("decoder.") :]] = value  # decoder_embed, decoder_norm, decoder_pred
            continue
        m = layer.match(k)
        if m is None:
            out[key] = value  # left for the caller to report as ignored
            continue
        prefix, inner, kind = f"{_HF_STACKS[m.group(1)]}.{m.group(2)}", m.group(3), m.group(4)
        qkv_part = re.match(r"^attention\.(?:attention\.(query|key|value)|([qkv])_proj)$", inner)
        if qkv_part:
            part = qkv_part.group(1) or parts_of[qkv_part.group(2)]
            qkv.setdefault(f"{prefix}.attn.qkv.{kind}", {})[part] = value
        elif inner in _HF_LAYER:
            out[f"{prefix}.{_HF_LAYER[inner]}.{kind}"] = value
        else:
            out[key] = value
    for name, parts in qkv.items():
        if set(parts) != {"query", "key", "value"}:
            raise ExternalWeightsError(f"{name}: query/key/value incomplete ({sorted(parts)})")
        out[name] = torch.cat([parts["query"], parts["key"], parts["value"]], dim=0)
    return out


def _gray_patch_embed(w: torch.Tensor, b: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    (m,), (s,) = norm_stats(1)
    mc, sc = (torch.tensor(v, dtype=torch.float64) for v in norm_stats(3))
    w64 = w.double()
    w_gray = s * (w64 / sc.view(1, 3, 1, 1)).sum(dim=1, keepdim=True)
    shift = (w64.sum(dim=(2, 3)) * ((m - mc) / sc).view(1, 3)).sum(dim=1)
    b_gray = (torch.zeros(w.shape[0], dtype=torch.float64) if b is None else b.double()) + shift
    return w_gray.to(w.dtype), b_gray.to(w.dtype)


def _gray_pixel_head(w: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows ``(p*p*3, D)`` predicting normalised RGB -> rows ``(p*p, D)`` for normalised gray."""
    (m,), (s,) = norm_stats(1)
    mc, sc = (torch.tensor(v, dtype=torch.float64) for v in norm_stats(3))
    w3 = w.double().reshape(-1, 3, w.shape[1])  # channel fastest (patchify layout)
    b3 = b.double().reshape(-1, 3)
    w_gray = (w3 * sc.view(1, 3, 1)).sum(1) / (3 * s)
    b_gray = ((b3 * sc + mc).mean(1) - m) / s
    return w_gray.to(w.dtype), b_gray.to(b.dtype)


def load_external_mae(
    path: str | Path, model: MaskedAutoencoder, require_encoder: bool = True
) -> LoadReport:
    """Fill ``model`` (in place) from a facebookresearch or timm MAE checkpoint file.

    Raises :class:`MissingWeightsError` when ``path`` does not exist and
    :class:`ExternalWeightsError` on shape mismatches, on tensors it would load that hold NaN
    or inf (naming them; ``model`` is left untouched) or, with ``require_encoder``, when an
    encoder tensor is absent from the file.
    """
    core = getattr(model, "mae", model)
    if not isinstance(core, MaskedAutoencoder):
        raise TypeError(f"expected a MaskedAutoencoder; got {type(model).__name__}")
    src = read_state_dict(path)
    report = LoadReport()
    src = dict(src)

    # Channel conversion (3 -> 1) of the patch embedding and the pixel head.
    pe_w = src.get("patch_embed.proj.weight")
    convertible = pe_w is not None and pe_w.ndim == 4 and pe_w.is_floating_point()
    if pe_w is not None and convertible and pe_w.shape[1] != core.in_chans:
        if not (pe_w.shape[1] == 3 and core.in_chans == 1):
            raise ExternalWeightsError(
                f"{path}: patch embedding has {pe_w.shape[1]} input channels; the model has "
                f"{core.in_chans} (only 3 -> 1 conversion is supported)"
            )
        src["patch_embed.proj.weight"], src["patch_embed.proj.bias"] = _gray_patch_embed(
            pe_w, src.get("patch_embed.proj.bias")
        )
        report.converted.append("patch_embed.proj")
    head_w = src.get("decoder_pred.weight")
    if (
        head_w is not None
        and head_w.is_floating_point()
        and core.in_chans == 1
        and head_w.shape[0] == 3 * core.patch_size**2
    ):
        src["decoder_pred.weight"], src["decoder_pred.bias"] = _gray_pixel_head(
            head_w, src.get("decoder_pred.bias", head_w.new_zeros(head_w.shape[0]))
        )
        report.converted.append("decoder_pred")

    target = core.state_dict()
    mapped: dict[str, torch.Tensor] = {}
    taken: dict[str, torch.Tensor] = {}  # file key -> the tensor loaded from it (after casting)
    for key, value in src.items():
        if _IGNORED.match(key):
            report.ignored.append(key)
            continue
        names = [key] if key in target else _expert_names(key, target)
        if not names:
            report.ignored.append(key)
            continue
        if key in ("pos_embed", "decoder_pos_embed") and value.shape != target[key].shape:
            value = _resample(key, value, target[key], path)
            report.converted.append(key)
        if target[names[0]].is_floating_point() and not value.is_floating_point():
            raise ExternalWeightsError(  # e.g. a quantised file: a cast would load garbage
                f"{path}: {key} holds {str(value.dtype).removeprefix('torch.')} values, not "
                "floating-point weights"
            )
        for name in names:
            if value.shape != target[name].shape:
                raise ExternalWeightsError(
                    f"{path}: {key} has shape {tuple(value.shape)}, the model's {name} has "
                    f"{tuple(target[name].shape)} (wrong preset or patch size?)"
                )
            mapped[name] = taken[key] = value.to(target[name].dtype)
    found = nonfinite_tensors(taken)
    if found:  # checked before the model is touched
        why = "the model would return NaN images (a damaged file: fetch it again)"
        raise ExternalWeightsError(nonfinite_message(path, found, why))
    report.missing = sorted(set(target) - set(mapped))
    report.loaded = sorted(mapped)
    encoder_missing = [
        k
        for k in report.missing
        if not k.startswith(("decoder", "mask_token")) and ".gate." not in k
    ]
    if require_encoder and encoder_missing:
        raise ExternalWeightsError(
            f"{path}: encoder tensors missing from the file: {encoder_missing[:5]}"
            f"{' ...' if len(encoder_missing) > 5 else ''} (not an MAE/ViT checkpoint of this size?)"
        )
    with torch.no_grad():
        core.load_state_dict(mapped, strict=False)
    return report


def _expert_names(key: str, target: dict[str, torch.Tensor]) -> list[str]:
    """``blocks.3.mlp.fc1.weight`` -> every ``blocks.3.mlp.experts.k.fc1.weight`` present."""
    m = re.match(r"^(.*\.mlp)\.(fc1|fc2|norm)\.(weight|bias)$", key)
    if not m:
        return []
    pattern = re.compile(rf"^{re.escape(m.group(1))}\.experts\.\d+\.{m.group(2)}\.{m.group(3)}$")
    return [k for k in target if pattern.match(k)]


def _resample(key: str, value: torch.Tensor, like: torch.Tensor, path: str | Path) -> torch.Tensor:
    if value.ndim != 3 or value.shape[-1] != like.shape[-1]:
        raise ExternalWeightsError(
            f"{path}: {key} shape {tuple(value.shape)} vs model {tuple(like.shape)}"
        )
    old = math.isqrt(value.shape[1] - 1)
    new = math.isqrt(like.shape[1] - 1)
    if old * old != value.shape[1] - 1:
        raise ExternalWeightsError(
            f"{path}: {key} with {value.shape[1]} tokens is not 1 + a square grid"
        )
    return resize_pos_embed(value.float(), (old, old), (new, new))

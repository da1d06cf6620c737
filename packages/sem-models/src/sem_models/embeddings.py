"""Encoder embeddings for representation diagnostics (k-means, silhouette; paper Table 1)."""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from .imaging import as_model_input, check_finite, match_channels, normalize
from .mae import MaskedAutoencoder
from .sliding_window import inference_context, model_device

__all__ = ["extract_embeddings"]


def extract_embeddings(
    model: nn.Module,
    images: torch.Tensor | np.ndarray,
    pool: Literal["mean", "cls"] = "mean",
    batch_size: int = 32,
    device: torch.device | str | None = None,
    progress: bool = False,
    amp: bool = True,
) -> np.ndarray:
    """``(N, D)`` float32 encoder features of ``[0, 1]`` images ``(N, C, H, W)``.

    All patches are visible (no masking); ``pool="mean"`` averages the patch tokens after the
    final norm (class token excluded), ``pool="cls"`` takes the class token. ``model`` is a
    :class:`MaskedAutoencoder` or a model wrapping one as ``.mae``. Integer images (0..255)
    are refused, and NaN or inf on the CPU (:func:`~sem_models.imaging.check_finite`).
    The encoder runs as every inference pass of the toolkit does
    (:func:`~sem_models.sliding_window.inference_context`): under :func:`torch.inference_mode`
    (no autograd record; an MoE layer's routing statistics are left as they are), in bf16
    autocast on a CUDA GPU with native bf16 unless ``amp=False``, fp32 everywhere else; the
    features are float32 either way.
    """
    mae = getattr(model, "mae", model)
    if not isinstance(mae, MaskedAutoencoder):
        raise TypeError(f"expected a MaskedAutoencoder (or .mae); got {type(model).__name__}")
    if pool not in ("mean", "cls"):
        raise ValueError(f"pool={pool!r} unknown; accepted: 'mean', 'cls'")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size is a whole number of images >= 1; got {batch_size=}")
    if isinstance(images, np.ndarray):
        if not np.issubdtype(images.dtype, np.floating):  # 0..255 counts would pass for 0..1
            raise ValueError(
                f"images must be float images scaled 0..1; got dtype {images.dtype} "
                "(e.g. divide 8-bit images by 255)"
            )
        images = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))
    x = as_model_input(images, torch.float32, "images")  # integer tensors refused too
    if x.ndim != 4 or x.shape[0] == 0 or x.shape[1] not in (1, 3):
        raise ValueError(
            f"images must be one or more images (N, C, H, W) of C = 1 (gray) or 3 (RGB) "
            f"channels; got shape {tuple(x.shape)}"
        )
    check_finite(x, "images")  # a NaN pixel would make its image's features NaN
    device = model_device(mae, device)
    was_training = mae.training
    mae.eval()
    feats = []
    try:
        starts = range(0, x.shape[0], batch_size)
        for s in tqdm(starts, desc="embeddings", disable=not progress):
            batch = match_channels(x[s : s + batch_size].to(device).float(), mae.in_chans)
            with inference_context(device, amp):
                latent, *_ = mae.forward_encoder(normalize(batch), 0.0)  # (B, 1 + L, D)
                f = latent[:, 1:].float().mean(dim=1) if pool == "mean" else latent[:, 0]
            feats.append(f.float().cpu())
    finally:
        mae.train(was_training)
    return torch.cat(feats).numpy()

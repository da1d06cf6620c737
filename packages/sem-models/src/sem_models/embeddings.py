"""Encoder embeddings for representation diagnostics (k-means, silhouette; paper Table 1)."""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from .imaging import match_channels, normalize
from .mae import MaskedAutoencoder
from .sliding_window import model_device

__all__ = ["extract_embeddings"]


@torch.no_grad()
def extract_embeddings(
    model: nn.Module,
    images: torch.Tensor | np.ndarray,
    pool: Literal["mean", "cls"] = "mean",
    batch_size: int = 32,
    device: torch.device | str | None = None,
    progress: bool = False,
) -> np.ndarray:
    """``(N, D)`` float32 encoder features of ``[0, 1]`` images ``(N, C, H, W)``.

    All patches are visible (no masking); ``pool="mean"`` averages the patch tokens after the
    final norm (class token excluded), ``pool="cls"`` takes the class token. ``model`` is a
    :class:`MaskedAutoencoder` or a model wrapping one as ``.mae``.
    """
    mae = getattr(model, "mae", model)
    if not isinstance(mae, MaskedAutoencoder):
        raise TypeError(f"expected a MaskedAutoencoder (or .mae); got {type(model).__name__}")
    if pool not in ("mean", "cls"):
        raise ValueError(f"pool={pool!r} unknown; accepted: 'mean', 'cls'")
    x = (
        torch.as_tensor(np.asarray(images, dtype=np.float32))
        if isinstance(images, np.ndarray)
        else images
    )
    if x.ndim != 4:
        raise ValueError(f"expected images (N, C, H, W); got {tuple(x.shape)}")
    device = model_device(mae, device)
    was_training = mae.training
    mae.eval()
    feats = []
    try:
        starts = range(0, x.shape[0], batch_size)
        for s in tqdm(starts, desc="embeddings", disable=not progress):
            batch = match_channels(x[s : s + batch_size].to(device).float(), mae.in_chans)
            latent, *_ = mae.forward_encoder(normalize(batch), 0.0)  # (B, 1 + L, D)
            f = latent[:, 1:].mean(dim=1) if pool == "mean" else latent[:, 0]
            feats.append(f.float().cpu())
    finally:
        mae.train(was_training)
    return torch.cat(feats).numpy()

"""Full-resolution inference by overlapping windows blended with a Hann weight map.

For an image larger (or smaller) than the model's input, windows of ``window`` px with
``overlap`` px overlap (stride ``window - overlap``) tile a reflect-padded copy of the image;
the model runs on batches of windows and the outputs are averaged with weights
``w(u, v) = max(hann(u) hann(v), eps)``:

    y(p) = sum_t w_t(p) f(x_t)(p) / sum_t w_t(p)

The Hann map is zero at its border, so it is clamped to ``eps`` (every pixel keeps a positive
total weight), and the image is padded by ``overlap // 2`` on each side so real pixels never
sit on a window's very edge. A constant weight-normalised average cannot create seams: an
identity model returns its input and a constant image stays constant. Memory is bounded:
only ``batch_size`` windows are on the device at a time; the accumulators live on the CPU.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

__all__ = ["hann_weights", "restore_image", "sliding_window", "window_starts"]


def hann_weights(window: int, eps: float = 1e-3) -> torch.Tensor:
    """``(window, window)`` separable symmetric Hann map, clamped to ``>= eps``."""
    n = torch.arange(window, dtype=torch.float64)
    w1 = 0.5 - 0.5 * torch.cos(2 * math.pi * (n + 0.5) / window)
    return (w1[:, None] * w1[None, :]).clamp_min(eps).float()


def window_starts(size: int, window: int, stride: int) -> list[int]:
    """Window offsets covering ``size`` px (``size >= window``), the last flush with the end."""
    n = max(1, math.ceil((size - window) / stride) + 1)
    starts = [min(i * stride, size - window) for i in range(n)]
    return sorted(set(starts))


def _as_tensor(image: np.ndarray | torch.Tensor) -> tuple[torch.Tensor, int, bool]:
    is_numpy = not isinstance(image, torch.Tensor)
    x: torch.Tensor = (
        torch.as_tensor(np.asarray(image, dtype=np.float32)) if is_numpy else image  # type: ignore[assignment]
    )
    ndim = x.ndim
    if ndim == 2:
        x = x[None, None]
    elif ndim == 3:
        x = x[None]
    elif ndim != 4 or x.shape[0] != 1:
        raise ValueError(
            f"sliding_window takes one image (H, W), (C, H, W) or (1, C, H, W); got {tuple(x.shape)}"
        )
    return x, ndim, is_numpy


@torch.no_grad()
def sliding_window(
    model: nn.Module | Callable[[torch.Tensor], torch.Tensor],
    image: np.ndarray | torch.Tensor,
    window: int = 224,
    overlap: int = 8,
    batch_size: int = 8,
    device: torch.device | str | None = None,
    eps: float = 1e-3,
    progress: bool = False,
) -> np.ndarray | torch.Tensor:
    """Apply ``model`` (``(B, C, window, window)`` -> same shape) to an image of any size.

    ``image`` is passed to the model on its own scale (models of this package expect
    ``[0, 1]``). Returns the same type (numpy or tensor) and shape as ``image``; float32.
    ``overlap`` (px, paper: 8) must be in ``[0, window)``. The model runs in eval mode
    (its previous mode is restored). ``progress`` shows a bar over the window batches.
    """
    if window < 1 or not 0 <= overlap < window:
        raise ValueError(f"need window >= 1 and 0 <= overlap < window; got {window=}, {overlap=}")
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size} must be >= 1")
    x, ndim, is_numpy = _as_tensor(image)
    out_device = x.device
    x = x.detach().float().cpu()
    if device is None:
        params = list(model.parameters()) if isinstance(model, nn.Module) else []
        device = params[0].device if params else out_device
    _, c, h, w = x.shape

    # Reflect-pad so that windows tile the image with real pixels away from window edges.
    lo = overlap // 2
    hp, wp = max(h + 2 * lo, window), max(w + 2 * lo, window)
    pad = ((0, 0), (0, 0), (lo, hp - h - lo), (lo, wp - w - lo))
    xp = torch.from_numpy(np.pad(x.numpy(), pad, mode="symmetric"))

    stride = window - overlap
    tiles = [
        (i, j) for i in window_starts(hp, window, stride) for j in window_starts(wp, window, stride)
    ]
    weight = hann_weights(window, eps)
    acc = torch.zeros(c, hp, wp)
    norm = torch.zeros(hp, wp)

    was_training = model.training if isinstance(model, nn.Module) else False
    if isinstance(model, nn.Module):
        model.eval()
    try:
        batches = range(0, len(tiles), batch_size)
        for b in tqdm(batches, desc="windows", unit="batch", disable=not progress):
            chunk = tiles[b : b + batch_size]
            batch = torch.stack([xp[0, :, i : i + window, j : j + window] for i, j in chunk])
            y = model(batch.to(device))
            if not isinstance(y, torch.Tensor) or y.shape != batch.shape:
                raise ValueError(
                    f"model must map (B, C, {window}, {window}) to the same shape; "
                    f"got {getattr(y, 'shape', type(y))} for input {tuple(batch.shape)}"
                )
            y = y.float().cpu() * weight
            for t, (i, j) in enumerate(chunk):
                acc[:, i : i + window, j : j + window] += y[t]
                norm[i : i + window, j : j + window] += weight
    finally:
        if isinstance(model, nn.Module):
            model.train(was_training)

    out = (acc / norm)[:, lo : lo + h, lo : lo + w]
    out = out.reshape(x.shape[2:]) if ndim == 2 else (out[None] if ndim == 4 else out)
    if is_numpy:
        return out.numpy()
    return out.to(out_device)


def restore_image(
    model: nn.Module,
    image: np.ndarray,
    window: int = 224,
    overlap: int = 8,
    batch_size: int = 8,
    device: torch.device | str | None = None,
) -> np.ndarray:
    """Restore a full-size numpy image on the 0..255 scale (``(H, W)`` or ``(C, H, W)``).

    Scales to ``[0, 1]`` for the model (e.g. a :class:`~sem_models.RestorationModel`), runs
    :func:`sliding_window` and returns float32 on the 0..255 scale, clipped to ``[0, 255]``.
    """
    arr = np.asarray(image, dtype=np.float32)
    if arr.ndim not in (2, 3):
        raise ValueError(f"expected an image (H, W) or (C, H, W); got shape {arr.shape}")
    out = sliding_window(model, arr / 255.0, window, overlap, batch_size, device)
    return np.clip(np.asarray(out) * 255.0, 0.0, 255.0).astype(np.float32)

"""The one place that converts images between numpy (H, W) and torch (N, 1, H, W).

Both sides keep the 0..255 intensity scale and float32; no normalisation happens here. Images
are checked by the one validator, :func:`sem_physics.validation.validate_image` (2-D, real,
finite).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from .optional import require
from .validation import validate_image

if TYPE_CHECKING:
    import torch

__all__ = ["image_to_tensor", "tensor_to_image"]


def _as_2d(image: Any, index: int | None = None) -> np.ndarray:
    where = "image" if index is None else f"image {index}"
    return validate_image(image, where, dtype=np.float32)


def image_to_tensor(image: np.ndarray | Sequence[np.ndarray], device: Any = None) -> torch.Tensor:
    """(H, W) array, (N, H, W) array or a list of equal-shape (H, W) arrays -> (N, 1, H, W) float32.

    Examples
    --------
    >>> image_to_tensor(np.zeros((4, 5))).shape
    torch.Size([1, 1, 4, 5])
    """
    torch = require("torch", "sem-physics[torch]", "image_to_tensor")

    if isinstance(image, np.ndarray) and image.ndim == 3:
        if image.shape[-1] in (3, 4) and min(image.shape[:2]) > 4:
            raise ValueError(
                f"shape {image.shape} looks like a colour image (H, W, C): convert it to grey "
                "(H, W) first (sem_physics.read_image does); a stack of images is (N, H, W)"
            )
        images = [_as_2d(im, i) for i, im in enumerate(image)]
    elif isinstance(image, list | tuple):
        if not image:
            raise ValueError("image list is empty")
        images = [_as_2d(im, i) for i, im in enumerate(image)]
        shapes = {im.shape for im in images}
        if len(shapes) != 1:
            raise ValueError(f"all images must have the same shape, got {sorted(shapes)}")
    else:
        images = [_as_2d(image)]
    stacked = np.stack(images)[:, None]
    return torch.from_numpy(np.ascontiguousarray(stacked)).to(device=device)


def tensor_to_image(t: torch.Tensor) -> np.ndarray:
    """(1, 1, H, W), (1, H, W) or (H, W) tensor on any device -> float32 numpy (H, W)."""
    shape = tuple(t.shape)
    if t.ndim == 4 and shape[:2] == (1, 1):
        t = t[0, 0]
    elif t.ndim == 3 and shape[0] == 1:
        t = t[0]
    elif t.ndim != 2:
        raise ValueError(f"expected a single image (1, 1, H, W), (1, H, W) or (H, W), got {shape}")
    return t.detach().to(device="cpu").float().numpy().astype(np.float32, copy=True)

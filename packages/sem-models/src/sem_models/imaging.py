"""The one place for image scaling, ViT-MAE normalisation and gray <-> 3-channel handling.

Models take tensors ``(N, C, H, W)`` with intensities in ``[0, 1]``. Inside, pixels are
normalised with the ViT-MAE image-processor statistics (the ImageNet mean/std per RGB
channel). A grayscale model (``C = 1``) uses the mean of the three channel statistics,
so a gray image replicated to RGB and the same image in one channel see the same numbers
up to the small spread between the RGB statistics.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "as_model_input",
    "check_finite",
    "denormalize",
    "float32_or_wider",
    "from_255",
    "match_channels",
    "norm_stats",
    "normalize",
    "reflect_indices",
    "to_255",
]

#: ViT-MAE image-processor statistics (ImageNet), RGB order, on the [0, 1] scale.
IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)


def norm_stats(channels: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) per channel for 3-channel (RGB) or 1-channel (gray) inputs."""
    if channels == 3:
        return IMAGENET_MEAN, IMAGENET_STD
    if channels == 1:
        return (sum(IMAGENET_MEAN) / 3,), (sum(IMAGENET_STD) / 3,)
    raise ValueError(f"channels={channels} is not supported; accepted: 1 (gray) or 3 (RGB)")


def _stats_like(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if not isinstance(x, torch.Tensor):
        raise TypeError(
            f"expected a torch tensor (N, C, H, W) of [0, 1] images; got {type(x).__name__} "
            "(torch.from_numpy converts an array)"
        )
    if x.ndim != 4:
        raise ValueError(f"expected images of shape (N, C, H, W); got {tuple(x.shape)}")
    mean, std = norm_stats(x.shape[1])
    dtype = x.dtype if x.is_floating_point() else torch.float32
    return (
        torch.tensor(mean, device=x.device, dtype=dtype).view(1, -1, 1, 1),
        torch.tensor(std, device=x.device, dtype=dtype).view(1, -1, 1, 1),
    )


def as_model_input(x: torch.Tensor, dtype: torch.dtype, name: str) -> torch.Tensor:
    """``x`` checked for a model entry and cast to the model's parameter ``dtype``.

    Any float input works (bf16, fp16, the float64 of ``torch.from_numpy``): a layer would
    otherwise refuse a dtype other than its weights'. Under :func:`torch.autocast` an input in
    float32 or in the autocast dtype is left as it is (autocast picks each op's dtype); others
    (float64, fp16 under bf16 autocast), which autocast cannot mix, are cast. Integer, boolean
    and complex tensors are refused: the models expect ``[0, 1]``.
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(
            f"expected a torch tensor (N, C, H, W) of [0, 1] images as {name}; got "
            f"{type(x).__name__} (torch.from_numpy converts an array)"
        )
    if not x.is_floating_point():
        raise ValueError(
            f"{name} must be a float tensor scaled 0..1; got dtype {x.dtype} "
            "(e.g. divide 8-bit images by 255)"
        )
    if x.dtype == dtype:
        return x
    device = x.device.type
    if torch.is_autocast_enabled(device) and x.dtype in (
        torch.float32,
        torch.get_autocast_dtype(device),
    ):
        return x
    return x.to(dtype)


def float32_or_wider(x: torch.Tensor) -> torch.Tensor:
    """``x`` in float32, or in float64 when it is float64: model outputs and losses leave
    bf16/fp16 (autocast's, or a half model's) for float32, and a float64 model keeps its
    precision rather than being rounded to float32."""
    return x if x.dtype == torch.float64 else x.float()


def check_finite(x: torch.Tensor, name: str) -> None:
    """ValueError naming ``name`` when ``x`` holds NaN or inf (it would spread silently).

    Checked on the CPU only, where it costs under 1.5 % of a tiny model's forward (measured,
    32-224 px); on an accelerator the test would wait for the device at every forward, and
    under ``torch.compile`` it would break the graph, so there it is skipped.
    """
    if x.device.type != "cpu" or torch.compiler.is_compiling():
        return
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} holds NaN or inf values")


def reflect_indices(size: int, before: int, after: int) -> torch.Tensor:
    """Indices extending ``0..size`` by symmetric (half-sample) reflection, any length.

    The padding rule of the whole package (``numpy.pad(mode="symmetric")``, repeated for
    paddings longer than the axis): the sliding window and the models pad alike, so an image
    of at most one window gives the model's own single pass.
    """
    idx = torch.arange(-before, size + after) % (2 * size)
    return torch.where(idx >= size, 2 * size - 1 - idx, idx)


def reflect_pad(x: torch.Tensor, bottom: int, right: int) -> torch.Tensor:
    """``(..., H, W)`` padded at the bottom and right by :func:`reflect_indices`."""
    h, w = x.shape[-2:]
    rows = reflect_indices(h, 0, bottom).to(x.device)
    cols = reflect_indices(w, 0, right).to(x.device)
    return x.index_select(-2, rows).index_select(-1, cols)


def normalize(x: torch.Tensor) -> torch.Tensor:
    """``[0, 1]`` images ``(N, C, H, W)`` -> ViT-MAE normalised ``(x - mean) / std``."""
    mean, std = _stats_like(x)
    return (x - mean) / std


def denormalize(x: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`normalize`: back to the ``[0, 1]`` scale (not clamped)."""
    mean, std = _stats_like(x)
    return x * std + mean


def match_channels(x: torch.Tensor, channels: int) -> torch.Tensor:
    """Gray -> RGB by replication, RGB -> gray by the channel mean; other counts rejected."""
    c = x.shape[1]
    if c == channels:
        return x
    if c == 1 and channels == 3:
        return x.expand(-1, 3, -1, -1)
    if c == 3 and channels == 1:
        return x.mean(dim=1, keepdim=True)
    raise ValueError(f"cannot convert {c}-channel images to {channels} channels (1 or 3 only)")


def from_255(image: np.ndarray) -> torch.Tensor:
    """A numpy image ``(H, W)`` or ``(C, H, W)`` on the 0..255 scale -> ``(1, C, H, W)`` in [0, 1]."""
    arr = np.asarray(image, dtype=np.float32)
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3:
        raise ValueError(f"expected an image of shape (H, W) or (C, H, W); got {arr.shape}")
    return torch.from_numpy(arr / 255.0)[None]


def to_255(x: torch.Tensor, squeeze: bool = True) -> np.ndarray:
    """``(1, C, H, W)`` in [0, 1] -> float32 numpy on the 0..255 scale, ``(H, W)`` if gray."""
    arr = (x.detach().float().cpu().numpy() * 255.0).astype(np.float32)[0]
    return arr[0] if squeeze and arr.shape[0] == 1 else arr

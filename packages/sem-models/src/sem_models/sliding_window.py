"""Full-resolution inference by overlapping windows blended with a Hann weight map.

For an image larger (or smaller) than the model's input, windows of ``window`` px with
``overlap`` px overlap (stride ``window - overlap``) tile a reflect-padded copy of the image;
the model runs on batches of windows and the outputs are averaged with weights
``w(u, v) = max(hann(u) hann(v), eps)`` (arXiv 2604.05960, Sec. 2.3: 224-px windows,
8-px overlap):

    y(p) = sum_t w_t(p) f(x_t)(p) / sum_t w_t(p)

The Hann map is zero at its border, so it is clamped to ``eps`` (every pixel keeps a positive
total weight). Along an axis longer than the window the image is padded by ``overlap // 2`` on
each side so real pixels never sit on a window's very edge; along an axis that fits in one
window it is only padded up to the window, so an image of at most one window is processed as
exactly one window and the result is that single pass (the weights cancel). A weight-normalised
average cannot create seams: an identity model returns its input and a constant image stays
constant.

Speed: all windows are cut at once and run in batches of ``batch_size`` windows, one forward
per batch, under :func:`torch.inference_mode` and, on CUDA, bf16 autocast
(:func:`inference_context`); the blend is accumulated on the model's device.
"""

from __future__ import annotations

import math
import numbers
import threading
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from .imaging import reflect_indices
from .precision import native_bf16

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "grid_averaging_overlap",
    "hann_weights",
    "inference_context",
    "model_device",
    "restore_image",
    "sliding_window",
    "window_starts",
]

#: Windows per forward pass: amortises per-call costs (on a CPU a ViT gains little beyond
#: this) and keeps a ViT-L's activations at 224 px well within a GPU's memory.
DEFAULT_BATCH_SIZE = 8


def _check_eps(eps: object) -> None:
    """Refuse a weight floor that is not a finite real number > 0 (NaN would blank the output;
    0 or less leaves the window border without weight)."""
    if (
        isinstance(eps, bool)
        or not isinstance(eps, numbers.Real)
        or not math.isfinite(eps)
        or not float(eps) > 0
    ):
        raise ValueError(f"eps is the weight floor, a finite number > 0; got {eps=}")


def hann_weights(window: int, eps: float = 1e-3) -> torch.Tensor:
    """``(window, window)`` separable symmetric Hann map, clamped to ``>= eps``."""
    _check_eps(eps)
    n = torch.arange(window, dtype=torch.float64)
    w1 = 0.5 - 0.5 * torch.cos(2 * math.pi * (n + 0.5) / window)
    return (w1[:, None] * w1[None, :]).clamp_min(eps).float()


def window_starts(size: int, window: int, stride: int) -> list[int]:
    """Window offsets covering ``size`` px (``size >= window``), the last flush with the end."""
    n = max(1, math.ceil((size - window) / stride) + 1)
    starts = [min(i * stride, size - window) for i in range(n)]
    return sorted(set(starts))


def grid_averaging_overlap(window: int, patch: int) -> int:
    """Overlap (px) at which the blend averages a ViT's patch grid out of the output.

    A ViT's output can carry a faint pattern locked to its patch grid (the shipped model: a
    peak at 1/8 cycles/px, 3-5x the neighbouring power, on 16-px patches). With the paper's
    8-px overlap every window starts on the same grid phase (or half a patch off), so the
    pattern survives the blend. Here the stride is the largest ``s <= window // 2`` with
    ``s mod patch = patch - patch // 4``: each pixel is covered by about two windows per axis,
    and consecutive windows start a quarter patch apart on the grid, so their patterns are out
    of phase and average out (for 16-px patches at 128 px: stride 60, overlap 68; at 224 px:
    stride 108). About 4x the windows of the paper's tiling.
    """
    if window < 2 or patch < 1:
        raise ValueError(f"need window >= 2 and patch >= 1; got {window=}, {patch=}")
    offset = patch - max(1, patch // 4)
    stride = (window // 2 - offset) // patch * patch + offset
    if stride < 1:
        stride = max(1, window // 2)
    return window - stride


def _autocast_available(device_type: str) -> bool:
    check = getattr(torch.amp, "is_autocast_available", None)  # torch >= 2.4
    return bool(check(device_type)) if check else device_type in ("cpu", "cuda")


@contextmanager
def inference_context(device: torch.device | str, amp: bool = True) -> Iterator[None]:
    """:func:`torch.inference_mode`, plus bf16 autocast when ``device`` is a CUDA GPU with
    native bf16 (:func:`~sem_models.precision.native_bf16`) and ``amp``; everywhere else fp32,
    also inside a caller's autocast (which would otherwise run the CPU forward in bf16)."""
    dev = torch.device(device)
    with torch.inference_mode():
        if amp and dev.type == "cuda" and native_bf16(dev):
            with torch.autocast("cuda", dtype=torch.bfloat16):
                yield
        elif _autocast_available(dev.type):
            with torch.autocast(dev.type, enabled=False):
                yield
        else:
            yield


#: Largest window for an image smaller than it, unless twice the image's larger side is more:
#: the image is padded to the window and a ViT's cost grows with the window's area squared.
MAX_PADDED_WINDOW = 512


def _check_real(arr: np.ndarray | torch.Tensor) -> None:
    """Refuse boolean, complex and non-numeric images (a cast would drop or invent values)."""
    if isinstance(arr, torch.Tensor):
        bad = arr.dtype == torch.bool or arr.is_complex()
    else:
        bad = arr.dtype == bool or np.iscomplexobj(arr) or not np.issubdtype(arr.dtype, np.number)
    if bad:
        raise ValueError(f"the image must be real numeric, got dtype {arr.dtype}")


def _as_tensor(image: np.ndarray | torch.Tensor) -> tuple[torch.Tensor, int, bool]:
    is_numpy = not isinstance(image, torch.Tensor)
    if is_numpy:
        arr = np.asarray(image)
        _check_real(arr)
        if arr.ndim == 3 and arr.shape[-1] in (1, 3, 4) and arr.shape[0] > 4:
            raise ValueError(
                f"expected an image (H, W) or (C, H, W); got shape {arr.shape}: channels "
                "last? (pass a grey (H, W) image, or move the channels first)"
            )
        x = torch.as_tensor(arr.astype(np.float32, copy=False))
    else:
        _check_real(image)  # type: ignore[arg-type]
        x = image  # type: ignore[assignment]
    ndim = x.ndim
    if ndim == 2:
        x = x[None, None]
    elif ndim == 3:
        x = x[None]
    elif ndim != 4 or x.shape[0] != 1:
        raise ValueError(
            f"sliding_window takes one image (H, W), (C, H, W) or (1, C, H, W); got {tuple(x.shape)}"
        )
    if x.numel() == 0:
        raise ValueError(f"sliding_window got an empty image, shape {tuple(x.shape)}")
    if not bool(torch.isfinite(x).all()):  # one NaN would spread over its windows' outputs
        raise ValueError("sliding_window got an image with NaN or inf values")
    return x, ndim, is_numpy


def _axis_padding(size: int, window: int, overlap: int) -> tuple[int, int]:
    """Reflect padding (before, after) of one axis: none beyond the window when it fits in one."""
    if size <= window:
        return 0, window - size
    lo = overlap // 2
    return lo, lo


#: Held while :func:`sliding_window` has switched a model in training mode to eval, so that
#: concurrent calls on such a model serialise and its mode is restored.
_MODE_LOCK = threading.RLock()


@contextmanager
def _eval_mode(model: object) -> Iterator[None]:
    """The model in eval mode for the block: untouched when it already is (then concurrent
    calls run freely), else switched to eval and back to training mode after, with
    :data:`_MODE_LOCK` held throughout. The mode is read under the lock, so a model that
    another call has switched is not mistaken for one in eval mode."""
    if not isinstance(model, nn.Module):
        yield
        return
    _MODE_LOCK.acquire()
    if not model.training:
        _MODE_LOCK.release()
        yield
        return
    try:
        model.eval()
        try:
            yield
        finally:
            model.train(True)
    finally:
        _MODE_LOCK.release()


def model_device(
    model: object, device: torch.device | str | None, default: torch.device | str = "cpu"
) -> torch.device:
    """The device to run ``model`` on: ``device`` if given, else its weights' (``default`` for
    a model without weights). A ``device`` other than the weights' is refused with a clear
    message (torch would fail deep inside the first layer): the caller moves the model. A
    device without an index (``"cuda"``) means the weights' device of that type, and any CPU
    device (``"cpu:0"``) the CPU."""
    params = list(model.parameters()) if isinstance(model, nn.Module) else []
    if device is None:
        return params[0].device if params else torch.device(default)
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(
            f"device={device!r} is not a device name (cpu, cuda, cuda:N, mps, meta, a "
            "torch.device, or None for the model's)"
        ) from err
    if not params:
        return device
    home = params[0].device
    # "cuda" means the weights' GPU; "cpu:0" is the one CPU (torch keeps CPU tensors on "cpu")
    if home.type == device.type and (device.index is None or home.type == "cpu"):
        return home
    if home != device:
        raise ValueError(
            f"device={str(device)!r} but the model's weights are on {params[0].device}: move "
            f"the model first (model.to({str(device)!r})) or leave device=None (the model's)"
        )
    return device


def _is_whole(value: object) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _check_sizes(window: object, overlap: object, batch_size: object) -> None:
    """Refuse sizes that are not whole numbers (a bool, float or str) or out of range."""
    if not (_is_whole(window) and _is_whole(overlap)):
        raise ValueError(f"window and overlap are whole pixels; got {window=}, {overlap=}")
    if window < 1 or not 0 <= overlap < window:  # type: ignore[operator]
        raise ValueError(f"need window >= 1 and 0 <= overlap < window; got {window=}, {overlap=}")
    if not _is_whole(batch_size) or batch_size < 1:  # type: ignore[operator]
        raise ValueError(f"batch_size is a whole number of windows >= 1; got {batch_size=}")


def _check_model(model: object) -> None:
    if not callable(model):
        raise TypeError(
            f"model must be a torch.nn.Module or a callable (tensor -> tensor); got "
            f"{type(model).__name__}"
        )


def sliding_window(
    model: nn.Module | Callable[[torch.Tensor], torch.Tensor],
    image: np.ndarray | torch.Tensor,
    window: int = 224,
    overlap: int = 8,
    batch_size: int = DEFAULT_BATCH_SIZE,
    device: torch.device | str | None = None,
    eps: float = 1e-3,
    progress: bool = False,
    amp: bool = True,
) -> np.ndarray | torch.Tensor:
    """Apply ``model`` (``(B, C, window, window)`` -> ``(B, C', window, window)``) to an image.

    ``image`` is passed to the model on its own scale (models of this package expect
    ``[0, 1]``). Returns the same type (numpy or tensor) and shape as ``image``, float32, with
    the model's channel count ``C'`` (a model reading extra guide channels returns fewer).
    ``overlap`` (px, paper: 8) must be in ``[0, window)``. ``batch_size`` windows go through
    the model per forward pass; the result does not depend on it. The model runs in eval mode
    under :func:`inference_context` (bf16 autocast on CUDA unless ``amp=False``).
    ``progress`` shows a bar over the window batches.

    Threads: a model already in eval mode is not touched, so several threads can share it;
    call ``model.eval()`` once before serving from several threads. A model in training mode
    is switched to eval for the call and back after, holding a lock that every call takes to
    read the mode (calls starting meanwhile wait for it; a training step running meanwhile in
    another thread would see eval mode).
    """
    _check_model(model)
    _check_sizes(window, overlap, batch_size)
    _check_eps(eps)
    x, ndim, is_numpy = _as_tensor(image)
    side = max(x.shape[-2:])
    if window > max(MAX_PADDED_WINDOW, 2 * side):
        raise ValueError(
            f"window={window} px for an image of {tuple(x.shape[-2:])} px: it would be padded "
            f"to the window, at a cost growing with the window's area; use a window of at most "
            f"{max(MAX_PADDED_WINDOW, 2 * side)} px"
        )
    out_device = x.device
    device = model_device(model, device, default=out_device)
    x = x.detach().to(device=device, dtype=torch.float32)
    h, w = x.shape[-2:]

    (top, bottom), (left, right) = (_axis_padding(s, window, overlap) for s in (h, w))
    rows = reflect_indices(h, top, bottom).to(device)
    cols = reflect_indices(w, left, right).to(device)
    xp = x[0].index_select(1, rows).index_select(2, cols)  # (C, hp, wp)
    hp, wp = xp.shape[-2:]

    stride = window - overlap
    tiles = [
        (i, j) for i in window_starts(hp, window, stride) for j in window_starts(wp, window, stride)
    ]
    weight = hann_weights(window, eps).to(device)
    acc: torch.Tensor | None = None  # (C', hp, wp), sized by the model's first output
    norm = torch.zeros(hp, wp, device=device, dtype=torch.float32)  # whatever the default dtype
    for i, j in tiles:
        norm[i : i + window, j : j + window] += weight

    with _eval_mode(model):
        batches = range(0, len(tiles), batch_size)
        for b in tqdm(batches, desc="windows", unit="batch", disable=not progress):
            chunk = tiles[b : b + batch_size]
            batch = torch.stack([xp[:, i : i + window, j : j + window] for i, j in chunk])
            with inference_context(device, amp):
                y = model(batch)
            if isinstance(y, tuple):  # what a MaskedAutoencoder returns
                raise ValueError(
                    f"model returned a tuple of {len(y)}, not an image batch: a pretrained "
                    "MaskedAutoencoder returns (loss, prediction, mask); restore with a "
                    "restoration model, e.g. sem_models.RestorationModel(mae)"
                )
            if (
                not isinstance(y, torch.Tensor)
                or y.ndim != 4
                or y.shape[0] != batch.shape[0]
                or y.shape[2:] != batch.shape[2:]
            ):
                raise ValueError(
                    f"model must map (B, C, {window}, {window}) to (B, C', {window}, {window}); "
                    f"got {getattr(y, 'shape', type(y))} for input {tuple(batch.shape)}"
                )
            if acc is None:
                acc = torch.zeros(y.shape[1], hp, wp, device=device, dtype=torch.float32)
            y = y.float() * weight
            for t, (i, j) in enumerate(chunk):
                acc[:, i : i + window, j : j + window] += y[t]

    assert acc is not None  # at least one window always runs
    out = (acc / norm)[:, top : top + h, left : left + w]
    if ndim == 2 and out.shape[0] == 1:
        out = out[0]
    elif ndim == 4:
        out = out[None]
    if is_numpy:
        return out.cpu().numpy()
    return out.to(out_device)


def _check_grey_scale(arr: np.ndarray) -> None:
    """Refuse an image off the 0..255 grey scale, warn about a 0..1 one."""
    if arr.size == 0 or not np.all(np.isfinite(arr)):
        return  # sliding_window names these
    peak, below = float(arr.max()), np.count_nonzero(arr < 0) / arr.size
    if peak > 2 * 255:
        raise ValueError(
            f"the image reaches {peak:g}, beyond the 0..255 grey scale (scale it to 0..255, e.g. "
            f"multiply by 255/{peak:g} = {255.0 / peak:.3g}; sem_physics.read_image scales "
            "8/16-bit files to 0..255)"
        )
    if below > 0.5:
        raise ValueError(
            f"more than half of the image is below 0 ({below:.0%} of the pixels): an inverted "
            "image or one with a negative pedestal, not 0..255 grey levels"
        )
    if 0 < peak <= 1.05:  # sem_physics.levels.UNIT_OVERSHOOT_MAX: a resampled 0..1 image
        warnings.warn(
            f"the image's values lie in 0..{peak:g}: a 0..1 image? restore_image works on the "
            "0..255 scale (multiply by 255)",
            stacklevel=3,
        )


def restore_image(
    model: nn.Module,
    image: np.ndarray,
    window: int = 224,
    overlap: int | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    device: torch.device | str | None = None,
) -> np.ndarray:
    """Restore a full-size numpy image on the 0..255 scale (``(H, W)`` or ``(C, H, W)``).

    Scales to ``[0, 1]`` for the model (e.g. a :class:`~sem_models.RestorationModel`), runs
    :func:`sliding_window` and returns float32 on the 0..255 scale, clipped to ``[0, 255]``.
    An image that is not on that scale is refused (16-bit counts, an inverted image) or, when
    it looks like a 0..1 image, warned about: the output would be clipped garbage.

    ``overlap=None`` takes :func:`grid_averaging_overlap` for the model's ``patch_size``
    (8 px, the paper's, for a model without one): with the shipped model the paper's 8-px
    overlap leaves a visible seam on smooth gradients (measured on a ramp with 128-px windows:
    the residual changes by 5.1 grey levels within 8 px at a window edge; 0.8 with the default).
    """
    raw = np.asarray(image)
    _check_real(raw)
    arr = raw.astype(np.float32, copy=False)
    _check_grey_scale(arr)
    if arr.ndim not in (2, 3):  # sliding_window also takes (1, C, H, W)
        raise ValueError(f"expected an image (H, W) or (C, H, W); got shape {arr.shape}")
    _check_model(model)
    _check_sizes(window, 0 if overlap is None else overlap, batch_size)
    if overlap is None:
        patch = getattr(model, "patch_size", None)
        overlap = grid_averaging_overlap(window, int(patch)) if patch else 8
    out = sliding_window(model, arr / 255.0, window, overlap, batch_size, device)
    return np.clip(np.asarray(out) * 255.0, 0.0, 255.0).astype(np.float32)

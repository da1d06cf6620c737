"""FFT convolution with reflective boundaries, in numpy and in batched torch.

Boundary convention: the image is extended by half-sample symmetric reflection
(``d c b a | a b c d | d c b a``), which is ``scipy.ndimage`` mode ``'reflect'`` and numpy's
``np.pad(mode='symmetric')``. The padded image is transformed once with a real FFT of a fast
length; the kernel's transform is computed from its few non-zero rows only. The result equals
``scipy.ndimage.convolve(image, kernel, mode='reflect')`` to float32 rounding.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import scipy.fft as sfft

if TYPE_CHECKING:
    import torch

__all__ = ["convolve_reflect", "convolve_reflect_torch", "symmetric_indices"]


def symmetric_indices(n: int, pad: int) -> np.ndarray:
    """Indices that extend an axis of length ``n`` by ``pad`` on both sides (mode 'reflect').

    Works for any ``pad``, also larger than ``n`` (the reflection repeats with period ``2n``).
    """
    idx = np.arange(-pad, n + pad)
    period = 2 * n
    idx = np.mod(idx, period)
    return np.where(idx >= n, period - 1 - idx, idx)


def _check_kernel(kernel: np.ndarray) -> np.ndarray:
    kernel = np.asarray(kernel)
    if kernel.ndim != 2 or kernel.shape[0] != kernel.shape[1] or kernel.shape[0] % 2 == 0:
        raise ValueError(f"kernel must be square with odd side, got shape {kernel.shape}")
    if not np.all(np.isfinite(kernel)):
        raise ValueError("kernel contains NaN or inf")
    return kernel


def _check_image(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim != 2:
        raise ValueError(f"image must be 2-D (H, W), got shape {image.shape}")
    if image.size == 0:
        raise ValueError(f"image is empty, shape {image.shape}")
    if not np.issubdtype(image.dtype, np.number) or np.iscomplexobj(image):
        raise ValueError(f"image must be real numeric, got dtype {image.dtype}")
    return image


def convolve_reflect(
    image: np.ndarray, kernel: np.ndarray, dtype: type[np.floating] = np.float32
) -> np.ndarray:
    """Convolve a 2-D image with an odd square kernel, reflective boundaries, via FFT.

    Parameters
    ----------
    image : (H, W) real array.
    kernel : (k, k) array, k odd; need not be normalised.
    dtype : working and output precision (float32 by default, float64 for reference work).

    Returns
    -------
    (H, W) array of ``dtype``, same grid as ``image``.
    """
    image = _check_image(image)
    kernel = _check_kernel(kernel)
    k = kernel.shape[0]
    p = k // 2
    h, w = image.shape
    padded = image[np.ix_(symmetric_indices(h, p), symmetric_indices(w, p))].astype(dtype)
    fh, fw = sfft.next_fast_len(h + 2 * p, real=True), sfft.next_fast_len(w + 2 * p, real=True)
    spec = sfft.rfft2(padded, s=(fh, fw))
    # Kernel transform: rfft along rows of the k non-zero rows only, then a full FFT along columns.
    krow = sfft.rfft(kernel.astype(dtype), n=fw, axis=1)
    kspec = sfft.fft(krow, n=fh, axis=0)
    spec *= kspec
    out = sfft.irfft2(spec, s=(fh, fw))
    return np.ascontiguousarray(out[k - 1 : k - 1 + h, k - 1 : k - 1 + w], dtype=dtype)


def convolve_reflect_torch(
    images: torch.Tensor, kernels: torch.Tensor | Sequence[torch.Tensor]
) -> torch.Tensor:
    """Batched reflective FFT convolution on any device.

    Parameters
    ----------
    images : (N, 1, H, W) or (N, H, W) float tensor.
    kernels : one (k, k) / (1, k, k) kernel for all images, an (N, k, k) tensor, or a sequence of
        N odd square kernels of possibly different sizes (zero-padded to the largest, which does
        not change the result).

    Returns
    -------
    Tensor of the shape of ``images``.
    """
    import torch

    squeeze = images.ndim == 3
    if squeeze:
        images = images.unsqueeze(1)
    if images.ndim != 4 or images.shape[1] != 1:
        raise ValueError(f"images must be (N, 1, H, W), got {tuple(images.shape)}")
    if not images.is_floating_point():
        images = images.float()
    n, _, h, w = images.shape
    if isinstance(kernels, torch.Tensor):
        kern = kernels.to(device=images.device, dtype=images.dtype)
        if kern.ndim == 2:
            kern = kern.unsqueeze(0)
        if kern.ndim != 3 or kern.shape[-1] != kern.shape[-2] or kern.shape[-1] % 2 == 0:
            raise ValueError(f"kernels must be (N, k, k) with k odd, got {tuple(kern.shape)}")
        if kern.shape[0] not in (1, n):
            raise ValueError(f"got {kern.shape[0]} kernels for {n} images")
    else:
        kernels = list(kernels)
        if len(kernels) != n:
            raise ValueError(f"got {len(kernels)} kernels for {n} images")
        kmax = max(int(kk.shape[-1]) for kk in kernels)
        kern = images.new_zeros((n, kmax, kmax))
        for i, kk in enumerate(kernels):
            kk = torch.as_tensor(kk).reshape(kk.shape[-2], kk.shape[-1])
            s = int(kk.shape[-1])
            if s % 2 == 0 or kk.shape[-2] != s:
                raise ValueError(f"kernel {i} must be square with odd side, got {tuple(kk.shape)}")
            o = (kmax - s) // 2
            kern[i, o : o + s, o : o + s] = kk.to(device=images.device, dtype=images.dtype)
    k = kern.shape[-1]
    p = k // 2
    ri = torch.as_tensor(symmetric_indices(h, p), device=images.device)
    ci = torch.as_tensor(symmetric_indices(w, p), device=images.device)
    padded = images[:, 0].index_select(1, ri).index_select(2, ci)
    fh, fw = sfft.next_fast_len(h + 2 * p, real=True), sfft.next_fast_len(w + 2 * p, real=True)
    spec = torch.fft.rfft2(padded, s=(fh, fw))
    kspec = torch.fft.rfft2(kern, s=(fh, fw))
    out = torch.fft.irfft2(spec * kspec, s=(fh, fw))[:, k - 1 : k - 1 + h, k - 1 : k - 1 + w]
    out = out.unsqueeze(1).contiguous()
    return out[:, 0] if squeeze else out

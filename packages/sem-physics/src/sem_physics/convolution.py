"""FFT convolution with reflective boundaries, in numpy and in batched torch.

Boundary convention: the image is extended by half-sample symmetric reflection
(``d c b a | a b c d | d c b a``), which is ``scipy.ndimage`` mode ``'reflect'`` and numpy's
``np.pad(mode='symmetric')``, repeated with period ``2n`` when the kernel is wider than the
image. The result equals ``scipy.ndimage.convolve(image, kernel, mode='reflect')`` to float
rounding for images at least as large as the kernel (every protocol and CLI run: they refuse
smaller ones). On images thinner than the kernel (e.g. 2-11 rows under the 93-px midpoint
kernel) ndimage differs, by up to 7 grey levels (at 6 rows it returns garbage, a SciPy
problem); the result here is the convolution with the periodic half-sample extension itself.

Method: the image is padded by reflection straight to a fast FFT size ``(fh, fw)`` (at least
``k - 1`` extra rows and columns), transformed once with a real FFT, multiplied by the kernel's
transform and transformed back; the kernel sits circularly centred on the origin, so the
result is the top-left ``(H, W)`` block shifted by ``k // 2``. Padding content beyond
``k // 2`` never reaches the kept block.

Memory: the 2-D transforms are taken axis by axis, as ``rfft2``/``irfft2`` take them, in one
complex buffer the size of the padded frame: padded rows are made and transformed a band at a
time, the column transforms run in place, and the inverse row transforms write the kept block
back into the buffer's own memory. With the kernel's transform (half that size, during the
product) this is 1.5 padded frames at most, where whole-array transforms held four to five.
The results are bit for bit those of ``rfft2``/``irfft2``: the same 1-D transforms of the
same lines, bands aligned to 8 lines so pocketfft groups them into vector lanes as it does for
the whole array, and ``irfft2``'s single scaling ``1 / (fh fw)`` applied to the unscaled
inverse as one multiplication.

Kernel transform: SEM PSFs are centro-symmetric, ``h(-x, -y) = h(x, y)``, so their centred
transform ``K(u, v)`` is real. After a real FFT along rows of the ``k // 2 + 1`` rows
``y >= 0`` only, each column ``R(y, v)`` is Hermitian in ``y`` (``R(-y, v) = conj R(y, v)``),
and ``K(u, v) = K(-u, -v) = fh * irfft_y(R')(u, v)`` with ``R'`` made from the x-mirrored
kernel: half a complex FFT on a few rows instead of a full 2-D transform. A kernel
that is not centro-symmetric takes the general path (full transform). Transforms of kernels
used repeatedly are cached.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import scipy.fft as sfft

if TYPE_CHECKING:
    import torch

__all__ = [
    "clear_kernel_cache",
    "convolve_reflect",
    "convolve_reflect_torch",
    "fft_shape",
    "kernel_transfer",
    "symmetric_indices",
]

_CACHE_SIZE = 4
_CacheKey = tuple[bytes, int, int, str]
_spectrum_cache: OrderedDict[_CacheKey, np.ndarray] = OrderedDict()
_seen_once: OrderedDict[_CacheKey, None] = OrderedDict()
_cache_lock = threading.Lock()


def clear_kernel_cache() -> None:
    """Forget the cached kernel transforms of :func:`convolve_reflect`."""
    with _cache_lock:
        _spectrum_cache.clear()
        _seen_once.clear()


def kernel_transfer(kernel: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Real FFT (``rfft2`` grid of ``shape``) of a square odd ``kernel`` centred on pixel (0, 0):
    the transfer function of a circular convolution on that grid (a kernel larger than the grid
    wraps and adds)."""
    buf = np.zeros(shape)
    p = kernel.shape[0] // 2
    rows = (np.arange(-p, p + 1) % shape[0])[:, None]
    cols = (np.arange(-p, p + 1) % shape[1])[None, :]
    np.add.at(buf, (rows, cols), kernel)
    return sfft.rfft2(buf)


def symmetric_indices(n: int, pad: int, pad_after: int | None = None) -> np.ndarray:
    """Indices that extend an axis of length ``n`` by ``pad`` before and ``pad_after`` (default
    ``pad``) after, with mode 'reflect' (any pad, also larger than ``n``: period ``2n``)."""
    idx = np.arange(-pad, n + (pad if pad_after is None else pad_after))
    period = 2 * n
    idx = np.mod(idx, period)
    return np.where(idx >= n, period - 1 - idx, idx)


def fft_shape(h: int, w: int, k: int) -> tuple[int, int]:
    """Fast real-FFT size for an (h, w) image and a k x k kernel: ``next_fast_len(n + k - 1)``."""
    return sfft.next_fast_len(h + k - 1, real=True), sfft.next_fast_len(w + k - 1, real=True)


def _cached_kernel_spectrum(kernel: np.ndarray, fh: int, fw: int) -> np.ndarray:
    """:func:`_kernel_spectrum`, kept for kernels used more than once (the last four).

    Iterative methods (Richardson-Lucy, fixed-PSF protocols) convolve with one kernel many
    times; the key is a digest of the kernel's bytes, so equal kernels hit and any change
    misses. A kernel's first transform is not kept: sampled protocols use every kernel once,
    and a retained multi-megabyte array per call would cost fresh memory (page faults) each time.
    """
    key = (hashlib.sha1(kernel.tobytes()).digest(), fh, fw, kernel.dtype.str)
    with _cache_lock:
        spec = _spectrum_cache.get(key)
        if spec is not None:
            _spectrum_cache.move_to_end(key)
            return spec
        repeat = key in _seen_once
        if not repeat:
            _seen_once[key] = None
            while len(_seen_once) > 16:
                _seen_once.popitem(last=False)
    spec = _kernel_spectrum(kernel, fh, fw)
    if repeat:
        spec.flags.writeable = False
        with _cache_lock:
            _spectrum_cache[key] = spec
            while len(_spectrum_cache) > _CACHE_SIZE:
                _spectrum_cache.popitem(last=False)
    return spec


def _kernel_spectrum(kernel: np.ndarray, fh: int, fw: int) -> np.ndarray:
    """Transform of the origin-centred kernel on the (fh, fw) grid: real when centro-symmetric."""
    k = kernel.shape[0]
    p = k // 2
    if np.array_equal(kernel, kernel[::-1, ::-1]):
        # Rows y = 0..p of the x-mirrored kernel, columns wrapped: the inverse real FFT along
        # y then gives K'(-u, v) / fh = K(-u, -v) / fh = K(u, v) / fh.
        # The factor fh is applied to these few rows rather than to the (fh, fw) result.
        mirrored = kernel[p:, ::-1] * kernel.dtype.type(fh)
        rows = np.zeros((p + 1, fw), dtype=kernel.dtype)
        rows[:, : p + 1] = mirrored[:, p:]
        rows[:, fw - p :] = mirrored[:, :p]
        half = sfft.rfft(rows, axis=1)
        # the inverse along y a band of columns at a time: no zero-padded copy of the whole
        spec = np.empty((fh, half.shape[1]), dtype=half.real.dtype)
        step = _band_lines(fh, spec.itemsize)
        for c in range(0, half.shape[1], step):
            spec[:, c : c + step] = sfft.irfft(half[:, c : c + step], n=fh, axis=0)
        return spec
    full = np.zeros((fh, fw), dtype=kernel.dtype)
    idx_r = np.arange(-p, p + 1) % fh
    idx_c = np.arange(-p, p + 1) % fw
    full[np.ix_(idx_r, idx_c)] = kernel
    return sfft.rfft2(full)


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
    if not np.all(np.isfinite(image)):  # one NaN would spread over the whole FFT output
        raise ValueError("image contains NaN or inf values")
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
    (H, W) C-contiguous array of ``dtype``, same grid as ``image`` (a view of the transform's
    buffer, the size of the padded frame: the caller may overwrite it). Transforms of
    kernels used more than once are cached, the last four (:func:`clear_kernel_cache`).
    """
    image = _check_image(image)
    if not np.issubdtype(np.dtype(dtype), np.floating):  # an integer kernel would be all zeros
        raise ValueError(f"dtype must be float32 or float64, got {np.dtype(dtype).name}")
    kernel = _check_kernel(kernel).astype(dtype)
    k = kernel.shape[0]
    p = k // 2
    h, w = image.shape
    fh, fw = fft_shape(h, w, k)
    spec = _padded_row_spectra(image, p, fh, fw, np.dtype(dtype))
    spec = sfft.fft(spec, axis=0, overwrite_x=True)  # in place: rfft2's second pass
    spec *= _cached_kernel_spectrum(kernel, fh, fw)
    spec = sfft.ifft(spec, axis=0, norm="forward", overwrite_x=True)  # irfft2's first pass
    return _kept_block_in_place(spec, p, h, w, fw)


_LANES = 8  # a multiple of pocketfft's vector width (2, 4 or 8 lines of float64)
_BAND_BYTES = 1 << 22  # lines transformed per call: about 4 MiB


def _band_lines(length: int, itemsize: int) -> int:
    """Lines of ``length`` real values per band: about :data:`_BAND_BYTES`, a multiple of
    :data:`_LANES` (so each call groups lines into vector lanes as one call for all would)."""
    return max(_LANES, _BAND_BYTES // (length * itemsize) // _LANES * _LANES)


def _padded_row_spectra(image: np.ndarray, p: int, fh: int, fw: int, dtype: np.dtype) -> np.ndarray:
    """Real FFT along rows of ``image`` padded by reflection to (fh, fw), ``p`` rows and
    columns before it: ``rfft2``'s first pass, computed band by band into one complex array,
    so neither the padded frame nor an upcast copy of ``image`` is ever made whole."""
    h, w = image.shape
    rows = symmetric_indices(h, p, fh - h - p)
    cols = symmetric_indices(w, p, fw - w - p)
    left, right = cols[:p], cols[p + w :]
    spec = np.empty((fh, fw // 2 + 1), dtype=np.result_type(dtype, np.complex64))
    step = _band_lines(fw, dtype.itemsize)
    band = np.empty((step, fw), dtype=dtype)
    for a in range(0, fh, step):
        b = min(a + step, fh)
        src = image[rows[a:b]]
        padded = band[: b - a]
        padded[:, p : p + w] = src  # the cast image.astype(dtype) makes, row by row
        padded[:, :p] = src[:, left]
        padded[:, p + w :] = src[:, right]
        spec[a:b] = sfft.rfft(padded, axis=1)
    return spec


def _kept_block_in_place(spec: np.ndarray, p: int, h: int, w: int, fw: int) -> np.ndarray:
    """The (h, w) block at (p, p) of the inverse real FFT along rows of ``spec`` (its columns
    already inverse-transformed, unscaled), scaled by ``1 / (fh fw)`` as ``irfft2`` scales it,
    written C-contiguous at the start of ``spec``'s own memory and returned as a view of it.

    Output row ``i`` goes to real offset ``i w``, before input row ``p + i + 1`` (at
    ``(p + i + 1) (2 (fw // 2) + 2)``): a band overwrites only rows already transformed.
    """
    fh = spec.shape[0]
    real = spec.real.dtype
    scale = real.type(np.longdouble(1) / np.longdouble(fh * fw))  # pocketfft's T(1/(long double)N)
    out = spec.reshape(-1).view(real)[: h * w].reshape(h, w)
    step = _band_lines(fw, real.itemsize)
    first, last = p // _LANES * _LANES, min(fh, -(-(p + h) // _LANES) * _LANES)
    for a in range(first, last, step):
        b = min(a + step, last)
        rows = sfft.irfft(spec[a:b], n=fw, axis=1, norm="forward")
        lo, hi = max(a, p), min(b, p + h)
        np.multiply(rows[lo - a : hi - a, p : p + w], scale, out=out[lo - p : hi - p])
    return out


def convolve_reflect_torch(
    images: torch.Tensor, kernels: torch.Tensor | Sequence[torch.Tensor]
) -> torch.Tensor:
    """Batched reflective FFT convolution on any device: see
    :func:`sem_physics.batched.convolve_reflect_batch` (this name is kept for callers)."""
    from .batched import convolve_reflect_batch

    return convolve_reflect_batch(images, kernels)

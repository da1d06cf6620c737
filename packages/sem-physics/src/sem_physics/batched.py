"""The SEM forward model for a whole batch in torch, on the images' device.

``y = N(a (x ⊛ h) + b)`` (arXiv 2604.05960, Sec. 5.2 / Eq. 21) for N images at once, each
with its own setting, with no numpy and no Python loop per sample, so that a training step can
synthesise its (defocused, focused) pairs on the GPU that trains the model:

* :class:`BatchParams`: one setting per image as (N,) tensors (``rx_px``, ``ry_px``, ``beta``,
  ``theta_rad``, ``gain``, ``offset``, ``sigma``, ``dose``).
* :class:`ParameterSampler`: draws a batch of settings from :class:`~sem_physics.ParameterRanges`
  as tensors, ``sampler.step(batch_size)`` (the model is deepinv's ``PhysicsGenerator``).
* :func:`airy_psf_batch`: the N kernels on one shared radius grid of the batch's largest kernel
  size; kernel ``i`` is zero outside its own ``k_i x k_i`` support and unit-sum on it, so it
  equals :func:`sem_physics.airy_psf` zero-padded to the common size.
* :func:`convolve_reflect_batch`: one batched real FFT with reflect padding for all images
  (:mod:`sem_physics.convolution` explains the method).
* :func:`poisson_gaussian_batch`: ``Poisson(max(z, 0) dose) / dose + Normal(0, sigma^2)``.
* :func:`wiener_batch`: the inverse direction, Wiener-Hunt (Tikhonov, Laplacian prior)
  deconvolution of N images with their own kernels at several balances in one batched FFT
  (the physics guide of the foundation model's restoration head).

:func:`sem_physics.degrade_torch` composes them: ``degrade_torch(images, params, generator)``
with ``params`` a :class:`BatchParams` (or one or N :class:`~sem_physics.DegradationParams`).

Randomness comes from a ``torch.Generator`` on the images' device: with the same seed and
the same batch (same images in the same order and shapes) the result is reproducible on that
device (CPU and CUDA generators give different streams). With one generator the noise an
image gets depends on the batch it is in (the stream is shared by the batch): an image
degraded alone and in a batch of four differs. A sequence of N generators, one per image
(e.g. seeded from each sample's own seed), makes every image's setting and noise its own:
the same whatever batch, or process of a distributed run, it is in. Use
:func:`sem_physics.degrade_files` (per-image seeds, a manifest) for test sets. Work
happens in the images' floating dtype (float32 or float64); bf16/half inputs are computed in
float32 (FFTs need it) and returned in their dtype. Settings are float64 tensors, except on
a device without float64 (Apple's ``mps``), where they are float32 (:func:`settings_dtype`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any

from .convolution import fft_shape, symmetric_indices
from .optional import require
from .params import DegradationParams, ParameterRanges
from .psf import MAX_RADIUS_PX

if TYPE_CHECKING:
    import torch
else:  # without the torch extra: one line naming it
    torch = require("torch", "sem-physics[torch]", "sem_physics.batched")

__all__ = [
    "BatchParams",
    "ParameterSampler",
    "airy_profile_torch",
    "airy_psf_batch",
    "convolve_reflect_batch",
    "poisson_gaussian_batch",
    "settings_dtype",
    "wiener_batch",
]

#: Device types without float64 kernels: a float64 tensor cannot even be moved there (Apple's
#: Metal backend, ``mps``), so settings and kernel sizes are float32 on them.
NO_FLOAT64_DEVICES: frozenset[str] = frozenset({"mps"})


def settings_dtype(device: Any = None) -> torch.dtype:
    """The dtype of per-image settings on ``device`` (None: the CPU): float64, or float32 on a
    device type of :data:`NO_FLOAT64_DEVICES`, which has no float64."""
    kind = torch.device(device).type if device is not None else "cpu"
    return torch.float32 if kind in NO_FLOAT64_DEVICES else torch.float64


@dataclass(frozen=True)
class BatchParams:
    """One degradation setting per image, each field an (N,) float tensor on one device.

    Units as in :class:`~sem_physics.DegradationParams`: radii in px, angle in rad, offset and
    sigma on the 0..255 scale, dose in electrons per intensity unit.
    """

    rx_px: torch.Tensor
    ry_px: torch.Tensor
    beta: torch.Tensor
    theta_rad: torch.Tensor
    gain: torch.Tensor
    offset: torch.Tensor
    sigma: torch.Tensor
    dose: torch.Tensor

    def __post_init__(self) -> None:
        values = [getattr(self, f.name) for f in fields(self)]
        n = values[0].shape
        for f, v in zip(fields(self), values, strict=True):
            if not isinstance(v, torch.Tensor) or v.ndim != 1 or v.shape != n:
                raise ValueError(
                    f"BatchParams.{f.name} must be a 1-D tensor of the batch size {tuple(n)}, "
                    f"got {getattr(v, 'shape', type(v))}"
                )
            if v.device != values[0].device:
                raise ValueError(f"BatchParams.{f.name} is on {v.device}, not {values[0].device}")

    def __len__(self) -> int:
        return int(self.rx_px.shape[0])

    @property
    def device(self) -> torch.device:
        return self.rx_px.device

    @classmethod
    def from_params(
        cls,
        params: DegradationParams | Sequence[DegradationParams],
        n: int | None = None,
        device: Any = None,
        dtype: torch.dtype | None = None,
    ) -> BatchParams:
        """Stack validated settings (one setting is repeated ``n`` times), in ``dtype``
        (None: :func:`settings_dtype` of ``device``)."""
        if isinstance(params, DegradationParams):
            plist = [params] * (1 if n is None else n)
        else:
            plist = list(params)
            if n is not None and len(plist) != n:
                raise ValueError(f"got {len(plist)} parameter settings for {n} images")
        if not plist:
            raise ValueError("no parameter settings given")
        table = [[getattr(p, f.name) for p in plist] for f in fields(cls)]
        stacked = torch.tensor(table, dtype=dtype or settings_dtype(device), device=device)
        return cls(*stacked.unbind(0))

    def to_params(self) -> list[DegradationParams]:
        """The settings as validated :class:`~sem_physics.DegradationParams` (one per image)."""
        # .tolist() gives Python floats of any float dtype exactly (no float64 on the device)
        cols = [getattr(self, f.name).detach().cpu().tolist() for f in fields(self)]
        names = [f.name for f in fields(self)]
        return [
            DegradationParams(**dict(zip(names, row, strict=True)))
            for row in zip(*cols, strict=True)
        ]

    def to(self, device: Any = None, dtype: torch.dtype | None = None) -> BatchParams:
        """The same settings on another device / in another dtype."""
        return BatchParams(
            *(getattr(self, f.name).to(device=device, dtype=dtype) for f in fields(self))
        )

    def check(self) -> BatchParams:
        """Raise a ValueError naming the field if any value is outside its valid range."""
        bounds = {
            "rx_px": (0.0, MAX_RADIUS_PX, False),
            "ry_px": (0.0, MAX_RADIUS_PX, False),
            "beta": (0.0, 10.0, False),
            "theta_rad": (-2 * math.pi, 2 * math.pi, True),
            "gain": (0.0, 100.0, False),
            "offset": (-255.0, 255.0, True),
            "sigma": (0.0, 255.0, True),
            "dose": (0.0, 1e9, False),
        }
        valid = []
        for name, (lo, hi, closed) in bounds.items():
            v = getattr(self, name)
            above = v >= lo if closed else v > lo
            valid.append((above & (v <= hi) & torch.isfinite(v)).all())
        ok = torch.stack(valid).cpu().tolist()  # one host sync for all fields
        for (name, (lo, hi, closed)), good in zip(bounds.items(), ok, strict=True):
            if not good:
                left = "[" if closed else "("
                raise ValueError(f"BatchParams.{name} has values outside {left}{lo}, {hi}]")
        return self


class ParameterSampler:
    """Draws batches of settings, every parameter uniform in its range, as tensors.

    ``ParameterSampler(ranges, device=...).step(batch_size, generator)`` is the batched,
    on-device counterpart of :meth:`ParameterRanges.sample_many` (same distribution; a
    torch random stream instead of numpy's).

    Examples
    --------
    >>> import torch
    >>> g = torch.Generator().manual_seed(0)
    >>> p = ParameterSampler().step(4, g)
    >>> len(p), bool(((p.rx_px >= 1) & (p.rx_px <= 30)).all())
    (4, True)
    """

    def __init__(
        self,
        ranges: ParameterRanges | None = None,
        device: Any = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        self.ranges = ranges or ParameterRanges()
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.dtype = dtype or settings_dtype(self.device)  # float64 unless the device has none
        names = [f.name for f in fields(BatchParams)]
        bounds = torch.tensor([getattr(self.ranges, n) for n in names], dtype=self.dtype)
        self._low = bounds[:, 0].to(self.device)
        self._span = (bounds[:, 1] - bounds[:, 0]).to(self.device)

    def step(
        self,
        batch_size: int,
        generator: torch.Generator | Sequence[torch.Generator] | None = None,
    ) -> BatchParams:
        """``batch_size`` independent settings on the sampler's device; ``generator`` may be
        one per setting (each setting then drawn from its own stream)."""
        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size} must be >= 1")
        shape, device, dtype = (len(self._low), batch_size), self.device, self.dtype
        gens = _per_sample(generator, batch_size)
        if gens is None:
            one = _single(generator)
            u = torch.rand(shape, generator=one, device=device, dtype=dtype)
        else:
            u = torch.stack(
                [torch.rand(shape[0], generator=g, device=device, dtype=dtype) for g in gens], 1
            )
        values = self._low[:, None] + self._span[:, None] * u
        return BatchParams(*values.unbind(0))


def airy_profile_torch(r: torch.Tensor, beta: torch.Tensor | float) -> torch.Tensor:
    """``|2 J1(pi r) / (pi r)|^beta`` with the limit 1 at ``r = 0`` (torch, any device)."""
    x = math.pi * r
    at_zero = x == 0
    safe = torch.where(at_zero, torch.ones_like(x), x)
    base = torch.where(at_zero, torch.ones_like(x), 2.0 * torch.special.bessel_j1(safe) / safe)
    return base.abs() ** beta


def _kernel_sizes(params: BatchParams) -> torch.Tensor:
    """Odd side ``ceil(6 max(Rx, Ry))`` (+1 when even) of each kernel, as an (N,) tensor."""
    wide = settings_dtype(params.device)  # float64 unless the device has none
    k = torch.ceil(6.0 * torch.maximum(params.rx_px, params.ry_px).to(wide))
    return k + (k.remainder(2) == 0).to(k.dtype)


def airy_psf_batch(
    params: BatchParams, dtype: torch.dtype = torch.float32, device: Any = None
) -> torch.Tensor:
    """The N unit-sum Airy kernels, ``(N, k, k)`` with ``k`` the batch's largest odd side.

    One radius grid serves the whole batch; per-sample Rx, Ry, theta and beta broadcast over
    it. Kernel ``i`` is :func:`sem_physics.airy_psf` of setting ``i`` zero-padded to ``k``.
    """
    device = params.device if device is None else torch.device(device)
    wide = settings_dtype(device)  # the dtype first, on the settings' device: no float64 moves
    sizes = _kernel_sizes(params).to(dtype=wide).to(device)
    k = int(sizes.max().item())  # the one host sync: the grid size
    half = k // 2
    # Rows y >= 0 only: the kernel is centro-symmetric, h(-y, -x) = h(y, x) (exactly, also in
    # floating point), so the rows y < 0 are these rows flipped in both axes.
    y = torch.arange(0, half + 1, device=device, dtype=dtype).view(1, half + 1, 1)
    x = torch.arange(-half, half + 1, device=device, dtype=dtype).view(1, 1, k)

    def col(v: torch.Tensor) -> torch.Tensor:
        return v.to(dtype=dtype).to(device).view(-1, 1, 1)

    theta = params.theta_rad.to(dtype=wide).to(device)
    c, s = col(torch.cos(theta)), col(torch.sin(theta))
    xr = c * x + s * y
    yr = -s * x + c * y
    # Clamped as in sem_physics.psf: a radius far below a pixel would overflow to inf.
    r = torch.hypot(xr / col(params.rx_px), yr / col(params.ry_px)).clamp(max=1e6)
    h = airy_profile_torch(r, col(params.beta))
    own_half = col(torch.div(sizes, 2, rounding_mode="floor"))
    h = h * ((y <= own_half) & (x.abs() <= own_half))
    h = torch.cat([h[:, 1:].flip(-2, -1), h], dim=1)  # rows y = -half .. half
    return h / h.sum(dim=(-2, -1), keepdim=True)


def convolve_reflect_batch(
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
    squeeze = images.ndim == 3
    if squeeze:
        images = images.unsqueeze(1)
    if images.ndim != 4 or images.shape[1] != 1:
        raise ValueError(f"images must be (N, 1, H, W), got {tuple(images.shape)}")
    out_dtype = images.dtype if images.is_floating_point() else torch.float32
    if images.dtype not in (torch.float32, torch.float64):
        images = images.float()  # FFTs need float32/64 (half and bf16 inputs come back as such)
    n, _, h, w = images.shape
    kern = _stack_kernels(kernels, n, images)
    k = kern.shape[-1]
    p = k // 2
    fh, fw = fft_shape(h, w, k)
    ri = torch.as_tensor(symmetric_indices(h, p, fh - h - p), device=images.device)
    ci = torch.as_tensor(symmetric_indices(w, p, fw - w - p), device=images.device)
    padded = images[:, 0].index_select(1, ri).index_select(2, ci)
    spec = torch.fft.rfft2(padded)
    spec = spec * _kernel_spectrum(kern, fh, fw)
    out = torch.fft.irfft2(spec, s=(fh, fw))[:, p : p + h, p : p + w]
    out = out.unsqueeze(1).to(out_dtype).contiguous()
    return out[:, 0] if squeeze else out


def _stack_kernels(
    kernels: torch.Tensor | Sequence[torch.Tensor], n: int, images: torch.Tensor
) -> torch.Tensor:
    """(1 or N, k, k) kernels in the images' dtype and device (a list zero-padded to the largest)."""
    if isinstance(kernels, torch.Tensor):
        kern = kernels.to(device=images.device, dtype=images.dtype)
        if kern.ndim == 2:
            kern = kern.unsqueeze(0)
        if kern.ndim != 3 or kern.shape[-1] != kern.shape[-2] or kern.shape[-1] % 2 == 0:
            raise ValueError(f"kernels must be (N, k, k) with k odd, got {tuple(kern.shape)}")
        if kern.shape[0] not in (1, n):
            raise ValueError(f"got {kern.shape[0]} kernels for {n} images")
        return kern
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
    return kern


def _kernel_spectrum(kern: torch.Tensor, fh: int, fw: int) -> torch.Tensor:
    """Transform of (N, k, k) origin-centred kernels on the (fh, fw) grid.

    Real for centro-symmetric kernels (every Airy PSF), computed from half the rows as in
    :func:`sem_physics.convolution._kernel_spectrum`; a full transform otherwise.
    """
    n, k, _ = kern.shape
    p = k // 2
    if torch.equal(kern, kern.flip(-1, -2)):
        mirrored = kern[:, p:].flip(-1)
        rows = kern.new_zeros((n, p + 1, fw))
        rows[:, :, : p + 1] = mirrored[:, :, p:]
        rows[:, :, fw - p :] = mirrored[:, :, :p]
        return torch.fft.irfft(torch.fft.rfft(rows, dim=-1), n=fh, dim=-2) * fh
    full = kern.new_zeros((n, fh, fw))
    idx_r = torch.arange(-p, p + 1, device=kern.device) % fh
    idx_c = torch.arange(-p, p + 1, device=kern.device) % fw
    full[:, idx_r[:, None], idx_c[None, :]] = kern
    return torch.fft.rfft2(full)


def _single(
    generator: torch.Generator | Sequence[torch.Generator] | None,
) -> torch.Generator | None:
    """``generator`` where :func:`_per_sample` found it to be one generator (or None)."""
    return generator if generator is None or isinstance(generator, torch.Generator) else None


def _per_sample(
    generator: torch.Generator | Sequence[torch.Generator] | None, n: int
) -> list[torch.Generator] | None:
    """``generator`` as a list of ``n`` generators, or None when it is one (or none)."""
    if generator is None or isinstance(generator, torch.Generator):
        return None
    gens = list(generator)
    if len(gens) != n or not all(isinstance(g, torch.Generator) for g in gens):
        raise ValueError(f"give one torch.Generator per image: {n} expected, got {len(gens)}")
    return gens


def _per_row(value: torch.Tensor | float | None, i: int, n: int) -> torch.Tensor | float | None:
    """Row ``i`` of a per-sample value (N, ...), or the value itself when it is shared."""
    if isinstance(value, torch.Tensor) and value.ndim > 0 and value.shape[0] == n:
        return value[i : i + 1]
    return value


def poisson_gaussian_batch(
    z: torch.Tensor,
    dose: torch.Tensor | float | None,
    sigma: torch.Tensor | float | None,
    generator: torch.Generator | Sequence[torch.Generator] | None = None,
) -> torch.Tensor:
    """``Poisson(max(z, 0) dose) / dose + Normal(0, sigma^2)``; ``None`` switches a term off.

    ``dose`` and ``sigma`` are numbers or tensors broadcastable to ``z`` (per-sample values as
    (N, 1, 1, 1)); they are not range-checked here (:meth:`BatchParams.check` does that).
    ``generator`` may be one per image (``z`` (N, ...)): each image's noise from its own.
    """
    gens = _per_sample(generator, z.shape[0]) if z.ndim > 0 else None
    if gens is not None:
        n = z.shape[0]
        rows = [
            poisson_gaussian_batch(z[i : i + 1], _per_row(dose, i, n), _per_row(sigma, i, n), g)
            for i, g in enumerate(gens)
        ]
        return torch.cat(rows)
    out, one = z, _single(generator)
    if dose is not None:
        dose_t = torch.as_tensor(dose, dtype=z.dtype, device=z.device)
        out = torch.poisson(out.clamp_min(0) * dose_t, generator=one) / dose_t
    if sigma is not None:
        sigma_t = torch.as_tensor(sigma, dtype=z.dtype, device=z.device)
        noise = torch.randn(out.shape, generator=one, device=z.device, dtype=z.dtype)
        out = out + sigma_t * noise
    return out


def wiener_batch(
    images: torch.Tensor,
    kernels: torch.Tensor | Sequence[torch.Tensor],
    balances: Sequence[float],
) -> torch.Tensor:
    """Wiener-Hunt deconvolution of N images at several balances, ``(N, len(balances), H, W)``.

    ``X = conj(H) Y / (|H|^2 + lambda |D|^2)`` with ``D`` the transfer function of the discrete
    Laplacian ``[[0, -1, 0], [-1, 4, -1], [0, -1, 0]]`` (scikit-image's default regulariser),
    each image extended by half its kernel by half-sample symmetric reflection first (the
    forward model's boundary) and cropped back: per balance the same result as
    ``sem_baselines``' ``wiener`` restorer with that fixed ``balance`` and ``boundary="reflect"``.
    ``lambda`` is scale-free (the output has the input's scale). One batched real FFT serves
    all images and balances; any device, float32/float64 (half inputs computed in float32).

    Parameters
    ----------
    images : (N, 1, H, W) or (N, H, W).
    kernels : as for :func:`convolve_reflect_batch` (one for all, (N, k, k), or N kernels; a
        list of different sizes is zero-padded to the largest, whose half sets the extension).
    balances : the regularisation weights ``lambda`` (> 0), one output channel each.
    """
    lams = [float(v) for v in balances]
    if not lams or any(not (v > 0 and math.isfinite(v)) for v in lams):
        raise ValueError(f"balances must be finite and > 0, got {list(balances)}")
    if images.ndim == 3:
        images = images.unsqueeze(1)
    if images.ndim != 4 or images.shape[1] != 1:
        raise ValueError(f"images must be (N, 1, H, W), got {tuple(images.shape)}")
    out_dtype = images.dtype if images.is_floating_point() else torch.float32
    if images.dtype not in (torch.float32, torch.float64):
        images = images.float()
    n, _, h, w = images.shape
    kern = _stack_kernels(kernels, n, images)
    p = kern.shape[-1] // 2
    ri = torch.as_tensor(symmetric_indices(h, p), device=images.device)
    ci = torch.as_tensor(symmetric_indices(w, p), device=images.device)
    ext = images[:, 0].index_select(1, ri).index_select(2, ci)  # (N, h + 2p, w + 2p)
    fh, fw = ext.shape[-2:]
    spec_h = _kernel_spectrum(kern, fh, fw)  # (N or 1, fh, fw // 2 + 1)
    u = torch.fft.fftfreq(fh, device=images.device, dtype=images.dtype)[:, None]
    v = torch.fft.rfftfreq(fw, device=images.device, dtype=images.dtype)[None, :]
    d2 = (4.0 - 2.0 * torch.cos(2 * math.pi * u) - 2.0 * torch.cos(2 * math.pi * v)) ** 2
    h2 = spec_h.real**2 + spec_h.imag**2 if spec_h.is_complex() else spec_h**2
    num = (spec_h.conj() if spec_h.is_complex() else spec_h) * torch.fft.rfft2(ext)
    lam = torch.tensor(lams, device=images.device, dtype=images.dtype).view(1, -1, 1, 1)
    out = torch.fft.irfft2(num[:, None] / (h2[:, None] + lam * d2), s=(fh, fw))
    return out[..., p : p + h, p : p + w].to(out_dtype).contiguous()

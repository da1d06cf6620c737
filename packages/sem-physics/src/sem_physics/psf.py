"""Elliptical, rotated Airy point-spread function of a defocused SEM probe.

The defocused probe is modelled (arXiv 2604.05960, Sec. 5.2) as an Airy pattern raised to a
power::

    h(r) = |2 J1(pi r) / (pi r)|^beta,        h(0) = 1
    r    = sqrt((x'/Rx)^2 + (y'/Ry)^2),       (x', y') = R(theta) (x, y)
    R(theta) = [[cos theta, sin theta], [-sin theta, cos theta]]

``x`` is the column offset and ``y`` the row offset from the kernel centre, in pixels.
Rx != Ry gives astigmatism, ``theta`` its orientation. The kernel is sampled on a square
grid of odd size ``k = ceil(6 max(Rx, Ry))`` (made odd by adding one) and normalised to unit
sum. The magnitude is taken before the power so that non-integer ``beta`` stays real on the
negative side lobes; for ``beta = 2`` this is exactly the Airy intensity pattern.

The kernel is sampled at pixel centres, not integrated over pixels: for radii of a pixel and
more (the paper's range is 1-30 px) the two agree, below a pixel the samples miss a narrow
profile and the kernel depends on its angle (Rx = 30, Ry = 0.05 px puts 3 % of the weight in
the centre pixel at theta = 0 and 52 % at 0.3 rad). Such a PSF is close to a delta along its
narrow axis, which is what the sampled kernel then represents only roughly.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator
from scipy.special import j1

from .optional import require

if TYPE_CHECKING:
    import torch

__all__ = [
    "PSFParams",
    "airy_profile",
    "airy_psf",
    "airy_psf_torch",
    "kernel_size",
    "shortest_period_px",
]

MAX_RADIUS_PX = 1000.0


class NumberFields(BaseModel):
    """A frozen model whose fields are numbers: a bool is none (it would pass as 0 or 1)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    @field_validator("*", mode="before")
    @classmethod
    def _refuse_bool(cls, value: object) -> object:
        if isinstance(value, bool | np.bool_):
            raise ValueError(f"must be a number, got {value!r}")
        return value


class PSFParams(NumberFields):
    """Parameters of the elliptical Airy PSF (radii in pixels, angle in radians)."""

    rx_px: float = Field(gt=0, le=MAX_RADIUS_PX, description="Airy scale along x' in pixels")
    ry_px: float = Field(gt=0, le=MAX_RADIUS_PX, description="Airy scale along y' in pixels")
    beta: float = Field(default=2.0, gt=0, le=10, description="exponent (tail sharpness)")
    theta_rad: float = Field(default=0.0, ge=-2 * math.pi, le=2 * math.pi, allow_inf_nan=False)

    @property
    def size_px(self) -> int:
        """Kernel side length in pixels (odd)."""
        return kernel_size(self.rx_px, self.ry_px)


def kernel_size(rx_px: float, ry_px: float) -> int:
    """Odd kernel side ``ceil(6 max(Rx, Ry))``, plus one when that is even."""
    if not (0 < rx_px < math.inf and 0 < ry_px < math.inf):
        raise ValueError(f"PSF radii must be finite and > 0 px, got rx_px={rx_px}, ry_px={ry_px}")
    k = math.ceil(6.0 * max(rx_px, ry_px))
    return k if k % 2 == 1 else k + 1


def shortest_period_px(params: PSFParams, direction_rad: float = 0.0) -> float:
    """The shortest period (px) of a modulation along ``direction_rad`` that the blur passes.

    For ``beta = 2`` the OTF is the autocorrelation of an elliptical disc and vanishes beyond
    ``|diag(Rx, Ry) R(theta) f| = 1`` (``f`` in cycles/px); along the unit vector ``u`` of
    ``direction_rad`` (0: along x, i.e. across vertical lines) the cut-off frequency is
    ``1 / |diag(Rx, Ry) R(theta) u|``, and this returns its inverse. Other ``beta`` leave a
    faint tail past it. A line pattern of pitch ``p`` keeps ``ceil(p / period) - 1`` harmonics:
    with the fundamental alone the lines' width and edge profile are not in the image.
    """
    c, s = math.cos(params.theta_rad), math.sin(params.theta_rad)
    ux, uy = math.cos(direction_rad), math.sin(direction_rad)
    return math.hypot(params.rx_px * (c * ux + s * uy), params.ry_px * (-s * ux + c * uy))


def airy_profile(r: np.ndarray, beta: float) -> np.ndarray:
    """``|2 J1(pi r)/(pi r)|^beta`` with the limit 1 at ``r = 0``; ``beta`` in (0, 10]."""
    if not 0 < beta <= 10:  # as PSFParams: a negative power turns the zeros into poles
        raise ValueError(f"beta must be in (0, 10], got {beta}")
    r = np.asarray(r, dtype=np.float64)
    x = np.pi * r
    safe = np.where(x == 0.0, 1.0, x)
    base = np.where(x == 0.0, 1.0, 2.0 * j1(safe) / safe)
    return np.abs(base) ** beta


def _radius_grid(params: PSFParams) -> np.ndarray:
    half = params.size_px // 2
    coords = np.arange(-half, half + 1, dtype=np.float64)
    y, x = np.meshgrid(coords, coords, indexing="ij")
    c, s = math.cos(params.theta_rad), math.sin(params.theta_rad)
    xr = c * x + s * y
    yr = -s * x + c * y
    # A radius far below a pixel (e.g. 1e-300 px) overflows to inf, where J1 is undefined; the
    # profile is 0 far beyond r = 1e6 anyway (a delta along that axis).
    with np.errstate(over="ignore"):
        r = np.hypot(xr / params.rx_px, yr / params.ry_px)
    return np.minimum(r, 1e6)


def airy_psf(params: PSFParams) -> np.ndarray:
    """Sampled, unit-sum PSF kernel, float64 of shape ``(k, k)`` with ``k`` odd.

    Examples
    --------
    >>> k = airy_psf(PSFParams(rx_px=2.0, ry_px=2.0))
    >>> k.shape, round(float(k.sum()), 12)
    ((13, 13), 1.0)
    """
    if isinstance(params, dict):
        params = PSFParams(**params)
    elif not isinstance(params, PSFParams):  # a DegradationParams has radii too: its .psf
        hint = ": pass its .psf" if hasattr(params, "psf") else ""
        raise TypeError(
            f"params must be a PSFParams (or its dict), got {type(params).__name__}{hint}"
        )
    h = airy_profile(_radius_grid(params), params.beta)
    return h / h.sum()


def airy_psf_torch(params: PSFParams, device: Any = None, dtype: Any = None) -> torch.Tensor:
    """The same kernel as :func:`airy_psf` as a torch tensor on ``device``."""
    torch = require("torch", "sem-physics[torch]", "airy_psf_torch")

    return torch.as_tensor(airy_psf(params), dtype=dtype or torch.float32, device=device)

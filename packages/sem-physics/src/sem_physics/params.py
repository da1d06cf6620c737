"""Degradation parameters and the ranges they are sampled from (arXiv 2604.05960, Sec. 2.3).

Every parameter has hard bounds where the forward model means something (a value outside is
refused with the accepted range in the message) and the paper's sampling range
(:class:`ParameterRanges`); :meth:`DegradationParams.outside_paper_ranges` lists the values
that are valid but outside the paper's ranges, for a warning.

* ``gain >= 0.01``: below, the image's contrast falls under one grey level per 100 and the
  result is the offset plus noise.
* ``dose >= 0.01`` electrons per grey level: a mid-grey pixel (128) then still collects about
  1.3 electrons (shot-noise SNR about 1); at lower doses almost every pixel counts zero and the
  result is noise alone (``dose = 1e-300`` would otherwise give pure noise).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from pydantic import ConfigDict, Field, ValidationInfo, field_validator, model_validator

from .fields import NoBoolNumbers
from .psf import MAX_RADIUS_PX, NumberFields, PSFParams
from .validation import as_generator

__all__ = ["MIN_DOSE", "MIN_GAIN", "DegradationParams", "ParameterRanges"]

Range = tuple[float, float]
MIN_GAIN = 0.01
MIN_DOSE = 0.01  # electrons per grey level (0..255 scale)


class DegradationParams(NumberFields):
    """One defocus + noise setting: ``y = N(gain * (x ⊛ h) + offset)``.

    Intensities are on the 0..255 scale; radii in pixels; angle in radians.
    """

    rx_px: float = Field(gt=0, le=MAX_RADIUS_PX, description="PSF scale along x' (px)")
    ry_px: float = Field(gt=0, le=MAX_RADIUS_PX, description="PSF scale along y' (px)")
    beta: float = Field(gt=0, le=10, description="Airy exponent")
    theta_rad: float = Field(ge=-2 * math.pi, le=2 * math.pi, description="astigmatism angle")
    gain: float = Field(ge=MIN_GAIN, le=100, allow_inf_nan=False, description="gain a")
    offset: float = Field(ge=-255, le=255, allow_inf_nan=False, description="offset b (0..255)")
    sigma: float = Field(ge=0, le=255, allow_inf_nan=False, description="Gaussian std (0..255)")
    dose: float = Field(
        ge=MIN_DOSE, le=1e9, allow_inf_nan=False, description="electrons per grey level"
    )

    def outside_paper_ranges(self, ranges: ParameterRanges | None = None) -> list[str]:
        """One ``"name=value outside the paper's range [lo, hi]"`` per such parameter."""
        ranges = ranges or ParameterRanges()
        out = []
        for name in type(ranges).model_fields:
            lo, hi = getattr(ranges, name)
            value = getattr(self, name)
            if not lo <= value <= hi:
                out.append(f"{name}={value:g} outside the paper's range [{lo:g}, {hi:g}]")
        return out

    @property
    def psf(self) -> PSFParams:
        """The PSF part of the setting."""
        return PSFParams(
            rx_px=self.rx_px, ry_px=self.ry_px, beta=self.beta, theta_rad=self.theta_rad
        )


class ParameterRanges(NoBoolNumbers):
    """Uniform ranges ``(low, high)`` of every parameter; defaults are the paper's.

    Both ends must be valid values of the parameter (:class:`DegradationParams`' bounds); a
    bool is refused with those bounds, built directly or nested in a config (pydantic would
    take ``True`` as 1.0).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    rx_px: Range = (1.0, 30.0)
    ry_px: Range = (1.0, 30.0)
    beta: Range = (1.9, 2.0)
    theta_rad: Range = (0.0, 3.14)
    gain: Range = (0.99, 1.1)
    offset: Range = (1.0, 25.0)
    sigma: Range = (1.0, 10.0)
    dose: Range = (1.0, 50.0)

    @field_validator("*", mode="before")
    @classmethod
    def _nothing_taken_as_another(cls, value: Any, info: ValidationInfo) -> Any:
        """A bool at either end, refused with the parameter's accepted values (this replaces
        :class:`NoBoolNumbers`' check of the same name, whose error names no range)."""
        if isinstance(value, list | tuple) and any(isinstance(v, bool | np.bool_) for v in value):
            from .cli_support import _declared_bounds, _span

            span = _span(_declared_bounds(DegradationParams, (info.field_name,)))
            shown = "(" + ", ".join(map(repr, value)) + ")"
            what = f"numbers {span}" if span else "numbers"
            raise ValueError(f"low and high must be {what}, got {shown}")
        return value

    @model_validator(mode="after")
    def _check(self) -> ParameterRanges:
        for name in type(self).model_fields:
            lo, hi = getattr(self, name)
            if not (math.isfinite(lo) and math.isfinite(hi)) or lo > hi:
                raise ValueError(f"range {name}=({lo}, {hi}) must be finite with low <= high")
        # Validate the extremes once so that sampling can never produce an invalid setting.
        DegradationParams(**{n: getattr(self, n)[0] for n in type(self).model_fields})
        DegradationParams(**{n: getattr(self, n)[1] for n in type(self).model_fields})
        return self

    def sample(self, rng: np.random.Generator | int) -> DegradationParams:
        """Draw every parameter independently and uniformly from its range (``rng``: a
        generator, or a seed for one)."""
        rng = as_generator(rng)
        values = {n: float(rng.uniform(*getattr(self, n))) for n in type(self).model_fields}
        return DegradationParams(**values)

    def sample_many(self, rng: np.random.Generator, n: int) -> list[DegradationParams]:
        """``n`` independent settings (per-image or per-patch sampling)."""
        if isinstance(n, bool) or int(n) != n or n < 0:
            raise ValueError(f"n must be a whole number >= 0, got {n}")
        return [self.sample(rng) for _ in range(int(n))]

    def midpoint(self) -> DegradationParams:
        """Every parameter at the centre of its range (the paper's 'midpoint' setting)."""
        return DegradationParams(
            **{n: 0.5 * sum(getattr(self, n)) for n in type(self).model_fields}
        )

"""Grey levels around a method: dim pictures scaled up, brightness policy.

* **Dim pictures** (:func:`input_scale`): the methods work on 0..255 grey levels. A learned
  model was trained there and subtracts the offsets it learned there (a 12-bit image in a
  16-bit file reads as 0..16 and came out mostly black); a deconvolution with a given PSF
  floors the noise variance at the quantisation of 8-bit levels (1/12), which smooths a dim
  picture and flattens a very dim one (Wiener, lines blurred by R = 3 px: 33.6 dB at full
  range, 33.0 at 1/16 of it, 15.8 at 1/256). A picture whose 99.9th percentile is below
  :data:`DIM_BELOW` grey levels is multiplied by the smallest power of two ``2^k`` that brings
  that percentile to at least :data:`DIM_TARGET` (but never the brightest pixel past 255;
  :func:`held_note` says when that leaves the picture short of it), and the output is divided
  by ``2^k``: exact in floating point, and recorded (``input_scale``).
* **Brightness** (:func:`apply_brightness`): a deconvolution preserves the mean grey level; a
  learned model may not (the shipped ``sem-foundation`` learned to undo the simulator's gain
  and offset, which a real micrograph does not have). Policy ``"input"`` (the default) shifts
  the output so that its mean over the picture equals the input's; ``"method"`` keeps what the
  method returned (the paper's protocol, e.g. against a simulator's focused reference). The
  method runs without its own clip where its config has one, and the shifted output is clipped
  to 0..255 with the shift solved so that the clipped mean is the input's.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import numpy as np
from sem_physics.io import DIM_BELOW, DIM_PERCENTILE, is_dim, picture_level

__all__ = [
    "BRIGHTNESS_POLICIES",
    "DIM_BELOW",
    "DIM_PERCENTILE",
    "DIM_TARGET",
    "BrightnessPolicy",
    "apply_brightness",
    "check_brightness",
    "input_scale",
]

BrightnessPolicy = Literal["input", "method"]
BRIGHTNESS_POLICIES: tuple[str, ...] = ("input", "method")
#: A dim picture (the rule of :func:`sem_physics.io.is_dim`, which sem-degrade and sem-psf
#: warn by) is scaled by a power of two until its 99.9th percentile reaches at least this.
DIM_TARGET = 128.0
_MAX_EXPONENT = 24  # 2^24: beyond it the picture holds no usable grey levels anyway


def check_brightness(policy: str) -> BrightnessPolicy:
    """``policy`` if it is one of :data:`BRIGHTNESS_POLICIES`, else a one-line ValueError."""
    if policy not in BRIGHTNESS_POLICIES:
        raise ValueError(
            f"brightness must be one of {', '.join(BRIGHTNESS_POLICIES)}, got {policy!r}"
        )
    return policy  # type: ignore[return-value]


def input_scale(image: np.ndarray) -> tuple[int, float]:
    """``(scale, level)``: the power of two a method's input is multiplied by (1: not
    dim) and the picture's 99.9th percentile. The scale never lifts the brightest pixel past
    255 grey levels: highlights above the percentile (a particle, an edge) keep their values
    rather than being clipped by the model."""
    level = picture_level(image)
    if not is_dim(level):
        return 1, level
    k = max(0, math.ceil(math.log2(DIM_TARGET / level)))
    while level * 2.0**k < DIM_TARGET:  # log2 rounding
        k += 1
    k = min(k, _MAX_EXPONENT)
    peak = float(np.max(image))
    while k > 0 and peak * 2.0**k > 255.0:
        k -= 1
    return 2**k, level


def dim_note(level: float, scale: int) -> str:
    """The note a scaled picture carries."""
    return (
        f"dim picture (99.9th percentile {level:.3g} of 255 grey levels): multiplied by "
        f"{scale} for the method and its output divided by {scale}, so a 0..1 picture comes "
        f"back on 0..1 (an estimate recorded for it is of the scaled picture: noise sigma "
        f"x{scale}, dose /{scale})"
    )


def held_note(level: float, scale: int, peak: float) -> str | None:
    """The note of a dim picture whose brightest pixel (``peak`` grey levels) held its scale
    below the one that brings it to :data:`DIM_TARGET` (None otherwise): a burnt-in mark or a
    saturated spot at the top of a 12-bit picture leaves it unscaled, and a learned model then
    restores it poorly (``sem-foundation``: an error of 3.5x the picture's spread)."""
    if not is_dim(level) or level * scale >= DIM_TARGET or peak * scale * 2.0 <= 255.0:
        return None
    return (
        f"dim picture (99.9th percentile {level:.3g} of 255 grey levels) scaled by only "
        f"{scale}: its brightest pixels ({peak:.3g} grey levels; a burnt-in mark or a saturated "
        f"spot?) would pass 255 beyond that, so the method sees the picture at "
        f"{level * scale:.3g} of 255 grey levels and restores it poorly; rescale the file to its "
        "full range (or remove those pixels) first"
    )


def apply_brightness(
    out: np.ndarray, image: np.ndarray, policy: BrightnessPolicy, clip: bool = False
) -> tuple[np.ndarray, dict[str, Any]]:
    """``out`` under ``policy``, clipped to 0..255 afterwards when ``clip``, and its record:
    the policy, both means, the ``shift`` added (grey levels; 0 under ``"method"``) and the
    output's mean. Under ``"input"`` with ``clip`` the shift is solved so that the clipped
    output's mean is the input's (a method that clipped first would leave a flat plateau at
    the shift where it cut, and the mean would not be kept)."""
    in_mean = float(np.mean(image, dtype=np.float64))
    out_mean = float(np.mean(out, dtype=np.float64))
    shift = in_mean - out_mean if policy == "input" else 0.0
    if clip and policy == "input":
        shift = _shift_under_clip(out, in_mean, shift)
    if shift:
        out = (out.astype(np.float64) + shift).astype(np.float32)
    if clip:
        out = np.clip(out, 0.0, 255.0)
    record = {
        "policy": policy,
        "input_mean": in_mean,
        "method_mean": out_mean,
        "shift": shift,
        "output_mean": float(np.mean(out, dtype=np.float64)),
    }
    return out, record


def _shift_under_clip(out: np.ndarray, target: float, shift: float) -> float:
    """The shift ``s`` with ``mean(clip(out + s, 0, 255)) = target`` (Newton steps on the
    fraction of pixels left unclipped; the mean is monotone in ``s``)."""
    x = out.astype(np.float64)
    for _ in range(30):
        moved = x + shift
        gap = target - float(np.mean(np.clip(moved, 0.0, 255.0)))
        if abs(gap) < 1e-4:
            break
        free = float(np.mean((moved > 0.0) & (moved < 255.0)))
        shift += gap / max(free, 0.05)
    return shift

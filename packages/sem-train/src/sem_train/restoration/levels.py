"""Grey levels around a method: dim pictures scaled up for learned models, brightness policy.

* **Dim pictures** (:func:`input_scale`): a learned model was trained on 0..255 grey levels and
  subtracts the offsets it learned there; a 12-bit image in a 16-bit file reads as 0..16 and
  comes out mostly black. For learned methods a picture whose 99.9th percentile is below
  :data:`DIM_BELOW` grey levels is multiplied by the smallest power of two ``2^k`` that brings
  that percentile to at least :data:`DIM_TARGET`, and the output is divided by ``2^k``: exact
  in floating point, and recorded (``input_scale``).
* **Brightness** (:func:`apply_brightness`): a deconvolution preserves the mean grey level; a
  learned model may not (the shipped ``sem-foundation`` learned to undo the simulator's gain
  and offset, which a real micrograph does not have). Policy ``"input"`` (the default) shifts
  the output so that its mean over the picture equals the input's; ``"method"`` keeps what the
  method returned (the paper's protocol, e.g. against a simulator's focused reference). The
  shift is not clipped: an integer file clips at 0 and 255 when it is written.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import numpy as np

__all__ = [
    "BRIGHTNESS_POLICIES",
    "DIM_BELOW",
    "DIM_TARGET",
    "BrightnessPolicy",
    "apply_brightness",
    "check_brightness",
    "input_scale",
]

BrightnessPolicy = Literal["input", "method"]
BRIGHTNESS_POLICIES: tuple[str, ...] = ("input", "method")
#: A picture whose 99.9th percentile is below this many grey levels is dim for a learned model.
DIM_BELOW = 64.0
#: ... and is scaled by a power of two until that percentile reaches at least this.
DIM_TARGET = 128.0
DIM_PERCENTILE = 99.9
_MAX_EXPONENT = 24  # 2^24: beyond it the picture holds no usable grey levels anyway


def check_brightness(policy: str) -> BrightnessPolicy:
    """``policy`` if it is one of :data:`BRIGHTNESS_POLICIES`, else a one-line ValueError."""
    if policy not in BRIGHTNESS_POLICIES:
        raise ValueError(
            f"brightness must be one of {', '.join(BRIGHTNESS_POLICIES)}, got {policy!r}"
        )
    return policy  # type: ignore[return-value]


def input_scale(image: np.ndarray) -> int:
    """The power of two a learned method's input is multiplied by (1: not dim)."""
    level = float(np.percentile(image, DIM_PERCENTILE))
    if not 0.0 < level < DIM_BELOW:
        return 1
    k = max(0, math.ceil(math.log2(DIM_TARGET / level)))
    while level * 2.0**k < DIM_TARGET:  # log2 rounding
        k += 1
    return 2 ** min(k, _MAX_EXPONENT)


def dim_note(image: np.ndarray, scale: int) -> str:
    """The note a scaled picture carries."""
    level = float(np.percentile(image, DIM_PERCENTILE))
    return (
        f"dim picture (99.9th percentile {level:.3g} of 255 grey levels): multiplied by "
        f"{scale} for the learned model and its output divided by {scale}"
    )


def apply_brightness(
    out: np.ndarray, image: np.ndarray, policy: BrightnessPolicy
) -> tuple[np.ndarray, dict[str, Any]]:
    """``out`` under ``policy`` and its record: the policy, both means and the ``shift`` added
    (grey levels; 0 under ``"method"``)."""
    in_mean = float(np.mean(image, dtype=np.float64))
    out_mean = float(np.mean(out, dtype=np.float64))
    shift = in_mean - out_mean if policy == "input" else 0.0
    if shift:
        out = (out.astype(np.float64) + shift).astype(np.float32)
    record = {"policy": policy, "input_mean": in_mean, "method_mean": out_mean, "shift": shift}
    return out, record

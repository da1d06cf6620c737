"""Checks of the Python API's scalar arguments: one clear error naming the argument and what
it accepts (TypeError for a value of the wrong kind, a bool included; ValueError out of
range), instead of numpy's from deep inside."""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from typing import Any

__all__ = ["int_arg", "real_arg", "shape_arg"]


def int_arg(name: str, value: object, lo: int) -> int:
    """``value`` as an int, refused (naming ``name``) unless an integer >= ``lo``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer >= {lo}, got {value!r}")
    if value < lo:
        raise ValueError(f"{name} must be an integer >= {lo}, got {value!r}")
    return int(value)


def real_arg(
    name: str, value: object, accepted: str = "", ok: Callable[[float], bool] = lambda v: True
) -> float:
    """``value`` as a float, refused (naming ``name`` and the ``accepted`` range, e.g.
    ``" > 0"``) unless a finite real number for which ``ok`` holds."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a finite number{accepted}, got {value!r}")
    v = float(value)
    if not (math.isfinite(v) and ok(v)):
        raise ValueError(f"{name} must be a finite number{accepted}, got {value!r}")
    return v


def shape_arg(shape: Any, lo: int) -> tuple[int, int]:
    """``shape`` as ``(H, W)``, refused unless two integers >= ``lo``."""
    what = f"shape must be two integers (H, W), each >= {lo}, got {shape!r}"
    if isinstance(shape, (str, bytes)) or not hasattr(shape, "__len__") or len(shape) != 2:
        raise TypeError(what)
    h, w = shape
    for v in (h, w):
        if isinstance(v, bool) or not isinstance(v, numbers.Integral):
            raise TypeError(what)
        if v < lo:
            raise ValueError(what)
    return int(h), int(w)

"""Outputs of one method on a protocol, and the small helpers the tables share."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

__all__ = ["FAILED", "INPUT_NAME", "MethodRun", "fmt_mean_std", "mean_std"]

#: Marker of a value that could not be obtained (the paper's ✗).
FAILED = "✗"

#: Row name of the identity method: the defocused input itself.
INPUT_NAME = "defocused input"


@dataclass
class MethodRun:
    """What one method produced: an output per case id, or the reason it failed."""

    name: str
    outputs: dict[str, np.ndarray] = field(default_factory=dict)
    failed: str | None = None
    fit_seconds: float = 0.0
    restore_seconds: float = 0.0
    case_errors: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def mean_std(values: Iterable[float | None]) -> tuple[float | None, float | None, int]:
    """Mean and population std (ddof 0) of the finite values, and how many there were."""
    v = np.array([x for x in values if x is not None and math.isfinite(x)], dtype=np.float64)
    if v.size == 0:
        return None, None, 0
    return float(v.mean()), float(v.std()), int(v.size)


def fmt_mean_std(mean: float | None, std: float | None, digits: int = 2) -> str:
    """``'18.30 ± 1.20'``; ``'n/a'`` when there is no value."""
    if mean is None:
        return "n/a"
    if std is None:
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"

"""Typed results, from a method's outputs to the tables: one row type per table, no string-keyed
dicts in between.

* :class:`MethodRun` — what one method produced on a protocol: an output per case, or why not.
* :class:`QualityRow` / :class:`MetrologyRow` — one scored (method, case) cell row each; a
  value that could not be obtained is None and its reason sits beside it.
* :class:`MethodResult` — every row of one method plus timing and notes; saved as
  ``result.json`` (+ ``outputs.npz`` of the figure cases) so a benchmark resumes method by method.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sem_metrology import LineMeasurement
from sem_physics.atomic import atomic_write, atomic_write_text

from .weights import MethodWeights

__all__ = [
    "CONTROL_NAME",
    "FAILED",
    "INPUT_NAME",
    "REFERENCE_NAME",
    "MethodResult",
    "MethodRun",
    "MetricSummary",
    "MetrologyRow",
    "QualityRow",
    "ResultFileError",
    "summarise",
]

#: Marker of a value that could not be obtained (the paper's ✗).
FAILED = "✗"
#: Row name of the identity method: the defocused input itself.
INPUT_NAME = "defocused input"
#: Row name of the control: the input with only the true gain and offset inverted.
CONTROL_NAME = "control (y − b)/a"
#: Row name of the focused reference.
REFERENCE_NAME = "focused"


class ResultFileError(ValueError):
    """A stored method result cannot be read; the message names the file."""


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
    #: what the loaded model says of itself (``restorer.notes``, e.g. a dense checkpoint)
    model_notes: list[str] = field(default_factory=list)

    def why_missing(self, case_id: str) -> str:
        """The reason this run has no output for ``case_id``."""
        return self.failed or self.case_errors.get(case_id) or "no output"


class QualityRow(BaseModel):
    """Image-quality scores of one method on one case.

    A score is None when it could not be computed; ``errors`` then holds the reason per metric.
    ``failed`` is set (and every score None) when the method gave no output for the case.
    An output identical to its reference has an infinite PSNR, stored as the cap
    :data:`~sem_train.evaluation.quality.PSNR_CAP_DB` with ``psnr_infinite=True``; so does an
    output whose PSNR (raw or affine-matched) reaches the cap.
    ``noise_ceiling_db`` is set on the focused reference's rows only: the PSNR a perfect,
    noise-free restoration would score against that (noisy) reference.
    """

    model_config = ConfigDict(extra="forbid")

    method: str
    case_id: str
    image: str
    kind: str
    setting: str
    psnr: float | None = None
    psnr_affine: float | None = None
    ssim: float | None = None
    lpips: float | None = None
    niqe: float | None = None
    psnr_infinite: bool = False
    noise_ceiling_db: float | None = None
    failed: str | None = None
    errors: dict[str, str] = Field(default_factory=dict, description="metric -> reason")

    def value(self, metric: str) -> float | None:
        return getattr(self, metric)


class MetrologyRow(BaseModel):
    """Line/space metrology of one method on one case, and its errors against the focused image.

    ``lwr_psd_nm`` is the paper's "PSD" column: ``3 sqrt(∫ PSD_LWR df)``, the LWR integrated
    from the width PSD with its noise; ``lwr_unbiased_nm`` is the same with the fitted noise
    floor removed. ``avg_abs_error_nm`` averages the five table columns' absolute errors.
    """

    model_config = ConfigDict(extra="forbid")

    method: str
    case_id: str
    image: str
    setting: str
    n_lines: int = 0
    cd_nm: float | None = None
    cd_std_nm: float | None = None
    lwr_nm: float | None = None
    ler_nm: float | None = None
    lwr_psd_nm: float | None = None
    lwr_unbiased_nm: float | None = None
    cd_abs_error_nm: float | None = None
    avg_abs_error_nm: float | None = None
    failed: str | None = None

    def value(self, column: str) -> float | None:
        return getattr(self, column)


class MetricSummary(BaseModel):
    """Mean and population std (ddof 0) of one column over the cases that have a value."""

    mean: float | None = None
    std: float | None = None
    n: int = 0


def summarise(values: Iterable[float | None]) -> MetricSummary:
    """:class:`MetricSummary` of the finite values."""
    v = np.array([x for x in values if x is not None and math.isfinite(x)], dtype=np.float64)
    if v.size == 0:
        return MetricSummary()
    return MetricSummary(mean=float(v.mean()), std=float(v.std()), n=int(v.size))


RESULT_FILE = "result.json"
OUTPUTS_FILE = "outputs.npz"


class MethodResult(BaseModel):
    """Everything the report needs from one method; ``config_hash`` keys it for resuming,
    ``weights`` names the model it used."""

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    name: str
    config_hash: str = ""
    failed: str | None = None
    fit_seconds: float = 0.0
    restore_seconds: float = 0.0
    quality: list[QualityRow] = Field(default_factory=list)
    metrology: list[MetrologyRow] = Field(default_factory=list)
    measurements: dict[str, LineMeasurement] = Field(
        default_factory=dict, description="per line case (edges kept for the figure cases)"
    )
    notes: list[str] = Field(default_factory=list)
    model_notes: list[str] = Field(
        default_factory=list, description="what the loaded model says of itself (warned)"
    )
    weights: MethodWeights | None = Field(
        default=None, description="the weights the method loaded (fingerprinted), or trained here"
    )
    outputs: dict[str, np.ndarray] = Field(default_factory=dict, exclude=True)

    def save(self, folder: str | Path) -> Path:
        """Write ``outputs.npz`` (figure cases) and ``result.json`` (last) into ``folder``.

        An earlier ``result.json`` there goes first: stopped between the two files, a rerun
        leaves no result naming outputs of another run (the method is simply run again).
        """
        d = Path(folder)
        keys = sorted(self.outputs)
        arrays: dict[str, Any] = {f"o{i}": self.outputs[k] for i, k in enumerate(keys)}
        (d / RESULT_FILE).unlink(missing_ok=True)
        # Uncompressed: zlib shrinks restored frames by ~15 % at 0.3 s per method.
        atomic_write(d / OUTPUTS_FILE, lambda tmp: np.savez(tmp, keys=np.array(keys), **arrays))
        return atomic_write_text(d / RESULT_FILE, self.model_dump_json(indent=1))

    @classmethod
    def load(cls, folder: str | Path) -> MethodResult:
        """Read a result written by :meth:`save`; ResultFileError names a damaged file."""
        d = Path(folder)
        path = d / RESULT_FILE
        try:
            result = cls.model_validate_json(path.read_text(encoding="utf-8"))
        except (OSError, ValueError, ValidationError) as err:
            first = str(err).splitlines()[0] if str(err) else type(err).__name__
            raise ResultFileError(f"{path}: unreadable method result ({first})") from err
        try:
            with np.load(d / OUTPUTS_FILE) as z:
                result.outputs = {str(k): z[f"o{i}"] for i, k in enumerate(z["keys"])}
        except (OSError, ValueError, KeyError) as err:
            raise ResultFileError(f"{d / OUTPUTS_FILE}: unreadable method outputs ({err})") from err
        return result

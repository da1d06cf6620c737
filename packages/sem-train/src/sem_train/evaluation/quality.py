"""Image-quality scores of one output against its focused reference (Tables 2 and 3).

PSNR, SSIM, LPIPS (full reference) and NIQE (no reference) come from
:mod:`sem_metrology.quality`. Beside the paper's PSNR, ``psnr_affine`` is the PSNR after a
least-squares affine intensity match of the output to the reference (``α·out + β``): on this
forward model raw PSNR mostly rewards undoing the gain and offset, the matched one measures
structure, not brightness.

Each cell is scored on its own: a metric that raises on one image (LPIPS without its weights,
SSIM on an image smaller than its window) leaves that cell None with the reason, and the next
cell is tried again. Images are clipped to 0..255 first, as an 8-bit display would be. An output
identical to its reference has an infinite PSNR, reported as :data:`PSNR_CAP_DB` and counted;
so is any PSNR column at or above the cap (an exact gain/offset copy of the reference reads
about 160 dB after affine matching, float rounding keeping it finite).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
from sem_metrology import quality as q

from .results import QualityRow

__all__ = [
    "HIGHER_IS_BETTER",
    "METRIC_LABELS",
    "PSNR_CAP_DB",
    "QUALITY_METRICS",
    "affine_match",
    "check_metrics",
    "score_image",
    "score_reference",
]

#: Every metric the tables know, in column order; ``psnr_affine`` goes with ``psnr``.
QUALITY_METRICS: tuple[str, ...] = ("psnr", "psnr_affine", "ssim", "lpips", "niqe")
HIGHER_IS_BETTER = {"psnr": True, "psnr_affine": True, "ssim": True, "lpips": False, "niqe": False}
METRIC_LABELS = {
    "psnr": "PSNR (dB)",
    "psnr_affine": "PSNR affine-matched (dB)",
    "ssim": "SSIM",
    "lpips": "LPIPS",
    "niqe": "NIQE",
}
#: PSNR reported for an output identical to its reference (MSE 0): 100 dB, i.e. an RMS error
#: of 2.6e-3 grey levels. Such cases are counted in the summary (``n_infinite_psnr``).
PSNR_CAP_DB = 100.0
_NO_REFERENCE = {"niqe"}


def check_metrics(metrics: Sequence[str]) -> tuple[str, ...]:
    """Validated metric names in table order; ``psnr`` brings ``psnr_affine`` with it."""
    unknown = [m for m in metrics if m not in QUALITY_METRICS]
    if unknown or not metrics:
        raise ValueError(
            f"unknown quality metric(s) {', '.join(map(repr, unknown)) or '(none given)'}; "
            f"choose from {', '.join(QUALITY_METRICS)}"
        )
    wanted = set(metrics) | ({"psnr_affine"} if "psnr" in metrics else set())
    return tuple(m for m in QUALITY_METRICS if m in wanted)


def affine_match(output: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """``α·output + β`` with (α, β) minimising ``‖α·output + β − reference‖²`` (least squares)."""
    x = np.asarray(output, np.float64).ravel()
    y = np.asarray(reference, np.float64).ravel()
    var = float(np.var(x))
    alpha = float(np.mean((x - x.mean()) * (y - y.mean())) / var) if var > 0 else 0.0
    beta = float(y.mean() - alpha * x.mean())
    return (alpha * np.asarray(output, np.float64) + beta).astype(np.float32)


def _psnr(out: np.ndarray, ref: np.ndarray) -> float:
    return float(q.psnr(ref, out, data_range=255.0))


def _psnr_affine(out: np.ndarray, ref: np.ndarray) -> float:
    return float(q.psnr(ref, affine_match(out, ref), data_range=255.0))


_FULL_REFERENCE: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
    "psnr": _psnr,
    "psnr_affine": _psnr_affine,
    "ssim": lambda out, ref: float(q.ssim(ref, out, data_range=255.0)),
    "lpips": lambda out, ref: float(q.lpips_distance(ref, out)),
}


def _reason(err: BaseException) -> str:
    text = str(err).splitlines()[0] if str(err) else ""
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def score_image(
    row: QualityRow,
    output: np.ndarray,
    reference: np.ndarray | None,
    metrics: Sequence[str],
) -> QualityRow:
    """``row`` with every metric of ``output`` filled in (full-reference ones need ``reference``).

    A failing metric leaves its cell None and records the reason in ``row.errors``.
    """
    out = np.clip(np.asarray(output, dtype=np.float32), 0.0, 255.0)
    ref = None if reference is None else np.clip(np.asarray(reference, np.float32), 0, 255)
    values: dict[str, float | None] = {}
    errors: dict[str, str] = {}
    infinite = False
    for m in metrics:
        if ref is None and m not in _NO_REFERENCE:
            continue
        try:
            if m in _NO_REFERENCE:
                v = float(q.niqe(out))
            else:
                assert ref is not None  # full-reference metrics were skipped above without it
                v = _FULL_REFERENCE[m](out, ref)
        except Exception as err:  # one cell fails, the evaluation goes on
            values[m], errors[m] = None, _reason(err)
            continue
        if m.startswith("psnr") and v >= PSNR_CAP_DB:  # identical (inf) or nearly (rounding)
            v, infinite = PSNR_CAP_DB, True
        if not math.isfinite(v):
            values[m], errors[m] = None, f"non-finite value {v}"
            continue
        values[m] = v
    return row.model_copy(update={**values, "errors": errors, "psnr_infinite": infinite})


def score_reference(row: QualityRow, reference: np.ndarray, metrics: Sequence[str]) -> QualityRow:
    """The focused reference's own row: its no-reference scores and, when PSNR is asked for,
    its noise ceiling (:func:`sem_metrology.quality.noise_ceiling_psnr`, on the clipped
    0..255 image the methods are scored against; None for a noise-free reference, which
    bounds nothing)."""
    row = score_image(row, reference, None, metrics)
    if "psnr" not in metrics:
        return row
    ref = np.clip(np.asarray(reference, np.float32), 0.0, 255.0)
    try:
        ceiling = float(q.noise_ceiling_psnr(ref, data_range=255.0))
    except Exception as err:  # the reference's row goes on without it
        return row.model_copy(update={"errors": {**row.errors, "noise_ceiling": _reason(err)}})
    return row.model_copy(update={"noise_ceiling_db": ceiling if math.isfinite(ceiling) else None})

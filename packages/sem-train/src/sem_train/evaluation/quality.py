"""Image-quality scores for the tables: PSNR, SSIM, LPIPS (full reference) and NIQE (no reference).

Scores come from :mod:`sem_metrology.quality`. A metric that cannot run here (LPIPS without its
backbone weights offline, a missing optional package) is reported as *unavailable* with the
reason, once per run, instead of stopping the evaluation. Images are clipped to 0..255 before
scoring, as an 8-bit display of the result would be.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence

import numpy as np

__all__ = ["HIGHER_IS_BETTER", "QUALITY_METRICS", "QualityScorer"]

log = logging.getLogger(__name__)

QUALITY_METRICS: tuple[str, ...] = ("psnr", "ssim", "lpips", "niqe")
HIGHER_IS_BETTER = {"psnr": True, "ssim": True, "lpips": False, "niqe": False}
_NO_REFERENCE = {"niqe"}


def _skimage_psnr(out: np.ndarray, ref: np.ndarray) -> float:
    from skimage.metrics import peak_signal_noise_ratio

    with np.errstate(divide="ignore"):  # identical images: infinite PSNR, reported as None
        return float(peak_signal_noise_ratio(ref, out, data_range=255.0))


def _skimage_ssim(out: np.ndarray, ref: np.ndarray) -> float:
    from skimage.metrics import structural_similarity

    return float(structural_similarity(ref, out, data_range=255.0))


def _resolve(name: str) -> tuple[Callable[..., float] | None, str | None]:
    """The scoring function for ``name`` or the reason it is unavailable."""
    try:
        from sem_metrology import quality as q
    except ImportError:
        q = None
        why = "sem_metrology.quality is not installed (pip install 'sem-metrology[quality]')"
    if name == "psnr":
        fn = getattr(q, "psnr", None) if q is not None else None
        return (lambda o, r: float(fn(r, o, data_range=255.0))) if fn else _skimage_psnr, None
    if name == "ssim":
        fn = getattr(q, "ssim", None) if q is not None else None
        return (lambda o, r: float(fn(r, o, data_range=255.0))) if fn else _skimage_ssim, None
    if q is None:
        return None, why
    if name == "lpips":
        fn = getattr(q, "lpips_distance", None)
        if fn is None:
            return None, "sem_metrology.quality has no lpips_distance"
        return (lambda o, r: float(fn(r, o))), None
    if name == "niqe":
        fn = getattr(q, "niqe", None)
        if fn is None:
            return None, "sem_metrology.quality has no niqe"
        return (lambda o, r=None: float(fn(o))), None
    raise ValueError(f"unknown quality metric {name!r}; choose from {QUALITY_METRICS}")


class QualityScorer:
    """Score restored images against their focused references.

    ``unavailable`` maps a metric to the reason it could not be computed (first failure wins;
    the metric is then skipped for the rest of the run and its values are None).
    """

    def __init__(self, metrics: Sequence[str] = QUALITY_METRICS):
        unknown = [m for m in metrics if m not in QUALITY_METRICS]
        if unknown:
            raise ValueError(f"unknown quality metrics {unknown}; choose from {QUALITY_METRICS}")
        self.metrics = tuple(metrics)
        self.unavailable: dict[str, str] = {}
        self._fns: dict[str, Callable[..., float]] = {}
        for m in self.metrics:
            fn, why = _resolve(m)
            if fn is None:
                self.unavailable[m] = str(why)
            else:
                self._fns[m] = fn

    def _call(self, name: str, *args: np.ndarray) -> float | None:
        fn = self._fns.get(name)
        if fn is None:
            return None
        try:
            value = float(fn(*args))
        except Exception as err:  # a metric's own failure must not stop the evaluation
            reason = str(err).splitlines()[0] if str(err) else type(err).__name__
            self.unavailable[name] = f"{type(err).__name__}: {reason}"
            self._fns.pop(name, None)
            log.warning("%s unavailable: %s", name, self.unavailable[name])
            return None
        return value if math.isfinite(value) else None

    def score(self, output: np.ndarray, reference: np.ndarray | None) -> dict[str, float | None]:
        """Scores of one output; full-reference metrics are None without a reference."""
        out = np.clip(np.asarray(output, dtype=np.float32), 0.0, 255.0)
        ref = None if reference is None else np.clip(np.asarray(reference, np.float32), 0, 255)
        if ref is not None and ref.shape != out.shape:
            raise ValueError(f"output shape {out.shape} differs from reference shape {ref.shape}")
        scores: dict[str, float | None] = {}
        for m in self.metrics:
            if m in _NO_REFERENCE:
                scores[m] = self._call(m, out)
            else:
                scores[m] = None if ref is None else self._call(m, out, ref)
        return scores

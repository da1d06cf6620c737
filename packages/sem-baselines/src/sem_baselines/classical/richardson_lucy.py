"""Richardson-Lucy deconvolution, stopped by the discrepancy principle.

Multiplicative update for a non-negative image ``x`` observed as ``y = h ⊛ x``::

    x_{t+1} = x_t * ( h~ ⊛ ( y / (h ⊛ x_t) ) ),     h~(u) = h(-u)

* ``preset="adaptive"`` (default): starts from the flat image ``x_0 = mean(y)`` and stops at the first iterate whose
  residual mean square ``||y - h ⊛ x_t||^2 / n`` is at most ``tau`` times the mean noise
  variance (Morozov's discrepancy principle: iterating further fits the noise), or after
  ``max_iterations``. The noise variance and, when no PSF is given, the PSF come from
  :func:`sem_physics.estimate_degradation`. Convolutions are FFTs on the reflect-extended image
  (zero beyond it, as in scikit-image), with the kernel transformed once.
* ``preset="paper"``: the paper's deployment, 30 iterations with the fixed PSF through
  ``skimage.restoration.richardson_lucy`` (constant start 0.5 on the [0, 1] scale, called with
  ``clip=False``; the result is scaled back by 255).

Negative values (noise) are clipped to 0 first because the update assumes non-negative data.
Boundaries: see :mod:`.deconv`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.fft as sfft
from pydantic import Field

from ..restorer import register
from .deconv import DeconvConfig, DeconvRestorer, PSFChoice, irfft2_inplace, transfer

__all__ = [
    "RichardsonLucyConfig",
    "RichardsonLucyRestorer",
    "RichardsonLucyTruePSF",
    "richardson_lucy_discrepancy",
]

PAPER_ITERATIONS = 30
_EPS = 1e-6
STALL = 1e-3  # stop when an iteration lowers the residual by less than this x the noise
MAX_ACCELERATION = 0.99  # largest extrapolation factor (Biggs & Andrews keep it below 1)


class RichardsonLucyConfig(DeconvConfig):
    """Adaptive by default; ``preset="paper"`` gives the paper's 30 iterations and fixed PSF."""

    iterations: int | None = Field(
        default=None, ge=1, le=10_000, description="fixed count; None = discrepancy or 30"
    )
    max_iterations: int = Field(default=100, ge=1, le=10_000, description="adaptive cap")
    accelerate: bool = Field(
        default=True, description="Biggs-Andrews extrapolation of each step (False: plain RL)"
    )


def richardson_lucy_discrepancy(
    y: np.ndarray,
    kernel: np.ndarray,
    target_var: float,
    max_iterations: int,
    core: tuple[slice, slice],
    fixed: int | None = None,
    accelerate: bool = True,
) -> tuple[np.ndarray, int, float]:
    """RL from the flat ``x_0 = mean(y)`` until ``mean((y - h ⊛ x)^2)`` over ``core`` is <= ``target_var``
    or an iteration lowers it by less than ``STALL * target_var`` (the fit has stalled above the
    noise level).

    ``accelerate``: each update starts from the iterate extrapolated along the last step,
    ``x + a (x - x_prev)``, ``a`` from the correlation of the last two RL corrections, clamped
    to [0, ``MAX_ACCELERATION``] (Biggs & Andrews 1997, as in MATLAB's ``deconvlucy``); where the
    extrapolated point fits worse than the last one, the plain step is taken and the history
    restarts. Large PSFs, whose plain iterations creep, converge in a fraction of the steps.
    ``fixed`` runs exactly that many iterations instead. Returns ``(x, iterations, residual)``,
    ``x`` (float64) being a view of a buffer zero-extended to the FFT grid.
    """
    if not np.array_equal(kernel, kernel[::-1, ::-1]):
        raise ValueError("the PSF must be centro-symmetric (h(-u) = h(u))")
    h, w = y.shape
    p = kernel.shape[0] // 2
    fh = sfft.next_fast_len(h + p, real=True)
    fw = sfft.next_fast_len(w + p, real=True)
    tf = transfer(kernel, (fh, fw))

    def blurred(padded: np.ndarray) -> np.ndarray:
        """Spectrum of ``h ⊛ img``, ``padded`` being ``img`` zero-extended to the FFT grid."""
        spec = sfft.rfft2(padded)
        return np.multiply(spec, tf, out=spec)

    def fit(padded: np.ndarray) -> tuple[np.ndarray, float]:
        """``h ⊛ img`` on the FFT grid and its residual mean square over ``core``."""
        hx_grid = irfft2_inplace(blurred(padded), (fh, fw))
        hx = hx_grid[:h, :w]
        return hx_grid, float(np.mean((y[core] - hx[core]) ** 2))

    # The point each update starts from lives zero-extended to the FFT grid, so that its
    # transform needs no padded copy.
    z_grid = np.zeros((fh, fw))
    z = z_grid[:h, :w]
    z[...] = max(float(y.mean()), _EPS)  # flat start: low frequencies first
    x = z.copy() if accelerate else z  # the last iterate (the extrapolation's base)
    x_prev: np.ndarray | None = None
    steps: list[np.ndarray] = []  # the last two RL corrections (float32), newest first
    limit = fixed if fixed is not None else max_iterations
    done, previous = 0, float("inf")
    while True:
        hx_grid, resid = fit(z_grid)
        if resid > previous and len(steps) == 2:  # the extrapolation overshot
            z[...] = x
            steps.clear()
            hx_grid, resid = fit(z_grid)
        if done >= limit:
            break
        if fixed is None and (resid <= target_var or previous - resid < STALL * target_var):
            break
        previous = resid
        # The ratio y / h⊛z overwrites h⊛z in its buffer, zeroed outside the image, and that
        # buffer is freed once transformed (before the inverse transform allocates its output).
        hx = hx_grid[:h, :w]
        np.maximum(hx, _EPS, out=hx)
        np.divide(y, hx, out=hx)
        hx_grid[h:, :] = 0.0
        hx_grid[:h, w:] = 0.0
        spec = blurred(hx_grid)
        del hx, hx_grid
        update = irfft2_inplace(spec, (fh, fw))[:h, :w]
        del spec
        if not accelerate:
            np.multiply(z, update, out=z)
            done += 1
            continue
        np.multiply(z, update, out=update)  # the new iterate
        if x_prev is None:
            x_prev = np.empty_like(x)
        steps.insert(0, (update - z).astype(np.float32))
        del steps[2:]
        x_prev, x = x, x_prev
        x[...] = update
        del update
        done += 1
        _extrapolate(z, x, x_prev, steps)
    return z, done, resid


def _extrapolate(z: np.ndarray, x: np.ndarray, x_prev: np.ndarray, steps: list[np.ndarray]) -> None:
    """Write into ``z`` the next update's start: ``max(x + a (x - x_prev), eps)``, ``a`` the
    correlation of the last two corrections, clamped (``x`` itself until two are known)."""
    if len(steps) < 2:
        z[...] = x
        return
    newest, older = steps
    denom = float(np.dot(older.ravel(), older.ravel()))
    a = float(np.dot(newest.ravel(), older.ravel())) / denom if denom > 0 else 0.0
    a = min(max(a, 0.0), MAX_ACCELERATION)
    np.subtract(x, x_prev, out=z)
    z *= a
    z += x
    np.maximum(z, _EPS, out=z)


@register("richardson-lucy", RichardsonLucyConfig)
class RichardsonLucyRestorer(DeconvRestorer):
    """Richardson-Lucy deconvolution; what it used is kept in ``last_params``."""

    config: RichardsonLucyConfig
    strength_field = "iterations"
    paper_strength = PAPER_ITERATIONS
    non_negative = True  # the multiplicative update needs non-negative data

    @staticmethod
    def paper_deconvolve(ext01: np.ndarray, kernel: np.ndarray, strength: float) -> np.ndarray:
        # imported here: skimage.restoration loads scipy.signal, scipy.stats and more, which
        # the default (adaptive) preset never needs: 0.9 of 4 s CPU of a ``sem restore``
        # (benchmarks/bench_classical_startup.py)
        from skimage.restoration import richardson_lucy

        return richardson_lucy(ext01, kernel, num_iter=int(strength), clip=False)

    def adaptive(
        self, ext: np.ndarray, kernel: np.ndarray, choice: PSFChoice, pad: int
    ) -> tuple[np.ndarray, dict[str, Any]]:
        cfg = self.config
        h, w = ext.shape[0] - 2 * pad, ext.shape[1] - 2 * pad
        core = (slice(pad, pad + h), slice(pad, pad + w))
        target = cfg.tau * float(choice.noise_var or 0.0)
        out, iterations, resid = richardson_lucy_discrepancy(
            ext, kernel, target, cfg.max_iterations, core, cfg.iterations, cfg.accelerate
        )
        stop = _stop_reason(cfg, iterations, resid, target)
        return out, {"iterations": iterations, "residual_var": resid, "stopped_by": stop}


def _stop_reason(cfg: RichardsonLucyConfig, iterations: int, resid: float, target: float) -> str:
    """Why the iterations ended: ``fixed count``, ``max_iterations``, ``discrepancy`` (the
    residual reached the noise) or ``stall`` (it stopped falling while above the noise)."""
    if cfg.iterations is not None:
        return "fixed count"
    if iterations >= cfg.max_iterations:
        return "max_iterations"
    return "discrepancy" if resid <= target else "stall"


@register("richardson-lucy-true-psf", RichardsonLucyConfig, psf_from_case=True)
class RichardsonLucyTruePSF(RichardsonLucyRestorer):
    """Richardson-Lucy given each input's true PSF by the evaluation (the reference for the blind
    estimate; the noise level is still estimated)."""

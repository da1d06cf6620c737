"""Blind estimate on small frames under a large blur: the radii's errors and the ``ok`` flag.

On a 256 x 256 frame a blur of 20-30 px puts the OTF cut-off only 8-13 frequency steps from
zero, and the fit places it to a few steps only (mostly it reads a round PSF as an ellipse with
a short minor radius). The fit's own covariance did not see that: contact arrays with a 20 px
blur read 12-15 px along the minor axis, marked ok, with errors of 2-3 px; with 25-30 px the
miss reached 3-4 of those errors. Each radius's error now holds the frequency-sampling term
``CUTOFF_STEPS_ERR x R^2 / side`` (``benchmarks/bench_estimate_coverage.py``).
"""

from __future__ import annotations

import math
from collections import OrderedDict

import numpy as np
import pytest
from scipy import stats
from sem_physics import DegradationParams, degrade, estimate_degradation, make_sample
from sem_physics.estimate import canonical_ellipse

SIDE = 256
THETA = 0.6


def observe(kind: str, rx: float, ry: float, seed: int, sigma: float, dose: float):
    """A ``SIDE`` x ``SIDE`` sample image of ``kind`` degraded with the PSF ``(rx, ry, THETA)``,
    and the true canonical radii."""
    params = DegradationParams(
        rx_px=rx, ry_px=ry, beta=1.95, theta_rad=THETA, gain=1.0, offset=10, sigma=sigma, dose=dose
    )
    y = degrade(make_sample(kind, (SIDE, SIDE), seed=seed), params, rng=seed)
    trx, try_, _ = canonical_ellipse(rx, ry, THETA)
    return y, (trx, try_)


def z_scores(est, truth: tuple[float, float]) -> tuple[float, float]:
    """``(estimate - truth) / one-sigma error`` of both radii."""
    return (est.rx_px - truth[0]) / est.rx_px_err, (est.ry_px - truth[1]) / est.ry_px_err


@pytest.fixture(autouse=True)
def fresh(monkeypatch: pytest.MonkeyPatch) -> None:
    """No remembered estimates (the tests compare the estimator as it is now)."""
    import sem_physics.estimate as module

    monkeypatch.setattr(module, "_RECENT", OrderedDict())


@pytest.mark.parametrize(("radius", "sigma", "dose"), [(25.0, 2.0, 40.0), (30.0, 5.5, 25.5)])
def test_large_blur_on_a_small_contact_array_is_flagged_or_within_its_errors(
    radius: float, sigma: float, dose: float
) -> None:
    # Read as 23.3 x 13.7 px +- 3.6 (true 25) and 27.6 x 15.5 px +- 3.8 (true 30), both ok: the
    # minor radius 3.1 and 3.9 errors short.
    y, truth = observe("contacts", radius, radius, 5, sigma, dose)
    est = estimate_degradation(y)
    z = max(map(abs, z_scores(est, truth)))
    assert not est.quality.ok or z <= 3.0, (est.rx_px, est.rx_px_err, est.ry_px, est.ry_px_err)
    if not est.quality.ok:  # a flag that says why
        assert any("frequency steps" in r for r in est.quality.reasons), est.quality.reasons


def test_radius_errors_cover_the_truth_on_small_frames() -> None:
    """256 x 256 contact arrays and textures under round 20 px and 24 x 12 px blurs (16
    estimates): the ok estimates' ``z`` (one per radius) behave as standard normal ones would,
    to a probability of 1e-3 each: the sum of their squares within the chi-square interval, not
    too few within two errors, not too many within one (errors inflated past use). Before the
    sampling term: 20 of 26 within two errors, sum of squares 61 (the interval's top: 54)."""
    z = []
    for kind in ("contacts", "texture"):
        for rx, ry in ((20.0, 20.0), (24.0, 12.0)):
            for seed in range(4):
                y, truth = observe(kind, rx, ry, seed, 3.0, 30.0)
                est = estimate_degradation(y)
                if est.quality.ok:
                    z += z_scores(est, truth)
    z = np.abs(np.asarray(z))
    n = z.size
    assert n >= 20, n  # most of them ok: a check that flags everything would pass the rest
    alpha = 1e-3
    chi2 = float(np.sum(z**2))
    assert stats.chi2.ppf(alpha, n) < chi2 < stats.chi2.isf(alpha, n), (chi2, n, z.round(1))
    p1, p2 = math.erf(1 / math.sqrt(2)), math.erf(2 / math.sqrt(2))
    within2, within1 = int(np.sum(z < 2)), int(np.sum(z < 1))
    assert stats.binom.cdf(within2, n, p2) > alpha, (within2, n, z.round(1))
    assert stats.binom.sf(within1 - 1, n, p1) > alpha, (within1, n, z.round(1))

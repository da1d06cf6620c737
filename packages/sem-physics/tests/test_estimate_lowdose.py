"""Low-dose (noisy fast scan) estimates: honest, or flagged for a low signal-to-noise ratio.

At about 1 electron per grey level or less the spectrum of a line pattern sinks into the noise
floor well before the OTF's cut-off, and the fit reads the radius along the lines off the edge
roughness's own fall-off: a round 5 px PSF was estimated as 22 x 5 px, marked ok with a 4.5 px
error. ``benchmarks/bench_estimate.py --settings lowdose`` measures the sweep.
"""

from __future__ import annotations

import numpy as np
import pytest
from sem_physics import DegradationParams, degrade, estimate_degradation, make_sample
from sem_physics.estimate import canonical_ellipse


def _observe(dose: float, kind: str = "lines") -> tuple[np.ndarray, DegradationParams]:
    p = DegradationParams(
        rx_px=5, ry_px=5, beta=1.95, theta_rad=0, gain=1, offset=0, sigma=0.5, dose=dose
    )
    y = np.clip(degrade(make_sample(kind, (480, 640), seed=1), p, rng=1), 0, 255)
    return y, p


def _within(est, truth: DegradationParams, k: float) -> bool:
    trx, try_, _ = canonical_ellipse(truth.rx_px, truth.ry_px, truth.theta_rad)
    return abs(est.rx_px - trx) <= k * est.rx_px_err and abs(est.ry_px - try_) <= k * est.ry_px_err


@pytest.mark.parametrize("dose", [1.0, 0.3, 0.1])
def test_low_dose_lines_are_flagged_or_within_their_errors(dose: float) -> None:
    y, truth = _observe(dose)
    est = estimate_degradation(y)
    assert not est.quality.ok or _within(est, truth, 3.0), (est.rx_px, est.rx_px_err)
    if not est.quality.ok:
        assert any("low signal-to-noise" in r for r in est.quality.reasons), est.quality.reasons
        # flagged, the radii are no measurement: their widened errors cover the truth
        assert _within(est, truth, 3.0), (est.rx_px, est.rx_px_err, est.ry_px, est.ry_px_err)
    assert est.dose == pytest.approx(dose, rel=0.1)  # the noise itself is still measured


def test_well_exposed_texture_stays_ok_and_accurate() -> None:
    y, truth = _observe(20.0, "texture")
    est = estimate_degradation(y)
    assert est.quality.ok, est.quality.reasons
    assert est.rx_px == pytest.approx(5, rel=0.15) and est.ry_px == pytest.approx(5, rel=0.15)
    assert _within(est, truth, 2.0)


def test_the_angle_error_is_at_least_the_axes_difference_relative_error_over_two() -> None:
    from sem_physics.estimate import UNIFORM_ANGLE_ERR, angle_error_from_axes

    # theta = atan2(e2, e1) / 2 with |e| proportional to Rx - Ry: sigma_theta = sigma / 2 delta
    assert angle_error_from_axes(5.0, 1.0) == pytest.approx(0.1)
    assert angle_error_from_axes(5.0, 5.0) == angle_error_from_axes(0.0, 0.1) == UNIFORM_ANGLE_ERR
    assert UNIFORM_ANGLE_ERR == pytest.approx(np.std(np.linspace(0, np.pi, 100001)), rel=1e-4)


def _angle_case(kind, dose, rx, ry, degrees, seed):
    truth = DegradationParams(
        rx_px=rx, ry_px=ry, beta=1.95, theta_rad=np.radians(degrees), gain=1, offset=0,
        sigma=5.5, dose=dose,
    )  # fmt: skip
    y = degrade(
        make_sample(kind, (480, 640), seed=seed), truth, rng=np.random.default_rng([seed, 1])
    )
    est = estimate_degradation(y)
    off = (est.theta_rad - truth.theta_rad + np.pi / 2) % np.pi - np.pi / 2
    return est, abs(off)


def test_a_weakly_elliptical_low_dose_blur_states_an_angle_error_that_covers_its_miss() -> None:
    """Contacts at dose 1.06 under a 25 x 19.7 px blur at 75 deg: the fit turned the ellipse by
    76 deg and stated 14 deg (5.4 errors), marked ok; the axes' difference (5.1 px) is barely
    above its error, and the stated angle error now says so (within 3 errors)."""
    est, off = _angle_case("contacts", 1.06, 25.0, 19.7, 75.0, seed=3)
    assert est.quality.ok and np.degrees(off) > 60  # the precondition: the same miss
    assert off <= 3 * est.theta_rad_err


def test_a_well_determined_angle_keeps_a_tight_error() -> None:
    est, off = _angle_case("texture", 25.5, 8.0, 3.2, 40.0, seed=0)
    assert est.quality.ok and off <= 2 * est.theta_rad_err
    assert np.degrees(est.theta_rad_err) < 5.0

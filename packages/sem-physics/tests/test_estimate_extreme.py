"""Blind estimate at the edge of the paper's ranges: extreme astigmatism must not read as "ok".

An extreme setting within the paper's ranges: true Rx 29.7 px, Ry 1.1 px, theta 105 deg (the OTF's pass band is
a strip 2 / 29.7 cycles/px wide reaching past Nyquist along the short axis), the paper's
midpoint noise, on line images of the sample generator. The estimator used to return a round
10-16 px ellipse marked ok (at most one estimate in four flagged).
"""

from __future__ import annotations

import math
from collections import OrderedDict

import numpy as np
import pytest
from sem_physics import (
    DegradationParams,
    ParameterRanges,
    degrade,
    estimate_degradation,
    make_sample,
)

TRUE_RX, TRUE_RY, TRUE_THETA = 29.7, 1.1, math.radians(105.0)


def extreme_image(seed: int) -> np.ndarray:
    params = (
        ParameterRanges()
        .midpoint()
        .model_copy(update={"rx_px": TRUE_RX, "ry_px": TRUE_RY, "theta_rad": TRUE_THETA})
    )
    focused = make_sample("lines", (480, 640), seed=seed)
    return degrade(focused, params, rng=np.random.default_rng([seed, 1]))  # the protocol's stream


def far_off(est) -> bool:
    """The long axis off by more than 30 % or its orientation by more than 15 degrees."""
    dtheta = abs((est.theta_rad - TRUE_THETA + math.pi / 2) % math.pi - math.pi / 2)
    return abs(est.rx_px / TRUE_RX - 1) > 0.3 or math.degrees(dtheta) > 15


@pytest.fixture
def fresh(monkeypatch: pytest.MonkeyPatch):
    """The estimator module with no remembered estimates."""
    import sem_physics.estimate as module

    monkeypatch.setattr(module, "_RECENT", OrderedDict())
    return module


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_extreme_astigmatism_is_never_far_off_and_ok(seed: int, fresh) -> None:
    est = estimate_degradation(extreme_image(seed))
    assert not (est.quality.ok and far_off(est)), (est.rx_px, est.ry_px, est.theta_rad)
    # the fit now finds the thin pass band: long axis and orientation close to the truth
    assert not far_off(est), (est.rx_px, est.ry_px, math.degrees(est.theta_rad))


@pytest.mark.parametrize("seed", [1, 2])
def test_misfit_check_flags_a_fit_that_misses_the_pass_band(seed: int, fresh, monkeypatch) -> None:
    # The fit as it was (no relative-least-squares start) lands on a round ellipse of 10-16 px; the misfit check sees the power the
    # thin pass band carries past that ellipse's cut-off and flags it.
    monkeypatch.setattr(fresh, "RELATIVE_START", False, raising=False)
    est = estimate_degradation(extreme_image(seed))
    assert far_off(est), (est.rx_px, est.ry_px)
    assert est.quality.unreliable and not est.quality.ok
    (reason,) = [r for r in est.quality.reasons if "does not fit the spectrum" in r]
    assert "past its cut-off" in reason


@pytest.mark.parametrize(("rx", "ry"), [(12.0, 7.0), (22.0, 4.0)])
def test_well_conditioned_case_still_ok(rx: float, ry: float, fresh) -> None:
    params = DegradationParams(
        rx_px=rx, ry_px=ry, beta=1.95, theta_rad=0.5, gain=1.0, offset=10, sigma=4, dose=25
    )
    y = degrade(make_sample("texture", (480, 640), seed=3), params, rng=3)
    est = estimate_degradation(y)
    assert est.quality.ok, est.quality.reasons
    assert abs(est.rx_px / rx - 1) < 0.25 and abs(est.ry_px / ry - 1) < 0.25  # targets: p90


def test_a_binary_pattern_is_refused_in_words_without_numpy_warnings() -> None:
    """Bars of 0 and 255 only: a spectrum of a few harmonics leaves some angular sectors
    without a bin to start from, and every pixel sits on a saturated level. The estimate
    says why it cannot measure the noise; no numpy warning (median of an empty slice) leaks."""
    import warnings

    image = np.zeros((128, 128), np.float32)
    image[:, 32:64] = 255.0
    image[:, 96:112] = 255.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ValueError, match=r"only 0 pixels away from the saturated levels"):
            estimate_degradation(image)

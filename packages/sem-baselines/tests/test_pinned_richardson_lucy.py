"""Pinned against independent computations and closed forms (Biggs-Andrews extrapolation)."""

from __future__ import annotations

import numpy as np
from sem_baselines.classical.richardson_lucy import _EPS, MAX_ACCELERATION, _extrapolate


def _closed_form(x, x_prev, newest, older):
    a = float(np.dot(newest.ravel(), older.ravel()) / np.dot(older.ravel(), older.ravel()))
    a = min(max(a, 0.0), MAX_ACCELERATION)
    return np.maximum(x + a * (x - x_prev), _EPS)


def test_extrapolation_factor_is_clamped_to_zero_for_anticorrelated_corrections():
    """z = max(x + a (x - x_prev), eps) with a = <g_k, g_k-1> / <g_k-1, g_k-1> clamped to
    [0, MAX_ACCELERATION] (Biggs & Andrews). Anti-correlated corrections (a < 0) must give the
    plain step z = x; the accelerated-RL test never produces a negative a."""
    rng = np.random.default_rng(0)
    x = rng.uniform(1, 2, (6, 7))
    x_prev = x - rng.uniform(0.1, 0.5, (6, 7))
    older = rng.normal(size=(6, 7)).astype(np.float32)
    for newest, expect_plain in ((-older, True), (0.5 * older, False), (3.0 * older, False)):
        z = np.empty_like(x)
        _extrapolate(z, x, x_prev, [newest.astype(np.float32), older])
        np.testing.assert_allclose(z, _closed_form(x, x_prev, newest, older), rtol=1e-6)
        if expect_plain:
            np.testing.assert_array_equal(z, np.maximum(x, _EPS))


def test_extrapolated_start_is_floored_at_eps_where_it_would_go_negative():
    """A large step back (x far below x_prev, a near MAX_ACCELERATION) would extrapolate below 0;
    the multiplicative update needs a positive start, so z = max(x + a (x - x_prev), eps)."""
    x = np.full((4, 5), 0.1)
    x_prev = np.full((4, 5), 5.0)
    older = np.ones((4, 5), dtype=np.float32)
    z = np.empty_like(x)
    _extrapolate(z, x, x_prev, [older.copy(), older])  # a = 1 -> clamped to MAX_ACCELERATION
    assert 0.1 + MAX_ACCELERATION * (0.1 - 5.0) < 0
    np.testing.assert_array_equal(z, np.full((4, 5), _EPS))


def test_stop_reason_is_max_iterations_when_the_cap_is_reached():
    """Capped at 3 iterations with a noise variance no fit reaches (1e-6 on a 0..255 image of
    sigma 8), the run stops after exactly 3 iterations and says ``max_iterations``."""
    from sem_baselines import get_restorer
    from sem_physics import ParameterRanges, degrade, make_sample

    mid = ParameterRanges().midpoint()
    x = make_sample("texture", (128, 160), seed=4)
    y = degrade(x, mid.model_copy(update={"sigma": 8.0, "dose": 1e6}), rng=0)
    rl = get_restorer("richardson-lucy", psf=mid.psf, noise_var=1e-6, max_iterations=3)
    rl.restore(y)
    assert rl.last_params["iterations"] == 3
    assert rl.last_params["stopped_by"] == "max_iterations"


def test_a_kernel_that_is_not_centro_symmetric_is_refused():
    """The update correlates with h(-u) by reusing h's transfer function, which is only right for
    h(-u) = h(u); another kernel must be refused, not silently mis-deconvolved."""
    import pytest
    from sem_baselines.classical.richardson_lucy import richardson_lucy_discrepancy

    kernel = np.zeros((5, 5))
    kernel[2, 2], kernel[2, 3] = 0.7, 0.3  # shifted mass: h(-u) != h(u)
    y = np.random.default_rng(0).uniform(10, 200, (32, 32))
    core = (slice(0, 32), slice(0, 32))
    with pytest.raises(ValueError, match="centro-symmetric"):
        richardson_lucy_discrepancy(y, kernel, 1.0, 5, core)

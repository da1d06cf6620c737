"""Pinned against independent computations and closed forms (PSD normalisation of the DC bin)."""

from __future__ import annotations

import numpy as np
import pytest
from sem_metrology.psd import profile_psd, psd_variance


@pytest.mark.parametrize("n", [64, 65])
def test_psd_without_detrend_integrates_to_the_mean_square(n):
    """Parseval with the DC bin: for profiles that are not mean-free (detrend=None), the
    one-sided PSD (c_0 = 1) integrates to (1/N) sum x^2 = variance + mean^2, an independent
    closed form. With the mean removed the DC bin is 0, which is why the existing Parseval
    test cannot see its weight."""
    rng = np.random.default_rng(3)
    x = rng.normal(2.5, 1.3, size=(5, n))
    freq, psd = profile_psd(x, 0.8, detrend=None)
    assert psd_variance(freq, psd) == pytest.approx(float(np.mean(x**2)), rel=1e-12)
    # the DC bin alone holds the squared mean (spacing * N * mean^2 / df-normalised)
    df = freq[1] - freq[0]
    assert psd[0] * df == pytest.approx(float(np.mean(x.mean(axis=1) ** 2)), rel=1e-12)

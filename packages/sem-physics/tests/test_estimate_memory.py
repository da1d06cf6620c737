"""Peak memory of the blind estimate on a 1024 x 1024 frame, and the in-place steps it relies on
equal bit for bit to the whole-array expressions they replace (the estimate is unchanged)."""

from __future__ import annotations

import numpy as np
import scipy.fft as sfft
import sem_physics.estimate as estimate_module
from sem_physics import DegradationParams, degrade, estimate_degradation, make_sample
from sem_physics.testing import traced_peak_bytes

SHAPE = (1024, 1024)
# tracemalloc peak per pixel of a float32 frame (the caller's own frame not counted): the
# float64 copy (8), the periodic component's spectrum (8) and the polar bins' index (4) stay
# through the noise fit, which made three more full frames beside them (48 with the spectrum
# multiplied into a copy and the leakage cross-check's tapered transform made beside it); the
# spectrum is now overwritten by the noise band and freed before the cross-check: 36.
ESTIMATE_MAX_BYTES_PER_PX = 40.0


def _frame(seed: int) -> np.ndarray:
    params = DegradationParams(
        rx_px=6, ry_px=4, beta=1.95, theta_rad=0.3, gain=1, offset=5, sigma=3, dose=20
    )
    return degrade(make_sample("texture", SHAPE, seed=seed), params, rng=seed)


def test_estimate_peak_memory_stays_within_a_few_frames() -> None:
    estimate_degradation(_frame(0)[:256, :256].copy())  # imports and tables outside
    frame = _frame(1)  # pixels no earlier call saw: the estimate is computed, not recalled
    per_px = traced_peak_bytes(lambda: estimate_degradation(frame)) / frame.size
    assert per_px < ESTIMATE_MAX_BYTES_PER_PX, f"the estimate peaked at {per_px:.1f} bytes/px"


def test_in_place_tapered_periodogram_equals_the_whole_array_one() -> None:
    y = _frame(2).astype(np.float64)[:300, :420]
    h, w = y.shape
    win = np.outer(
        estimate_module._tukey(h, estimate_module.TAPER),
        estimate_module._tukey(w, estimate_module.TAPER),
    )
    spec = sfft.rfft2((y - y.mean()) * win, workers=-1)
    whole = (spec.real**2 + spec.imag**2) / float(np.sum(win * win))
    np.testing.assert_array_equal(estimate_module._tapered_power(y), whole)

"""Property-based checks of the convolution, and the package working without torch."""

from __future__ import annotations

import numpy as np
import scipy.ndimage as ndi
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.signal import convolve2d
from sem_physics import SAMPLE_KINDS, PSFParams, airy_psf, convolve_reflect, make_sample
from sem_physics.io import detect_info_bar
from sem_physics.testing import python_output


@settings(max_examples=30, deadline=None)
@given(
    h=st.integers(1, 40),
    w=st.integers(1, 40),
    rx=st.floats(0.2, 3.0),
    ry=st.floats(0.2, 3.0),
    theta=st.floats(0.0, 3.14),
    seed=st.integers(0, 2**16),
)
def test_fft_convolution_equals_direct_reflect(
    h: int, w: int, rx: float, ry: float, theta: float, seed: int
) -> None:
    x = np.random.default_rng(seed).random((h, w)) * 255
    k = airy_psf(PSFParams(rx_px=rx, ry_px=ry, theta_rad=theta))
    ours = convolve_reflect(x, k, dtype=np.float64)
    # Independent reference: explicit symmetric padding, then a direct 'valid' convolution.
    p = k.shape[0] // 2
    direct = convolve2d(np.pad(x, p, mode="symmetric"), k, mode="valid")
    np.testing.assert_allclose(ours, direct, atol=1e-9)
    if p <= min(h, w):
        # scipy.ndimage mode 'reflect' is the same boundary, but (scipy 1.17) it returns wrong,
        # run-dependent values when the kernel half-width is far beyond the image side.
        np.testing.assert_allclose(ours, ndi.convolve(x, k, mode="reflect"), atol=1e-9)
    # Unit-sum positive kernel: the result stays within the image's range.
    assert x.min() - 1e-9 <= ours.min() and ours.max() <= x.max() + 1e-9


def test_samples_have_no_info_bar() -> None:
    for kind in SAMPLE_KINDS:
        assert detect_info_bar(make_sample(kind, (240, 320), seed=1)) is None


def test_core_works_without_torch() -> None:
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "import numpy as np, sem_physics as s\n"
        "p = s.ParameterRanges(rx_px=(1, 2), ry_px=(1, 2)).midpoint()\n"
        "y = s.degrade(s.make_sample('lines', (64, 64)), p, rng=0)\n"
        "print(y.shape)\n"
    )
    assert python_output(code, timeout=120) == "(64, 64)"

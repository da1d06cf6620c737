"""Property tests: any array, dtype, NaN/Inf pattern or pixel size gives a valid result or
the package's own error (``MetrologyInputError``), never another exception or a NaN."""

from __future__ import annotations

import json
import math

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sem_metrology import MetrologyInputError, measure_contacts, measure_lines

_DTYPES = [np.uint8, np.uint16, np.int16, np.int64, np.float32, np.float64, np.bool_]


@st.composite
def images(draw):
    ndim = draw(st.sampled_from([0, 1, 2, 2, 2, 2, 3]))
    shape = tuple(draw(st.integers(0 if ndim != 2 else 1, 48)) for _ in range(ndim))
    if ndim == 3:
        shape = (*shape[:2], draw(st.sampled_from([1, 3])))
    dtype = draw(st.sampled_from(_DTYPES))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    kind = draw(st.sampled_from(["noise", "lines", "constant"]))
    if kind == "lines" and ndim == 2 and shape[1] > 0:
        period = draw(st.integers(4, 16))
        row = 60.0 + 120.0 * ((np.arange(shape[1]) % period) < period // 2)
        data = np.tile(row, (shape[0], 1)) + rng.normal(0, 5, shape)
    elif kind == "constant":
        data = np.full(shape, draw(st.floats(-1e3, 1e3)))
    else:
        data = rng.normal(100, 40, shape)
    if dtype == np.bool_:
        arr = data > 100
    elif np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        arr = np.clip(data, info.min, info.max).astype(dtype)
    else:
        arr = data.astype(dtype)
        if arr.size and draw(st.booleans()):
            flat = arr.reshape(-1)
            idx = rng.integers(0, flat.size, size=draw(st.integers(1, 3)))
            flat[idx] = draw(st.sampled_from([np.nan, np.inf, -np.inf]))
    return arr


_PIXEL = st.one_of(
    st.none(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([1e-30, 1e-3, 0.827, 1e6, 2e6, -1.0, 0.0]),
)


def _check(result) -> None:
    data = json.loads(result.to_json())

    def finite(obj) -> bool:
        if isinstance(obj, float):
            return math.isfinite(obj)
        if isinstance(obj, dict):
            return all(finite(v) for v in obj.values())
        if isinstance(obj, list):
            return all(finite(v) for v in obj)
        return True

    assert finite(data)
    assert result.valid or result.reason
    assert 1e-3 <= result.pixel_size_nm <= 1e6


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(image=images(), pixel=_PIXEL, convention=st.sampled_from(["smile", "truth"]))
def test_measure_lines_returns_a_result_or_its_own_error(image, pixel, convention) -> None:
    try:
        result = measure_lines(image, pixel, convention=convention, bootstrap_samples=20)
    except MetrologyInputError:
        return
    _check(result)


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(image=images(), pixel=_PIXEL)
def test_measure_contacts_returns_a_result_or_its_own_error(image, pixel) -> None:
    try:
        result = measure_contacts(image, pixel)
    except MetrologyInputError:
        return
    _check(result)

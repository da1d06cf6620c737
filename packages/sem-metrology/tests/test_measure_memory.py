"""Peak memory of the measurements, and the banded computations that keep it low: each gives
the same values, bit for bit, as the full-frame expression it replaces."""

from __future__ import annotations

import importlib

import numpy as np
import pytest
from scipy import ndimage
from sem_metrology import make_contact_image, make_line_image, measure_contacts, measure_lines
from sem_physics.testing import traced_peak_bytes

# The peak-memory tests at the end use the public API only (they run on the previous code too,
# which they fail); the banded helpers are imported by the tests of each.


def _helper(module: str, name: str):
    return getattr(importlib.import_module(f"sem_metrology.{module}"), name)


@pytest.fixture
def small_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Bands of a few hundred elements, so that small test images span many of them."""
    for name in ("preprocess", "_smile", "edges"):
        module = importlib.import_module(f"sem_metrology.{name}")
        if hasattr(module, "BLOCK_ELEMENTS"):
            monkeypatch.setattr(module, "BLOCK_ELEMENTS", 300)
    preprocess = importlib.import_module("sem_metrology.preprocess")
    monkeypatch.setattr(preprocess, "_MEDIAN_GATHER", 50)
    monkeypatch.setattr(preprocess, "_MEDIAN_BINS", 16)


def _chunked(values: np.ndarray, size: int):
    return lambda: (values[i : i + size] for i in range(0, values.size, size))


@pytest.mark.parametrize("n", [1, 2, 7, 1000, 1001])
def test_streamed_median_equals_np_median(n: int, small_blocks: None) -> None:
    streamed_median = _helper("preprocess", "streamed_median")
    rng = np.random.default_rng(n)
    for values in (
        rng.standard_normal(n) * np.exp(rng.uniform(-30, 30, n)),
        rng.integers(0, 4, n).astype(np.float64),  # many ties: bins narrowed to one value
        np.round(rng.standard_normal(n), 1),
    ):
        got = streamed_median(_chunked(values, 37))
        assert got == np.median(values) and type(got) is type(np.median(values))


def _views(a: np.ndarray) -> list[np.ndarray]:
    """Row-major, transposed and SMILE-turned (np.rot90) layouts of ``a``."""
    return [a, np.ascontiguousarray(a.T).T, np.rot90(np.ascontiguousarray(np.rot90(a, 3)), 1)]


def test_row_mean_and_step_mad_equal_full_expressions(small_blocks: None) -> None:
    row_mean, step_mad = _helper("preprocess", "row_mean"), _helper("preprocess", "step_mad")
    split_medians = _helper("preprocess", "split_medians")
    rng = np.random.default_rng(0)
    base = np.round(rng.uniform(0, 255, (61, 47)))
    for a in _views(base):
        for levels in (None, (12.0, 201.5)):
            norm = a if levels is None else (a - levels[0]) / (levels[1] - levels[0])
            assert np.array_equal(row_mean(a, levels), norm.mean(axis=0))
            step = np.diff(norm, axis=0)
            assert step_mad(a, levels) == float(np.median(np.abs(step - np.median(step))))
        d = np.diff(a, axis=1).ravel()
        assert step_mad(a, axis=1) == float(np.median(np.abs(d - np.median(d))))
        t = 100.0
        assert split_medians(a, t) == (
            float(np.median(a[a <= t])),
            float(np.median(a[a > t])),
            int(np.count_nonzero(a <= t)),
        )


def test_structure_tensor_sums_equal_full_expression(small_blocks: None) -> None:
    structure_tensor_sums = _helper("preprocess", "structure_tensor_sums")
    rng = np.random.default_rng(1)
    for a in _views(rng.standard_normal((83, 67)) * 50.0):
        gy, gx = np.gradient(ndimage.gaussian_filter(np.asarray(a, dtype=np.float64), 1.0))
        full = (float(np.sum(gx * gy)), float(np.sum(gx * gx)), float(np.sum(gy * gy)))
        assert structure_tensor_sums(a, 1.0) == full


def test_sheared_profile_equals_bincount(small_blocks: None) -> None:
    sheared_profile = _helper("preprocess", "sheared_profile")
    rng = np.random.default_rng(2)
    a = rng.standard_normal((70, 50))
    h, w = a.shape
    for slope in (0.0, 0.013, -0.05):
        shift = (np.arange(h, dtype=np.float64) - 0.5 * (h - 1)) * slope
        pad = int(np.ceil(np.abs(shift).max())) + 1
        idx = np.rint(np.arange(w)[None, :] - shift[:, None] + pad).astype(np.intp).ravel()
        sums = np.bincount(idx, weights=a.ravel(), minlength=w + 2 * pad + 1)
        counts = np.bincount(idx, minlength=w + 2 * pad + 1)
        full = counts >= 0.999 * h
        x, prof = sheared_profile(a, slope)
        assert np.array_equal(prof, sums[full] / counts[full])
        assert np.array_equal(x, (np.arange(sums.size, dtype=np.float64) - pad)[full])


def test_mean_sampled_profile_equals_full_expression(small_blocks: None) -> None:
    mean_sampled_profile = _helper("edges", "mean_sampled_profile")
    rng = np.random.default_rng(3)
    img = rng.standard_normal((40, 60))
    pos = rng.uniform(-3, 63, (9, 10))
    pos[2, 3] = np.nan
    rows = np.arange(0, 40, 4)
    sign = np.where(rng.random(9) > 0.5, 1.0, -1.0)
    t = np.arange(-3, 3.25, 0.25)
    x = pos[:, :, None] + sign[:, None, None] * t[None, None, :]
    ok = np.isfinite(x).all(axis=2) & (x.min(axis=2) >= 0) & (x.max(axis=2) <= img.shape[1] - 1)
    x = x[ok]
    r = np.broadcast_to(rows[None, :], pos.shape)[ok]
    i0 = np.clip(np.floor(x).astype(np.intp), 0, img.shape[1] - 2)
    frac = x - i0
    vals = img[r[:, None], i0] * (1 - frac) + img[r[:, None], i0 + 1] * frac
    got = mean_sampled_profile(img, pos, rows, sign, t)
    assert got is not None and np.array_equal(got, vals.mean(axis=0))


@pytest.mark.parametrize("kind", ["uint8", "uint16", "float32", "float64"])
def test_median5_compact_equals_the_float64_network(kind: str, small_blocks: None) -> None:
    median5_compact = _helper("_smile", "median5_compact")
    median5_zero_padded = _helper("_smile", "median5_zero_padded")
    rng = np.random.default_rng(4)
    scale = {"uint8": 255, "uint16": 60000, "float32": 1.0, "float64": 1.0}[kind]
    img = rng.uniform(0, scale, (37, 29))
    if kind.startswith("uint"):
        img = np.round(img)
    elif kind == "float32":
        img = img.astype(np.float32).astype(np.float64)
    med = median5_compact(img)
    assert med.dtype == np.dtype(kind)
    assert np.array_equal(median5_zero_padded(img), _network_float64(img))


def _network_float64(a: np.ndarray) -> np.ndarray:
    """The zero-padded 5x5 median of the whole frame in float64 (the network unbanded)."""
    h, w = a.shape
    padded = np.zeros((h + 4, w + 4))
    padded[2:-2, 2:-2] = a
    return np.median(
        np.stack([padded[dy : dy + h, dx : dx + w] for dy in range(5) for dx in range(5)]), axis=0
    )


def test_radon_scores_and_rotation_equal_unbanded(small_blocks: None) -> None:
    _radon_scores = _helper("_smile", "_radon_scores")
    rotate_region = _helper("_smile", "rotate_region")
    rng = np.random.default_rng(5)
    region = rng.uniform(0, 255, (50, 64))
    angles = np.linspace(85.0, 95.0, 7)
    # the unbanded projections (np.bincount over all pixels of the disc)
    dim1, dim2 = region.shape
    radius = min(region.shape) / 2 - 2
    xg = np.linspace(-dim2 / 2 + 1, dim2 / 2 - 1, dim2)
    yg = np.linspace(-dim1 / 2 + 1, dim1 / 2 - 1, dim1)
    inside = (xg[None, :] ** 2 + yg[:, None] ** 2) < radius * radius
    side = min(region.shape)
    r0, c0 = (dim1 - side + 1) // 2, (dim2 - side + 1) // 2
    ys, xs = np.nonzero(inside[r0 : r0 + side, c0 : c0 + side])
    vals = region[r0 : r0 + side, c0 : c0 + side][ys, xs].astype(np.float64)
    xs, ys = xs.astype(np.float64) - side // 2, ys.astype(np.float64) - side // 2
    ref = []
    for theta in np.deg2rad(angles):
        t = np.cos(theta) * xs - np.sin(theta) * ys + side + 1
        i0 = np.floor(t).astype(np.intp)
        w1 = t - i0
        n = 2 * side + 4
        proj = np.bincount(i0, vals * (1.0 - w1), n) + np.bincount(i0 + 1, vals * w1, n)
        ref.append(float(np.dot(proj, proj)))
    assert np.array_equal(_radon_scores(region, angles), np.asarray(ref))
    frame = rng.uniform(0, 255, (60, 70))
    a = np.deg2rad(1.4)
    b = np.rot90(frame, 3)
    cy, cx = (b.shape[0] - 1) / 2.0, (b.shape[1] - 1) / 2.0
    yo = np.arange(5, 60, dtype=np.float64)[:, None] - cy
    xo = np.arange(60 - 55, 60 - 4, dtype=np.float64)[None, :] - cx
    y_in = np.sin(a) * xo + np.cos(a) * yo + cy
    x_in = np.cos(a) * xo - np.sin(a) * yo + cx
    full = ndimage.map_coordinates(b, [y_in, x_in], order=0, mode="grid-constant", cval=0.0)
    assert np.array_equal(rotate_region(frame, 1.4, (4, 55, 5, 60)), np.rot90(full, 1))


# ---------------------------------------------------------------------------------------------
# Peak memory. The full-frame float64 code peaked at about 75 bytes per pixel of a 2048² line
# frame (traced), 52 for contacts; the banded code keeps the frame's float64 copy, the turned
# region (smile) or the normalised one (truth), and band-sized temporaries.

SIDE = 2048
LINE_BOUND_B_PER_PX = 40
CONTACT_BOUND_B_PER_PX = 45


@pytest.fixture(scope="module")
def line_frame() -> np.ndarray:
    s = make_line_image(
        n_lines=SIDE // 41 - 2,
        shape=(SIDE, SIDE),
        pitch_nm=40 * 0.827,
        tilt_deg=0.6,
        supersample=1,
        seed=1,
    )
    img = ndimage.gaussian_filter(s.image.astype(np.float64), 1.2)
    img += np.random.default_rng(2).normal(0.0, 1.0, img.shape) * np.sqrt(img) * 0.8
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("convention", ["smile", "truth"])
def test_line_measurement_peak_memory(line_frame: np.ndarray, convention: str) -> None:
    measure_lines(line_frame[:256, :256], 0.827, convention=convention)  # imports, caches
    result = []
    peak = traced_peak_bytes(
        lambda: result.append(measure_lines(line_frame, 0.827, convention=convention))
    )
    assert result[0].valid and result[0].n_lines > 40
    print(f"{convention}: traced peak {peak / line_frame.size:.1f} bytes per pixel")
    assert peak / line_frame.size < LINE_BOUND_B_PER_PX, f"{peak / line_frame.size:.1f} B/px"


def test_contact_measurement_peak_memory() -> None:
    s = make_contact_image(shape=(SIDE, SIDE), supersample=2, seed=3)
    img = ndimage.gaussian_filter(s.image.astype(np.float64), 1.2)
    img += np.random.default_rng(4).normal(0.0, 1.0, img.shape) * np.sqrt(img) * 0.8
    frame = np.clip(np.rint(img), 0, 255).astype(np.uint8)
    del img, s
    measure_contacts(frame[:256, :256], 0.9)
    result = []
    peak = traced_peak_bytes(lambda: result.append(measure_contacts(frame, 0.9)))
    assert result[0].valid and result[0].n_holes > 1000
    print(f"contacts: traced peak {peak / frame.size:.1f} bytes per pixel")
    assert peak / frame.size < CONTACT_BOUND_B_PER_PX, f"{peak / frame.size:.1f} B/px"

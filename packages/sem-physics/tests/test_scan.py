"""Scan-line jitter (``row_jitter``): clean images say nothing, jittered ones are measured."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sem_physics import (
    ParameterRanges,
    RowJitter,
    crop_info_bar,
    degrade,
    make_sample,
    read_image,
    row_jitter,
)

MIDPOINT = ParameterRanges().midpoint()


def jitter(image: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Row ``i`` displaced by ``offsets[i]`` px (linear interpolation, edges clamped)."""
    x = np.arange(image.shape[1], dtype=np.float64)
    return np.stack([np.interp(x - p, x, row) for row, p in zip(image, offsets, strict=True)])


def observe(x: np.ndarray, offsets: np.ndarray | None = None, seed: int = 0) -> np.ndarray:
    """``x`` degraded at the paper's midpoint, the rows displaced between blur and noise."""
    blurred = degrade(x, MIDPOINT, seed, poisson=False, gaussian=False)
    if offsets is not None:
        blurred = jitter(blurred, offsets)
    return degrade(blurred, MIDPOINT, seed + 1, blur=False, gain_offset=False)


def offsets(rows: int, rms: float = 1.5, seed: int = 3) -> np.ndarray:
    return np.random.default_rng(seed).normal(0.0, rms, rows)


def real_contacts(real_dir: Path) -> np.ndarray:
    img = read_image(real_dir / "contacts_0p901nm.tif")
    return crop_info_bar(img.data, img.info_bar_rows)[:512, :640]


@pytest.mark.parametrize("kind", ["contacts", "lines"])
def test_degraded_sample_without_jitter_is_not_flagged(kind: str) -> None:
    result = row_jitter(observe(make_sample(kind, (256, 320), seed=4)))
    assert isinstance(result, RowJitter)
    assert not result.detected and result.reason is None and result.rows_used > 200


@pytest.mark.parametrize("kind", ["contacts", "lines"])
def test_jittered_sample_is_detected_with_its_rms(kind: str) -> None:
    shifts = offsets(256)
    truth = float(np.sqrt(np.mean(shifts**2)))
    result = row_jitter(observe(make_sample(kind, (256, 320), seed=4), shifts))
    assert result.detected and result.z >= 8
    assert truth / 1.5 <= result.rms_px <= truth * 1.5
    assert result.reason is not None and "not defocus" in result.reason


def test_integer_shifts_are_detected() -> None:
    shifts = np.random.default_rng(5).integers(-2, 3, 256).astype(float)  # rms about 1.4 px
    result = row_jitter(observe(make_sample("contacts", (256, 320), seed=6), shifts))
    truth = float(np.sqrt(np.mean(shifts**2)))
    assert result.detected and truth / 1.5 <= result.rms_px <= truth * 1.5


def test_real_image_is_clean_and_its_jittered_copy_is_measured(real_dir: Path) -> None:
    image = real_contacts(real_dir)
    clean = row_jitter(image)
    assert not clean.detected and clean.rms_px < 0.3
    shifts = offsets(image.shape[0])
    truth = float(np.sqrt(np.mean(shifts**2)))
    found = row_jitter(jitter(image, shifts))
    assert found.detected and truth / 1.5 <= found.rms_px <= truth * 1.5


def test_horizontal_lines_give_no_evidence() -> None:
    """Rows along horizontal lines carry no horizontal position: jitter cannot be seen."""
    y = np.arange(256)[:, None]
    lines = 60 + 120 * (np.sin(2 * np.pi * y / 24) > 0) * np.ones((1, 320))
    result = row_jitter(observe(lines.astype(np.float32), offsets(256)))
    assert not result.detected and result.reason is None and result.rows_used < 24


def test_a_slow_drift_is_not_jitter() -> None:
    drift = 6.0 * np.sin(np.linspace(0, np.pi, 256))  # a tilt then back: a shear, not jitter
    result = row_jitter(observe(make_sample("contacts", (256, 320), seed=4), drift))
    assert not result.detected


def test_small_or_odd_input() -> None:
    assert row_jitter(np.zeros((10, 300))).rows_used == 0
    assert not row_jitter(np.full((64, 64), 7.0)).detected
    with pytest.raises(ValueError, match="2-D"):
        row_jitter(np.zeros((4, 64, 64)))
    assert set(row_jitter(np.zeros((64, 64))).model_dump()) == {
        "rms_px",
        "detected",
        "rows_used",
        "z",
        "reason",
    }

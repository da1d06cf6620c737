"""The pixel noise behind the profile SNR check (lines) and the contrast-to-noise check
(contacts) on 8-bit images: a trimmed spread of neighbour differences, not their MAD, which
moves in half-grey-level steps there (noise of 0.5-1.0 grey levels all read 1.05), so that faint
but measurable patterns were refused as noise."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sem_metrology import make_contact_image, make_line_image, measure_contacts, measure_lines
from sem_metrology.contacts import pixel_noise_std
from sem_metrology.preprocess import step_noise


def _eight_bit(clean: np.ndarray, sigma: float, seed: int) -> np.ndarray:
    noisy = clean + np.random.default_rng(seed).normal(0.0, sigma, clean.shape)
    return np.clip(np.rint(noisy), 0, 255).astype(np.uint8)


@pytest.mark.parametrize(("rows", "sigma"), [(64, 0.55), (80, 0.6)])
def test_lines_one_grey_level_deep_are_measured_in_8_bit(rows: int, sigma: float) -> None:
    # Before: refused, "the mean profile across the lines varies by 8.7 (9.7) x its own noise,
    # as noise alone does" (< 10): the MAD read a noise of 1.05 grey levels; with the noise of
    # the image the profile varies by 17.7 (17.3) x its noise (white noise alone: about 2.5).
    s = make_line_image(
        n_lines=10, shape=(rows, 320), line_level=101.0, space_level=100.0, sigma_nm=0.5, seed=0
    )
    image = _eight_bit(s.image, sigma, 2)
    # the noise of the 8-bit image (rounding adds 1/12 grey level²), seen by both estimators
    true = math.sqrt(sigma**2 + 1.0 / 12.0)
    assert step_noise(image.astype(np.float64)) == pytest.approx(true, rel=0.2)
    d = np.diff(image.astype(np.float64), axis=0)
    mad = 1.4826 * float(np.median(np.abs(d - np.median(d)))) / math.sqrt(2.0)
    assert mad == pytest.approx(1.048, abs=0.001)  # the MAD's step: 1.6-1.7 x the noise
    m = measure_lines(image, s.pixel_size_nm, convention="truth", tone="bright")
    assert m.valid, m.reason
    assert m.n_lines == 10 and abs(m.cd_nm - s.truth.cd_nm) < 0.3


@pytest.mark.parametrize(("depth", "sigma"), [(0.6, 0.6), (0.8, 0.8)])
def test_contacts_under_a_grey_level_deep_are_measured_in_8_bit(depth: float, sigma: float) -> None:
    # Before: refused, "no contact holes: level contrast 0.52 (0.69) is below 0.8 x the pixel
    # noise 1.05"; the noise is 0.6-0.8.
    holes = make_contact_image(seed=0)
    clean = np.asarray(holes.clean, dtype=np.float64)
    unit = (clean - clean.min()) / (clean.max() - clean.min())  # holes 0, space 1
    image = _eight_bit(100.0 + depth * unit, sigma, 1)
    c = measure_contacts(image, holes.pixel_size_nm)
    assert c.valid, c.reason
    assert c.n_holes >= 29 and abs(c.cd_nm - holes.cd_nm.mean()) < 0.2
    true = math.sqrt(sigma**2 + 1.0 / 12.0)
    assert pixel_noise_std(image.astype(np.float64)) == pytest.approx(true, rel=0.2)

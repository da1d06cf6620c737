"""The automatic tone on 8-bit images: the noise of the two phases told apart although their
row-to-row differences are whole grey levels."""

from __future__ import annotations

import numpy as np
import pytest
from sem_metrology import make_line_image, measure_lines, preprocess
from sem_metrology.preprocess import _trimmed_spread, detect_tone, normalize_intensity
from sem_physics import DegradationParams

PX = 0.827
PITCH_PX = 32

# Shot noise only (variance = signal / dose): spaces at 80 and lines at 120 grey levels give
# a noise ratio of sqrt(120 / 80) = 1.22, about 1.6 and 2.0 grey levels per pixel.
_SHOT = DegradationParams(
    rx_px=1.5, ry_px=1.5, beta=2.0, theta_rad=0.0, gain=1.0, offset=0.0, sigma=0.0, dose=10.0
)


def _uint8_lines(duty: float, seed: int):
    s = make_line_image(
        n_lines=14,
        shape=(256, 512),
        pixel_size_nm=PX,
        pitch_nm=PITCH_PX * PX,
        cd_nm=duty * PITCH_PX * PX,
        sigma_nm=1.0,
        space_level=80.0,
        line_level=120.0,
        degradation=_SHOT,
        seed=seed,
    )
    return s, np.clip(np.rint(s.image), 0, 255).astype(np.uint8)


def test_trimmed_spread_is_not_quantised_on_whole_grey_levels(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Rounded to whole grey levels, Gaussian noise of 1.6, 1.9 and 2.2 grey levels keeps its
    standard deviation within 3 % (the MAD read all three as 2.10); values streamed in several
    passes (more than are held at once) give the same spread."""
    rng = np.random.default_rng(3)
    for sigma in (1.6, 1.9, 2.2):
        pixels = np.rint(100.0 + rng.normal(0.0, sigma, (2, 100_000)))
        steps = pixels[1] - pixels[0]  # std sigma * sqrt(2)

        def chunks(s: np.ndarray = steps):
            return iter([s[:30_000].copy(), s[30_000:].copy()])

        spread = _trimmed_spread(chunks)
        assert spread / np.sqrt(2.0) == pytest.approx(sigma, rel=0.03)
        with monkeypatch.context() as m:
            m.setattr(preprocess, "_SPREAD_GATHER", 1000)
            m.setattr(preprocess, "_MEDIAN_GATHER", 500)
            assert _trimmed_spread(chunks) == spread  # whole numbers: sums exact either way
    assert np.isnan(_trimmed_spread(lambda: iter([np.empty(0)])))


@pytest.mark.parametrize("duty", [0.3, 0.5, 0.7])
def test_tone_of_8bit_lines_as_recorded_and_inverted(duty: float) -> None:
    """The lines' tone is read from the shot noise across duty cycles, as recorded (bright)
    and inverted (dark); the MAD of whole-grey-level steps gave both phases the same noise
    (ratio 1.00) and assumed bright lines for the inverted images."""
    for seed in (0, 1):
        _, image = _uint8_lines(duty, seed)
        for pixels, tone in ((image, "bright"), (255 - image, "dark")):
            grey = pixels.astype(np.float64)
            found, source = detect_tone(grey, normalize_intensity(grey)[0])
            assert (found, "assumed" in source) == (tone, False), source
            ratio = float(source.split("noise ratio ")[1][:4])
            expected = np.sqrt(120.0 / 80.0)  # shot noise, as recorded
            assert ratio == pytest.approx(expected if tone == "bright" else 1 / expected, rel=0.1)


def test_inverted_8bit_lines_measure_the_lines_not_the_spaces() -> None:
    """End to end: the inverted 8-bit image measures the lines' CD (7.9 nm), not the spaces'
    width (18.5 nm) that the assumed bright tone measured."""
    sample, image = _uint8_lines(0.3, 0)
    m = measure_lines(255 - image, PX, convention="truth")
    assert m.valid and m.tone == "dark" and not any("tone" in w for w in m.warnings)
    assert m.n_lines == sample.truth.n_lines
    assert m.cd_nm == pytest.approx(sample.truth.cd_nm, abs=0.5)

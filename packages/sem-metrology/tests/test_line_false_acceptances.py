"""Images that are no measurable line pattern, or whose lines were misread, refused (or
warned about) by ``sem_metrology._guards.pattern_guard``; valid images near each threshold
still measured. Before these checks each of the refused images gave a valid-looking result."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage
from sem_metrology import make_line_image, measure_lines
from sem_physics import DegradationParams, degrade
from sem_physics.samples import make_sample

PX = 0.827


def _deg(radius_px: float, beta: float = 2.0, sigma: float = 3.0) -> DegradationParams:
    return DegradationParams(
        rx_px=radius_px,
        ry_px=radius_px,
        beta=beta,
        theta_rad=0,
        gain=1,
        offset=0,
        sigma=sigma,
        dose=10,
    )


def _sixteen(seed: int, **kw) -> np.ndarray:
    """16 lines of pitch 30 px (CD 15 px) in a 256 x 512 image."""
    kw.setdefault("degradation", _deg(1.0))
    s = make_line_image(
        n_lines=16, shape=(256, 512), pitch_nm=30 * PX, cd_nm=15 * PX, seed=seed, **kw
    )
    return s.image


# --- 1. bloom ridges read as twice the lines -------------------------------------------------


def _bloom(amplitude: float) -> np.ndarray:
    return _sixteen(1, bloom_amplitude=amplitude, bloom_width_px=1.5)


def test_bloom_rims_read_as_twice_the_lines_are_measured_between_the_rims() -> None:
    # First: valid, 32 "lines" of CD 0.94 nm, 15 px apart (each bright rim read as a line);
    # then refused (pattern_guard); now the 16 lines between the rims are measured
    # (test_bloom_rims.py), the rims named in a warning.
    r = measure_lines(_bloom(300.0), PX, convention="truth")
    assert r.valid and r.n_lines == 16
    assert r.cd_nm == pytest.approx(15 * PX, rel=0.05)
    assert r.pitch_nm == pytest.approx(30 * PX, rel=0.01)
    assert any(w.startswith("the 32 bright lines found") for w in r.warnings)


def test_bloom_read_correctly_and_pitch_walk_are_measured() -> None:
    r = measure_lines(_bloom(200.0), PX, convention="truth")
    assert r.valid and r.n_lines == 16
    assert r.cd_nm == pytest.approx(15 * PX, rel=0.05)
    # Two lines per period (spaces of 24 and 36 px), alike: the spaces alternate by < 0.1 %.
    x, img, a = np.arange(600) + 0.5, np.full((384, 600), 50.0), 20.0
    for k in range(16):
        img += 100.0 * (np.clip(x - a, 0, 1) * np.clip(a + 15 - x, 0, 1))[None, :]
        a += 24 if k % 2 == 0 else 36
    light = DegradationParams(
        rx_px=1, ry_px=1, beta=2, theta_rad=0, gain=1, offset=5, sigma=3, dose=20
    )
    r = measure_lines(degrade(img, light, rng=0), 1.0, convention="truth")
    assert r.valid and r.n_lines == 16


def test_smile_warns_when_it_reads_bloom_rims_as_lines() -> None:
    # Generated lines with strong bloom: SMILE reads 18 lines 20.2 px apart where the profile
    # repeats every 41.3 px (9 lines); kept, as SMILE3 reads them, now with a warning.
    image = make_sample("lines", (256, 384), seed=100)
    r = measure_lines(image, 1.0, convention="smile")
    assert r.valid and r.n_lines == 18
    rims = [w for w in r.warnings if w.startswith("smile: bright edge rims read as lines")]
    assert len(rims) == 1 and "--convention truth" in rims[0]
    t = measure_lines(image, 1.0, convention="truth")
    assert t.valid and t.n_lines == 9
    assert not any("bright edge rims" in w for w in t.warnings)


def test_bloom_alternation_threshold() -> None:
    from sem_metrology._guards import BLOOM_ALTERNATION, _bloom_reason

    lead = 2.0 + 15.0 * np.arange(8)
    trail = lead + 3.0
    x = np.arange(128)

    def profile(alternation: float) -> np.ndarray:
        """Lines at 1, spaces 0, 2, 4, 6 (of 7) raised to ``v``: the median space is at
        ``v``, the contrast ``1 - v``, the alternation ``v / (1 - v)``."""
        p, v = np.zeros(x.size), alternation / (1.0 + alternation)
        for a, b in zip(lead, trail, strict=True):
            p[(x >= a) & (x <= b)] = 1.0
        for i in range(0, 7, 2):
            p[(x > trail[i]) & (x < lead[i + 1])] = v
        return p

    assert _bloom_reason(profile(BLOOM_ALTERNATION - 0.05), lead, trail, 30.0) is None
    assert _bloom_reason(profile(BLOOM_ALTERNATION + 0.05), lead, trail, 30.0) is not None
    assert _bloom_reason(profile(0.9), lead, trail, 15.0) is None  # spaced at the period


# --- 2. a 28-30 px blur of lines read as one wide line (or lines of wrong CD) -----------------


@pytest.mark.parametrize("radius", [28.0, 30.0])
def test_lines_blurred_into_one_wide_line_are_refused(radius: float) -> None:
    # Before: valid, one line of CD 390-391 nm (472-473 of 512 px) from 16 lines of CD 12.4 nm.
    s = make_line_image(
        n_lines=16,
        shape=(256, 512),
        pitch_nm=30 * PX,
        degradation=_deg(radius, beta=1.95, sigma=4.0),
        seed=2,
    )
    r = measure_lines(s.image, PX, convention="truth")
    assert not r.valid
    assert r.reason.startswith("no measurable lines: one line 47")
    assert "finer lines blurred together" in r.reason and "gradient anisotropy 1." in r.reason


def test_gaussian_blurred_lines_read_as_one_line_are_refused() -> None:
    clean = make_line_image(n_lines=16, shape=(256, 512), pitch_nm=30 * PX, seed=2).image
    blurred = ndimage.gaussian_filter(clean, 28.0)
    img = blurred + np.random.default_rng(0).normal(0.0, 3.0, blurred.shape)
    r = measure_lines(img, PX, convention="truth")
    assert not r.valid and "finer lines blurred together" in r.reason


def _noise(shape: tuple[int, ...], seed: int = 0, sigma: float = 2.0) -> np.ndarray:
    """Gaussian noise of ``sigma`` grey levels (0-255 scale)."""
    return np.random.default_rng(seed).normal(0.0, sigma, shape)


def test_single_wide_or_tightly_cropped_lines_are_measured() -> None:
    # One sharp line filling 78 % of a 40-px crop, and one line of CD 83 nm in 256 px, with 2
    # grey levels of noise (noiseless, the 4-px spaces of the crop sit on a knife edge: 1e-9
    # grey levels decide whether the line is found). The crop's tone is given: the noise here
    # is the same in lines and spaces, and the automatic tone (the noisier phase is the lines)
    # compares the noise of 8 columns of space with that of the line, a coin toss that takes
    # the spaces for lines in 8 of 20 noise draws tried.
    s = make_line_image(n_lines=1, shape=(256, 40), pitch_nm=36 * PX, cd_nm=30 * PX, seed=0)
    r = measure_lines(s.image + _noise(s.image.shape), PX, convention="truth", tone="bright")
    assert r.valid and r.n_lines == 1
    assert r.cd_nm == pytest.approx(s.truth.cd_nm, rel=0.03)
    s = make_line_image(n_lines=1, shape=(256, 256), pitch_nm=200 * PX, seed=0)
    r = measure_lines(s.image + _noise(s.image.shape, seed=1), PX, convention="truth")
    assert r.valid and r.cd_nm == pytest.approx(s.truth.cd_nm, abs=0.1)
    # 16 lines blurred by 20 px (Airy): every line found.
    blurred = make_line_image(
        n_lines=16, shape=(256, 512), pitch_nm=30 * PX, degradation=_deg(20.0, 1.95, 4.0), seed=2
    )
    r = measure_lines(blurred.image, PX, convention="truth")
    assert r.valid and r.n_lines == 16


def test_a_refusal_after_a_guessed_tone_names_the_tone_and_the_way_out() -> None:
    # The same crop with noise draw 6: the automatic tone takes the spaces for lines (noise
    # ratio 0.89) and no complete line is left. Before, the reason said only that; now it names
    # the tone it assumed and the option that measures the crop.
    s = make_line_image(n_lines=1, shape=(256, 40), pitch_nm=36 * PX, cd_nm=30 * PX, seed=0)
    image = s.image + _noise(s.image.shape, seed=6)
    r = measure_lines(image, PX, convention="truth")
    assert not r.valid and r.tone == "dark"
    assert "lines taken as the dark phase (auto: dark phase noisier" in r.reason
    assert r.reason.endswith("set tone='bright' (--tone bright)]")
    r = measure_lines(image, PX, convention="truth", tone="bright")
    assert r.valid and r.cd_nm == pytest.approx(s.truth.cd_nm, rel=0.03)
    # The tone given, the same refusal says nothing of tones.
    r = measure_lines(image, PX, convention="truth", tone="dark")
    assert r.reason == "no measurable lines: no complete line found in the mean profile"


_BLUR30 = DegradationParams(
    rx_px=30, ry_px=30, beta=1.95, theta_rad=0, gain=1, offset=0, sigma=4, dose=5
)


def test_lines_wider_than_the_period_are_warned_about() -> None:
    # Before: valid without a word, 6 lines of CD 13-45 px where the profile repeats every 32 px.
    y = degrade(make_sample("lines", (256, 256), seed=12).T.copy(), _BLUR30, rng=12)
    r = measure_lines(y, 1.0, convention="truth")
    assert r.valid
    wide = [w for w in r.warnings if w.startswith("lines wider than the period")]
    assert len(wide) == 1 and "repeats every 32.0 px" in wide[0]


@pytest.mark.parametrize("seed", [9, 13])
def test_blurred_lines_measured_right_get_no_width_warning(seed: int) -> None:
    # Lines blurred by 30 px whose lines were all found: widest line 0.57 of the period.
    y = degrade(make_sample("lines", (256, 256), seed=seed).T.copy(), _BLUR30, rng=seed)
    r = measure_lines(y, 1.0, convention="truth")
    assert r.valid and r.n_lines == 5
    assert not any(w.startswith("lines wider than the period") for w in r.warnings)


# --- 3. a brightness gradient across the field losing lines -----------------------------------


def _gradient(grey_levels: float) -> np.ndarray:
    """16 lines (contrast 100 grey levels) plus a ramp of ``grey_levels`` across 512 px."""
    return _sixteen(3) + np.linspace(0.0, grey_levels, 512)[None, :]


def test_lines_lost_to_a_brightness_gradient_are_refused() -> None:
    # Before: valid, 8 of the 16 lines (the darker half of the field) with no warning.
    r = measure_lines(_gradient(200.0), PX, convention="truth")
    assert not r.valid
    assert r.reason.startswith("lines missed: the mean profile across the region still shows")
    assert "flatten_background=True" in r.reason
    flat = measure_lines(_gradient(200.0), PX, convention="truth", flatten_background=True)
    assert flat.valid and flat.n_lines == 16


def test_a_gradient_losing_one_line_and_lines_ending_inside_the_field_are_measured() -> None:
    r = measure_lines(_gradient(100.0), PX, convention="truth")  # 15 of 16, 0.7 periods missed
    assert r.valid and r.n_lines == 15
    light = DegradationParams(
        rx_px=1, ry_px=1, beta=2, theta_rad=0, gain=1, offset=5, sigma=3, dose=20
    )
    s = make_line_image(
        5, (256, 512), pixel_size_nm=1.0, pitch_nm=30, cd_nm=15, degradation=light, seed=1
    )
    r = measure_lines(s.image, 1.0, convention="truth")
    assert r.valid and r.n_lines == 5


# --- 4. column-correlated noise read as lines -------------------------------------------------


def _streaks(kind: str) -> np.ndarray:
    rng = np.random.default_rng(4)
    if kind == "columns":  # every column its own offset, plus pixel noise
        return 100 + 20 * rng.normal(size=(1, 512)) + 5 * rng.normal(size=(256, 512))
    smooth = ndimage.gaussian_filter(rng.normal(size=(256, 512)), (40, 1.5))
    return 100 + 200 * smooth + 3 * rng.normal(size=(256, 512))  # streaks ~40 px long


@pytest.mark.parametrize(("kind", "n"), [("columns", 33), ("streaks", 25)])
def test_column_noise_is_not_measured_as_lines(kind: str, n: int) -> None:
    # Before: valid, 33 "lines" of CD 5.2 nm / 25 of CD 7.3 nm from noise without lines.
    r = measure_lines(_streaks(kind), PX, convention="truth")
    assert not r.valid
    assert r.reason.startswith(f"no line pattern: the {n} lines found are")
    assert "column-correlated noise" in r.reason


def test_no_pattern_threshold() -> None:
    from sem_metrology._guards import NO_PERIOD_SPACING_CV, _no_pattern_reason

    noise = np.random.default_rng(0).normal(size=512)  # a profile without a period
    rng = np.random.default_rng(1)

    def centres(cv: float) -> np.ndarray:
        steps = 20.0 * (1.0 + cv * rng.choice([-1.0, 1.0], size=19))
        return 10.0 + np.r_[0.0, np.cumsum(steps)]

    assert _no_pattern_reason(noise, centres(NO_PERIOD_SPACING_CV - 0.05)) is None
    assert _no_pattern_reason(noise, centres(NO_PERIOD_SPACING_CV + 0.05)) is not None
    assert _no_pattern_reason(noise, centres(0.9)[:7]) is None  # too few lines to tell

"""Truth tests: synthetic line/space images whose edges are known exactly.

Truth = statistics of the rendered edges (area-equivalent edge per row), not nominal values.
"""

from __future__ import annotations

import numpy as np
import pytest
from sem_metrology import LineOptions, make_line_image, measure_lines, render_lines
from sem_physics import DegradationParams

SHAPE = (384, 512)
TRUTH = LineOptions(convention="truth")
ROUGH = {"sigma_nm": 1.0, "correlation_length_nm": 10.0, "roughness_exponent": 0.8}


def _deg(rx: float, sigma: float, dose: float) -> DegradationParams:
    return DegradationParams(
        rx_px=rx, ry_px=rx, beta=2.0, theta_rad=0.0, gain=1.0, offset=10.0, sigma=sigma, dose=dose
    )


# Noise like the real EUV image (pixel noise / line contrast about 0.1) and a blurred edge.
REALISTIC = _deg(3.5, 10.0, 10.0)


def test_rendering_is_exact_area_coverage() -> None:
    rng = np.random.default_rng(0)
    lead = 10 + rng.uniform(0, 3, size=(3, 16)) + np.array([[0], [20], [40]])
    trail = lead + rng.uniform(4, 8, size=(3, 16))
    cov = render_lines(lead, trail, 64, supersample=4)
    assert cov.shape == (4, 64) and cov.min() >= 0 and cov.max() <= 1 + 1e-12
    # Row sums = mean covered length of the row's sub-rows (exact).
    expected = (trail - lead).sum(axis=0).reshape(4, 4).mean(axis=1)
    assert np.allclose(cov.sum(axis=1), expected)
    # Each pixel holds the overlap of its interval [j - 1/2, j + 1/2] with the lines (brute force).
    edges_x = np.arange(65) - 0.5
    brute = np.zeros((4, 64))
    for line in range(3):
        for sub in range(16):
            lo = np.maximum(edges_x[:-1], lead[line, sub])
            hi = np.minimum(edges_x[1:], trail[line, sub])
            brute[sub // 4] += np.clip(hi - lo, 0, None) / 4
    assert np.allclose(cov, brute, atol=1e-12)


@pytest.mark.parametrize("seed", [0, 1])
def test_noise_free_lwr_ler_within_2_percent(seed: int) -> None:
    s = make_line_image(
        n_lines=16, shape=SHAPE, degradation=_deg(1.0, 0.0, 1e9), seed=seed, **ROUGH
    )
    m = measure_lines(s.image, s.pixel_size_nm, TRUTH)
    t = s.truth
    assert m.valid and m.n_lines == t.n_lines and m.n_rows == SHAPE[0]
    assert abs(m.cd_nm - t.cd_nm) < 0.1
    assert m.cd_std_nm == pytest.approx(t.cd_std_nm, abs=0.05)
    for name in ("lwr_nm", "ler_nm", "ler_leading_nm", "ler_trailing_nm"):
        assert getattr(m, name) == pytest.approx(getattr(t, name), rel=0.02), name
    for name in ("lwr", "ler"):
        assert getattr(m, f"{name}_unbiased_nm") == pytest.approx(
            getattr(t, f"{name}_nm"), rel=0.02
        )


@pytest.mark.parametrize("seed", [0, 1])
def test_realistic_noise_cd_bias_and_unbiased_roughness(seed: int) -> None:
    noisy = make_line_image(n_lines=16, shape=SHAPE, degradation=REALISTIC, seed=seed, **ROUGH)
    m = measure_lines(noisy.image, noisy.pixel_size_nm, TRUTH)
    t = noisy.truth
    assert m.valid and m.n_lines == t.n_lines
    assert abs(m.cd_nm - t.cd_nm) < 0.1
    assert m.lwr_unbiased_nm == pytest.approx(t.lwr_nm, rel=0.05)
    assert m.ler_unbiased_nm == pytest.approx(t.ler_nm, rel=0.05)
    # The standard errors cover the truth: |error| within 3 SE (or the 5 % above).
    assert abs(m.cd_nm - t.cd_nm) < max(3 * m.cd_se_nm, 0.1)
    assert m.lwr_nm > m.lwr_unbiased_nm and m.ler_nm > m.ler_unbiased_nm
    assert m.noise_floor_nm3 > 0


def test_biased_excess_is_the_noise_measured_independently() -> None:
    """biased² − noise-free² ≈ 9 var(edge noise), with the edge noise taken from two images of
    the same edges with independent noise: var(x_A − x_B) = 2 var(noise)."""
    kw = {"n_lines": 16, "shape": SHAPE, "degradation": REALISTIC, **ROUGH}
    a = make_line_image(seed=np.random.default_rng(7), **kw)
    b = make_line_image(seed=np.random.default_rng(7), **kw)  # same edges ...
    clean = make_line_image(
        seed=np.random.default_rng(7),
        **{**kw, "degradation": REALISTIC.model_copy(update={"sigma": 0.0, "dose": 1e9})},
    )
    assert np.array_equal(a.leading_px, b.leading_px)
    # ... but the noise is drawn after the edges from the same generator, so re-noise b:
    from sem_physics import degrade

    b_img = degrade(b.clean, REALISTIC, rng=123)
    ma = measure_lines(a.image, a.pixel_size_nm, TRUTH)
    mb = measure_lines(b_img, b.pixel_size_nm, TRUTH)
    m0 = measure_lines(clean.image, clean.pixel_size_nm, TRUTH)
    px = a.pixel_size_nm
    diff = (
        np.vstack(
            [
                np.asarray(ma.leading_edges_px) - np.asarray(mb.leading_edges_px),
                np.asarray(ma.trailing_edges_px) - np.asarray(mb.trailing_edges_px),
            ]
        )
        * px
    )
    var_noise = 0.5 * np.mean((diff - diff.mean(axis=1, keepdims=True)) ** 2)
    excess = (ma.ler_nm**2 - m0.ler_nm**2) / 9.0
    assert excess == pytest.approx(var_noise, rel=0.25)
    # and the unbiased value removes exactly that excess: it matches the noise-free value.
    assert ma.ler_unbiased_nm == pytest.approx(m0.ler_nm, rel=0.03)


def test_horizontal_and_tilted_lines_measure_like_vertical() -> None:
    kw = {"n_lines": 12, "shape": (256, 400), "degradation": _deg(2.0, 4.0, 30.0), **ROUGH}
    v = make_line_image(seed=3, **kw)
    h = make_line_image(seed=3, orientation="horizontal", **kw)
    mv = measure_lines(v.image, v.pixel_size_nm, TRUTH)
    mh = measure_lines(h.image, h.pixel_size_nm, TRUTH)
    assert mh.orientation == "horizontal" and mv.orientation == "vertical"
    assert mh.cd_nm == pytest.approx(mv.cd_nm, abs=1e-9)
    assert mh.ler_nm == pytest.approx(mv.ler_nm, abs=1e-9)
    tilted = make_line_image(seed=4, tilt_deg=3.0, **kw)
    mt = measure_lines(tilted.image, tilted.pixel_size_nm, TRUTH)
    assert mt.tilt_deg == pytest.approx(3.0, abs=0.03)
    assert abs(mt.cd_nm - tilted.truth.cd_nm) < 0.3
    assert mt.ler_unbiased_nm == pytest.approx(tilted.truth.ler_nm, rel=0.1)


@pytest.mark.parametrize("tilt", [10.0, -7.0])
def test_strongly_tilted_lines_measure_their_width_and_pitch_across_the_lines(tilt) -> None:
    """CD and pitch are perpendicular to the lines: a row cuts a tilted line 1/cos(tilt) wider
    (1.5 % at 10 degrees, 0.4 nm here), which the measurement must take out."""
    kw = {"n_lines": 6, "shape": (256, 400), "degradation": _deg(2.0, 4.0, 30.0), **ROUGH}
    s = make_line_image(seed=7, tilt_deg=tilt, **kw)
    m = measure_lines(s.image, s.pixel_size_nm, TRUTH)
    assert m.tilt_deg == pytest.approx(tilt, abs=0.3)  # rough edges: ~0.1-0.2 deg
    assert abs(m.cd_nm - s.truth.cd_nm) < 0.1
    assert m.pitch_nm == pytest.approx(s.truth.pitch_nm, rel=6e-3)  # 1.5 % if along a row


@pytest.mark.parametrize("seed", [5, 6])
def test_edge_bloom_cd_within_0p3_nm_with_bloom_aware_edges(seed: int) -> None:
    kw = {"n_lines": 12, "shape": (256, 400), "degradation": _deg(2.0, 4.0, 30.0), **ROUGH}
    plain = make_line_image(seed=seed, **kw)
    bloom = make_line_image(seed=seed, bloom_amplitude=40.0, bloom_width_px=1.5, **kw)
    assert np.array_equal(plain.leading_px, bloom.leading_px)
    mp = measure_lines(plain.image, plain.pixel_size_nm, TRUTH)
    mb = measure_lines(bloom.image, bloom.pixel_size_nm, TRUTH)
    raw = measure_lines(bloom.image, bloom.pixel_size_nm, TRUTH, correct_bloom=False)
    assert mb.valid and mb.n_lines == bloom.truth.n_lines
    assert mp.edge_offset_nm == 0.0  # no ridge, no correction
    # A bright ridge on each edge lifts the profile's shoulders: the raw 0.5 crossing moves
    # out by about 1 nm; the bloom-aware placement brings CD back within 0.3 nm.
    assert raw.cd_nm - bloom.truth.cd_nm > 0.6
    assert mb.edge_offset_nm > 0.2 and abs(mb.cd_nm - bloom.truth.cd_nm) < 0.3
    assert mb.ler_unbiased_nm == pytest.approx(bloom.truth.ler_nm, rel=0.05)


def test_a_bright_border_band_does_not_hide_band_limited_lines() -> None:
    # A restoration past the OTF cut-off keeps only the fundamental: a sinusoid, whose
    # half-level crossings are half a pitch apart. Restorations can also carry a bright band on
    # their border (here 12 columns rising by 3.6 times the amplitude). The coarse cut used to
    # follow the profile's 99th percentile into that band, landed near the line tops and lost
    # every edge in the narrowed windows; it is now the plateaus' half-level.
    pitch_px, px_nm = 38.2, 0.827
    x = np.arange(400)
    rng = np.random.default_rng(0)
    wave = (
        110 + 11 * np.cos(2 * np.pi * (x - 7) / pitch_px)[None, :] + rng.normal(0, 0.9, (240, 400))
    )
    band = wave.copy()
    band[:, -12:] += np.linspace(0.0, 40.0, 12)
    opts = LineOptions(convention="truth", tone="bright")
    plain = measure_lines(wave.astype(np.float32), px_nm, opts)
    m = measure_lines(band.astype(np.float32), px_nm, opts)
    assert abs(plain.cd_nm - 0.5 * pitch_px * px_nm) < 0.3
    assert m.valid, m.reason
    assert abs(m.cd_nm - plain.cd_nm) < 0.6  # the band's pixels still weigh on the line level


@pytest.mark.parametrize(("seed", "inset_px"), [(5, 1.0), (6, 1.5), (7, 0.5)])
def test_bloom_inside_the_line_cd_within_0p35_nm(seed: int, inset_px: float) -> None:
    # The ridge lies inside the line (the sidewall shines), as in sem_physics' sample lines:
    # the fit places it on its own centre, the edge on the step's centre.
    kw = {"n_lines": 12, "shape": (256, 400), "degradation": _deg(2.0, 4.0, 30.0), **ROUGH}
    bloom = make_line_image(
        seed=seed, bloom_amplitude=70.0, bloom_width_px=1.5, bloom_inset_px=inset_px, **kw
    )
    mb = measure_lines(bloom.image, bloom.pixel_size_nm, TRUTH)
    raw = measure_lines(bloom.image, bloom.pixel_size_nm, TRUTH, correct_bloom=False)
    assert mb.valid and mb.n_lines == bloom.truth.n_lines
    assert raw.cd_nm - bloom.truth.cd_nm > 0.5
    assert mb.edge_offset_nm > 0.3 and abs(mb.cd_nm - bloom.truth.cd_nm) < 0.35


@pytest.mark.parametrize("convention", ["truth", "smile"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_white_noise_has_no_lines(convention: str, seed: int) -> None:
    """Noise alone is refused, not measured as a dozen 7-nm lines: its mean profile across the
    would-be lines varies by about 2.5 x the standard error of a column mean."""
    noise = np.random.default_rng(seed).normal(100.0, 20.0, (256, 256))
    m = measure_lines(noise, 1.0, convention=convention)
    assert not m.valid and m.cd_nm is None
    assert "no measurable lines" in (m.reason or "")
    if convention == "smile":
        return  # SMILE's zero-padded median levels cannot measure faint lines (its own limit)
    # the same noise over a faint line pattern (contrast 30 grey levels, 1.5 x the noise) is found
    s = make_line_image(n_lines=8, shape=(256, 256), line_level=115.0, space_level=85.0, seed=seed)
    weak = measure_lines(s.image + noise - 100.0, 1.0, convention=convention)
    assert weak.valid and weak.n_lines == 8


#: Tilt at which the lines of pitch 32 px drift by one pitch over 512 rows: a straight column
#: mean across them is flat.
ONE_PITCH_DEG = float(np.degrees(np.arctan(32.0 / 512.0)))


def _lines_filling_the_width(tilt_deg: float, seed: int = 3):
    """Lines of pitch 32 px (1 nm/px), 512 rows, tilted by ``tilt_deg``, filling every column
    (the rendered margins cut off), with shot noise (the bright phase noisier)."""
    s = make_line_image(
        n_lines=16,
        shape=(512, 580),
        pixel_size_nm=1.0,
        pitch_nm=32.0,
        cd_nm=14.0,
        tilt_deg=tilt_deg,
        sigma_nm=0.8,
        degradation=_deg(1.0, 1.0, 2.0),
        seed=seed,
    )
    return s.image[:, 50:530], s.truth


@pytest.mark.parametrize("tilt", [ONE_PITCH_DEG, -ONE_PITCH_DEG, 3.3])
def test_lines_drifting_about_a_pitch_over_the_rows_are_measured(tilt: float) -> None:
    """The contrast is judged on the profile along the tilted lines, not on the column mean
    (which washes out when the lines drift by about a pitch over the rows)."""
    image, truth = _lines_filling_the_width(tilt)
    m = measure_lines(image, 1.0, TRUTH)
    assert m.valid, m.reason
    assert m.n_lines >= 13 and m.tilt_deg == pytest.approx(tilt, abs=0.05)
    assert abs(m.cd_nm - truth.cd_nm) < 0.3


@pytest.mark.parametrize("tilt", [3.0, -3.0, ONE_PITCH_DEG])
def test_tilted_dark_lines_measure_as_the_bright_ones(tilt: float) -> None:
    """Inverted, the tilted lines are told dark from the noise of the phases along them (at
    ±3° the column mean reaches neither phase; taken as bright, the CD was the spaces' width,
    18 nm)."""
    image, truth = _lines_filling_the_width(tilt)
    bright = measure_lines(image, 1.0, TRUTH)
    dark = measure_lines(255.0 - image, 1.0, TRUTH)
    assert bright.tone == "bright" and "as recorded" in bright.tone_source
    assert dark.valid and dark.tone == "dark" and "inverted" in dark.tone_source
    assert abs(dark.cd_nm - bright.cd_nm) < 0.05 and abs(dark.cd_nm - truth.cd_nm) < 0.3


def test_tone_undecided_when_the_profile_reaches_no_phase_says_so() -> None:
    """Across lines drifting by a pitch, the straight column mean reaches neither phase: the
    tone is undecided and the source says that (not 'no noise'); along the lines it is found."""
    from sem_metrology.preprocess import detect_tone, normalize_intensity

    image, _ = _lines_filling_the_width(ONE_PITCH_DEG)
    norm = normalize_intensity(255.0 - image)[0]
    tone, source = detect_tone(255.0 - image, norm)
    assert tone == "bright" and source.startswith("auto: undecided")
    assert "reaches no bright and no dark phase" in source and "noise in" not in source
    slope = float(np.tan(np.radians(ONE_PITCH_DEG)))
    tone, source = detect_tone(255.0 - image, norm, slope_px_per_row=slope)
    assert tone == "dark" and "inverted" in source


def test_tone_of_noise_free_lines_says_which_phase_has_no_noise() -> None:
    """A phase without row-to-row noise leaves the tone undecided; the source names it (both
    phases of a noise-free rendering: 'either phase', as ``sem-measure`` prints it)."""
    from sem_metrology.preprocess import detect_tone, normalize_intensity

    sample = make_line_image(n_lines=12, shape=(256, 320), seed=0)
    clean = sample.image.astype(np.float64)
    norm = normalize_intensity(clean)[0]
    assert detect_tone(clean, norm) == (
        "bright",
        "auto: ambiguous (no noise in either phase), bright lines assumed",
    )
    noise = np.random.default_rng(0).normal(0, 3.0, clean.shape)
    bright_only = clean + noise * (norm > 0.5)
    tone, source = detect_tone(bright_only, norm)
    assert (tone, source) == (
        "bright",
        "auto: ambiguous (no noise in the dark phase), bright lines assumed",
    )

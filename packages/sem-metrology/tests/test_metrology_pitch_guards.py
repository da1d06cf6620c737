"""Consistency of the lines found with the period of the image (both conventions), SMILE's
pairing warnings and wide-line message, and saturation of float images."""

from __future__ import annotations

import numpy as np
import pytest
from sem_metrology import make_line_image, measure_lines

PX = 0.827
#: The smallest pitch (px) each convention resolves (README, ``sem_metrology._guards.MIN_PITCH_PX``).
MIN_PITCH_PX = {"truth": 9, "smile": 14}


def _lines(pitch_px: float, seed: int = 0, width: int = 256, **kw) -> np.ndarray:
    """Lines of ``pitch_px`` filling a 256-row image, edge roughness scaled to the pitch."""
    n = int(200 // pitch_px) if width == 256 else int((width - 16) // pitch_px)
    kw.setdefault("sigma_nm", 0.05 * pitch_px)
    s = make_line_image(
        n_lines=n,
        shape=(256, width),
        pitch_nm=pitch_px * PX,
        correlation_length_nm=15,
        seed=seed,
        **kw,
    )
    return s.image


def test_dominant_period_of_lines_and_none_without_a_period() -> None:
    from sem_metrology._line_metrics import dominant_period_px

    for pitch in (4.0, 12.0, 30.0):
        period = dominant_period_px(_lines(pitch).mean(axis=0))
        assert period == pytest.approx(pitch, rel=0.02)
    one = make_line_image(n_lines=1, shape=(256, 256), seed=0).image.mean(axis=0)
    two = make_line_image(n_lines=2, shape=(256, 256), seed=0).image.mean(axis=0)
    noise = np.random.default_rng(0).normal(0.0, 1.0, 256)
    assert dominant_period_px(one) is None
    assert dominant_period_px(two) is None
    assert dominant_period_px(noise) is None


@pytest.mark.parametrize("pitch", [4, 6])
def test_truth_refuses_lines_closer_than_it_resolves(pitch: int) -> None:
    # Before: valid, 1 line of CD 158 nm (4 px) or 10 lines 3x the pitch apart (6 px).
    r = measure_lines(_lines(pitch), PX, convention="truth")
    assert not r.valid
    assert "lines too closely spaced" in r.reason
    assert f"repeats every {pitch}.0 px" in r.reason
    assert f"{MIN_PITCH_PX['truth']:g} px the truth convention resolves" in r.reason


@pytest.mark.parametrize("pitch", [8, 10, 12])
def test_smile_refuses_lines_closer_than_it_resolves(pitch: int) -> None:
    # Before: valid with a third to half of the lines and CDs 2-3x too large.
    r = measure_lines(_lines(pitch), PX, convention="smile")
    assert not r.valid
    assert "lines too closely spaced" in r.reason
    assert f"{MIN_PITCH_PX['smile']:g} px the smile convention resolves" in r.reason
    if pitch >= MIN_PITCH_PX["truth"]:
        assert "--convention truth" in r.reason


@pytest.mark.parametrize(("convention", "pitch"), [("truth", 9), ("truth", 16), ("smile", 14)])
def test_lines_at_the_limits_are_measured(convention: str, pitch: int) -> None:
    n = int(200 // pitch)
    r = measure_lines(_lines(pitch), PX, convention=convention)
    assert r.valid, r.reason
    assert r.n_lines == n
    assert r.pitch_nm == pytest.approx(pitch * PX, rel=0.02)


@pytest.mark.parametrize("n_lines", [1, 2])
def test_one_or_two_lines_are_not_refused(n_lines: int) -> None:
    s = make_line_image(n_lines=n_lines, shape=(256, 256), seed=0)
    r = measure_lines(s.image, PX, convention="truth")
    assert r.valid and r.n_lines == n_lines
    assert r.cd_nm == pytest.approx(s.truth.cd_nm, abs=0.05)


def _split_fifty() -> np.ndarray:
    """8 lines of pitch 50 px in a 512-px field, 2 grey levels of noise: SMILE pairs 25 lines;
    13 in flat stretches of the profile are dropped, 12 are left, some sharing trailing edges."""
    from sem_physics import DegradationParams

    noise = DegradationParams(**{**_LIGHT, "offset": 10}, sigma=2, dose=50)
    s = make_line_image(8, (256, 512), pitch_nm=50 * PX, degradation=noise, seed=3)
    return s.image


def test_smile_warns_about_more_lines_than_the_period_allows() -> None:
    # 12 lines 35 px apart on lines of pitch 50 px (noise split the edges): kept, as SMILE3
    # keeps them, with a warning naming the period. (The 3 lines of pitch 60 px tested here
    # before, read as 14 by SMILE3, now measure as 3: test_smile_flat_margins.py.)
    img = _split_fifty()
    r = measure_lines(img, PX, convention="smile")
    assert r.valid and r.n_lines == 12 and r.n_lines_dropped == 13
    more = [w for w in r.warnings if w.startswith("smile: more lines than the image's period")]
    assert len(more) == 1 and "repeats every 50.1 px" in more[0]
    assert "--convention truth" in more[0]
    assert measure_lines(img, PX, convention="truth").n_lines == 8


def test_smile_warns_when_it_finds_one_line_of_five() -> None:
    """One line found where the mean profile holds five periods (SMILE's edge window missing
    four): measured, with a warning that says how many periods the profile holds and names the
    truth convention. Tested on the guard: noiseless 48-px lines, where SMILE missed four on
    one machine, sit on a knife edge (1e-12 grey levels of noise change how many lines it
    finds, 4 to 10) and read otherwise on another CPU."""
    from sem_metrology._guards import pitch_guard

    s = make_line_image(n_lines=5, shape=(256, 256), pitch_nm=48 * PX, seed=1)
    profile = s.image.mean(axis=0)
    reason, warning = pitch_guard(profile, s.leading_px[:1], s.trailing_px[:1], "smile")
    assert reason is None and warning is not None
    assert warning.startswith("1 line(s) found where the mean profile")
    assert "repeats every 48.0 px" in warning and "--convention truth" in warning
    reason, warning = pitch_guard(profile, s.leading_px, s.trailing_px, "smile")
    assert reason is None and warning is None  # all five: nothing to say


_LIGHT = {"rx_px": 1, "ry_px": 1, "beta": 2, "theta_rad": 0, "gain": 1, "offset": 5}


def _bars(edges: list[tuple[float, float]], shape=(384, 600), seed: int = 0) -> np.ndarray:
    """Straight lines ``[a, b)`` (px) at 150 on a background of 50, lightly blurred and noisy."""
    from sem_physics import DegradationParams, degrade

    x = np.arange(shape[1]) + 0.5
    img = np.full(shape, 50.0)
    for a, b in edges:
        img += 100.0 * (np.clip(x - a, 0, 1) * np.clip(b - x, 0, 1))[None, :]
    p = DegradationParams(**_LIGHT, sigma=3, dose=20)
    return degrade(img, p, rng=seed)


@pytest.mark.parametrize(("n", "width"), [(5, 512), (10, 1024)])
def test_lines_that_end_inside_the_field_are_measured(n: int, width: int) -> None:
    """Five or ten lines of pitch 30 px in a wider field (the end of an array): measured; the
    profile's period over the whole field must not make them too few."""
    from sem_physics import DegradationParams

    light = DegradationParams(**_LIGHT, sigma=3, dose=20)
    s = make_line_image(
        n, (256, width), pixel_size_nm=1.0, pitch_nm=30, cd_nm=15, degradation=light, seed=1
    )
    r = measure_lines(s.image, 1.0, convention="truth")
    assert r.valid, r.reason
    assert r.n_lines == n and r.cd_nm == pytest.approx(15.0, abs=0.3)


@pytest.mark.parametrize("n", [16, 17])
def test_double_patterning_with_pitch_walk_is_measured(n: int) -> None:
    """Spaces alternating 24 and 36 px (the profile repeats every 60 px, two lines per period):
    every line measured, whether the spacings' median is the short or the mean one."""
    edges, x = [], 20.0
    for k in range(n):
        edges.append((x, x + 15))
        x += 24 if k % 2 == 0 else 36
    r = measure_lines(_bars(edges), 1.0, convention="truth")
    assert r.valid, r.reason
    assert r.n_lines == n


def _noisy_twenty(seed: int) -> np.ndarray:
    s = make_line_image(n_lines=20, shape=(512, 640), seed=seed)
    return s.image + np.random.default_rng(100 + seed).normal(0.0, 5.0, s.image.shape)


def test_smile_warns_when_a_trailing_edge_is_shared() -> None:
    # SMILE3 pairs each leading edge with the first trailing edge after it (reproduced as is,
    # but for lines the profile does not show: the 2 extra lines SMILE3 reads on
    # _noisy_twenty(0) start in its 24-px margin, test_smile_flat_margins.py).
    r = measure_lines(_split_fifty(), PX, convention="smile")
    assert r.valid and r.n_lines > 8
    shared = [w for w in r.warnings if "paired with more than one leading edge" in w]
    assert len(shared) == 1 and "as in SMILE3" in shared[0]


def test_smile_warns_about_a_line_at_the_border() -> None:
    # SMILE3 reads 21 lines: its zero-padded median's step at the right border (columns 629-636
    # of 640, where the profile is flat) makes the 21st. That one is dropped as no line; a line
    # cut by the left border (the image without its first 28 columns) is kept, with a warning.
    r = measure_lines(_noisy_twenty(1), PX, convention="smile")
    assert r.valid and (r.n_lines, r.n_lines_dropped) == (20, 1)
    assert any("line(s) dropped" in w and "629-636" in w for w in r.warnings)
    r = measure_lines(_noisy_twenty(1)[:, 28:], PX, convention="smile")
    assert r.valid and (r.n_lines, r.n_lines_dropped) == (20, 1)
    assert any("of the region's border" in w for w in r.warnings)


def _noise(shape: tuple[int, int], seed: int = 0, sigma: float = 2.0) -> np.ndarray:
    """Gaussian noise of ``sigma`` grey levels (0-255 scale)."""
    return np.random.default_rng(seed).normal(0.0, sigma, shape)


def test_clean_lines_get_no_pairing_warning() -> None:
    """Twenty well-resolved lines (pitch 30 px, 2 grey levels of noise) pair one to one.

    The outer edges lie half a space (8 px) from the border, as in a crop through the spaces:
    a wider flat margin rings in SMILE's Butterworth-filtered profile, and whether those ringing
    peaks count as leading edges (an extra line sharing a trailing edge) depends on the sign of
    the noise there (noiseless: a derivative of exactly 0, a knife edge)."""
    s = make_line_image(n_lines=20, shape=(512, 602), pitch_nm=30 * PX, seed=0)
    r = measure_lines(s.image + _noise(s.image.shape), PX, convention="smile")
    assert r.valid and r.n_lines == 20
    assert not any(w.startswith("smile: ") and "edge" in w for w in r.warnings)


@pytest.mark.parametrize(
    ("n_lines", "pitch_px", "width_px"), [(1, 200, 256), (2, 120, 256), (4, 100, 512), (8, 50, 512)]
)
def test_smile_names_its_edge_window_for_wide_lines(
    n_lines: int, pitch_px: int, width_px: int
) -> None:
    """Noisy wide lines (3 grey levels of noise) lose most crossings in SMILE's edge window:
    the reason names that cause, the lines' pitch and the truth convention, which measures
    them. (Noiseless, such lines sit on a knife edge: 1e-4 grey levels of noise decide whether
    they are measured, and CPUs differ in the last bits.)"""
    s = make_line_image(n_lines=n_lines, shape=(256, width_px), pitch_nm=pitch_px * PX, seed=0)
    noise = np.random.default_rng(0).normal(0.0, 3.0, s.image.shape).astype(np.float32)
    r = measure_lines(s.image + noise, PX, convention="smile")
    assert not r.valid
    assert "likely cause: SMILE's fixed edge window" in r.reason, r.reason
    assert "info bar" not in r.reason and "--convention truth" in r.reason
    shown = float(r.reason.split("; about ")[1].split(" px here")[0])
    assert abs(shown - pitch_px) <= 0.05 * pitch_px, (shown, pitch_px)
    t = measure_lines(s.image + noise, PX, convention="truth")
    assert t.valid and abs(t.cd_nm - s.truth.cd_nm) < 1.0


def test_smile_keeps_the_info_bar_advice_for_lines_of_ordinary_pitch() -> None:
    """Lines of a 32-px pitch whose edges are missing in 30 % of the rows for another reason
    (flat rows, as in the validity tests) keep the advice to leave those rows out."""
    s = make_line_image(n_lines=10, shape=(256, 320), sigma_nm=1.0, seed=11)
    img = s.image.copy()
    img[100:176] = 50.0
    r = measure_lines(img, s.pixel_size_nm, convention="smile", tone="bright")
    assert not r.valid and "threshold crossing" in r.reason, r.reason
    assert "edge window" not in r.reason and "--roi" in r.reason


def _clipped(dtype: type) -> np.ndarray:
    s = make_line_image(n_lines=10, shape=(256, 256), seed=0, line_level=400, space_level=50)
    img = np.clip(s.image, 0, 255)
    return np.rint(img).astype(dtype) if dtype is np.uint8 else img.astype(dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.uint8])
def test_saturation_warned_for_float_as_for_integer_images(dtype: type) -> None:
    r = measure_lines(_clipped(dtype), PX, convention="truth")
    assert "45.4 % of pixels at one end of the 0..255 range" in r.warnings


def test_saturation_warned_at_a_float_image_own_maximum() -> None:
    s = make_line_image(n_lines=10, shape=(256, 256), seed=0, line_level=400, space_level=50)
    noisy = s.image + np.random.default_rng(0).normal(0.0, 5.0, s.image.shape)
    r = measure_lines(np.clip(noisy, 0, 300), PX, convention="truth")
    assert any("of pixels at the image's maximum 300 (clipped?)" in w for w in r.warnings)


def test_noise_free_float_plateaus_are_not_saturation() -> None:
    s = make_line_image(n_lines=10, shape=(256, 256), seed=0)
    r = measure_lines(s.image, PX, convention="truth")
    assert not any("of pixels at" in w for w in r.warnings)


def test_smile_refuses_a_strip_narrower_than_its_smallest_region() -> None:
    """A 32-px strip across the lines (one pitch wide) read one line of CD 3.5 nm in smile;
    the refusal names the size and the truth convention, which still measures the full frame."""
    from sem_metrology import LineOptions

    full = _lines(30.0, width=256)
    strip = full[:, 100:132]
    m = measure_lines(strip, PX, LineOptions(convention="smile"))
    assert not m.valid
    assert "region too small: 256x32 px" in m.reason and "--convention truth" in m.reason
    assert measure_lines(full, PX, LineOptions(convention="smile")).valid


def test_lines_too_few_for_a_secondary_period_are_judged_against_the_profiles_own() -> None:
    """A profile repeating every 38 px with a weaker component at 26.7 px, and 9 lines found
    26.7 px apart (a restorer's near-flat output): the refusal names the profile's 38-px
    period, not the spacing of the lines found as if it were the image's."""
    from sem_metrology._guards import pitch_guard

    x = np.arange(640.0)
    profile = np.cos(2 * np.pi * x / 38.0) + 0.6 * np.cos(2 * np.pi * x / 26.7)
    centres = 100.0 + 26.7 * np.arange(9)
    lead = np.repeat((centres - 6.0)[:, None], 50, axis=1)
    trail = np.repeat((centres + 6.0)[:, None], 50, axis=1)
    reason, warning = pitch_guard(profile, lead, trail, "truth")
    assert warning is None and reason is not None
    assert reason.startswith("line pitch inconsistent with the image"), reason
    assert "repeats every 38.0 px" in reason and "26.7 px apart" in reason

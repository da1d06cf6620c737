"""Edge bloom on lines found right (``truth``): the ±6 px bloom fit
(``sem_metrology._truth.bloom_offset_px``) checked by ``window_doubt`` and, where it cannot be
trusted, replaced by the whole-edge fit (``bloom_fit``); edges the fit cannot place are warned
about with a CD bound. Before, each image below was measured valid, without a warning, with a
CD 2.4-5.6 nm wide."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import brentq
from scipy.special import ndtr
from sem_metrology import make_line_image, measure_lines
from sem_metrology._truth import bloom_fit, bloom_offset_px, window_doubt

PX = 0.827


def _lines(line: float, space: float, rim: float, width: float, noise: float, seed: int, **kw):
    s = make_line_image(
        line_level=line,
        space_level=space,
        bloom_amplitude=rim,
        bloom_width_px=width,
        seed=seed,
        **kw,
    )
    return s, s.image + np.random.default_rng(seed + 10).normal(0.0, noise, s.image.shape)


CASES = {
    # the ridge fills the ±6 px window: no plateau above which to see it, offset 0 (+5.5 nm)
    "rims 2 x the contrast, 2.5 px": dict(
        line=70.0, space=60.0, rim=20.0, width=2.5, noise=1.0, n_lines=14, shape=(256, 512)
    ),
    "rims of 200 on 100, 2.5 px": dict(
        line=150.0, space=50.0, rim=200.0, width=2.5, noise=10.0, n_lines=14, shape=(256, 512)
    ),
    # started at the crossing, the fit stops at the ridge's outer foot (+2.4 nm)
    "narrow rims, pitch 60 px": dict(
        line=160.0,
        space=60.0,
        rim=200.0,
        width=1.0,
        noise=5.0,
        n_lines=7,
        shape=(192, 512),
        pitch_nm=60 * PX,
    ),
    # the ridge put 3 px inside the line, at the bound of the fit (+3.8 nm)
    "wide rims, pitch 24 px": dict(
        line=160.0,
        space=60.0,
        rim=200.0,
        width=2.5,
        noise=5.0,
        n_lines=19,
        shape=(192, 512),
        pitch_nm=24 * PX,
    ),
}


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("case", list(CASES))
def test_strong_bloom_on_lines_found_right_gives_their_cd(case: str, seed: int) -> None:
    s, image = _lines(seed=seed, **CASES[case])
    m = measure_lines(image, PX, convention="truth")
    raw = measure_lines(image, PX, convention="truth", correct_bloom=False)
    assert m.valid and m.n_lines == s.truth.n_lines
    assert raw.cd_nm - s.truth.cd_nm > 2.5  # the half-level crossing lies in the space
    assert abs(m.cd_nm - s.truth.cd_nm) < 0.3  # measured -0.2..+0.02 nm
    assert m.edge_offset_nm > 1.0
    assert not any(w.startswith("edge bloom") for w in m.warnings)
    assert m.pitch_nm == pytest.approx(s.truth.pitch_nm, rel=0.01)


@pytest.mark.parametrize("rim", [200.0, 300.0])
def test_a_narrow_ridge_inside_the_line_is_not_taken_for_one_outside(rim: float) -> None:
    # Rims 2-3 x the contrast, 1 px wide, 1 px inside 12-px lines: the step at the ridge's inner
    # foot with the ridge outside the line fits about as well; a ridge allowed 1 px outside the
    # step gave CD 3.0 nm narrow.
    kw = dict(n_lines=19, shape=(192, 480), pitch_nm=24 * PX, bloom_inset_px=1.0)
    s, image = _lines(150.0, 50.0, rim, 1.0, 5.0, 0, **kw)
    m = measure_lines(image, PX, convention="truth")
    assert m.valid and m.n_lines == s.truth.n_lines
    assert abs(m.cd_nm - s.truth.cd_nm) < 0.3  # measured +0.1 nm


def test_an_edge_the_fit_cannot_place_is_warned_about_with_a_cd_bound() -> None:
    # Rims twice the contrast, 1 px wide, on 12-px lines with noise 0.2 x the contrast: the
    # step under the ridge and the step at the ridge's outer foot fit about equally well.
    # Before: CD 2.5 nm wide, valid, no warning.
    s, _ = _lines(160.0, 60.0, 200.0, 1.0, 0.0, 0, n_lines=19, shape=(192, 512), pitch_nm=24 * PX)
    image = s.image + np.random.default_rng(99).normal(0.0, 20.0, s.image.shape)
    m = measure_lines(image, PX, convention="truth")
    assert m.valid and m.n_lines == s.truth.n_lines
    bound = [w for w in m.warnings if w.startswith("edge bloom")]
    assert len(bound) == 1 and "LWR and LER are not affected" in bound[0]
    cd_bound = float(bound[0].split("CD by up to ")[1].split(" nm")[0])
    assert 2 * PX <= cd_bound <= 8 * PX  # step centres 1-4 px apart at each edge
    assert abs(m.cd_nm - s.truth.cd_nm) <= cd_bound


def _edge_profile(
    t: np.ndarray, c: float, s: float, amp: float, w: float, ridge: float, widths: tuple
) -> np.ndarray:
    """A blurred unit step at ``c`` with a ridge at ``ridge`` and the neighbouring edges'
    ridges mirrored about the middles of the phases (``widths``: bright, dark)."""
    bright, dark = widths
    ridges = sum(np.exp(-0.5 * ((t - r) / w) ** 2) for r in (ridge, bright - ridge, -dark - ridge))
    return ndtr((t - c) / s) + amp * ridges


@pytest.mark.parametrize(
    ("c", "s", "amp", "w", "inset"),
    [(2.8, 0.6, 1.0, 2.5, 0.0), (1.7, 0.8, 2.0, 1.0, 0.0), (1.2, 1.0, 0.8, 1.6, 1.0)],
)
def test_whole_edge_fit_finds_the_step_under_the_ridge(
    c: float, s: float, amp: float, w: float, inset: float
) -> None:
    """Noise-free profiles of the model: the offset from the 0.5 crossing (found here by
    root finding) to the step's centre is recovered."""
    widths = (30.0, 24.0)
    t = np.arange(-12.0, 15.0 + 1e-9, 0.25)
    p = _edge_profile(t, c, s, amp, w, c + inset, widths)

    def level(x: float) -> float:
        return float(_edge_profile(np.array([x]), c, s, amp, w, c + inset, widths)[0]) - 0.5

    cross = brentq(level, -6.0, c)
    # the profiles are aligned on their crossing, as the measured edges are
    fit = bloom_fit(t - cross, p, widths, 0.5)
    assert fit is not None
    assert fit.offset_px == pytest.approx(c - cross, abs=0.02)
    assert fit.ridge_width_px == pytest.approx(w, rel=0.02)


def test_window_doubt_tells_a_ridge_filling_the_window() -> None:
    """The ±6 px fit finds no ridge when the ridge fills its window (offset 0, the edge left
    2.8 px in the space); with the ridge's decline inside it, its offset stands."""
    widths = (30.0, 24.0)

    def window(c: float, amp: float, w: float, inset: float) -> tuple[np.ndarray, ...]:
        t = np.arange(-20.0, 20.0 + 1e-9, 0.25)
        p = _edge_profile(t, c, 0.7, amp, w, c + inset, widths)
        cross = float(np.interp(0.5, p[t < c], t[t < c]))
        t = t - cross
        inside = np.abs(t) <= 6.0 + 1e-9
        return t[inside], p[inside], np.array(c - cross)

    t, p, true_offset = window(2.8, 1.0, 2.5, 0.0)
    assert true_offset > 2.5 and bloom_offset_px(t, p) == 0.0
    assert window_doubt(t, p) is not None
    t, p, true_offset = window(1.2, 0.8, 1.2, 1.0)
    assert window_doubt(t, p) is None
    assert bloom_offset_px(t, p) == pytest.approx(float(true_offset), abs=0.1)

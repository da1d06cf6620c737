"""Edge bloom brighter than the line-to-space contrast (``truth``): the rims set the image's
bright level, and their half-level cut each rim out as a line. The lines between the rims are
found again at the levels of the lines and spaces between them
(``sem_metrology._truth.bloom_rims``), with a warning naming the rims."""

from __future__ import annotations

import numpy as np
import pytest
from sem_metrology import make_line_image, measure_lines


def _rimmed(seed: int, bloom_width_px: float = 1.0):
    """14 lines at 70 on spaces at 60 (pitch 36.6 px), rims of 80 grey levels on every edge."""
    s = make_line_image(
        n_lines=14,
        shape=(256, 512),
        line_level=70.0,
        space_level=60.0,
        bloom_amplitude=80.0,
        bloom_width_px=bloom_width_px,
        seed=seed,
    )
    return s, s.image + np.random.default_rng(seed).normal(0.0, 1.0, s.image.shape)


@pytest.mark.parametrize(("seed", "width"), [(0, 1.0), (1, 1.5)])
def test_lines_between_bright_rims_are_measured(seed: int, width: float) -> None:
    # Before: valid, 28 "lines" of CD 0.9-1.3 nm, each rim read as a line, no warning.
    s, image = _rimmed(seed, width)
    m = measure_lines(image, s.pixel_size_nm, convention="truth")
    assert m.valid, m.reason
    assert m.n_lines == s.truth.n_lines == 14
    # the levels of the lines and spaces, not of the rims (80 grey levels above the lines)
    assert m.levels[0] == pytest.approx(60.0, abs=0.5)
    assert m.levels[1] == pytest.approx(70.0, abs=0.5)
    assert m.pitch_nm == pytest.approx(s.truth.pitch_nm, rel=0.01)
    assert abs(m.cd_nm - s.truth.cd_nm) < 0.5  # measured -0.29..-0.23 nm (1.2 px = 1 nm)
    assert m.lwr_nm == pytest.approx(s.truth.lwr_nm, rel=0.05)
    assert m.ler_nm == pytest.approx(s.truth.ler_nm, rel=0.05)
    rims = [w for w in m.warnings if "edge rims" in w]
    assert len(rims) == 1
    assert rims[0].startswith("the 28 bright lines found at the half-level")
    assert "14 lines" in rims[0] and "CD may be off by up to" in rims[0]


def test_inverted_rims_measure_the_same_dark_lines() -> None:
    s, image = _rimmed(0)
    bright = measure_lines(image, s.pixel_size_nm, convention="truth")
    dark = measure_lines(255.0 - image, s.pixel_size_nm, convention="truth")
    assert dark.valid and dark.tone == "dark" and dark.n_lines == 14
    assert dark.cd_nm == pytest.approx(bright.cd_nm, abs=0.05)
    assert any(w.startswith("the 28 dark lines found") for w in dark.warnings)


def test_rims_need_a_clean_alternation_of_the_stretches_between_them() -> None:
    from sem_metrology._truth import RIM_ALTERNATION, bloom_rims

    x = np.arange(256, dtype=np.float64)
    lead = 10.0 + 15.0 * np.arange(14)  # rims 3 px wide, every 15 px
    trail = lead + 3.0

    def profile(alternation: float, clean: bool = True) -> np.ndarray:
        """Rims at 1, stretches between them at 0, every other one at ``v``: the median
        stretch is 0 or ``v``, the contrast to the rims ``1 - median``."""
        p = np.zeros(x.size)
        for a, b in zip(lead, trail, strict=True):
            p[(x >= a) & (x <= b)] = 1.0
        v = alternation / (1.0 + alternation)
        for i in range(0, 13, 2):
            if clean or i != 6:  # one line top at the spaces' level: no clean alternation
                p[(x > trail[i]) & (x < lead[i + 1])] = v
        return p

    found = bloom_rims(x, profile(RIM_ALTERNATION + 0.01), lead, trail)
    assert found is not None and found.bright and found.found and found.n_rims == 14
    assert found.high_level == pytest.approx(
        (RIM_ALTERNATION + 0.01) / (1 + RIM_ALTERNATION + 0.01)
    )
    assert found.low_level == pytest.approx(0.0)
    assert bloom_rims(x, profile(RIM_ALTERNATION - 0.01), lead, trail) is None
    assert bloom_rims(x, profile(0.5, clean=False), lead, trail) is None
    # the gaps as rims: dark lines found between bright rims
    assert bloom_rims(x, profile(0.5), trail[:-1], lead[1:]) is not None


@pytest.mark.parametrize("image_kind", ["inset rims", "make_sample"])
def test_the_step_under_a_rim_stays_on_the_rims_outer_side(image_kind: str) -> None:
    # The rim hides the step; fitted with the ridge free, the step slid to the rim's inner foot,
    # the ridge then outside the line: rims 20 x the contrast, 1 px wide and 1 px inside the
    # lines read CD 3.9 nm narrow; sem_physics.make_sample lines, seed 16 (rims 2.3 x the
    # contrast, 2.8 px wide), with 5 grey levels of noise: 7.4 nm narrow.
    if image_kind == "inset rims":
        s = make_line_image(
            n_lines=14,
            shape=(256, 512),
            line_level=80.0,
            space_level=60.0,
            bloom_amplitude=400.0,
            bloom_width_px=1.0,
            bloom_inset_px=1.0,
            seed=3,
        )
        image = s.image + np.random.default_rng(3).normal(0.0, 1.0, s.image.shape)
        pixel_nm, cd_nm = s.pixel_size_nm, s.truth.cd_nm
    else:
        from sem_physics import make_sample
        from sem_physics.samples import _LINES

        rng = np.random.default_rng(16)  # the generator's first draws: pitch, then duty
        pitch_px = rng.uniform(*_LINES.pitch_px)
        pixel_nm, cd_nm = 1.0, rng.uniform(*_LINES.duty) * pitch_px
        image = make_sample("lines", seed=16).astype(np.float64)
        image += np.random.default_rng(16).normal(0.0, 5.0, image.shape)
    m = measure_lines(image, pixel_nm, convention="truth", info_bar="none")
    assert m.valid, m.reason
    assert any("edge rims" in w for w in m.warnings)
    assert abs(m.cd_nm - cd_nm) < 1.0  # measured −0.60 (make_sample), +0.11 nm (inset rims)


@pytest.mark.parametrize(("space", "rims"), [(20.0, 40.0), (40.0, 80.0)])
def test_lines_split_at_some_rims_only_are_refused(space: float, rims: float) -> None:
    # Rims twice the contrast, 2.5 px wide, 1 px inside the lines: the half-level of the
    # plateaus runs through the line tops, splitting some lines at their rims and not others.
    # Before: valid, 16 or 20 "lines" of 0.31-3.3 x the median width, CD 2.6-6.0 nm narrow,
    # no warning.
    s = make_line_image(
        n_lines=14,
        shape=(256, 512),
        line_level=60.0 + space,
        space_level=60.0,
        bloom_amplitude=rims,
        bloom_width_px=2.5,
        bloom_inset_px=1.0,
        seed=44,
    )
    image = s.image + np.random.default_rng(44).normal(0.0, 0.05 * space, s.image.shape)
    m = measure_lines(image, s.pixel_size_nm, convention="truth")
    assert not m.valid
    assert m.reason.startswith("lines of different widths: ")
    assert "roi" in m.reason
    smile = measure_lines(image, s.pixel_size_nm, convention="smile")
    assert not smile.valid or any("lines of different widths" in w for w in smile.warnings)


def test_uneven_width_reason_counts_the_odd_lines_only() -> None:
    from sem_metrology._guards import UNEVEN_WIDTH, _uneven_width_reason

    period = 36.0
    even = np.array([17.0, 16.5, 17.4, 16.9, 17.2])
    assert _uneven_width_reason(even, period) is None
    split = np.r_[even, 17.0 / UNEVEN_WIDTH - 0.1]  # one just past the factor
    reason = _uneven_width_reason(split, period)
    assert reason is not None and reason.startswith("lines of different widths: 1 of the 6")
    assert _uneven_width_reason(np.r_[even, 17.0 / UNEVEN_WIDTH + 0.1], period) is None
    # a merged line wider than the period is left to the merged-lines warning
    assert _uneven_width_reason(np.r_[even, 40.0], period) is None

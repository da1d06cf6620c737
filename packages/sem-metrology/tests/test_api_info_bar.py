"""The Python API leaves out an SEM info bar at the bottom of an array as ``sem-measure`` does
(``sem_physics.io.detect_info_bar``), with a warning; ``info_bar='none'`` or a row count
overrides it. Images without a bar measure as before."""

from __future__ import annotations

import numpy as np
import pytest
from sem_metrology import MetrologyInputError, make_line_image, measure_contacts, measure_lines
from sem_metrology.cli import load_image

_NUMBERS = ("n_lines", "cd_nm", "cd_std_nm", "lwr_nm", "ler_nm", "pitch_nm", "levels")


def _with_bar(seed: int) -> tuple[np.ndarray, np.ndarray, float, float]:
    """(20 noisy generated lines, the same over a 64-row black bar with a white frame line
    and white text blocks, pixel size, true LWR)."""
    s = make_line_image(n_lines=20, shape=(512, 640), seed=seed)
    picture = np.clip(s.image + np.random.default_rng(seed).normal(0.0, 5.0, s.image.shape), 0, 255)
    bar = np.zeros((64, 640))
    bar[0] = 255.0
    for c in range(20, 600, 60):
        bar[15:30, c : c + 30] = 255.0
    return picture, np.vstack([picture, bar]), s.pixel_size_nm, s.truth.lwr_nm


@pytest.mark.parametrize("convention", ["smile", "truth"])
def test_an_info_bar_under_an_array_is_left_out(convention: str) -> None:
    # Before: the bar was measured as part of the image (smile: pitch refused or, without
    # text, LWR 56-80 nm against 5 nm; truth: 11 % of the edge points interpolated).
    picture, framed, px, true_lwr = _with_bar(0)
    m = measure_lines(framed, px, convention=convention)
    plain = measure_lines(picture, px, convention=convention)
    assert m.valid, m.reason
    assert m.crop == "info bar: bottom 64 rows removed" and m.n_rows == plain.n_rows == 512
    assert m.lwr_nm == pytest.approx(true_lwr, rel=0.1)
    for field in _NUMBERS:
        assert getattr(m, field) == getattr(plain, field), field
    assert m.warnings[0].startswith("info bar detected: the bottom 64 of 576 rows")
    assert "info_bar='none'" in m.warnings[0]
    assert not any(w.startswith("info bar") for w in plain.warnings)


def test_info_bar_option_keeps_or_sets_the_rows() -> None:
    picture, framed, px, _ = _with_bar(1)
    kept = measure_lines(framed, px, convention="truth", info_bar="none")
    assert kept.crop is None and kept.n_rows == 576
    assert not any(w.startswith("info bar") for w in kept.warnings)
    cut = measure_lines(framed, px, convention="truth", info_bar=80)
    assert cut.crop == "info bar: bottom 80 rows removed" and cut.n_rows == 496
    same = measure_lines(picture[:496], px, convention="truth")
    assert cut.cd_nm == same.cd_nm and cut.lwr_nm == same.lwr_nm
    with pytest.raises(MetrologyInputError, match="info_bar: must be 'auto', 'none' or a row"):
        measure_lines(framed, px, info_bar=-1)
    with pytest.raises(MetrologyInputError, match=r"info_bar: .*\[0, 575\] .*, got 576"):
        measure_lines(framed, px, info_bar=576)


def test_flat_rows_of_a_rendered_image_are_no_info_bar() -> None:
    """Horizontal lines generated without noise: their bottom rows of space are flat, as bar
    rows are (the detector alone finds a 16-24 row bar), but so are the spaces above them."""
    for n, shape in ((6, (128, 200)), (10, (256, 256))):
        s = make_line_image(n_lines=n, shape=shape, seed=0, orientation="horizontal")
        m = measure_lines(s.image, s.pixel_size_nm, convention="truth")
        kept = measure_lines(s.image, s.pixel_size_nm, convention="truth", info_bar="none")
        assert m.crop is None and m.n_lines == n
        assert m.model_dump() == kept.model_dump()


def test_real_frames_as_arrays_measure_as_the_command_line(sem_real_dir) -> None:
    # Before: the real line frame with its 64-row bar read LWR 4.74 against 3.25 nm (truth),
    # the contact frame one hole against 275.
    lines = load_image(sem_real_dir / "lines_euv_resist_0p827nm.tif")
    frame = measure_lines(np.asarray(lines.data), lines.pixel_size_nm, convention="truth")
    read = measure_lines(lines, convention="truth")
    assert read.crop == frame.crop == "info bar: bottom 64 rows removed"
    for field in _NUMBERS:
        assert getattr(frame, field) == getattr(read, field), field
    holes = load_image(sem_real_dir / "contacts_0p901nm.tif")
    c = measure_contacts(np.asarray(holes.data), holes.pixel_size_nm)
    assert c.valid and c.n_holes == measure_contacts(holes).n_holes
    assert c.crop == "info bar: bottom 92 rows removed"

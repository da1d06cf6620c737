"""The automatic tone with bright edge rims (bloom): rough edges under a rim make its pixels
differ from row to row, so the rims' phase looked noisier whatever the tone, and dark lines
with bright rims were taken for bright ones ("bright phase noisier, as recorded") and their
spaces measured, valid, without a warning. The phases' noise is now compared away from the
rims (``sem_metrology.preprocess.detect_tone``); when that leaves the tone open, the warning
names ``tone='dark'``."""

from __future__ import annotations

import numpy as np
import pytest
from sem_metrology import make_line_image, measure_lines
from sem_physics import DegradationParams

PX = 0.827
PITCH_PX = 36


def _lines(line: float, space: float, rim: float, width: float, seed: int, degradation=None):
    """12 lines of pitch 36 px, 60 % of it dark lines or 35 % bright ones (a CD unlike the
    spaces' width)."""
    duty = 0.6 if line < space else 0.35
    return make_line_image(
        n_lines=12,
        shape=(256, 512),
        pitch_nm=PITCH_PX * PX,
        cd_nm=duty * PITCH_PX * PX,
        line_level=line,
        space_level=space,
        bloom_amplitude=rim,
        bloom_width_px=width,
        degradation=degradation,
        seed=seed,
    )


@pytest.mark.parametrize(("rim", "width"), [(100.0, 1.5), (200.0, 1.0)])
@pytest.mark.parametrize("seed", [0, 1])
def test_dark_lines_with_bright_rims_name_the_dark_tone(
    rim: float, width: float, seed: int
) -> None:
    # Even noise (5 grey levels on a contrast of 100): the noise cannot tell the tone. Before:
    # "bright phase noisier (noise ratio 1.21-1.35), as recorded", the spaces measured as
    # 11 lines of CD 11.6-14.6 nm (the lines' is 17.7-18.0 nm), no warning.
    s = _lines(60.0, 160.0, rim, width, seed)
    image = s.image + np.random.default_rng(seed + 7).normal(0.0, 5.0, s.image.shape)
    m = measure_lines(image, PX, convention="truth")
    assert m.tone_source.startswith("auto: ambiguous (noise ratio")
    assert "without the bright rims on the edges" in m.tone_source
    ratio = float(m.tone_source.split("noise ratio ")[1][:4])
    assert ratio == pytest.approx(1.0, abs=0.05)  # even noise, rims left out
    named = [w for w in m.warnings if w.startswith("tone auto: ambiguous")]
    assert len(named) == 1 and named[0].endswith("set tone='dark' (--tone dark)")
    dark = measure_lines(image, PX, convention="truth", tone="dark")
    assert dark.valid and dark.n_lines == s.truth.n_lines
    # rims twice the contrast: placed by the whole-edge bloom fit (the README's "Strong edge
    # bloom"; before, CD 0.4-6 nm off)
    assert abs(dark.cd_nm - s.truth.cd_nm) < 0.4


def test_shot_noise_still_tells_bright_lines_with_rims() -> None:
    """The case the rule was built for: shot noise makes the bright phase noisier; with the
    rims left out it still is, and nothing is said."""
    shot = DegradationParams(
        rx_px=1.0, ry_px=1.0, beta=2.0, theta_rad=0.0, gain=1.0, offset=0.0, sigma=0.0, dose=10.0
    )
    s = _lines(160.0, 60.0, 100.0, 1.5, 0, shot)
    m = measure_lines(s.image, PX, convention="truth")
    assert m.tone == "bright" and m.tone_source.startswith("auto: bright phase noisier")
    assert not any(w.startswith("tone") for w in m.warnings)
    assert m.n_lines == s.truth.n_lines and abs(m.cd_nm - s.truth.cd_nm) < 0.4


@pytest.mark.parametrize("seed", [0, 1])
def test_dark_lines_between_rims_read_as_lines_name_the_dark_tone(seed: int) -> None:
    # Rims of 80 on dark lines at 60 and spaces at 70 are the image's bright phase: the tone
    # was read with the rims as the lines ("bright phase noisier, noise ratio 4.6-4.8") and the
    # spaces between them measured, with the rims named but not the tone.
    s = make_line_image(
        n_lines=14,
        shape=(256, 512),
        line_level=60.0,
        space_level=70.0,
        bloom_amplitude=80.0,
        bloom_width_px=1.0,
        seed=seed,
    )
    image = s.image + np.random.default_rng(seed).normal(0.0, 1.0, s.image.shape)
    m = measure_lines(image, PX, convention="truth")
    assert m.valid and m.tone == "bright"
    again = [w for w in m.warnings if w.startswith("tone read again")]
    assert len(again) == 1 and "auto: ambiguous" in again[0]
    assert again[0].endswith("set tone='dark' (--tone dark)")
    dark = measure_lines(image, PX, convention="truth", tone="dark")
    assert dark.valid and dark.n_lines == s.truth.n_lines == 14
    assert abs(dark.cd_nm - s.truth.cd_nm) < 0.5

"""Line widths after deconvolution: restored where the harmonics pass, pitch / 2 past the cut-off.

Lines of a known CD (16 px at a 40-px pitch, duty 0.4) are defocused with the simulator,
deconvolved (Wiener with the true PSF, Wiener with the blind estimate, the middle physics guide
of the guided MAE models) and measured with the ``truth`` convention. The Airy^2 OTF is zero
beyond ``1 / R`` cycles/px: with ``R`` small the harmonics that carry the duty cycle pass and the
CD comes back; with ``R`` above half the pitch only the fundamental survives, a sinusoid whose
half-level crossings are half a pitch apart whatever the true CD (arXiv 2604.05960, Sec. 3.1).
"""

from __future__ import annotations

import numpy as np
import pytest
from sem_baselines import get_restorer
from sem_baselines.guides import guide_channels
from sem_metrology import LineOptions, make_line_image, measure_lines
from sem_physics import DegradationParams, PSFParams

PX_NM = 0.827
PITCH_PX, CD_PX = 40.0, 16.0
OPTIONS = LineOptions(convention="truth", tone="bright", bootstrap_samples=0)


def _restored_cds(radius_px: float, seed: int) -> tuple[float, dict[str, float]]:
    deg = DegradationParams(
        rx_px=radius_px, ry_px=radius_px, beta=1.95, theta_rad=0.0,
        gain=1.0, offset=10.0, sigma=3.0, dose=30.0,
    )  # fmt: skip
    lines = make_line_image(
        8, (192, 360), pitch_nm=PITCH_PX * PX_NM, cd_nm=CD_PX * PX_NM, sigma_nm=1.0,
        degradation=deg, seed=seed,
    )  # fmt: skip
    psf = PSFParams(rx_px=radius_px, ry_px=radius_px, beta=1.95, theta_rad=0.0)
    y = lines.image
    outputs = {
        "wiener, true PSF": get_restorer("wiener", psf=psf).restore(y),
        "wiener, blind PSF": get_restorer("wiener").restore(y),
        "middle guide": guide_channels(y / 255.0, psf, (0.03, 0.3, 3.0))[2] * 255.0,
    }
    cds = {}
    for name, out in outputs.items():
        m = measure_lines(np.asarray(out, np.float32), PX_NM, OPTIONS)
        assert m.valid, f"{name}: {m.reason}"
        cds[name] = m.cd_nm
    return lines.truth.cd_nm, cds


@pytest.mark.parametrize(("radius_px", "seed"), [(5.0, 0), (8.0, 1)])
def test_deconvolution_restores_cd_while_the_harmonics_pass(radius_px: float, seed: int):
    truth, cds = _restored_cds(radius_px, seed)
    for name, cd in cds.items():
        assert abs(cd - truth) < 0.3, f"{name}: CD {cd:.2f} nm, truth {truth:.2f} nm"


def test_past_the_cutoff_every_deconvolution_measures_half_the_pitch():
    # R = 26 px: cut-off 0.038 cycles/px, the second harmonic (0.05) is gone.
    truth, cds = _restored_cds(26.0, 3)
    half_pitch = 0.5 * PITCH_PX * PX_NM
    for name, cd in cds.items():
        assert abs(cd - half_pitch) < 0.3, f"{name}: CD {cd:.2f} nm, pitch / 2 {half_pitch:.2f}"
        assert cd - truth > 2.5

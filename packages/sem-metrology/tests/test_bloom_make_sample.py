"""Edge bloom on ``sem_physics.make_sample`` lines (the demo's; ridge 1 px inside the line,
1.1-2.6 x the contrast): the whole-edge bloom fit (``sem_metrology._truth.bloom_fit``) is used
only where its step is sharp, so these lines keep the CD of the ±6 px fit. A whole-edge fit
used wherever the ±6 px fit was doubted read sharp lines 2.6-4.1 nm narrow and lines blurred
by 2 px 2.1-4.3 nm narrow (the ±6 px fit: within 0.2 nm, and 3.7-4.0 nm wide)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter
from sem_metrology import measure_lines
from sem_physics import make_sample
from sem_physics.samples import _LINES


def _sample(seed: int, blur_px: float) -> tuple[np.ndarray, float]:
    """The sample's lines (Gaussian blur ``blur_px``, noise 5 grey levels) and their CD (px):
    duty x pitch, the generator's first two draws."""
    rng = np.random.default_rng(seed)
    pitch = rng.uniform(*_LINES.pitch_px)
    cd = rng.uniform(*_LINES.duty) * pitch
    image = np.asarray(make_sample("lines", seed=seed), dtype=np.float64)
    if blur_px:
        image = gaussian_filter(image, blur_px)
    return image + np.random.default_rng(seed).normal(0.0, 5.0, image.shape), cd


@pytest.mark.parametrize(("seed", "blur_px"), [(2, 0.0), (3, 0.0), (3, 1.0)])
def test_sharp_sample_lines_keep_their_cd(seed: int, blur_px: float) -> None:
    image, cd = _sample(seed, blur_px)
    m = measure_lines(image, 1.0, convention="truth", info_bar="none")
    assert m.valid and m.cd_nm is not None and m.edge_offset_nm is not None
    assert abs(m.cd_nm - cd) < 0.5  # measured -0.19, -0.09, +0.17 nm
    assert m.edge_offset_nm > 0.5  # the ridge is found and corrected for


@pytest.mark.parametrize("seed", [0, 1, 4])
def test_blurred_sample_lines_are_not_over_corrected(seed: int) -> None:
    # Blurred by 2 px, step and ridge are about as wide: the step is not told from the ridge
    # and CD reads wide (a known bias, README), never narrower than the lines.
    image, cd = _sample(seed, 2.0)
    m = measure_lines(image, 1.0, convention="truth", info_bar="none")
    assert m.valid and m.cd_nm is not None
    assert m.cd_nm - cd > -0.5  # measured +3.7..+4.0 nm
    assert not any(w.startswith("edge bloom") for w in m.warnings)

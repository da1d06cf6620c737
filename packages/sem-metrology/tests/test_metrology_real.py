"""The real EUV resist line/space image (0.827 nm/px, info bar rows 896-959)."""

from __future__ import annotations

import numpy as np
import pytest
from sem_metrology import measure_lines

LINE_PIXEL_NM = 0.827009  # TIFF tag PixelSize of lines_euv_resist_0p827nm.tif


@pytest.fixture(scope="module")
def reference(real_line_image: np.ndarray):
    return measure_lines(real_line_image, LINE_PIXEL_NM)


def test_real_image_line_count_and_plausible_values(reference, real_line_image) -> None:
    m = reference
    assert m.valid and m.orientation == "vertical" and m.n_rows == 896
    # pitch ~25.5 nm = 30.8 px: 1280 px hold 40 complete lines; SMILE's region of interest
    # (x 53..1215, y 45..865) about 37.
    assert 38 <= m.n_lines <= 41
    smile_roi = measure_lines(real_line_image, LINE_PIXEL_NM, roi=(45, 865, 53, 1215))
    assert 35 <= smile_roi.n_lines <= 38
    assert m.pitch_nm == pytest.approx(25.5, abs=0.5)
    assert 8.0 < m.cd_nm < 18.0 and m.cd_std_nm < 1.5
    assert 0 < m.ler_unbiased_nm < m.ler_nm < 6.0
    assert 0 < m.lwr_unbiased_nm < m.lwr_nm < 8.0
    assert m.n_gaps <= 0.001 * 2 * m.n_lines * m.n_rows
    assert abs(m.tilt_deg) < 5.0
    assert m.correlation_length_nm is not None and 1.0 < m.correlation_length_nm < 100.0


@pytest.mark.parametrize("shift", ["left", "up"])
def test_real_image_stable_under_one_pixel_shift(reference, real_line_image, shift) -> None:
    img = real_line_image[:, 1:] if shift == "left" else real_line_image[1:, :]
    m = measure_lines(img, LINE_PIXEL_NM)
    assert abs(m.n_lines - reference.n_lines) <= 1
    assert abs(m.cd_nm - reference.cd_nm) < 0.05


@pytest.mark.parametrize("k", [1, 3])
def test_real_image_stable_under_90_degree_rotation(reference, real_line_image, k) -> None:
    m = measure_lines(np.rot90(real_line_image, k), LINE_PIXEL_NM)
    assert m.orientation == "horizontal"
    assert m.n_lines == reference.n_lines
    assert abs(m.cd_nm - reference.cd_nm) < 0.05
    assert m.ler_nm == pytest.approx(reference.ler_nm, rel=0.02)


def test_cli_and_reader_object_take_pixel_size_and_bar_from_metadata(
    sem_real_dir, reference, capsys
) -> None:
    import json

    from sem_metrology.cli import main
    from sem_physics.io import read_image

    path = sem_real_dir / "lines_euv_resist_0p827nm.tif"
    assert main(["lines", str(path), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["pixel_size_nm"] == pytest.approx(LINE_PIXEL_NM)
    assert data["pixel_size_source"].startswith("metadata")
    assert data["n_rows"] == 896 and data["n_lines"] == reference.n_lines
    assert data["cd_nm"] == pytest.approx(reference.cd_nm, abs=1e-6)
    m = measure_lines(read_image(path))
    assert m.pixel_size_source.startswith("metadata") and m.n_rows == 896
    assert m.cd_nm == pytest.approx(reference.cd_nm, abs=1e-6)

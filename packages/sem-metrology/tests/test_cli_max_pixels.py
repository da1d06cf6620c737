"""``sem-measure --max-pixels``: the option the size-limit error names exists and is used."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tifffile
from sem_metrology import make_line_image
from sem_metrology.cli import main


def test_max_pixels_named_by_the_size_error_is_an_option(tmp_path: Path, capsys) -> None:
    image = make_line_image(n_lines=8, shape=(160, 256), sigma_nm=1.0, seed=4).image
    path = tmp_path / "lines.tif"
    tifffile.imwrite(path, np.clip(image, 0, 255).astype(np.uint8))
    argv = ["lines", str(path), "--pixel-size-nm", "1", "--json"]
    assert main([*argv, "--max-pixels", "1000"]) != 0
    err = capsys.readouterr().err
    assert "above the limit of 1,000 px" in err and "--max-pixels" in err
    assert main([*argv, "--max-pixels", "40960"]) == 0

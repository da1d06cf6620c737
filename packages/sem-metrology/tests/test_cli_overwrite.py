"""``sem-measure`` refuses existing output files unless ``--overwrite``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
from sem_metrology import make_line_image
from sem_metrology.cli import main


@pytest.fixture(scope="module")
def line_tif(tmp_path_factory: pytest.TempPathFactory) -> Path:
    sample = make_line_image(n_lines=8, shape=(160, 256), sigma_nm=1.0, seed=4)
    path = tmp_path_factory.mktemp("one") / "lines.tif"
    tifffile.imwrite(path, np.clip(sample.image, 0, 255).astype(np.uint8))
    return path


def _error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("sem-measure: error: ")
    return err[0]


@pytest.mark.parametrize(("flag", "name"), [("--output", "result.json"), ("--report", "r.png")])
def test_existing_output_file_is_refused_without_overwrite(
    tmp_path: Path, line_tif: Path, capsys: pytest.CaptureFixture[str], flag: str, name: str
) -> None:
    target = tmp_path / name
    target.write_text("mine")
    argv = ["lines", str(line_tif), "--pixel-size-nm", "0.8", "--json", flag, str(target)]
    assert main(argv) == 2
    line = _error_line(capsys)
    assert f"{flag} {target} exists" in line and "--overwrite" in line
    assert target.read_text() == "mine"
    capsys.readouterr()
    assert main([*argv, "--overwrite"]) == 0
    assert target.read_bytes() != b"mine"


def test_existing_report_in_a_folder_is_refused(
    tmp_path: Path, line_tif: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "batch"
    folder.mkdir()
    for name in ("a.tif", "b.tif"):
        (folder / name).write_bytes(line_tif.read_bytes())
    reports = tmp_path / "reports"
    reports.mkdir()
    (reports / "b_lines.png").write_text("mine")
    table = tmp_path / "table.csv"
    argv = ["lines", str(folder), "--pixel-size-nm", "0.8", "--csv", "--output", str(table)]
    assert main([*argv, "--report", str(reports)]) == 2
    assert str(reports / "b_lines.png") in _error_line(capsys)
    assert not table.exists() and [p.name for p in reports.iterdir()] == ["b_lines.png"]
    assert main(argv) == 0  # a first run writes its table; a second one would replace it
    capsys.readouterr()
    assert main(argv) == 2
    assert f"--output {table} exists" in _error_line(capsys)
    assert main([*argv, "--report", str(reports), "--overwrite"]) == 0
    assert (reports / "a_lines.png").is_file() and (reports / "b_lines.png").read_bytes() != b"mine"


def test_min_holes_reaches_the_contact_measurement(tmp_path, capsys):
    """One hole is refused by default (min_holes=3) and measured with --min-holes 1."""
    import numpy as np
    from sem_metrology.cli import main
    from sem_physics import write_image

    rng = np.random.default_rng(0)
    img = np.full((128, 128), 180.0) + rng.normal(0, 4, (128, 128))
    yy, xx = np.mgrid[:128, :128]
    img[(yy - 64) ** 2 + (xx - 64) ** 2 < 15**2] = 40.0
    path = write_image(tmp_path / "one.tif", np.clip(img, 0, 255).astype(np.float32), "float32")
    argv = ["contacts", str(path), "--pixel-size-nm", "1", "--json"]
    assert main(argv) == 1  # not measurable: refused with the reason
    refused = capsys.readouterr().out
    assert '"valid": false' in refused and "too few contact holes: 1 measured" in refused
    assert main([*argv, "--min-holes", "1"]) == 0
    out = capsys.readouterr().out
    assert '"valid": true' in out
    assert main([*argv, "--min-holes", "0"]) == 2
    assert "--min-holes" in capsys.readouterr().err

"""``sem-measure`` where things go wrong: file names that are not UTF-8, its own reports
read back as inputs, stdout that cannot be written."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image
from sem_metrology import make_contact_image, make_line_image, measure_contacts, measure_lines
from sem_metrology.cli import main

posix_only = pytest.mark.skipif(os.name != "posix", reason="POSIX file names and /dev/full")
PIXEL = ("--pixel-size-nm", "0.827")
BAD = os.fsdecode(b"bad\xffname")  # a file name that is not valid UTF-8, as Python holds it


@pytest.fixture(scope="module")
def line_image() -> np.ndarray:
    sample = make_line_image(n_lines=8, shape=(160, 256), sigma_nm=1.0, seed=4)
    return np.clip(sample.image, 0, 255).astype(np.uint8)


def test_to_json_writes_a_surrogate_escaped(line_image: np.ndarray) -> None:
    lines = measure_lines(line_image.astype(np.float64), 0.827)
    named = lines.model_copy(update={"pixel_size_source": f"{BAD}.tif"})
    assert '"pixel_size_source": "bad\\\\xffname.tif"' in named.to_json()
    assert lines.to_json() == lines.model_dump_json(
        exclude={"leading_edges_px", "trailing_edges_px"}, indent=2
    )
    sample = make_contact_image(seed=1)
    holes = measure_contacts(sample.image, 0.9)
    named_c = holes.model_copy(update={"warnings": [f"{BAD}.tif"]})
    assert '"bad\\\\xffname.tif"' in named_c.to_json()


@posix_only
def test_folder_with_a_name_not_utf8_to_csv_output(
    tmp_path: Path, line_image: np.ndarray, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    tifffile.imwrite(folder / f"{BAD}.tif", line_image)
    table = tmp_path / "t.csv"
    code = main(["lines", str(folder), "--pixel-size-nm", "0.827", "--csv", "--output", str(table)])
    assert code == 0, capsys.readouterr().err
    rows = table.read_text(encoding="utf-8").splitlines()
    assert rows[1].startswith("bad\\xffname.tif,True,")


def test_reports_and_output_inside_the_folder_are_no_inputs(
    tmp_path: Path, line_image: np.ndarray, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    tifffile.imwrite(folder / "a.tif", line_image)
    args = ["lines", str(folder), "--pixel-size-nm", "0.827", "--csv", "--overwrite"]
    for _ in range(2):  # the second run finds the first one's report and table in the folder
        assert (
            main([*args, "--report", str(folder / "rep") + "/", "--output", str(folder / "t.csv")])
            == 0
        )
        rows = (folder / "t.csv").read_text(encoding="utf-8").splitlines()
        assert [r.split(",")[0] for r in rows[1:]] == ["a.tif"]
    # From here rep/a_lines.png is an input like any image: its name is what is checked, so the
    # 1500×1000 figure is replaced by the small line image (measuring and drawing the figure
    # took ~20 s per run).
    Image.fromarray(line_image).save(folder / "rep" / "a_lines.png")
    for _ in range(2):  # reports written into the folder itself
        assert main([*args, "--report", str(folder), "--output", str(tmp_path / "u.csv")]) == 0
        rows = (tmp_path / "u.csv").read_text(encoding="utf-8").splitlines()
        assert [r.split(",")[0] for r in rows[1:]] == ["a.tif", "rep/a_lines.png"]
    capsys.readouterr()


@posix_only
@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="no /dev/full")
def test_json_to_a_full_stdout_is_one_line_and_exit_1(
    tmp_path: Path, line_image: np.ndarray
) -> None:
    image = tmp_path / "a.tif"
    tifffile.imwrite(image, line_image)
    with open("/dev/full", "w") as full:
        done = subprocess.run(
            [sys.executable, "-m", "sem_metrology.cli", "lines", str(image), *PIXEL, "--json"],
            stdout=full,
            stderr=subprocess.PIPE,
            text=True,
            encoding="utf-8",
            timeout=120,
        )
    assert done.returncode == 1
    assert done.stderr.splitlines() == [
        "sem-measure: error: cannot write to stdout: No space left on device"
    ]


@posix_only
@pytest.mark.parametrize("command", ["lines", "contacts"])
def test_report_of_a_file_named_not_utf8(
    tmp_path: Path,
    line_image: np.ndarray,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    command: str,
) -> None:
    """The report is titled with the name, ``\\xNN`` for each byte that is not UTF-8 (the
    surrogate-escaped name made matplotlib fail: exit 2, no report)."""
    import json

    from sem_metrology import report as report_module

    save_name = "save_line_report" if command == "lines" else "save_contact_report"
    save, titles = getattr(report_module, save_name), []

    def spy(*args: object, title: str | None = None, **kwargs: object) -> Path:
        titles.append(title)
        return save(*args, title=title, **kwargs)

    monkeypatch.setattr(report_module, save_name, spy)
    image = tmp_path / f"{BAD}.tif"
    data = line_image if command == "lines" else make_contact_image(seed=1).image
    tifffile.imwrite(image, np.clip(data, 0, 255).astype(np.uint8))
    report = tmp_path / "r.png"
    extra = ["--min-holes", "1"] if command == "contacts" else []
    assert main([command, str(image), *PIXEL, "--json", "--report", str(report), *extra]) == 0
    capsys.readouterr()
    shown = f"{tmp_path}/bad\\xffname.tif"
    assert titles == [shown]
    with Image.open(report) as png:
        assert json.loads(png.text["Provenance"])["source"]["path"] == shown


@posix_only
def test_folder_report_of_a_file_named_not_utf8_is_measured(
    tmp_path: Path, line_image: np.ndarray, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    tifffile.imwrite(folder / f"{BAD}.tif", line_image)
    table, reports = tmp_path / "t.csv", tmp_path / "rep"
    argv = ["lines", str(folder), *PIXEL, "--csv", "--output", str(table)]
    assert main([*argv, "--report", f"{reports}/"]) == 0, capsys.readouterr().err
    assert table.read_text(encoding="utf-8").splitlines()[1].startswith("bad\\xffname.tif,True,")
    assert [p.name for p in reports.iterdir()] == [f"{BAD}_lines.png"]

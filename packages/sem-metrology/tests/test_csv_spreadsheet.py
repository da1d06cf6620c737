"""CSV results open in a spreadsheet as written: ASCII values, a byte-order mark when a file name
keeps other letters (Excel reads a CSV file without one in the ANSI code page)."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
import pytest
import tifffile
from sem_metrology import make_contact_image, make_line_image, measure_contacts, measure_lines
from sem_metrology._csv import ascii_text
from sem_metrology.cli import main

PX = 0.827


@pytest.fixture(scope="module")
def tilted_lines() -> np.ndarray:
    """Lines tilted by 1°: SMILE turns the image, and the warning says so in degrees."""
    return make_line_image(n_lines=12, shape=(256, 400), tilt_deg=1.0, seed=0).image


def test_symbols_are_spelled_in_ascii_and_letters_kept() -> None:
    assert ascii_text("turned by \u22121.0\u00b0") == "turned by -1.0 deg"
    assert (
        ascii_text("\u00b1 8 px, 3\u03c3 \u2265 2 \u00d7 the noise")
        == "+/- 8 px, 3sigma >= 2 x the noise"
    )
    assert (
        ascii_text("PSD (nm\u00b3) at 0.1 nm\u207b\u00b9 \u2026") == "PSD (nm^3) at 0.1 nm^-1 ..."
    )
    assert (
        ascii_text("\u00c4tzprobe_5\u00b5m.tif") == "\u00c4tzprobe_5\u00b5m.tif"
    )  # a name's letters


def test_line_and_contact_csv_values_are_ascii(tilted_lines: np.ndarray) -> None:
    m = measure_lines(tilted_lines, PX, convention="smile")
    assert any("\u00b0" in w for w in m.warnings)  # the result itself keeps its symbols
    for kind in ("summary", "lines"):
        text = m.to_csv(kind)
        assert text.isascii(), sorted({c for c in text if not c.isascii()})
    row = next(csv.DictReader(io.StringIO(m.to_csv())))
    assert "deg to make the lines vertical" in row["warnings"]
    assert float(row["cd_nm"]) == m.cd_nm
    c = measure_contacts(make_contact_image(seed=0).image, 0.9)
    for kind in ("summary", "holes"):
        assert c.to_csv(kind).isascii()


def test_csv_files_read_the_same_in_a_spreadsheet(
    tilted_lines: np.ndarray, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Read back as bytes: the single-image file is ASCII (the same text in UTF-8 and in the
    Windows ANSI code page, cp1252); a folder's table naming a file ``Ätzprobe_5µm.tif`` starts
    with the UTF-8 byte-order mark and keeps the name exactly."""
    image = tmp_path / "in" / "\u00c4tzprobe_5\u00b5m.tif"
    image.parent.mkdir()
    tifffile.imwrite(image, np.clip(tilted_lines, 0, 255).astype(np.uint8))
    single = tmp_path / "one.csv"
    argv = ["lines", str(image), "--pixel-size-nm", str(PX), "--csv", "--output", str(single)]
    assert main(argv) == 0
    data = single.read_bytes()
    assert data.isascii() and data.decode("cp1252") == data.decode("utf-8")
    assert "deg to make the lines vertical" in data.decode("ascii")
    table = tmp_path / "table.csv"
    argv = ["lines", str(image.parent), "--pixel-size-nm", str(PX), "--csv", "--output", str(table)]
    assert main(argv) == 0
    data = table.read_bytes()
    assert data.startswith(b"\xef\xbb\xbf")
    rows = list(csv.DictReader(io.StringIO(data.decode("utf-8-sig"))))
    assert [r["path"] for r in rows] == [image.name]
    assert rows[0]["warnings"].isascii() and "deg to make" in rows[0]["warnings"]
    capsys.readouterr()
    assert main(["lines", str(image.parent), "--pixel-size-nm", str(PX), "--csv"]) == 0
    assert not capsys.readouterr().out.startswith("\ufeff")  # stdout: no byte-order mark


def test_the_public_csv_file_text_spells_values_and_marks_only_kept_names() -> None:
    """``sem_metrology.spreadsheet_csv_file``, the rule other packages' CSV files follow:
    symbols spelled in every column but the verbatim ones, a byte-order mark exactly when a
    kept name holds other letters, the rows read back as given."""
    from sem_metrology import spreadsheet_csv_file

    rows = [
        {
            "image": "\u00c4tzprobe_0\u00b0",
            "note": "3\u03c3 \u00b1 1\u00b0, \u22122 nm\u207b\u00b9",
        },
        {"image": "plain", "note": None},
    ]
    text = spreadsheet_csv_file(rows, verbatim=("image",))
    assert text.startswith("\ufeff")
    back = list(csv.DictReader(io.StringIO(text.removeprefix("\ufeff"))))
    assert [r["image"] for r in back] == ["\u00c4tzprobe_0\u00b0", "plain"]
    assert [r["note"] for r in back] == ["3sigma +/- 1 deg, -2 nm^-1", ""]
    plain = spreadsheet_csv_file(
        [{"image": "a.tif", "note": "\u00b1 1\u00b0"}], verbatim=("image",)
    )
    assert plain.isascii() and "+/- 1 deg" in plain  # nothing left to mark: no byte-order mark
    spelled = spreadsheet_csv_file(rows[:1])  # no verbatim column: the name's symbol spelled
    assert spelled.startswith("\ufeff") and "\u00c4tzprobe_0 deg" in spelled

"""``sem-measure``: folder mode, report and output paths, error lines, light imports."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tifffile
from sem_metrology import make_line_image
from sem_metrology.cli import main
from sem_physics.testing import main_in_fresh_interpreter, symlink_or_skip


@pytest.fixture(scope="module")
def line_tif(tmp_path_factory) -> str:
    sample = make_line_image(n_lines=8, shape=(160, 256), sigma_nm=1.0, seed=4)
    path = tmp_path_factory.mktemp("one") / "lines.tif"
    tifffile.imwrite(path, np.clip(sample.image, 0, 255).astype(np.uint8))
    return str(path)


def _folder(tmp_path, line_tif: str):
    folder = tmp_path / "batch"
    (folder / "sub").mkdir(parents=True)
    good = np.asarray(tifffile.imread(line_tif))
    tifffile.imwrite(folder / "a.tif", good)
    tifffile.imwrite(folder / "sub" / "b.tif", good[:, ::-1].copy())
    (folder / "broken.tif").write_bytes(b"II*\x00 this is not a tiff")
    tifffile.imwrite(folder / "flat.tif", np.full((64, 64), 90, dtype=np.uint8))
    (folder / "notes.txt").write_text("not an image")
    return folder


def _snapshot(folder) -> dict:
    return {p: p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_folder_mode_one_row_per_image_failures_keep_their_reason(tmp_path, line_tif, capsys):
    folder = _folder(tmp_path, line_tif)
    before = _snapshot(folder)
    out = tmp_path / "table.csv"
    argv = ["lines", str(folder), "--pixel-size-nm", "0.8", "--csv", "--output", str(out)]
    assert main(argv) == 0  # two images measured: success despite two failures
    rows = {r["path"]: r for r in csv.DictReader(io.StringIO(out.read_text()))}
    assert set(rows) == {"a.tif", "sub/b.tif", "broken.tif", "flat.tif"}  # "/" on every OS
    assert rows["a.tif"]["valid"] == "True" and int(rows["a.tif"]["n_lines"]) == 8
    assert float(rows["sub/b.tif"]["cd_nm"]) == pytest.approx(
        float(rows["a.tif"]["cd_nm"]), abs=0.3
    )
    assert "cannot read image" in rows["broken.tif"]["error"]
    assert "not measurable" in rows["flat.tif"]["error"]
    err = capsys.readouterr().err
    assert "broken.tif" in err and "Traceback" not in err
    assert _snapshot(folder) == before  # inputs untouched
    # --strict: any failure exits 1; JSON rows carry the same reasons.
    assert main([*argv[:4], "--strict", "--json"]) == 1
    data = json.loads(capsys.readouterr().out)
    assert sorted(r["path"] for r in data) == sorted(rows)


def test_folder_with_nothing_measurable_exits_1(tmp_path, capsys) -> None:
    folder = tmp_path / "bad"
    folder.mkdir()
    tifffile.imwrite(folder / "flat.tif", np.full((64, 64), 90, dtype=np.uint8))
    assert main(["lines", str(folder), "--pixel-size-nm", "1", "--csv"]) == 1
    assert "0 of 1 image(s) measured" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["lines", str(empty), "--pixel-size-nm", "1"]) == 2
    assert "no images" in capsys.readouterr().err


def test_report_into_a_folder_and_refusals_before_any_work(tmp_path, line_tif, capsys) -> None:
    reports = tmp_path / "reports"
    reports.mkdir()
    before = open(line_tif, "rb").read()
    assert main(["lines", line_tif, "--pixel-size-nm", "0.8", "--report", str(reports)]) == 0
    capsys.readouterr()
    png = reports / "lines_lines.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not (tmp_path / "reports.png").exists()
    # A new folder named with a trailing slash is created and written into.
    new = str(tmp_path / "new") + "/"
    assert main(["lines", line_tif, "--pixel-size-nm", "0.8", "--report", new]) == 0
    assert (tmp_path / "new" / "lines_lines.png").is_file()
    capsys.readouterr()
    for flag in ("--report", "--output"):
        assert main(["lines", line_tif, "--pixel-size-nm", "0.8", flag, line_tif]) == 2
        assert "would be overwritten" in capsys.readouterr().err
    assert open(line_tif, "rb").read() == before
    assert main(["lines", line_tif, "--pixel-size-nm", "0.8", "--output", str(reports)]) == 2
    assert "is a folder" in capsys.readouterr().err
    assert not list(tmp_path.rglob("*.tmp*"))  # no temporary debris


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["lines", "{tif}", "--pixel-size-nm", "inf"], "outside the physical range"),
        (["lines", "{tif}", "--pixel-size-nm", "1", "--info-bar", "9999"], "--info-bar"),
        (["lines", "{txt}", "--pixel-size-nm", "1"], "cannot read image"),
        (["contacts", "{tif}", "--pixel-size-nm", "1", "--roi", "5", "2", "0", "9"], "roi"),
        # a folder below a file: fails on every OS (/proc/x/y.csv could be made on Windows)
        (["lines", "{tif}", "--pixel-size-nm", "1", "--output", "{txt}/y.csv"], "error"),
    ],
)
def test_every_bad_input_is_one_line_without_traceback(tmp_path, line_tif, capsys, argv, message):
    txt = tmp_path / "x.tif"
    txt.write_text("plain text")
    argv = [a.format(tif=line_tif, txt=txt) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert message in err[-1] and err[-1].startswith("sem-measure")
    assert not any("Traceback" in line for line in err)


def test_debug_shows_the_traceback(tmp_path, capsys) -> None:
    txt = tmp_path / "x.tif"
    txt.write_text("plain text")
    assert main(["lines", str(txt), "--pixel-size-nm", "1", "--debug"]) == 2
    assert "Traceback" in capsys.readouterr().err


def test_cli_and_api_share_the_pixel_size_bounds() -> None:
    from sem_metrology import _inputs, cli

    assert cli.PIXEL_SIZE_RANGE_NM == _inputs.PIXEL_SIZE_RANGE_NM == (1e-3, 1e6)


def test_import_pulls_in_neither_torch_nor_matplotlib() -> None:
    """``import sem_metrology`` (and the CLI module, before parsing) stay light."""
    code = (
        "import sys, sem_metrology, sem_metrology.cli; "
        "heavy = [m for m in ('torch', 'matplotlib', 'lpips', 'pyiqa', 'skimage', 'scipy.signal') "
        "if m in sys.modules]; print(heavy)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, encoding="utf-8", check=True
    )
    assert out.stdout.strip() == "[]"
    # Names still resolve on first use.
    code = "import sem_metrology as s; print(s.measure_lines.__name__, s.psnr.__name__)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, encoding="utf-8", check=True
    )
    assert out.stdout.split() == ["measure_lines", "psnr"]


def test_folder_progress_bar_only_on_a_terminal(tmp_path, line_tif, capsys, monkeypatch):
    folder = _folder(tmp_path, line_tif)
    argv = ["lines", str(folder), "--pixel-size-nm", "0.8", "--csv"]
    assert main(argv) == 0
    assert "sem-measure: 100%" not in capsys.readouterr().err  # piped: no bar
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert "sem-measure: 100%" in err and "4/4" in err  # every image below the folder


@pytest.mark.parametrize(
    ("target", "argv"),
    [
        ("image", ["--report", "{file}/r.png"]),
        ("image", ["--output", "{file}/sub/r.json"]),
        ("image", ["--report", "{file}/"]),
        ("folder", ["--report", "{file}/reports/"]),
        ("folder", ["--output", "{file}/table.csv"]),
    ],
)
def test_an_output_below_a_file_is_refused_before_any_image_is_measured(
    tmp_path, line_tif, target, argv
):
    """An output that cannot be created (a file stands where its folder would be) is one line,
    exit 2, before an image is read, measured or drawn (seconds for a folder), not afterwards."""
    blocker = tmp_path / "notes.txt"
    blocker.write_text("keep me")
    image = str(_folder(tmp_path, line_tif)) if target == "folder" else line_tif
    argv = ["lines", image, "--pixel-size-nm", "0.8", *(a.format(file=blocker) for a in argv)]
    run = main_in_fresh_interpreter(
        "sem_metrology.cli", argv, watch=("sem_metrology.lines", "matplotlib")
    )
    assert (run.status, run.loaded, run.stdout) == (2, [], []), run
    err = run.stderr
    assert len(err) == 1 and err[0].startswith("sem-measure: error: "), err
    assert f"{blocker} is a file, not a folder" in err[0]
    assert blocker.read_text() == "keep me"


def test_folder_mode_reads_linked_folders_and_names_a_loop(tmp_path, line_tif, capsys) -> None:
    """A folder is read as ``sem train --data`` reads one: a linked folder's images are
    measured (they were passed over, and a folder of links held "no images"); a link loop is
    not followed and named in one warning."""
    root, lab = tmp_path / "corpus", tmp_path / "other_disk" / "lab A"
    lab.mkdir(parents=True)
    shutil.copy(line_tif, lab / "lines.tif")
    root.mkdir()
    symlink_or_skip(root / "lab A", lab, target_is_directory=True)
    symlink_or_skip(root / "loop", root, target_is_directory=True)
    out = tmp_path / "table.csv"
    argv = ["lines", str(root), "--pixel-size-nm", "0.8", "--csv", "--output", str(out)]
    assert main(argv) == 0
    (row,) = csv.DictReader(io.StringIO(out.read_text()))
    assert row["path"] == "lab A/lines.tif" and int(row["n_lines"]) == 8
    warned = [line for line in capsys.readouterr().err.splitlines() if "not followed" in line]
    assert warned == [
        f"sem-measure: warning: 1 linked folder(s) under {root} not followed: loop (a link "
        f"loop: it leads to {os.path.realpath(root)}, which holds it)"
    ]

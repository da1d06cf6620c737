"""``sem demo --images DIR`` on the real resist-line micrograph: pixel size and information bar
come from the file, and the focused reference is measured as sem-metrology measures it."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np
import pytest
from sem_metrology import measure_lines
from sem_physics import crop_info_bar, read_image
from sem_physics.testing import symlink_or_skip
from sem_train.cli import main


def test_demo_on_a_real_line_image(tmp_path):
    real = os.environ.get("SEM_REAL_DATA")
    if not real:
        pytest.skip("SEM_REAL_DATA not set")
    src = Path(real) / "lines_euv_resist_0p827nm.tif"
    folder = tmp_path / "mine"
    folder.mkdir()
    symlink_or_skip(folder / src.name, src)
    out = tmp_path / "report"
    argv = ["demo", "--images", str(folder), "--out", str(out), "--n-train", "0"]
    argv += ["--methods", "input,richardson-lucy", "--metrics", "psnr,ssim"]
    # One worker: the demo's two worker processes each import torch before any work, and give
    # the sequential tables (test_methods_in_worker_processes_give_the_sequential_tables).
    argv += ["--settings", "midpoint", "--workers", "1", "--no-progress"]
    assert main(argv) == 0

    img = read_image(src)
    assert img.pixel_size_nm == pytest.approx(0.827, rel=1e-3)
    focused = crop_info_bar(img.data, rows=img.info_bar_rows)
    # the demo preset measures in the truth convention (sem benchmark defaults to smile)
    expected = measure_lines(focused, img.pixel_size_nm, convention="truth")
    summary = json.loads((out / "results.json").read_text())["metrology_summary"]
    ref = next(s for s in summary if s["method"] == "focused")
    assert ref["columns"]["cd_nm"]["mean"] == pytest.approx(expected.cd_nm, rel=1e-6)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["references"][0]["shape"] == list(focused.shape)
    assert manifest["references"][0]["pixel_size_nm"] == pytest.approx(img.pixel_size_nm)
    assert manifest["references"][0]["pixel_size_source"] == img.pixel_size_source
    with open(out / "metrology_per_image.csv", encoding="utf-8") as f:
        rows = {r["method"]: r for r in csv.DictReader(f)}
    # CSV values are ASCII (a spreadsheet opens them as written): the control row spelled so
    assert set(rows) == {"focused", "defocused input", "control (y - b)/a", "richardson-lucy"}
    for method, r in rows.items():  # every row measured: ~37 resist lines
        assert not r["failed"], f"{method}: {r['failed']}"
        assert np.isfinite(float(r["cd_nm"])) and int(r["n_lines"]) >= 30
    # Richardson-Lucy deconvolves: closer to the focused image than the defocused input
    with open(out / "quality_per_image.csv", encoding="utf-8") as f:
        psnr = {r["method"]: float(r["psnr"]) for r in csv.DictReader(f) if r["psnr"]}
    assert psnr["richardson-lucy"] > psnr["defocused input"] + 1.0, psnr

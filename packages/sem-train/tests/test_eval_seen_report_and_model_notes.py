"""What a benchmark report says of a method evaluated on its checkpoint's training images and of
the model a method loaded:

* the row's † on the method's name in every table that names it (the per-setting sections and
  the Methods table too), ``seen_in_training`` in the per-image CSVs, and report.md's footnote
  saying what † means;
* what the loaded model says of itself (a dense checkpoint) warned once per method on stderr,
  as ``sem restore`` says it, and listed in the Methods section.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from sem_models import RestorationModel, build_mae, save_model
from sem_models.testing import MICRO_MAE
from sem_train.evaluation import run_benchmark
from sem_train.evaluation.config import make_config

MARK = "†"
DENSE = "is a dense model (no Mixture-of-Experts)"


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> tuple[Path, str, Path]:
    """A benchmark (two settings) of a dense checkpoint whose run trained on img0 and img1:
    (report folder, stderr, run folder)."""
    import contextlib
    import io

    tmp = tmp_path_factory.mktemp("seen_report")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    ev = tmp / "eval"
    ev.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        tifffile.imwrite(ev / f"img{i}.tif", (rng.random((64, 64)) * 200 + 20).astype(np.uint8))
    run = tmp / "run"
    export = run / "checkpoints" / "best-00000010"
    torch.manual_seed(0)
    save_model(RestorationModel(build_mae("tiny", in_chans=1, **MICRO_MAE), residual=True), export)
    (run / "checkpoints" / "best.json").write_text(json.dumps({"dir": export.name}))
    split = {"kind": "finetune", "train": [str(ev / "img0.tif")]}
    (run / "data_split.json").write_text(json.dumps(split | {"validation": [str(ev / "img1.tif")]}))
    (run / "run_info.json").write_text(json.dumps({"argv": ["sem", "train", "finetune"]}))
    window = {"window_px": 32, "overlap_px": 8, "device": "cpu"}
    cfg = make_config(
        {
            "out": str(tmp / "bench"),
            "images": str(ev),
            "crop_fraction": 0.0,
            "n_train": 0,
            "n_val": 0,
            "n_eval": 3,
            "settings": ["random", "midpoint"],
            "methods": ["input", "sem-foundation"],
            "method_config": {"sem-foundation": {"checkpoint_dir": str(run), **window}},
            "quality_metrics": ["psnr"],
            "figure_cases": 0,
        }
    )
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            out = run_benchmark(cfg, progress=False).parent
    finally:
        torch.set_num_threads(threads)
    return out, err.getvalue(), run


def _tables(md: str) -> list[list[str]]:
    """Every markdown table of ``md`` as its lines."""
    tables, current = [], []
    for line in md.splitlines():
        if line.startswith("|"):
            current.append(line)
        elif current:
            tables.append(current)
            current = []
    return tables + ([current] if current else [])


def test_every_table_marks_the_method_evaluated_on_its_training_images(report):
    out, _, _ = report
    md = (out / "report.md").read_text(encoding="utf-8")
    assert "### Setting `random`" in md and "### Setting `midpoint`" in md
    naming = [t for t in _tables(md) if any("sem-foundation" in row for row in t)]
    assert len(naming) >= 5  # summary, quality, two settings, methods
    for table in naming:
        rows = [r for r in table if "sem-foundation" in r]
        assert all(f"| sem-foundation {MARK} " in r for r in rows), table
        assert not any(f"defocused input {MARK}" in r for r in table)
    # the footnote says what the mark means
    foot = md.rstrip().splitlines()[-1]
    assert foot.startswith(f"{MARK} after a method's name") and "trained or validated on" in foot
    with open(out / "quality_per_image.csv", encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh))
    flagged = {(r["method"], r["image"]) for r in rows if r["seen_in_training"] == "True"}
    assert flagged == {("sem-foundation", "img0"), ("sem-foundation", "img1")}
    assert {r["seen_in_training"] for r in rows} == {"True", "False"}


def test_metrology_tables_mark_the_method_too():
    from sem_train.evaluation.results import REFERENCE_NAME, MetrologyRow
    from sem_train.evaluation.tables import (
        metrology_markdown,
        metrology_per_image_markdown,
        metrology_summary,
    )

    rows = [
        MetrologyRow(method=m, case_id=f"{i}@r", image=i, setting="r", n_lines=3, cd_nm=10.0)
        for m in (REFERENCE_NAME, "m")
        for i in ("a", "b")
    ]
    marks = {"m": MARK}
    summary = metrology_markdown([metrology_summary(rows, n) for n in (REFERENCE_NAME, "m")], marks)
    per_image = metrology_per_image_markdown(rows, [REFERENCE_NAME, "m"], ["a@r", "b@r"], marks)
    for md in (summary, per_image):
        assert f"| m {MARK} |" in md and f"{REFERENCE_NAME} {MARK}" not in md


def test_the_models_notes_are_warned_once_and_listed_in_the_methods_section(report):
    out, err, run = report
    said = [x for x in err.splitlines() if x.startswith("sem: note: sem-foundation: ")]
    assert len(said) == 1 and DENSE in said[0] and str(run) in said[0]
    md = (out / "report.md").read_text(encoding="utf-8")
    methods = md.split("## Methods", 1)[1].split("## Figures", 1)[0]
    listed = [x for x in methods.splitlines() if x.startswith(f"- sem-foundation {MARK}: ")]
    assert len(listed) == 1 and DENSE in listed[0]
    rows = {m["method"]: m for m in json.loads((out / "results.json").read_text())["methods"]}
    assert any(DENSE in n for n in rows["sem-foundation"]["model_notes"])
    assert rows["defocused input"]["model_notes"] == []

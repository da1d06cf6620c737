"""End to end: ``sem demo --quick`` on CPU writes a complete report whose numbers are all finite
or explicitly marked as failed/unavailable."""

from __future__ import annotations

import csv
import json
import math
import re

import pytest
from sem_train.cli import main

_ALLOWED_TEXT = {"n/a", "—", "✗"}
_NUM = re.compile(r"^\*{0,2}(-?[0-9.]+(?:e[-+]?\d+)?)(?: ± (-?[0-9.]+(?:e[-+]?\d+)?))?\*{0,2}$")


def _table_cells(md: str) -> list[tuple[str, list[str], list[str]]]:
    """(header, row cells) of every markdown table row below a header separator."""
    rows, header = [], None
    lines = md.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("|---"):
            header = [c.strip() for c in lines[i - 1].strip("|").split("|")]
            continue
        if (
            line.startswith("| ")
            and header is not None
            and not lines[i + 1 if i + 1 < len(lines) else i].startswith("|---")
        ):
            rows.append((line, header, [c.strip() for c in line.strip().strip("|").split("|")]))
        elif not line.startswith("|"):
            header = None
    return rows


@pytest.fixture(scope="module")
def demo_report(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "report"
    status = main(["demo", "--quick", "--out", str(out), "--no-progress"])
    assert status == 0
    return out


def test_demo_writes_every_report_file(demo_report, capsys):
    out = demo_report
    for name in (
        "report.md",
        "manifest.json",
        "results.json",
        "methods.csv",
        "quality_per_image.csv",
        "quality_summary.csv",
        "metrology_per_image.csv",
        "metrology_summary.csv",
    ):
        assert (out / name).is_file(), name
    panels = sorted((out / "panels").glob("*.png"))
    kinds = {p.stem.split("_")[0] for p in panels}
    assert {"lines", "contacts", "texture"} <= kinds
    assert list((out / "edges").glob("lines_*.png")) and list((out / "psd").glob("*.png"))
    md = (out / "report.md").read_text()
    for png in panels:  # every panel is linked from the report
        assert f"panels/{png.name}" in md
    results = json.loads((out / "results.json").read_text())
    methods = [m["method"] for m in results["methods"]]
    assert "defocused input" in methods
    manifest = json.loads((out / "manifest.json").read_text())
    assert len(manifest["cases"]) == 3 and all(
        len(c["input_sha256"]) == 64 for c in manifest["cases"]
    )


def test_every_table_number_is_finite_or_marked(demo_report):
    md = (demo_report / "report.md").read_text()
    results = json.loads((demo_report / "results.json").read_text())
    unavailable = results["quality_unavailable"]
    rows = _table_cells(md)
    assert len(rows) >= 4
    n_numbers = 0
    for line, header, cells in rows:
        if header[0] != "method" or header[1] == "status":  # the methods/timing table
            continue
        assert len(cells) == len(header), line
        for col, cell in zip(header[1:], cells[1:], strict=True):
            if cell in _ALLOWED_TEXT:
                if cell == "✗":
                    assert "✗" in md.split(line, 1)[1], f"failure in {line!r} has no reason"
                if cell == "n/a" and col.split()[0] in ("LPIPS", "NIQE"):
                    name = col.split()[0].lower()
                    assert unavailable.get(name), f"{col} n/a without reason"
                continue
            m = _NUM.match(cell)
            assert m, f"unexpected cell {cell!r} in column {col!r}: {line}"
            assert all(math.isfinite(float(g)) for g in m.groups() if g is not None)
            n_numbers += 1
    assert n_numbers >= 6
    # The CSVs: every filled numeric field is finite; failed rows carry a reason.
    for name in ("quality_per_image.csv", "metrology_per_image.csv"):
        with open(demo_report / name) as f:
            for r in csv.DictReader(f):
                if r.get("status") == "failed":
                    assert r["reason"], f"{name}: failed row without a reason: {r}"
                for k, v in r.items():
                    try:
                        x = float(v)
                    except (TypeError, ValueError):
                        continue
                    assert math.isfinite(x), f"{name}: {k}={v}"


def test_demo_bad_input_is_one_line_error(tmp_path, capsys):
    status = main(["demo", "--images", str(tmp_path / "missing"), "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err.strip().splitlines()
    assert (
        status == 2 and len(err) == 1 and err[0].startswith("sem: error:") and "missing" in err[0]
    )

"""What a ``sem benchmark`` report says beside its numbers: the bottom rows cropped without an
info bar, the metrology convention, the non-default method settings, how its means and stds
are taken; and the config mistakes refused in one line (a key given twice, a ``--set`` given
twice, an empty ``--methods``, a split the folder cannot give)."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import yaml
from sem_physics import write_samples
from sem_physics.io import write_image
from sem_train.cli import main
from sem_train.evaluation import load_benchmark_config, run_benchmark
from sem_train.evaluation.config import parse_method_settings
from sem_train.evaluation.report import method_settings_text
from sem_train.evaluation.sources import load_images


def _write_config(path, images, out, **extra):
    body = {
        "protocol": "s2s",
        "images": str(images),
        "out": str(out),
        "n_train": 0,
        "n_val": 0,
        "n_eval": 10,
        "settings": ["midpoint"],
        "methods": ["input", "wiener"],
        "pixel_size_nm": 0.8,
        "figure_cases": 0,
        "quality_metrics": ["psnr", "psnr_affine", "ssim"],
        "metrology_convention": "truth",
        **extra,
    }
    path.write_text(yaml.safe_dump(body))
    return path


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One small run on files without an info bar, with a non-default Wiener balance."""
    root = tmp_path_factory.mktemp("notes")
    images = root / "focused"
    write_samples(images, n_per_kind=1, shape=(96, 112), seed=3)
    cfg = _write_config(
        root / "bench.yaml",
        images,
        root / "bench",
        method_config={"wiener": {"balance": 0.05}},
    )
    report = run_benchmark(load_benchmark_config(cfg), progress=False)
    return report.parent, images


def test_a_crop_without_an_info_bar_is_stated_with_rows_and_the_way_out(run, tmp_path):
    out, images = run
    n = len(list(images.glob("*.png")))
    md = (out / "report.md").read_text()
    rows = round(0.0667 * 96)
    assert (
        f"- Info bar: none was found in {n} of {n} image file(s), and `crop_fraction` (0.0667) "
        f"cropped their bottom {rows} row(s) of 96 anyway" in md
    )
    assert "`crop_fraction: 0`" in md
    manifest = json.loads((out / "manifest.json").read_text())
    assert {tuple(r["shape"]) for r in manifest["references"]} == {(96 - rows, 112)}
    # crop_fraction: 0 keeps every row, and then the report has nothing to say about it
    loaded, _ = load_images(sorted(images.glob("*.png")), crop_fraction=0.0)
    assert all(im.data.shape == (96, 112) and im.guessed_crop_rows == 0 for im in loaded)
    # a file too small after the guessed crop says that crop, not an "info-bar crop"
    tiny = tmp_path / "tiny.tif"
    write_image(tiny, np.full((16, 20), 100, np.uint8))
    _, skipped = load_images([tiny], crop_fraction=0.0667)
    assert "after cropping its bottom 1 row(s) (crop_fraction 0.0667; no info bar was found)" in (
        skipped[0].reason
    )
    assert "info-bar crop" not in skipped[0].reason


def test_the_report_and_table_name_the_metrology_convention(run):
    out, _ = run
    table = (out / "table.md").read_text()
    pasted, _, notes = table.partition("\n\n")  # the README pastes up to the blank line
    assert pasted.startswith("| method | PSNR (dB) | PSNR affine-matched (dB) |")
    assert all(line.startswith("|") for line in pasted.splitlines())
    assert "CD(MAE), Avg(MAE): metrology convention `truth`" in notes
    assert ("✗: not on every case" in notes) == ("✗" in pasted)  # a pasted ✗ is explained
    md = (out / "report.md").read_text()
    assert table in md
    assert "metrology convention `truth` (edges at each image's own half-level)" in md


def test_non_default_method_settings_are_listed(run):
    out, _ = run
    with open(out / "methods.csv", encoding="utf-8") as f:
        rows = {r["method"]: r for r in csv.DictReader(f)}
    assert rows["wiener"]["settings"] == "balance=0.05"
    assert rows["defocused input"]["settings"] == ""
    md = (out / "report.md").read_text()
    assert "| wiener | ok | balance=0.05 |" in md
    assert "Settings given: wiener: balance=0.05." in (out / "table.md").read_text()
    assert json.loads((out / "results.json").read_text())["methods"][-1]["settings"] == (
        "balance=0.05"
    )
    # a setting given at its default value is no setting of the row
    from sem_baselines import restorer_config

    default = restorer_config("wiener").model_dump()["balance"]
    assert method_settings_text("wiener", {"balance": default}) is None
    assert method_settings_text("wiener", {}) is None


def test_captions_say_how_the_means_and_the_bold_are_taken(run):
    out, _ = run
    md = (out / "report.md").read_text()
    assert "mean ± std over cases (population std, ddof 0)" in md
    assert "the control and the focused reference are not ranked" in md
    assert "mean ± std over cases (line image × setting, population std)" in md
    assert "mean ± std over images" not in md
    assert "PSD (nm) I1" in md or "| PSD (nm) |" in md


def test_a_key_given_twice_is_refused_with_its_line(tmp_path, capsys):
    images = tmp_path / "images"
    images.mkdir()
    cfg = tmp_path / "dup.yaml"
    cfg.write_text(f"images: {images}\nseed: 0\nn_train: 0\nseed: 5\n")
    assert main(["benchmark", "--config", str(cfg)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        f"sem: error: {cfg}, line 4: duplicate key 'seed' (first on line 2); give each key once"
    ]
    nested = tmp_path / "nested.yaml"
    nested.write_text("method_config:\n  wiener:\n    balance: 0.1\n    balance: 0.2\n")
    with pytest.raises(ValueError, match=r"line 4: duplicate key 'method_config\.wiener\.balance'"):
        load_benchmark_config(nested)
    as_json = tmp_path / "dup.json"
    as_json.write_text('{"seed": 0,\n "seed": 1}')
    with pytest.raises(ValueError, match=r"line 2: duplicate key 'seed' \(first on line 1\)"):
        load_benchmark_config(as_json)


def test_a_set_given_twice_and_an_empty_methods_are_refused(tmp_path, capsys):
    with pytest.raises(
        ValueError, match=r"--set wiener\.balance is given twice \(0\.1, then 0\.2\)"
    ):
        parse_method_settings(["wiener.balance=0.1", "wiener.balance=0.2"])
    assert parse_method_settings(["wiener.balance=0.1", "bm3d.profile=lc"]) == {
        "wiener": {"balance": 0.1},
        "bm3d": {"profile": "lc"},
    }
    images = tmp_path / "images"
    images.mkdir()
    cfg = _write_config(tmp_path / "bench.yaml", images, tmp_path / "out")
    assert main(["benchmark", "--config", str(cfg), "--methods", ""]) == 2
    assert "--methods: no method name given" in capsys.readouterr().err


def test_a_split_error_names_the_config_and_what_to_set(tmp_path, capsys):
    images = tmp_path / "images"
    write_samples(images, n_per_kind=1, shape=(96, 112), seed=3)
    n = len(list(images.glob("*.png")))
    cfg = _write_config(tmp_path / "bench.yaml", images, tmp_path / "out", n_train=10, n_val=2)
    assert main(["benchmark", "--config", str(cfg), "--no-progress"]) == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.startswith(f"sem: error: {cfg}: {n} images cannot give 10 training")
    assert "set shrink_split: true" in line and "n_train: 0 and n_val: 0" in line
    # a method that trains needs the training images: no n_train: 0 hint then
    cfg = _write_config(
        tmp_path / "train.yaml", images, tmp_path / "out", n_train=10, methods=["input", "n2v"]
    )
    assert main(["benchmark", "--config", str(cfg), "--no-progress"]) == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert "set shrink_split: true" in line and "n_train: 0" not in line


def test_a_duplicate_key_is_named_beside_the_error_of_the_value_kept(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    cfg = tmp_path / "dup.yaml"
    cfg.write_text(f"images: {images}\nmethods: [input]\nmethods: [nope]\n")
    with pytest.raises(ValueError, match=r"nope.*; and .*line 3: duplicate key 'methods'") as err:
        load_benchmark_config(cfg)
    assert "\n" not in str(err.value)


def test_s2r_notes_the_guessed_crop_of_each_folder(tmp_path):
    from sem_train.evaluation.protocols import build_s2r

    write_samples(tmp_path / "defocused", n_per_kind=1, shape=(96, 112), seed=3)
    write_samples(tmp_path / "focused", n_per_kind=1, shape=(96, 112), seed=4)
    notes: list[str] = []
    _, cases = build_s2r(tmp_path / "defocused", tmp_path / "focused", crop_notes=notes)
    assert cases and len(notes) == 2
    assert "defocused image file(s)" in notes[0] and "focused image file(s)" in notes[1]
    notes.clear()
    build_s2r(tmp_path / "defocused", tmp_path / "focused", crop_fraction=0.0, crop_notes=notes)
    assert notes == []


def test_a_table_with_a_cross_says_what_it_means(monkeypatch):
    from types import SimpleNamespace

    from sem_train.evaluation import report as report_mod

    crossed = "| method | PSNR (dB) |\n|---|---|\n| zero-shot | ✗ |\n"
    monkeypatch.setattr(report_mod, "readme_table", lambda q, m: crossed)
    inp = SimpleNamespace(config=None, results=[])
    text = report_mod._summary_table(inp, [], [], {})
    assert text.startswith(crossed)
    assert "✗: not on every case" in text and "report.md says why" in text
    monkeypatch.setattr(report_mod, "readme_table", lambda q, m: crossed.replace("✗", "20.00"))
    assert "✗:" not in report_mod._summary_table(inp, [], [], {})

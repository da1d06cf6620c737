"""Result model, invalid inputs, comparison, report and the ``sem-measure`` command line."""

from __future__ import annotations

import csv
import io
import json
import math
import re

import numpy as np
import pytest
import tifffile
from sem_metrology import (
    LineMeasurement,
    MetrologyInputError,
    compare_measurements,
    make_line_image,
    measure_lines,
    profile_psd,
    psd_variance,
)
from sem_metrology.cli import main
from sem_metrology.report import save_line_report


@pytest.fixture(scope="module")
def sample():
    return make_line_image(n_lines=10, shape=(192, 320), sigma_nm=1.0, seed=11)


@pytest.fixture(scope="module")
def result(sample) -> LineMeasurement:
    return measure_lines(sample.image, sample.pixel_size_nm, convention="truth")


@pytest.fixture(scope="module")
def smile_result(sample) -> LineMeasurement:
    return measure_lines(sample.image, sample.pixel_size_nm, convention="smile")


def _no_nan(obj) -> bool:
    if isinstance(obj, float):
        return math.isfinite(obj)
    if isinstance(obj, dict):
        return all(_no_nan(v) for v in obj.values())
    if isinstance(obj, list):
        return all(_no_nan(v) for v in obj)
    return True


def test_json_has_required_fields_and_no_nan(result: LineMeasurement) -> None:
    data = json.loads(result.to_json())
    for key in (
        "n_lines",
        "cd_nm",
        "cd_std_nm",
        "lwr_nm",
        "ler_nm",
        "lwr_unbiased_nm",
        "ler_unbiased_nm",
        "correlation_length_nm",
        "roughness_exponent",
        "pixel_size_nm",
        "psd_frequency_per_nm",
        "psd_lwr_nm3",
        "psd_ler_nm3",
    ):
        assert data[key] is not None, key
    assert "leading_edges_px" not in data
    assert _no_nan(data)
    full = LineMeasurement.model_validate_json(result.to_json(include_edges=True))
    assert full == result
    assert np.asarray(full.leading_edges_px).shape == (result.n_lines, result.n_rows)


def test_psd_in_result_obeys_parseval(result: LineMeasurement) -> None:
    f = np.asarray(result.psd_frequency_per_nm)
    assert psd_variance(f, result.psd_lwr_nm3) == pytest.approx((result.lwr_nm / 3) ** 2, rel=1e-9)
    assert psd_variance(f, result.psd_ler_nm3) == pytest.approx((result.ler_nm / 3) ** 2, rel=1e-9)
    # Independent recomputation from the stored edges.
    widths = result.widths_nm()
    f2, p2 = profile_psd(widths, result.pixel_size_nm / math.cos(math.radians(result.tilt_deg)))
    assert np.allclose(f2, f) and np.allclose(p2, result.psd_lwr_nm3)
    assert widths.mean(axis=1) == pytest.approx(result.line_cd_nm)


def test_smile_metrics_are_smile_definitions_of_its_edges(smile_result) -> None:
    """CD from per-line medians, LWR/LER as the mean of per-profile 3 sigma (SMILE's arrays),
    recomputed from the stored edges; the PSD still integrates to the pooled variance."""
    m = smile_result
    assert m.valid and m.convention == "smile" and m.n_lines == 10
    widths = m.widths_nm()
    line_cd = np.median(widths, axis=1)
    assert m.cd_nm == pytest.approx(line_cd.mean(), rel=1e-12)
    assert m.cd_std_nm == pytest.approx(line_cd.std(), rel=1e-12)
    assert m.lwr_nm == pytest.approx(3 * widths.std(axis=1).mean(), rel=1e-12)
    px = m.pixel_size_nm
    edges = np.vstack([m.leading_edges_px, m.trailing_edges_px]) * px
    assert m.ler_nm == pytest.approx(3 * edges.std(axis=1).mean(), rel=1e-12)
    f = np.asarray(m.psd_frequency_per_nm)
    pooled = np.mean(widths.var(axis=1))
    assert psd_variance(f, m.psd_lwr_nm3) == pytest.approx(pooled, rel=1e-9)
    assert pooled >= (m.lwr_nm / 3) ** 2  # mean of sigmas <= root of mean variance


def test_every_result_records_convention_tone_crop_and_errors(result, smile_result) -> None:
    for m in (result, smile_result):
        data = json.loads(m.to_json())
        assert data["convention"] in ("smile", "truth") and data["tone"] == "bright"
        assert data["tone_source"].startswith("auto") and "crop" in data
        for key in ("cd_se_nm", "cd_std_se_nm", "lwr_se_nm", "ler_se_nm", "lwr_unbiased_se_nm"):
            assert data[key] is not None and data[key] > 0, key
        row = next(csv.DictReader(io.StringIO(m.to_csv("summary"))))
        assert row["convention"] == m.convention and "fit_flags" in row and "cd_se_nm" in row
    # The CD standard error is the spread of line CDs over sqrt(n) (bootstrap, 20 % slack).
    cds = np.asarray(result.line_cd_nm)
    expected = cds.std(ddof=1) / np.sqrt(cds.size)
    assert result.cd_se_nm == pytest.approx(expected, rel=0.2)


def test_csv_outputs(result: LineMeasurement) -> None:
    rows = list(csv.DictReader(io.StringIO(result.to_csv("summary"))))
    assert len(rows) == 1 and float(rows[0]["cd_nm"]) == pytest.approx(result.cd_nm)
    lines = list(csv.DictReader(io.StringIO(result.to_csv("lines"))))
    assert len(lines) == result.n_lines
    assert float(lines[0]["cd_nm"]) == pytest.approx(result.line_cd_nm[0], abs=1e-4)


def test_compare_measurements(result: LineMeasurement) -> None:
    same = compare_measurements(result, result)
    assert same["avg_abs_error"] == 0.0 and same["cd_abs_error_nm"] == 0.0
    shifted = result.model_copy(update={"cd_nm": result.cd_nm + 0.5, "ler_nm": result.ler_nm - 0.1})
    d = compare_measurements(shifted, result)
    assert d["abs_error_cd_nm"] == pytest.approx(0.5)
    assert d["abs_error_ler_nm"] == pytest.approx(0.1)
    assert d["avg_abs_error"] == pytest.approx(0.6 / 5)
    bad = result.model_copy(update={"valid": False})
    assert compare_measurements(bad, result)["avg_abs_error"] is None
    with pytest.raises(ValueError, match="not comparable"):
        compare_measurements(result, result, metrics=("psnr",))
    other = result.model_copy(update={"convention": "smile"})
    with pytest.raises(MetrologyInputError, match="same convention"):
        compare_measurements(other, result)


@pytest.mark.parametrize(
    ("image", "reason"),
    [
        (np.full((64, 64), 80.0), "constant"),
        (np.full((64, 64), 255, dtype=np.uint8), "saturated"),
        (np.full((64, 64), 128, dtype=np.uint8), "constant image: every pixel is 128"),
        (np.random.default_rng(0).normal(100, 10, (128, 128)), "no measurable lines"),
    ],
)
def test_unmeasurable_images_are_flagged_not_nan(image: np.ndarray, reason: str) -> None:
    m = measure_lines(image, 1.0)
    assert not m.valid and reason in m.reason
    assert m.cd_nm is None and m.lwr_nm is None and m.n_lines == 0
    assert _no_nan(json.loads(m.to_json()))


def test_too_few_rows_flagged(sample) -> None:
    m = measure_lines(sample.image[:10], sample.pixel_size_nm)
    assert not m.valid and "too few rows" in m.reason


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"image": np.zeros((4, 4, 3))}, "2-D grayscale"),
        ({"image": np.full((32, 32), np.nan)}, "NaN"),
        ({"image": np.zeros((0, 0))}, r"image is empty, shape \(0, 0\)"),
        ({"image": np.zeros((0, 10))}, "image is empty"),
        ({"image": np.zeros((32, 32)), "pixel_size_nm": None}, "pixel_size_nm is required"),
        ({"image": np.zeros((32, 32)), "pixel_size_nm": -1.0}, "physical range"),
        ({"image": np.zeros((32, 32)), "pixel_size_nm": 1e-30}, "1 pm .. 1 mm"),
        ({"image": np.zeros((32, 32)), "pixel_size_nm": 2e6}, "physical range"),
        ({"image": np.zeros((32, 32)), "convention": "matlab"}, "convention"),
        ({"image": np.zeros((32, 32)), "colour": "red"}, "unknown option"),
        ({"image": np.zeros((32, 32)), "roi": (0, 40, 0, 10)}, "roi"),
        (
            {"image": np.zeros((32, 32)), "threshold": 1.5},
            re.escape("option threshold must be in (0, 1), got 1.5"),
        ),
    ],
)
def test_bad_arguments_raise(kwargs: dict, match: str) -> None:
    kwargs = {"pixel_size_nm": 1.0, **kwargs}
    with pytest.raises(MetrologyInputError, match=match):
        measure_lines(**kwargs)


def test_metadata_pixel_size_is_used_and_reported(sample) -> None:
    class Image:
        data = sample.image
        pixel_size_nm = sample.pixel_size_nm
        pixel_size_source = "tiff tag"

    m = measure_lines(Image())
    assert m.pixel_size_nm == sample.pixel_size_nm and "tiff tag" in m.pixel_size_source
    assert measure_lines(Image(), 1.0).pixel_size_source == "argument"


def test_report_png(tmp_path, sample, result) -> None:
    out = save_line_report(result, sample.image, tmp_path / "r.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _tif(tmp_path, image) -> str:
    path = tmp_path / "lines.tif"
    tifffile.imwrite(path, np.clip(image, 0, 255).astype(np.uint8))
    return str(path)


def test_cli_lines_json_report_and_exit_codes(tmp_path, sample, capsys) -> None:
    path = _tif(tmp_path, sample.image)
    report = tmp_path / "rep.png"
    code = main(
        [
            "lines",
            path,
            "--pixel-size-nm",
            str(sample.pixel_size_nm),
            "--json",
            "--info-bar",
            "none",
            "--report",
            str(report),
        ]
    )
    out, err = capsys.readouterr()
    assert code == 0 and report.is_file()
    assert err.strip() == f"sem-measure: note: report: {report}"  # stdout stays pure JSON
    data = json.loads(out)
    assert data["n_lines"] == 10 and data["pixel_size_source"] == "command line"
    assert data["convention"] == "smile" and data["crop"] is None
    api = measure_lines(tifffile.imread(path), sample.pixel_size_nm, convention="smile")
    assert data["cd_nm"] == pytest.approx(api.cd_nm, abs=1e-9)
    truth_argv = ["lines", path, "--pixel-size-nm", str(sample.pixel_size_nm), "--json"]
    assert main([*truth_argv, "--convention", "truth"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["convention"] == "truth"
    assert data["cd_nm"] == pytest.approx(sample.truth.cd_nm, abs=0.1)
    # CSV summary
    assert main(["lines", path, "--pixel-size-nm", "0.8", "--csv", "--info-bar", "none"]) == 0
    assert "cd_nm" in capsys.readouterr().out
    # Plain text: the summary's numbers to 6 significant digits
    assert main(["lines", path, "--pixel-size-nm", "0.8", "--info-bar", "none"]) == 0
    lines = dict(ln.split(": ", 1) for ln in capsys.readouterr().out.splitlines())
    assert int(lines["n_lines"]) == 10
    cd = measure_lines(sample.image.clip(0, 255).astype(np.uint8), 0.8).cd_nm
    assert lines["cd_nm"] == f"{cd:.6g}" and float(lines["cd_nm"]) == pytest.approx(cd, rel=1e-5)
    # --levels reaches the options and is recorded in the result
    argv = ["lines", path, "--pixel-size-nm", "0.8", "--levels", "percentile", "--json"]
    argv += ["--convention", "truth"]
    assert main([*argv, "--info-bar", "none"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["intensity_levels"] == "percentile" and data["n_lines"] == 10


def test_cli_warns_when_a_colour_image_was_combined_into_grey(tmp_path, sample, capsys) -> None:
    grey = np.clip(sample.image, 0, 255).astype(np.uint8)
    rgb = np.stack([grey, grey, np.roll(grey, 2, axis=1)], axis=-1)  # the channels differ
    path = tmp_path / "rgb.tif"
    tifffile.imwrite(path, rgb, photometric="rgb")
    assert main(["lines", str(path), "--pixel-size-nm", "0.8", "--json"]) == 0
    warnings = json.loads(capsys.readouterr().out)["warnings"]
    assert warnings[0].startswith("colour image") and "BT.601" in warnings[0]
    grey_path = _tif(tmp_path, sample.image)  # a grey file carries no such warning
    assert main(["lines", str(grey_path), "--pixel-size-nm", "0.8", "--json"]) == 0
    assert not any("colour" in w for w in json.loads(capsys.readouterr().out)["warnings"])


@pytest.mark.parametrize(
    ("argv", "code", "message"),
    [
        (["lines", "/nonexistent/x.tif", "--pixel-size-nm", "1"], 2, "no such file or folder"),
        (["lines", "{tif}", "--pixel-size-nm", "-3"], 2, "outside the physical range"),
        (["lines", "{tif}", "--pixel-size-nm", "1e-30"], 2, "1 pm .. 1 mm"),
        (["lines", "{tif}", "--pixel-size-nm", "nan"], 2, "outside the physical range"),
        (["lines", "{tif}", "--pixel-size-nm", "1", "--roi", "0", "9999", "0", "5"], 2, "roi"),
        (["lines", "{tif}", "--report", "{tif}"], 2, "would be overwritten"),
        (
            ["lines", "{tif}", "--pixel-size-nm", "1", "--threshold", "2"],
            2,
            "must be in (0, 1), got 2",
        ),
        (
            ["lines", "{tif}", "--pixel-size-nm", "1", "--threshold", "nan"],
            2,
            "must be in (0, 1), got nan",
        ),
        (["contacts", "{tif}", "--pixel-size-nm", "1", "--threshold", "0"], 2, "--threshold"),
        (["lines", "{tif}", "--pixel-size-nm", "1", "--info-bar", "x"], 2, "--info-bar"),
        (["lines", "{tif}", "--pixel-size-nm", "1", "--json", "--csv"], 2, "not allowed with"),
        (["lines", "{flat}", "--pixel-size-nm", "1"], 1, "not measurable"),
    ],
)
def test_cli_bad_input_one_line_on_stderr(tmp_path, sample, capsys, argv, code, message) -> None:
    tif = _tif(tmp_path, sample.image)
    flat = tmp_path / "flat.tif"
    tifffile.imwrite(flat, np.full((64, 64), 90, dtype=np.uint8))
    argv = [a.format(tif=tif, flat=flat) for a in argv]
    assert main(argv) == code
    err = capsys.readouterr().err.strip().splitlines()
    # One error line (no usage block, no traceback, no pydantic dump).
    assert len(err) == 1 and message in err[0] and err[0].startswith("sem-measure"), err
    assert "validation error" not in err[0] and "pydantic" not in err[0]


@pytest.mark.parametrize("command", ["lines", "contacts"])
def test_unknown_option_of_a_subcommand_is_reported_by_it(tmp_path, sample, capsys, command):
    """As the README says: ``sem-measure lines: error: ... (see sem-measure lines --help)``;
    one given before the subcommand is the top command's."""
    from pathlib import Path

    tif = _tif(tmp_path, sample.image)
    assert main([command, tif, "--pixel-size-nm", "1", "--bogus"]) == 2
    err = capsys.readouterr().err.splitlines()
    prog = f"sem-measure {command}"
    assert err == [f"{prog}: error: unrecognized arguments: --bogus (see {prog} --help)"]
    assert main([command, tif, "extra.tif"]) == 2
    assert capsys.readouterr().err.startswith(f"{prog}: error: unrecognized arguments: extra.tif")
    assert main(["--bogus", command, tif]) == 2
    assert capsys.readouterr().err.splitlines() == [
        "sem-measure: error: unrecognized arguments: --bogus (see sem-measure --help)"
    ]
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    said = "`sem-measure lines: error: ... (see sem-measure lines --help)` for a bad option"
    assert said in " ".join(readme.split())


def test_readme_example_runs(capsys) -> None:
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    code = readme.split("```python\n", 1)[1].split("```", 1)[0]
    exec(compile(code, "README.md", "exec"), {})
    first, second = capsys.readouterr().out.splitlines()[:2]
    n_lines, cd, cd_truth = (float(v) for v in first.split()[:3])
    assert n_lines == 20 and abs(cd - cd_truth) < 0.3
    n_holes, hole_cd, hole_cd_truth = (float(v) for v in second.split()[:3])
    assert n_holes > 10 and abs(hole_cd - hole_cd_truth) < 0.3


def test_readme_noise_ceiling_example_runs(capsys) -> None:
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    blocks = [b.split("```", 1)[0] for b in readme.split("```python\n")[1:]]
    code = next(b for b in blocks if "noise_ceiling_psnr" in b)
    exec(compile(code, "README.md", "exec"), {})
    words = capsys.readouterr().out.split()
    ceiling, perfect = float(words[0]), float(words[-2])
    assert abs(ceiling - 20 * np.log10(255 / 8.0)) < 0.5 and abs(ceiling - perfect) < 0.5


@pytest.mark.parametrize("where", ["before", "after"])
def test_debug_goes_before_or_after_the_subcommand_and_keeps_exit_2(tmp_path, capsys, where):
    missing = str(tmp_path / "nope.tif")
    assert main(["lines", missing]) == 2
    plain = capsys.readouterr().err
    argv = ["--debug", "lines", missing] if where == "before" else ["lines", missing, "--debug"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err
    assert err.strip().splitlines()[-1] == plain.strip()


def test_version_names_the_program_and_its_package(capsys) -> None:
    from importlib.metadata import version

    assert main(["--version"]) == 0
    expected = f"sem-measure {version('sem-metrology')} (sem-metrology)"
    assert capsys.readouterr().out.strip() == expected


def test_cli_lines_reads_the_pixel_size_of_an_imagej_tiff(tmp_path, sample, capsys) -> None:
    path = tmp_path / "fiji.tif"
    nm = sample.pixel_size_nm
    tifffile.imwrite(
        path,
        np.clip(sample.image, 0, 255).astype(np.uint8),
        description="ImageJ=1.54f\nunit=micron\n",
        metadata=None,
        resolution=(1e3 / nm, 1e3 / nm),
    )
    assert main(["lines", str(path), "--json", "--info-bar", "none"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["pixel_size_nm"] == pytest.approx(nm, rel=1e-6)
    assert data["pixel_size_source"] == "metadata (ImageJ description unit=micron and XResolution)"
    api = measure_lines(tifffile.imread(path), nm, convention="smile")
    assert data["cd_nm"] == pytest.approx(api.cd_nm, rel=1e-5)


def test_a_result_prints_briefly_with_its_lists_by_length(result: LineMeasurement) -> None:
    """Shown in a notebook cell, a measurement printed every edge position (1.4 million
    characters for the real image): long lists are shown by length, the values stay."""
    text = repr(result)
    assert len(text) < 5000
    assert f"leading_edges_px=<{len(result.leading_edges_px)} items>" in text
    assert f"cd_nm={result.cd_nm!r}" in text
    assert len(result.leading_edges_px) == result.n_lines > 8


def test_a_measurement_saved_before_lwr_psd_compares_like_a_new_one(result) -> None:
    """JSON written before ``lwr_psd_nm`` existed: it is filled in from the saved width PSD, so
    Avg(MAE) of ``compare_measurements`` is not lost."""
    import json

    old = json.loads(result.to_json())
    del old["lwr_psd_nm"]
    loaded = LineMeasurement.model_validate(old)
    assert loaded.lwr_psd_nm == pytest.approx(result.lwr_psd_nm, rel=1e-12)
    other = result.model_copy(update={"cd_nm": result.cd_nm + 0.5})
    assert compare_measurements(loaded, other)["avg_abs_error"] == pytest.approx(0.5 / 5)

"""``sem-measure --json`` says which input it measured (path, file and pixel hashes) and which
versions measured it, so that a result read months later can be traced to its file."""

from __future__ import annotations

import csv
import io
import json
import os
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest
import tifffile
from sem_metrology import (
    ContactMeasurement,
    LineMeasurement,
    make_contact_image,
    make_line_image,
)
from sem_metrology.cli import main
from sem_physics import DegradationParams, degrade_files, read_image
from sem_physics.protocol import file_sha256, pixels_sha256

PIXEL = ("--pixel-size-nm", "0.827")
BAR = 12  # bottom rows left out with --info-bar


@pytest.fixture(scope="module")
def line_tif(tmp_path_factory: pytest.TempPathFactory) -> Path:
    sample = make_line_image(n_lines=8, shape=(160, 256), sigma_nm=1.0, seed=4)
    path = tmp_path_factory.mktemp("prov") / "lines.tif"
    tifffile.imwrite(path, np.clip(sample.image, 0, 255).astype(np.uint8))
    return path


def _json(argv: list[str], capsys: pytest.CaptureFixture[str]) -> dict:
    assert main(argv) == 0, capsys.readouterr().err
    return json.loads(capsys.readouterr().out)


def _versions() -> dict[str, str]:
    return {name: metadata.version(name) for name in ("sem-metrology", "sem-physics")}


@pytest.mark.parametrize("convention", ["smile", "truth"])
def test_lines_json_records_the_input_and_the_versions(
    line_tif: Path, capsys: pytest.CaptureFixture[str], convention: str
) -> None:
    argv = ["lines", str(line_tif), *PIXEL, "--info-bar", str(BAR), "--json"]
    doc = _json([*argv, "--convention", convention], capsys)
    frame = read_image(line_tif).data  # float32 grey 0..255, the whole frame
    source = doc["source"]
    assert source["path"] == str(line_tif)  # as given
    assert source["sha256"] == file_sha256(line_tif)
    # the pixels measured: the frame read less the info bar's rows (before any roi)
    assert source["pixels_sha256"] == pixels_sha256(frame[: frame.shape[0] - BAR])
    assert source["shape"] == [frame.shape[0] - BAR, frame.shape[1]]
    assert source["cropped_rows"] == BAR
    assert source["frame_pixels_sha256"] == pixels_sha256(frame)  # the bar included
    assert source["frame_pixels_sha256"] != source["pixels_sha256"]
    versions = doc["versions"]
    assert {k: versions[k] for k in _versions()} == _versions()
    assert {"python", "numpy", "scipy"} <= set(versions)
    # every earlier field is still there, and the JSON loads back as the result model
    assert doc["valid"] is True and doc["crop"] == f"info bar: bottom {BAR} rows removed"
    loaded = LineMeasurement.model_validate_json(json.dumps(doc))
    assert loaded.source is not None and loaded.source.sha256 == source["sha256"]


def test_no_crop_the_two_pixel_hashes_agree_and_output_file_has_them(
    line_tif: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "m.json"
    argv = ["lines", str(line_tif), *PIXEL, "--info-bar", "none", "--json", "--output", str(out)]
    assert main(argv) == 0, capsys.readouterr().err
    source = json.loads(out.read_text(encoding="utf-8"))["source"]
    assert source["cropped_rows"] == 0
    assert source["pixels_sha256"] == source["frame_pixels_sha256"]
    assert source["pixels_sha256"] == pixels_sha256(read_image(line_tif).data)


def test_contacts_json_records_the_input_and_the_versions(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "contacts.tif"
    tifffile.imwrite(path, np.clip(make_contact_image(seed=1).image, 0, 255).astype(np.uint8))
    doc = _json(["contacts", str(path), "--pixel-size-nm", "0.9", "--json"], capsys)
    assert doc["source"]["path"] == str(path)
    assert doc["source"]["sha256"] == file_sha256(path)
    assert doc["source"]["pixels_sha256"] == pixels_sha256(read_image(path).data)
    assert {k: doc["versions"][k] for k in _versions()} == _versions()
    assert ContactMeasurement.model_validate_json(json.dumps(doc)).source is not None


def test_folder_json_rows_record_their_input_csv_stays_flat(
    line_tif: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "batch"
    (folder / "sub").mkdir(parents=True)
    good = np.asarray(tifffile.imread(line_tif))
    tifffile.imwrite(folder / "a.tif", good)
    tifffile.imwrite(folder / "sub" / "b.tif", good[:, ::-1].copy())
    rows = _json(["lines", str(folder), *PIXEL, "--json"], capsys)
    by_path = {r["path"]: r for r in rows}
    for rel in ("a.tif", "sub/b.tif"):
        source = by_path[rel]["source"]
        assert source["path"] == str(folder / rel)
        assert source["sha256"] == file_sha256(folder / rel)
        assert {k: by_path[rel]["versions"][k] for k in _versions()} == _versions()
    assert main(["lines", str(folder), *PIXEL, "--csv"]) == 0
    header = next(csv.reader(io.StringIO(capsys.readouterr().out)))
    assert not {"source", "versions"} & set(header)


@pytest.mark.skipif(os.name != "posix", reason="POSIX file names")
def test_a_name_not_utf8_is_recorded_escaped(
    line_tif: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / (os.fsdecode(b"bad\xffname") + ".tif")
    path.write_bytes(line_tif.read_bytes())
    doc = _json(["lines", str(path), *PIXEL, "--json"], capsys)
    assert doc["source"]["path"] == f"{tmp_path}/bad\\xffname.tif"
    assert doc["source"]["sha256"] == file_sha256(line_tif)


def test_frame_hash_matches_a_degrade_manifest_of_the_same_file(
    line_tif: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The measured frame's hash is the one a ``sem-degrade`` manifest records for it."""
    doc = _json(["lines", str(line_tif), *PIXEL, "--json"], capsys)
    params = DegradationParams(
        rx_px=2, ry_px=2, beta=2, theta_rad=0, gain=1, offset=0, sigma=1, dose=10
    )
    m = degrade_files([line_tif], tmp_path / "d", mode="explicit", params=params)
    assert m.entries[0].source_pixels_sha256 == doc["source"]["frame_pixels_sha256"]
    assert m.entries[0].source_sha256 == doc["source"]["sha256"]


def test_results_without_the_new_fields_still_load_and_summaries_leave_them_out(
    line_tif: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    doc = _json(["lines", str(line_tif), *PIXEL, "--json"], capsys)
    old = {k: v for k, v in doc.items() if k not in ("source", "versions")}
    loaded = LineMeasurement.model_validate(old)  # a result saved before them
    assert loaded.source is None and loaded.versions is None
    new = LineMeasurement.model_validate(doc)
    assert new.summary() == loaded.summary()  # the CSV row is unchanged


def test_a_png_report_names_the_file_it_measured(
    line_tif: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The report image carries what the JSON says of the input and the versions (PNG text
    chunk ``Provenance``): a report found on its own still leads back to its file. The
    README's example reads it."""
    import hashlib

    from PIL import Image

    report = tmp_path / "report.png"
    argv = ["lines", str(line_tif), *PIXEL, "--info-bar", str(BAR), "--json"]
    doc = _json([*argv, "--report", str(report)], capsys)
    with Image.open(report) as png:
        record = json.loads(png.text["Provenance"])
    assert record == {"source": doc["source"], "versions": doc["versions"]}
    sha256 = hashlib.sha256(line_tif.read_bytes()).hexdigest()
    assert record["source"]["sha256"] == sha256
    assert record["versions"]["sem-metrology"] == metadata.version("sem-metrology")

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    blocks = [b.split("```", 1)[0] for b in readme.split("```python\n")[1:]]
    monkeypatch.chdir(tmp_path)
    exec(compile(next(b for b in blocks if '"Provenance"' in b), "README.md", "exec"), {})
    assert capsys.readouterr().out.split() == [sha256, metadata.version("sem-metrology")]


def test_a_report_of_an_api_result_records_no_provenance(tmp_path: Path) -> None:
    """A result of the Python API has no source: its report says nothing rather than guess."""
    from PIL import Image
    from sem_metrology import measure_lines
    from sem_metrology.report import save_line_report

    sample = make_line_image(n_lines=8, shape=(160, 256), sigma_nm=1.0, seed=4)
    result = measure_lines(sample.image, 0.827)
    path = save_line_report(result, sample.image, tmp_path / "api.png")
    with Image.open(path) as png:
        assert "Provenance" not in png.text and "Software" in png.text


def test_folder_reports_of_inputs_sharing_a_name_are_distinct(
    line_tif: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``x.tif`` and ``x.png``, ``sub/y.tif`` and ``sub__y.tif`` would share a report name (one
    report overwritten by the other): each gets its own, which names its own input, and an
    existing file at one of those names is refused before any work."""
    from PIL import Image

    folder = tmp_path / "batch"
    (folder / "sub").mkdir(parents=True)
    good = np.asarray(tifffile.imread(line_tif))
    tifffile.imwrite(folder / "x.tif", good)
    Image.fromarray(good[:, ::-1]).save(folder / "x.png")
    tifffile.imwrite(folder / "sub" / "y.tif", good[::-1].copy())
    tifffile.imwrite(folder / "sub__y.tif", good[::-1, ::-1].copy())
    inputs = ["sub/y.tif", "sub__y.tif", "x.png", "x.tif"]
    reports = tmp_path / "rep"
    reports.mkdir()
    (reports / "x.png_lines.png").write_text("mine")
    argv = ["lines", str(folder), *PIXEL, "--csv", "--output", str(tmp_path / "t.csv")]
    assert main([*argv, "--report", str(reports)]) == 2
    err = capsys.readouterr().err
    assert f"--report {reports / 'x.png_lines.png'} exists" in err
    assert [p.name for p in reports.iterdir()] == ["x.png_lines.png"]
    assert main([*argv, "--report", str(reports), "--overwrite"]) == 0
    capsys.readouterr()
    written = sorted(reports.iterdir())
    assert [p.name for p in written] == [
        "sub__y.tif_2_lines.png",
        "sub__y.tif_lines.png",
        "x.png_lines.png",
        "x.tif_lines.png",
    ]
    named = []
    for report in written:
        with Image.open(report) as png:
            source = json.loads(png.text["Provenance"])["source"]
        named.append(source["path"])
        assert source["sha256"] == file_sha256(source["path"])
    assert sorted(named) == [str(folder / rel) for rel in inputs]
    by_name = dict(zip([p.name for p in written], named, strict=True))
    assert by_name["x.tif_lines.png"] == str(folder / "x.tif")
    assert by_name["sub__y.tif_lines.png"] == str(folder / "sub" / "y.tif")  # sorted first

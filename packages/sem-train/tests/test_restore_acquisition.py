"""``sem restore`` records each input's acquisition conditions, and its TIFF output carries the
vendor tags they (and the pixel size) are read from."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import tifffile
from sem_physics import make_sample, read_image
from sem_train.cli import main
from sem_train.restoration import MANIFEST_NAME
from sem_train.restoration.batch import RestoreManifest

PSF = ["--psf", "2,2,0,2"]
REAL = ("contacts_0p901nm.tif", "lines_euv_resist_0p827nm.tif")
FEI = (
    "[User]\r\nDate=05/14/2024\r\nTime=01:37:02 PM\r\n[System]\r\nSystemType=Helios G4 UX\r\n"
    "[Beam]\r\nHV=5000\r\n[Scan]\r\nDwelltime=3e-07\r\nPixelWidth=2.7e-09\r\n"
    "HorFieldsize=2.76e-06\r\nIntegrate=4\r\n[Stage]\r\nWorkingDistance=0.0041\r\n"
    "[Detectors]\r\nName=TLD\r\nMode=SE\r\n[Image]\r\nMagCanvasRealWidth=0.127\r\n"
)
VENDOR_TAGS = (40092, 40093, 34118, 34682)


def _inputs(folder: Path, real_image) -> list[Path]:
    """The two real files, a synthetic FEI/Thermo TIFF and a TIFF without metadata."""
    folder.mkdir()
    paths = [Path(shutil.copy(real_image(name), folder / name)) for name in REAL]
    x = np.rint(make_sample("lines", (64, 80), seed=0)).astype(np.uint8)
    tifffile.imwrite(folder / "fei.tif", x, extratags=[(34682, "s", 0, FEI, True)])
    tifffile.imwrite(folder / "plain.tif", x)
    return [*paths, folder / "fei.tif", folder / "plain.tif"]


def _raw_tags(path: Path) -> dict[int, bytes]:
    """The vendor tags of ``path``'s first page, as the bytes stored in the file."""
    out = {}
    with tifffile.TiffFile(path) as tif:
        for code in VENDOR_TAGS:
            tag = tif.pages[0].tags.get(code)
            if tag is not None:
                tif.filehandle.seek(tag.valueoffset)
                out[code] = tif.filehandle.read(tag.valuebytecount)
    return out


def test_restore_records_and_passes_through_the_acquisition(tmp_path, real_image):
    inputs = _inputs(tmp_path / "in", real_image)
    out = tmp_path / "out"
    assert main(["restore", str(tmp_path / "in"), "-o", str(out), "--method", "wiener", *PSF]) == 0
    record = json.loads((out / MANIFEST_NAME).read_text(encoding="utf-8"))
    by_name = {Path(r["input"]).name: r for r in record["restored"]}
    assert sorted(by_name) == sorted(p.name for p in inputs) and not record["failed"]

    zeiss = by_name["contacts_0p901nm.tif"]["acquisition"]
    assert zeiss["vendor"] == "Zeiss" and zeiss["instrument"] == "Supra 55VP"
    assert (zeiss["beam_kv"], zeiss["magnification"]) == (1.0, 400000.0)
    assert (zeiss["working_distance_mm"], zeiss["dwell_time_us"]) == (3.0, 0.1)
    assert zeiss["detector"] == "InLens" and zeiss["acquired"] == "2017-04-04T09:32:17"
    hitachi = by_name["lines_euv_resist_0p827nm.tif"]["acquisition"]
    assert (hitachi["beam_kv"], hitachi["magnification"], hitachi["working_distance_mm"]) == (
        0.5,
        120000.0,
        1.8,
    )
    fei = by_name["fei.tif"]["acquisition"]
    assert (fei["vendor"], fei["beam_kv"], fei["working_distance_mm"]) == ("FEI/Thermo", 5.0, 4.1)
    assert fei["dwell_time_us"] == 0.3 and fei["detector"] == "TLD (SE)"
    plain = by_name["plain.tif"]["acquisition"]
    assert plain["notes"] == [] and all(v is None for k, v in plain.items() if k != "notes")

    for src in inputs:
        rec = by_name[src.name]
        a, b = read_image(src), read_image(out / src.name)
        assert rec["acquisition"] == a.acquisition.to_dict()  # the record is the reader's
        # the output carries the vendor tags byte for byte: same pixel size, same acquisition
        assert _raw_tags(out / src.name) == _raw_tags(src)
        assert (b.pixel_size_nm, b.pixel_size_source) == (a.pixel_size_nm, a.pixel_size_source)
        assert b.acquisition == a.acquisition


def test_a_record_written_before_acquisition_still_reads():
    """``acquisition`` is a new key only: an older restore.json parses, with it empty."""
    old = {
        "input": "a.tif",
        "input_sha256": "0" * 64,
        "output": "a.tif",
        "shape_px": [4, 4],
        "info_bar_rows": 0,
        "pixel_size_nm": None,
        "pixel_size_source": "none",
        "input_dtype": "uint8",
        "output_dtype": "uint8",
        "method": "wiener",
        "parameters": {},
        "psf": None,
        "psf_source": "given",
        "estimate": None,
        "checkpoint": None,
        "timings_s": {},
    }
    run = {"created_utc": "x", "method": "wiener", "psf": "given", "checkpoint": None}
    manifest = RestoreManifest.model_validate(
        {**run, "options": {}, "float32": False, "restored": [old]}
    )
    assert manifest.restored[0].acquisition == {}
    assert "acquisition" in json.loads(manifest.model_dump_json())["restored"][0]

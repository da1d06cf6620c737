"""Acquisition conditions (kV, magnification, WD, dwell, detector, ...) from vendor tags."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image
from sem_physics import Acquisition, read_image
from sem_physics.acquisition import from_cz_sem, from_fei, from_hitachi

KEYS = {
    "vendor",
    "source",
    "beam_kv",
    "magnification",
    "working_distance_mm",
    "dwell_time_us",
    "detector",
    "instrument",
    "frame_averaging",
    "acquired",
    "notes",
}


def _noisy(shape: tuple[int, int] = (40, 50)) -> np.ndarray:
    return np.random.default_rng(0).normal(100, 20, shape).clip(0, 255).astype(np.uint8)


def _tiff(path: Path, tags: list[tuple]) -> Path:
    tifffile.imwrite(path, _noisy(), extratags=tags)
    return path


def _fei_text(**sections: dict[str, object]) -> str:
    """FEI/Thermo metadata in its ini layout (``[Section]`` then ``Key=Value`` lines)."""
    lines = []
    for name, entries in sections.items():
        lines.append(f"[{name}]")
        lines.extend(f"{k}={v}" for k, v in entries.items())
    return "\r\n".join(lines) + "\r\n"


FEI = {
    "User": {"Date": "05/14/2024", "Time": "01:37:02 PM", "User": "supervisor"},
    "System": {"Type": "SEM", "SystemType": "Helios G4 UX"},
    "Beam": {"HV": 5000, "Spot": 3, "Beam": "EBeam"},
    "EBeam": {"HV": 5000, "WD": 0.0040, "HFW": 2.76e-06},
    "Scan": {"Dwelltime": 3e-07, "PixelWidth": 2.7e-09, "HorFieldsize": 2.76e-06, "Integrate": 4},
    "Stage": {"WorkingDistance": 0.0041},
    "Detectors": {"Number": 1, "Name": "TLD", "Mode": "SE"},
    "Image": {"MagCanvasRealWidth": 0.127, "ResolutionY": 30},
}


# --- the real files ------------------------------------------------------------------------------


def test_zeiss_real_file(real_dir: Path) -> None:
    img = read_image(real_dir / "contacts_0p901nm.tif")
    acq = img.acquisition
    assert (acq.vendor, acq.source) == ("Zeiss", "TIFF tag 34118 (Zeiss CZ_SEM)")
    assert acq.beam_kv == 1.0  # ap_actualkv EHT 1.0 kV (ap_manualkv EHT Target 1.0 kV)
    assert acq.magnification == 400_000  # ap_mag '400.00 K X'
    assert acq.working_distance_mm == 3.0  # ap_wd 3.0 mm
    assert acq.dwell_time_us == 0.1  # dp_dwell_time 100 ns
    assert acq.detector == "InLens"  # dp_detector_channel (Signal A)
    assert acq.instrument == "Supra 55VP"  # dp_sem
    assert acq.frame_averaging is not None
    assert acq.frame_averaging.startswith("Frame Int. Done (")  # dp_noise_reduction
    assert "Line Avg.Count 2" in acq.frame_averaging
    assert acq.acquired == "2017-04-04T09:32:17"  # ap_date '4 Apr 2017', ap_time '9:32:17'
    assert acq.notes == ()
    # the pixel size is read as before
    assert (img.pixel_size_nm, img.pixel_size_source) == (0.9009, "CZ_SEM ap_image_pixel_size")


def test_hitachi_real_file(real_dir: Path) -> None:
    img = read_image(real_dir / "lines_euv_resist_0p827nm.tif")
    acq = img.acquisition
    assert (acq.vendor, acq.source) == ("Hitachi", "TIFF tag 40092 (Hitachi)")
    # Condition=Vland=0.5kV(Vacc=4.0kV)   Mag=x120k   WD=1.8mm
    assert acq.beam_kv == 0.5  # the landing voltage: the beam is decelerated from 4 kV
    assert any("4.0kV" in note for note in acq.notes)
    assert acq.magnification == 120_000
    assert acq.working_distance_mm == 1.8
    assert acq.dwell_time_us is None  # Hitachi does not state it
    assert acq.detector == "SE+BSE(TU)"  # SignalName
    assert acq.instrument == "SU8200"  # tag 40093
    assert acq.frame_averaging == "ScanSpeed=Capture_CSS(20)"
    assert acq.acquired is None
    assert (img.pixel_size_nm, img.pixel_size_source) == (
        0.827009,
        "TIFF tag 40092 (Hitachi PixelSize)",
    )


def test_real_records_are_json(real_dir: Path) -> None:
    for name in ("contacts_0p901nm.tif", "lines_euv_resist_0p827nm.tif"):
        record = read_image(real_dir / name).acquisition.to_dict()
        assert set(record) == KEYS
        assert json.loads(json.dumps(record)) == record


# --- FEI / Thermo (synthetic, in the ini layout of tag 34682) -----------------------------------


def test_fei_synthetic_file(tmp_path: Path) -> None:
    path = _tiff(tmp_path / "fei.tif", [(34682, "s", 0, _fei_text(**FEI), True)])
    img = read_image(path)
    acq = img.acquisition
    assert (acq.vendor, acq.source) == ("FEI/Thermo", "TIFF tag 34682 (FEI/Thermo metadata)")
    assert acq.beam_kv == 5.0  # [Beam] HV 5000 V
    assert acq.working_distance_mm == 4.1  # [Stage] WorkingDistance 0.0041 m (before [EBeam] WD)
    assert acq.dwell_time_us == 0.3  # [Scan] Dwelltime 3e-7 s
    assert acq.magnification == pytest.approx(0.127 / 2.76e-06, rel=1e-9)  # canvas / HFW
    assert acq.detector == "TLD (SE)"
    assert acq.instrument == "Helios G4 UX"
    assert acq.frame_averaging == "Integrate=4"
    assert acq.acquired == "2024-05-14T13:37:02"
    assert img.pixel_size_nm == pytest.approx(2.7)  # unchanged
    assert img.pixel_size_source == "FEI metadata Scan.PixelWidth"
    assert img.info_bar_rows == 10


def test_fei_beam_deceleration_and_fallbacks() -> None:
    md = {
        "Beam": {"HV": 2000},
        "EBeamDeceleration": {"ModeOn": "On", "LandingEnergy": 500},
        "EBeam": {"WD": 0.003},
        "EScan": {"Dwell": 1e-06},
    }
    acq = from_fei(md)
    assert acq.beam_kv == 0.5 and any("LandingEnergy" in n for n in acq.notes)
    assert acq.working_distance_mm == 3.0 and acq.dwell_time_us == 1.0
    assert acq.magnification is None and acq.instrument is None
    md["EBeamDeceleration"]["ModeOn"] = "Off"
    assert from_fei(md).beam_kv == 2.0


# --- other layouts ---------------------------------------------------------------------------


def test_hitachi_explicit_keys(tmp_path: Path) -> None:
    text = (
        "[SemImageFile]\r\nInstructName=S-4800\r\nDate=09/10/2013\r\nTime=16:28:41\r\n"
        "PixelSize=19.84375\r\nSignalName=SE(U)\r\nAcceleratingVoltage=15000 Volt\r\n"
        "DecelerationVoltage=0 Volt\r\nMagnification=5000\r\nWorkingDistance=8400 um\r\n"
        "Condition=Vacc=15kV Mag=x5.00k WD=8.4mm\r\n"
    ).encode("ascii")
    acq = read_image(_tiff(tmp_path / "h.tif", [(40092, "B", len(text), text, True)])).acquisition
    assert acq.beam_kv == 15.0 and acq.magnification == 5000 and acq.working_distance_mm == 8.4
    assert acq.instrument == "S-4800" and acq.detector == "SE(U)"
    assert acq.acquired == "2013-09-10T16:28:41"
    assert acq.notes == ()


def test_zeiss_synthetic_tag_with_garbled_fields(tmp_path: Path) -> None:
    text = (
        "\r\nAP_MANUALKV\r\nEHT Target = 1.00 kV\r\nAP_ACTUALKV\r\nEHT = lots kV\r\n"
        "AP_WD\r\nWD = 3,5 mm\r\nAP_MAG\r\nMag = huge\r\nDP_DWELL_TIME\r\nDwell Time = 100 ns\r\n"
        "AP_DATE\r\nDate = 31 Foo 2017\r\nDP_SEM\r\nSem = Supra 55VP\r\n"
        "AP_IMAGE_PIXEL_SIZE\r\nImage Pixel Size = 2.5 nm\r\n"
    )
    img = read_image(_tiff(tmp_path / "z.tif", [(34118, "s", 0, text, True)]))
    acq = img.acquisition
    assert acq.beam_kv == 1.0  # EHT unreadable: the EHT target
    assert acq.working_distance_mm == 3.5 and acq.dwell_time_us == 0.1
    assert acq.magnification is None and acq.acquired is None
    assert acq.instrument == "Supra 55VP"
    assert any("ap_mag" in n for n in acq.notes) and any("Foo" in n for n in acq.notes)
    assert img.pixel_size_nm == 2.5


@pytest.mark.parametrize(
    "md",
    [
        {
            "ap_actualkv": ("EHT", 1.0, "furlongs"),
            "ap_wd": ("WD", "abc", "mm"),
            "ap_mag": ("Mag", object()),
            "dp_dwell_time": ("Dwell Time", -5, "ns"),
            "ap_date": ("Date", "31 Foo 2017"),
            "dp_sem": ("Sem",),
        },
        {"ap_actualkv": ("EHT", float("nan"), "kV"), "ap_wd": ("WD", 1e12, "m"), "ap_mag": 7},
    ],
)
def test_garbled_zeiss_fields_are_none(md: dict) -> None:
    acq = from_cz_sem(md)
    assert acq.vendor == "Zeiss"
    assert acq.beam_kv is acq.working_distance_mm is acq.dwell_time_us is None
    assert acq.magnification is None and acq.instrument is None and acq.acquired is None
    assert acq.notes  # what was present but unusable is said


def test_garbled_fei_and_hitachi_never_raise() -> None:
    fei = from_fei(
        {
            "Beam": {"HV": "high"},
            "Stage": {"WorkingDistance": 1e9},
            "Scan": {"Dwelltime": "nan", "HorFieldsize": 0},
            "Image": {"MagCanvasRealWidth": 0.127},
            "User": {"Date": "yesterday"},
            "Detectors": "ETD",
        }
    )
    assert fei.beam_kv is fei.working_distance_mm is fei.dwell_time_us is None
    assert fei.magnification is None and fei.detector is None and fei.acquired is None
    assert len(fei.notes) >= 4
    assert from_fei("not a table").notes and from_cz_sem(None).notes  # type: ignore[arg-type]
    junk = bytes(range(256)) * 3
    hitachi = from_hitachi(junk)
    assert hitachi.beam_kv is hitachi.magnification is hitachi.working_distance_mm is None
    bad = from_hitachi("Condition=Vland=fast   Mag=x-3k   WD=far\r\nDate=13/45/2020\r\n")
    assert bad.beam_kv is bad.magnification is bad.working_distance_mm is bad.acquired is None
    assert len(bad.notes) == 4


def test_garbled_vendor_tag_keeps_pixels_and_pixel_size(tmp_path: Path) -> None:
    raw = b"PixelSize=1.5\r\nCondition=Vacc=??kV Mag=x WD=\xff\xfe\r\n"
    img = read_image(_tiff(tmp_path / "h.tif", [(40092, "B", len(raw), raw, True)]))
    assert img.pixel_size_nm == 1.5
    assert img.acquisition.beam_kv is img.acquisition.magnification is None


# --- no metadata ---------------------------------------------------------------------------------


def test_files_without_metadata_have_an_empty_record(tmp_path: Path) -> None:
    x = _noisy()
    tifffile.imwrite(tmp_path / "a.tif", x)
    Image.fromarray(x).save(tmp_path / "a.png")
    Image.fromarray(x).save(tmp_path / "a.jpg")
    for name in ("a.tif", "a.png", "a.jpg"):
        acq = read_image(tmp_path / name, log_notes=False).acquisition
        assert acq == Acquisition() and not acq.known
        record = acq.to_dict()
        assert set(record) == KEYS and record["notes"] == []
        assert all(v is None for k, v in record.items() if k != "notes")


def test_helpers_keep_the_acquisition(real_dir: Path) -> None:
    img = read_image(real_dir / "contacts_0p901nm.tif")
    assert img.without_info_bar().acquisition == img.acquisition
    assert img.with_pixel_size(1.0, "given").acquisition == img.acquisition

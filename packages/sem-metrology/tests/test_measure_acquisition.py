"""Measurements record the acquisition conditions the file's vendor tags state (beam kV,
magnification, working distance, ...), in JSON only: the CSV row keeps its columns."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from sem_metrology import LineMeasurement, measure_contacts, measure_lines
from sem_metrology.cli import load_image
from sem_metrology.cli import main as measure_main
from sem_physics.io import read_image


def test_a_measurement_of_a_read_file_records_its_acquisition(sem_real_dir: Path) -> None:
    lines = measure_lines(read_image(sem_real_dir / "lines_euv_resist_0p827nm.tif"))
    assert lines.valid and lines.acquisition["beam_kv"] == pytest.approx(0.5)
    assert lines.acquisition["magnification"] == pytest.approx(120_000)
    assert lines.acquisition["instrument"] == "SU8200"
    contacts = measure_contacts(load_image(sem_real_dir / "contacts_0p901nm.tif"), 0.9009)
    assert contacts.valid and contacts.acquisition["working_distance_mm"] == pytest.approx(3.0)
    assert contacts.acquisition["dwell_time_us"] == pytest.approx(0.1)
    assert "acquisition" not in lines.summary() and "acquisition" not in contacts.summary()


def test_an_array_or_a_file_without_vendor_tags_records_none(real_line_image) -> None:
    assert measure_lines(real_line_image, 0.827).acquisition == {}
    old = measure_lines(real_line_image, 0.827).model_dump(mode="json")
    del old["acquisition"]  # a measurement saved before the field still loads
    assert LineMeasurement.model_validate(old).acquisition == {}


def test_sem_measure_json_carries_the_acquisition(sem_real_dir: Path, tmp_path: Path, capsys):
    rc = measure_main(["lines", str(sem_real_dir / "lines_euv_resist_0p827nm.tif"), "--json"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    record = out[0] if isinstance(out, list) else out
    assert record["acquisition"]["beam_kv"] == pytest.approx(0.5)
    assert np.isfinite(record["cd_nm"])

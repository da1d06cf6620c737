"""``sem-degrade --make-samples`` keeps files it did not write; multi-page TIFFs say so."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import pytest
import tifffile
from sem_physics.cli import main
from sem_physics.io import read_image
from sem_physics.samples import write_samples


def _error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("sem-degrade: error: ")
    return err[0]


def test_make_samples_refuses_a_users_file_before_writing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    samples = tmp_path / "ms"
    samples.mkdir()
    mine = samples / "lines_000.png"
    mine.write_text("mine")
    argv = ["--make-samples", str(samples), "--n-samples", "1", "-o", str(tmp_path / "out")]
    assert main(argv) == 2
    line = _error_line(capsys)
    assert str(mine) in line and "--overwrite" in line
    assert mine.read_text() == "mine"
    assert sorted(p.name for p in samples.iterdir()) == ["lines_000.png"]  # nothing written
    assert not (tmp_path / "out").exists()
    assert main([*argv, "--overwrite"]) == 0
    assert read_image(mine).data.shape == (480, 640)


def test_make_samples_rerun_finds_its_own_samples(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    samples = tmp_path / "ms"
    argv = ["--make-samples", str(samples), "--n-samples", "1", "--seed", "2"]
    assert main(argv) == 0
    before = {p.name: p.read_bytes() for p in samples.iterdir()}
    assert main(argv) == 0  # the same samples: nothing to refuse
    assert {p.name: p.read_bytes() for p in samples.iterdir()} == before
    capsys.readouterr()
    assert main([*argv[:-1], "3"]) == 2  # another seed would replace them
    assert "(and 2 more)" in _error_line(capsys)
    assert {p.name: p.read_bytes() for p in samples.iterdir()} == before


def test_write_samples_overwrite_keyword(tmp_path: Path) -> None:
    other = tmp_path / "contacts_000.png"
    other.write_bytes(b"not a sample")
    with pytest.raises(FileExistsError, match=r"contacts_000\.png"):
        write_samples(tmp_path, n_per_kind=1, shape=(48, 64), overwrite=False)
    assert other.read_bytes() == b"not a sample"
    assert [p.name for p in tmp_path.iterdir()] == ["contacts_000.png"]
    paths = write_samples(tmp_path, n_per_kind=1, shape=(48, 64))  # the default replaces
    assert other in paths and other.read_bytes() != b"not a sample"


def test_multipage_tiff_reads_the_first_page_and_says_so_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    pages = np.arange(3 * 40 * 50, dtype=np.uint8).reshape(3, 40, 50)
    path = tmp_path / "stack.tif"
    tifffile.imwrite(path, pages, photometric="minisblack", metadata=None)
    with caplog.at_level(logging.WARNING, logger="sem_physics.io"):
        first = read_image(path)
        again = read_image(path)
    np.testing.assert_array_equal(first.data, pages[0])
    note = "3 pages; only the first is read"
    assert note in first.notes and note in again.notes
    said = [r.getMessage() for r in caplog.records if "only the first" in r.getMessage()]
    assert said == [f"{path}: {note}"]
    single = tmp_path / "one.tif"
    tifffile.imwrite(single, pages[0])
    assert read_image(single).notes == ()


def test_many_pages_are_counted_quickly(tmp_path: Path) -> None:
    path = tmp_path / "many.tif"
    pages = np.zeros((5000, 8, 8), dtype=np.uint8)
    tifffile.imwrite(path, pages, photometric="minisblack", metadata=None)
    # CPU time of this process (all its threads): other work on the machine does not count
    start = time.process_time()
    img = read_image(path, log_notes=False)
    assert time.process_time() - start < 2.0  # measured about 5 ms
    assert img.notes == ("5,000 pages; only the first is read",)

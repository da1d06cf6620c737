"""A manifest names its sources by file hash and pixel hash: the same pixels in another file
(PNG instead of TIFF, re-saved) replay it; old manifests (file hash only) replay as before."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from sem_physics import (
    DegradationParams,
    Manifest,
    degrade_files,
    make_sample,
    read_image,
    replay_manifest,
)
from sem_physics.cli import main
from sem_physics.io import write_image
from sem_physics.protocol import ProtocolError, file_sha256, pixels_sha256

PARAMS = DegradationParams(
    rx_px=2, ry_px=3, beta=2, theta_rad=0.3, gain=1.0, offset=5, sigma=2, dose=10
)


@pytest.fixture()
def pair(tmp_path: Path) -> tuple[Path, Path]:
    """The same 8-bit pixels as a PNG and as a TIFF (different bytes)."""
    image = make_sample("lines", (48, 64), seed=7)
    png = write_image(tmp_path / "src" / "lines.png", image, "uint8")
    tif = write_image(tmp_path / "src" / "lines.tif", image, "uint8")
    assert file_sha256(png) != file_sha256(tif)
    assert read_image(png).data.tobytes() == read_image(tif).data.tobytes()
    return png, tif


def _run(source: Path, out: Path, **kw: object) -> Manifest:
    return degrade_files([source], out, mode="explicit", params=PARAMS, **kw)  # type: ignore[arg-type]


def _point_at(manifest: Path, source: Path) -> None:
    """Make the manifest's (one) entry name ``source`` (relative to the manifest's folder)."""
    doc = json.loads(manifest.read_text(encoding="utf-8"))
    doc["entries"][0]["source"] = Path(
        "..", source.parent.name, source.name
    ).as_posix()  # the runs write into tmp_path/<out>, the sources lie in tmp_path/src
    manifest.write_text(json.dumps(doc), encoding="utf-8")


@pytest.mark.parametrize("crop", ["keep", "info-bar", "none"])
def test_manifest_records_the_source_pixel_hash(
    pair: tuple[Path, Path], tmp_path: Path, crop: str
) -> None:
    png, tif = pair
    a = _run(png, tmp_path / "a", crop=crop)
    b = _run(tif, tmp_path / "b", crop=crop)
    ea, eb = a.entries[0], b.entries[0]
    # the whole frame as read (float32 grey, info bar included), whatever the crop
    assert ea.source_pixels_sha256 == pixels_sha256(read_image(png).data)
    assert ea.source_pixels_sha256 == eb.source_pixels_sha256
    assert ea.source_sha256 == file_sha256(png) != eb.source_sha256 == file_sha256(tif)
    assert ea.output_sha256 == eb.output_sha256  # same pixels, same outputs
    doc = json.loads((tmp_path / "a" / "manifest.json").read_text(encoding="utf-8"))
    assert doc["entries"][0]["source_pixels_sha256"] == ea.source_pixels_sha256
    assert doc["entries"][0]["source_sha256"] == ea.source_sha256  # kept, not renamed


def test_a_tiff_replays_the_manifest_of_a_png_of_the_same_pixels(
    pair: tuple[Path, Path], tmp_path: Path
) -> None:
    png, tif = pair
    m = _run(png, tmp_path / "a")
    path = tmp_path / "a" / "manifest.json"
    _point_at(path, tif)
    result = replay_manifest(path)
    assert result.ok and result.checked == 1
    # replayed into a folder: the outputs are bit for bit the PNG run's, and the new manifest
    # names the source as replayed (the TIFF's file hash, the same pixel hash)
    again = replay_manifest(path, tmp_path / "r")
    assert again.ok
    out = Manifest.load(tmp_path / "r" / "manifest.json").entries[0]
    assert out.source_sha256 == file_sha256(tif)
    assert out.source_pixels_sha256 == m.entries[0].source_pixels_sha256
    assert out.output_sha256 == m.entries[0].output_sha256
    a = read_image(tmp_path / "a" / m.entries[0].output).data
    assert a.tobytes() == read_image(tmp_path / "r" / out.output).data.tobytes()
    assert replay_manifest(tmp_path / "r" / "manifest.json").ok  # and replays by its file hash


def test_a_resaved_source_of_the_same_pixels_replays(
    pair: tuple[Path, Path], tmp_path: Path
) -> None:
    png, _ = pair
    _run(png, tmp_path / "a")
    before = file_sha256(png)
    write_image(png, read_image(png).data, "uint8", pixel_size_nm=1.5)  # a text chunk added
    assert file_sha256(png) != before
    assert replay_manifest(tmp_path / "a" / "manifest.json").ok


def test_other_pixels_are_refused_naming_the_file_and_both_hashes(
    pair: tuple[Path, Path], tmp_path: Path
) -> None:
    png, _ = pair
    entry = _run(png, tmp_path / "a").entries[0]
    changed = read_image(png).data.copy()
    changed[0, 0] = 255 - changed[0, 0]
    write_image(png, changed, "uint8")
    with pytest.raises(ProtocolError) as err:
        replay_manifest(tmp_path / "a" / "manifest.json")
    text = str(err.value)
    assert "src/lines.png" in text and "sha256 differs" in text
    assert entry.source_sha256 in text and entry.source_pixels_sha256 in text
    assert file_sha256(png) in text and pixels_sha256(changed.astype(np.float32)) in text
    # an unreadable file in the source's place: refused the same way, naming both hashes
    png.write_bytes(b"not an image")
    with pytest.raises(ProtocolError, match="sha256 differs") as err:
        replay_manifest(tmp_path / "a" / "manifest.json")
    assert entry.source_sha256 in str(err.value)
    assert str(entry.source_pixels_sha256) in str(err.value)


def test_an_old_manifest_replays_by_the_file_hash_only(
    pair: tuple[Path, Path], tmp_path: Path
) -> None:
    png, tif = pair
    _run(png, tmp_path / "a")
    path = tmp_path / "a" / "manifest.json"
    doc = json.loads(path.read_text(encoding="utf-8"))
    del doc["entries"][0]["source_pixels_sha256"]  # as written before the field existed
    path.write_text(json.dumps(doc), encoding="utf-8")
    assert Manifest.load(path).entries[0].source_pixels_sha256 is None
    assert replay_manifest(path).ok  # the file is unchanged
    # replayed into a folder, the new manifest records the pixel hash too
    assert replay_manifest(path, tmp_path / "r").ok
    replayed = Manifest.load(tmp_path / "r" / "manifest.json").entries[0]
    assert replayed.source_pixels_sha256 == pixels_sha256(read_image(png).data)
    _point_at(path, tif)  # same pixels, but nothing recorded to compare them with
    with pytest.raises(ProtocolError, match="sha256 differs") as err:
        replay_manifest(path)
    assert "src/lines.tif" in str(err.value) and file_sha256(tif) in str(err.value)


def test_cli_replays_a_manifest_from_the_same_pixels_in_another_format(
    pair: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    png, tif = pair
    args = ["--rx-px", "2", "--ry-px", "3", "--sigma", "2", "--dose", "10"]
    assert main([str(tif), *args, "-o", str(tmp_path / "t")]) == 0
    path = tmp_path / "t" / "manifest.json"
    _point_at(path, png)
    capsys.readouterr()
    assert main(["--replay", str(path)]) == 0
    assert "recipe verified: 1 output" in capsys.readouterr().err
    changed = read_image(png).data.copy()
    changed[-1, -1] = 255 - changed[-1, -1]
    write_image(png, changed, "uint8")
    assert main(["--replay", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("sem-degrade: error: ")
    assert "source_pixels_sha256" in err[0] and "src/lines.png" in err[0]

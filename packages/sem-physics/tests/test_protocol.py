"""Seeded protocols: manifests, bit-for-bit replay, sampled / explicit / midpoint parameters."""

from __future__ import annotations

import builtins
import io
import json
from pathlib import Path

import numpy as np
import pytest
from sem_physics import (
    DegradationParams,
    Manifest,
    ParameterRanges,
    degrade,
    degrade_files,
    read_image,
    replay_manifest,
    write_samples,
)
from sem_physics.io import crop_info_bar, quantize, write_image
from sem_physics.protocol import ProtocolError, derive_seed, file_sha256, pixels_sha256

SMALL = ParameterRanges(rx_px=(1.0, 4.0), ry_px=(1.0, 4.0))  # kernels up to 25 px


@pytest.fixture()
def sources(tmp_path: Path) -> list[Path]:
    return write_samples(tmp_path / "src", n_per_kind=1, shape=(48, 64), seed=3)


def test_sampled_run_writes_manifest_and_replays_bit_for_bit(
    sources: list[Path], tmp_path: Path
) -> None:
    out = tmp_path / "out"
    manifest = degrade_files(sources, out, mode="sample", ranges=SMALL, master_seed=11)
    on_disk = Manifest.load(out / "manifest.json")
    assert on_disk == manifest
    assert len(manifest.entries) == 3
    for i, (entry, src) in enumerate(zip(manifest.entries, sources, strict=True)):
        assert (out / entry.source).resolve() == src.resolve()
        assert not Path(entry.source).is_absolute()
        assert entry.source_sha256 == file_sha256(src)
        assert entry.seed == derive_seed(11, i)
        stored = read_image(out / entry.output).data
        assert pixels_sha256(quantize(stored, "float32")) == entry.output_sha256
        # Independent recomputation from the documented seed streams.
        rng = np.random.default_rng([entry.seed, 0])
        assert SMALL.sample(rng) == entry.params
        expected = degrade(
            read_image(src).data, entry.params, np.random.default_rng([entry.seed, 1])
        )
        np.testing.assert_array_equal(stored, expected)
    # Parameters differ per sample and stay inside the ranges.
    assert len({e.params.rx_px for e in manifest.entries}) == 3
    assert all(1.0 <= e.params.rx_px <= 4.0 for e in manifest.entries)
    replay_dir = tmp_path / "replay"
    result = replay_manifest(out / "manifest.json", replay_dir)
    assert result.ok and result.checked == 3
    for entry in manifest.entries:
        a = read_image(out / entry.output).data
        b = read_image(replay_dir / entry.output).data
        assert a.tobytes() == b.tobytes()


def test_same_seed_same_outputs_other_seed_differs(sources: list[Path], tmp_path: Path) -> None:
    m1 = degrade_files(sources, tmp_path / "a", ranges=SMALL, master_seed=5)
    m2 = degrade_files(sources, tmp_path / "b", ranges=SMALL, master_seed=5)
    m3 = degrade_files(sources, tmp_path / "c", ranges=SMALL, master_seed=6)
    assert [e.output_sha256 for e in m1.entries] == [e.output_sha256 for e in m2.entries]
    assert [e.params for e in m1.entries] == [e.params for e in m2.entries]
    assert all(
        x.output_sha256 != y.output_sha256 for x, y in zip(m1.entries, m3.entries, strict=True)
    )


def test_replay_detects_changed_parameters_and_sources(sources: list[Path], tmp_path: Path) -> None:
    out = tmp_path / "out"
    degrade_files(sources, out, ranges=SMALL, master_seed=1)
    doc = json.loads((out / "manifest.json").read_text())
    doc["entries"][1]["params"]["sigma"] += 0.5
    (out / "edited.json").write_text(json.dumps(doc))
    result = replay_manifest(out / "edited.json")
    assert result.mismatched == [doc["entries"][1]["output"]]
    sources[0].write_bytes(sources[0].read_bytes() + b"\x00")  # other bytes, same pixels
    assert replay_manifest(out / "manifest.json").ok
    write_image(sources[0], read_image(sources[0]).data + 1, "uint16")  # other pixels
    with pytest.raises(ProtocolError, match="sha256 differs"):
        replay_manifest(out / "manifest.json")


def test_midpoint_explicit_uint16_and_crop(sources: list[Path], tmp_path: Path) -> None:
    p = DegradationParams(
        rx_px=2, ry_px=3, beta=2, theta_rad=0.3, gain=1.0, offset=5, sigma=2, dose=10
    )
    m = degrade_files(
        sources,
        tmp_path / "e",
        mode="explicit",
        params=p,
        crop="fraction",
        crop_fraction=0.25,
        output_format="uint16-png",
    )
    assert all(e.params == p and e.crop_rows == 12 for e in m.entries)
    out = read_image(tmp_path / "e" / m.entries[0].output)
    assert out.data.shape == (36, 64) and out.source_dtype == "uint16"
    expected = degrade(
        crop_info_bar(read_image(sources[0]).data, rows=12),
        p,
        np.random.default_rng([m.entries[0].seed, 1]),
    )
    np.testing.assert_allclose(out.data, np.clip(expected, 0, 255), atol=255 / 65535)
    assert replay_manifest(tmp_path / "e" / "manifest.json").ok
    small_mid = ParameterRanges(rx_px=(1.0, 3.0), ry_px=(1.0, 3.0))
    mm = degrade_files(sources, tmp_path / "m", mode="midpoint", ranges=small_mid)
    assert all(e.params == small_mid.midpoint() for e in mm.entries)


def test_mode_arguments_are_checked(sources: list[Path], tmp_path: Path) -> None:
    with pytest.raises(ProtocolError, match="needs params"):
        degrade_files(sources, tmp_path / "x", mode="explicit")
    with pytest.raises(ProtocolError, match="master_seed"):
        degrade_files(sources, tmp_path / "x", master_seed=-1, ranges=SMALL)
    with pytest.raises(ProtocolError, match="crop_fraction"):
        degrade_files(sources, tmp_path / "x", ranges=SMALL, crop="fraction", crop_fraction=1.0)
    with pytest.raises(ProtocolError, match="output_format"):
        degrade_files(sources, tmp_path / "x", ranges=SMALL, output_format="jpeg")  # type: ignore[arg-type]
    (tmp_path / "junk.json").write_text("{}")
    with pytest.raises(ProtocolError, match="not a valid manifest"):
        replay_manifest(tmp_path / "junk.json")


def test_a_tampered_manifest_names_the_field_and_its_range(sources, tmp_path) -> None:
    import json

    degrade_files(sources[:1], tmp_path / "out", ranges=SMALL)
    path = tmp_path / "out" / "manifest.json"
    doc = json.loads(path.read_text())
    doc["entries"][0]["params"]["rx_px"] = 0
    path.write_text(json.dumps(doc))
    with pytest.raises(ProtocolError) as info:
        replay_manifest(path)
    assert str(info.value) == (
        f"{path}: not a valid manifest: entries.0.params.rx_px must be in (0, 1000], got 0"
    )


def test_derive_seed_is_stable_and_distinct() -> None:
    seeds = [derive_seed(0, i) for i in range(1000)]
    assert len(set(seeds)) == 1000
    assert seeds[:3] == [derive_seed(0, 0), derive_seed(0, 1), derive_seed(0, 2)]
    assert derive_seed(1, 0) != derive_seed(0, 0)


def test_replay_from_another_folder_after_moving_the_tree(
    sources: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    degrade_files(sources, tmp_path / "out", ranges=SMALL, master_seed=2)
    moved = tmp_path / "moved"
    moved.mkdir()
    (tmp_path / "src").rename(moved / "src")
    (tmp_path / "out").rename(moved / "out")
    monkeypatch.chdir(moved / "src")
    assert replay_manifest(moved / "out" / "manifest.json").ok


@pytest.fixture()
def cp1252_default(monkeypatch: pytest.MonkeyPatch) -> None:
    """Text opens without an encoding use cp1252, as on Windows without UTF-8 mode."""
    real_open = io.open

    def cp1252_open(file, mode="r", buffering=-1, encoding=None, *args, **kwargs):
        if "b" not in mode and encoding in (None, "locale"):
            encoding = "cp1252"
        return real_open(file, mode, buffering, encoding, *args, **kwargs)

    monkeypatch.setattr(io, "open", cp1252_open)
    monkeypatch.setattr(builtins, "open", cp1252_open)


def test_non_ascii_names_round_trip_under_a_cp1252_default(
    tmp_path: Path, cp1252_default: None
) -> None:
    """The UTF-8 manifest reads back whatever the locale: replay and rerun find the sources."""
    sources = write_samples(tmp_path / "Proben_Jürgen_µm", n_per_kind=1, shape=(48, 64), seed=3)
    out = tmp_path / "out"
    manifest = degrade_files(sources, out, ranges=SMALL, master_seed=4)
    assert "µ" in manifest.entries[0].source
    assert Manifest.load(out / "manifest.json") == manifest
    assert replay_manifest(out / "manifest.json", tmp_path / "replay").ok
    # a rerun into the folder knows the earlier run's outputs from its manifest
    again = degrade_files(sources, out, ranges=SMALL, master_seed=4)
    assert sorted(again.replaced_outputs) == sorted(e.output for e in manifest.entries)


def test_outputs_carry_the_source_pixel_size(tmp_path: Path) -> None:
    src = write_samples(tmp_path / "src", n_per_kind=1, shape=(48, 64), pixel_size_nm=0.83)
    plain = write_samples(tmp_path / "plain", n_per_kind=1, shape=(48, 64))[:1]
    out = tmp_path / "out"
    manifest = degrade_files([*src, *plain], out, mode="sample", ranges=SMALL, master_seed=2)
    sizes = [read_image(out / e.output).pixel_size_nm for e in manifest.entries]
    assert sizes == [pytest.approx(0.83)] * 3 + [None]
    replay_manifest(out / "manifest.json", tmp_path / "replay")
    again = [read_image(tmp_path / "replay" / e.output).pixel_size_nm for e in manifest.entries]
    assert again == sizes


def test_the_info_bar_is_kept_unchanged_below_the_defocused_micrograph(
    tmp_path: Path, real_dir: Path
) -> None:
    """Default ``keep``: a real frame's detected bar is not blurred (as an instrument draws it),
    is found again in the output, and the micrograph above it equals the bar-less degradation;
    ``none`` blurs the bar into the picture. Replays are bit for bit."""
    src = real_dir / "lines_euv_resist_0p827nm.tif"
    frame = read_image(src)
    bar = frame.info_bar_rows
    assert bar == 64
    kept = degrade_files([src], tmp_path / "keep", mode="midpoint")
    cut = degrade_files([src], tmp_path / "cut", mode="midpoint", crop="info-bar")
    whole = degrade_files([src], tmp_path / "none", mode="midpoint", crop="none")
    assert kept.crop == "keep" and kept.entries[0].crop_rows == bar
    out = read_image(tmp_path / "keep" / kept.entries[0].output)
    assert out.data.shape == frame.data.shape and out.info_bar_rows == bar
    np.testing.assert_array_equal(out.data[-bar:], frame.data[-bar:])
    top = read_image(tmp_path / "cut" / cut.entries[0].output).data
    np.testing.assert_array_equal(out.data[:-bar], top)  # same seed, same micrograph
    blurred = read_image(tmp_path / "none" / whole.entries[0].output).data
    assert np.abs(blurred[-bar:] - frame.data[-bar:]).mean() > 5  # the bar degraded too
    assert replay_manifest(tmp_path / "keep" / "manifest.json").mismatched == []

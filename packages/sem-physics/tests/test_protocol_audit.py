"""Protocol and ``sem-degrade`` behaviour that audit E asked for: a deterministic small-image
rule in ``--sample`` mode, reruns that say what they replace and refuse unknown files, replays
that describe themselves, and messages that count correctly."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import scipy
from PIL import Image
from sem_physics import (
    DegradationParams,
    Manifest,
    ParameterRanges,
    degrade_files,
    read_image,
    replay_manifest,
    write_samples,
)
from sem_physics.cli import build_parser, main
from sem_physics.protocol import ProtocolError, derive_seed, largest_kernel_px
from sem_physics.psf import kernel_size

SMALL = ParameterRanges(rx_px=(1.0, 4.0), ry_px=(1.0, 4.0))  # kernels 7 .. 25 px


def _square(path: Path, side: int, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (side, side), dtype=np.uint8)).save(path)
    return path


def _notes(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("sem-degrade: note: ")]


# --- F1: --sample skips small images whatever their draw ---------------------------------------


def test_sample_mode_skips_every_image_below_the_largest_kernel_whatever_its_draw(
    tmp_path: Path,
) -> None:
    k_max = largest_kernel_px(SMALL)
    assert k_max == kernel_size(4.0, 4.0) == 25
    small = _square(tmp_path / "small.png", k_max - 1)  # fits the smaller kernels SMALL draws
    big = _square(tmp_path / "big.png", k_max, seed=1)
    fits_own_draw = 0
    for seed in range(12):
        m = degrade_files(
            [small, big], tmp_path / f"o{seed}", mode="sample", ranges=SMALL, master_seed=seed
        )
        # the small image is skipped at every seed, the large one never
        assert [f.source for f in m.failed] == [str(small)]
        assert "largest PSF kernel" in m.failed[0].reason
        assert [e.index for e in m.entries] == [1]
        # its own draw would often have fitted: the skip does not depend on it
        own = SMALL.sample(np.random.default_rng([derive_seed(seed, 0), 0]))
        fits_own_draw += own.psf.size_px <= k_max - 1
        # the kept image's draw is the one its index derives (the skip draws nothing else)
        kept = m.entries[0]
        assert kept.params == SMALL.sample(np.random.default_rng([derive_seed(seed, 1), 0]))
    assert fits_own_draw > 0  # the case the old per-draw rule would have kept


def test_explicit_and_midpoint_modes_keep_the_per_setting_rule(tmp_path: Path) -> None:
    img = _square(tmp_path / "img.png", 20)
    small_kernel = DegradationParams(
        **(SMALL.midpoint().model_dump() | {"rx_px": 1.0, "ry_px": 1.0})
    )
    m = degrade_files([img], tmp_path / "a", mode="explicit", params=small_kernel)
    assert len(m.entries) == 1  # 7-px kernel fits a 20-px image
    big_kernel = small_kernel.model_copy(update={"rx_px": 4.0})
    with pytest.raises(ProtocolError, match="smaller than the PSF kernel 25x25"):
        degrade_files([img], tmp_path / "b", mode="explicit", params=big_kernel)
    # midpoint of SMALL: radius 2.5 -> 15 px kernel, fits although SMALL can draw 25 px
    assert len(degrade_files([img], tmp_path / "c", mode="midpoint", ranges=SMALL).entries) == 1


def test_sample_help_states_the_largest_kernel_the_paper_ranges_draw(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    k = largest_kernel_px(ParameterRanges())
    text = " ".join(build_parser().format_help().split())
    assert f"below {k} px per side" in text and "whatever its own draw" in text
    img = _square(tmp_path / "sq.png", k - 1)
    for seed in range(4):
        assert main([str(img), "--sample", "--seed", str(seed), "-o", str(tmp_path / "o")]) == 2
        err = capsys.readouterr().err
        assert f"largest PSF kernel --sample can draw ({k}x{k} px" in err


# --- F5: reruns say what they replace; unknown files are not overwritten -----------------------


@pytest.fixture()
def src(tmp_path: Path) -> Path:
    write_samples(tmp_path / "src", n_per_kind=1, shape=(48, 64), seed=1)
    return tmp_path / "src"


def test_a_rerun_reports_what_it_replaced_and_removed(
    src: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    files = sorted(src.iterdir())
    first = degrade_files(files, out, mode="midpoint", ranges=SMALL)
    assert first.replaced_outputs == [] and first.removed_outputs == []
    before = {p.name for p in out.iterdir()} - {"manifest.json"}
    second = degrade_files(files[:1], out, mode="midpoint", ranges=SMALL, master_seed=3)
    after = {p.name for p in out.iterdir()} - {"manifest.json"}
    assert set(second.replaced_outputs) == before & after == {e.output for e in second.entries}
    assert set(second.removed_outputs) == before - after and second.removed_outputs
    # the CLI says it in one line, with the counts of what happened on disk
    cli_out = tmp_path / "cli"
    argv = [*map(str, files), "--rx-px", "2", "--ry-px", "2", "-o", str(cli_out)]
    assert main(argv) == 0
    assert not any("earlier run" in n for n in _notes(capsys.readouterr().err))  # fresh
    assert main([*argv[:1], *argv[len(files) :]]) == 0
    notes = [n for n in _notes(capsys.readouterr().err) if "earlier run" in n]
    assert len(notes) == 1
    assert f"replaced 1 output of the earlier run in {cli_out}" in notes[0]
    assert f"removed {len(files) - 1} it listed" in notes[0]


def test_a_file_no_manifest_lists_is_not_overwritten(
    src: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "u"
    out.mkdir()
    files = sorted(src.iterdir())
    precious = out / f"0000_{files[0].stem}.tif"
    precious.write_bytes(b"the user's own file")
    with pytest.raises(ProtocolError, match=re.escape(str(precious))):
        degrade_files(files, out, mode="midpoint", ranges=SMALL)
    assert precious.read_bytes() == b"the user's own file"
    assert sorted(p.name for p in out.iterdir()) == [precious.name]  # nothing written
    assert main([*map(str, files), "-o", str(out), "--rx-px", "2", "--ry-px", "2"]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and str(precious) in lines[0] and "--overwrite" in lines[0]
    assert precious.read_bytes() == b"the user's own file"
    # asked for: replaced, and then listed, so a plain rerun goes through
    argv = [*map(str, files), "-o", str(out), "--rx-px", "2", "--ry-px", "2"]
    assert main([*argv, "--overwrite"]) == 0
    assert read_image(precious).data.shape == (48, 64)
    assert main(argv) == 0


def test_an_interrupted_run_is_completed_without_overwrite(src: Path, tmp_path: Path) -> None:
    out = tmp_path / "k"
    files = sorted(src.iterdir())
    degrade_files(files, out, mode="midpoint", ranges=SMALL)
    # as a killed fresh run leaves it: outputs, the marker, no manifest
    (out / "manifest.json").unlink()
    (out / "INCOMPLETE").write_text("a killed run\n")
    m = degrade_files(files, out, mode="midpoint", ranges=SMALL)
    assert m.completed_interrupted and len(m.replaced_outputs) == len(files)
    assert not (out / "INCOMPLETE").exists()


# --- F2 / F8: replay wording, a replayed folder describes itself -------------------------------


def test_replay_into_a_folder_writes_a_manifest_that_replays(
    src: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out, rp, rp2 = tmp_path / "out", tmp_path / "rp", tmp_path / "deeper" / "rp2"
    files = sorted(src.iterdir())
    original = degrade_files(files, out, mode="sample", ranges=SMALL, master_seed=5)
    result = replay_manifest(out / "manifest.json", rp)
    assert result.ok and result.manifest == str(rp / "manifest.json")
    copy = Manifest.load(rp / "manifest.json")
    for a, b in zip(original.entries, copy.entries, strict=True):
        assert (rp / b.source).resolve() == (out / a.source).resolve()
        assert (b.output, b.output_sha256, b.params, b.seed) == (
            a.output,
            a.output_sha256,
            a.params,
            a.seed,
        )
    # the replayed folder is itself replayable, from anywhere
    assert replay_manifest(rp / "manifest.json", rp2).ok
    assert replay_manifest(rp2 / "manifest.json").ok
    # without -o nothing is written and the line says the files were not read
    listing = sorted(p.name for p in out.iterdir())
    assert main(["--replay", str(out / "manifest.json")]) == 0
    assert sorted(p.name for p in out.iterdir()) == listing
    assert "files on disk were not read" in capsys.readouterr().err


# --- F11: versions recorded; old manifests still replay ---------------------------------------


def test_manifests_record_versions_and_old_manifests_still_replay(
    src: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    m = degrade_files(sorted(src.iterdir()), out, mode="sample", ranges=SMALL)
    assert m.versions is not None
    assert (m.versions["numpy"], m.versions["scipy"]) == (np.__version__, scipy.__version__)
    doc = json.loads((out / "manifest.json").read_text())
    del doc["versions"]  # as a manifest written before the field existed
    (out / "old.json").write_text(json.dumps(doc))
    assert Manifest.load(out / "old.json").versions is None
    result = replay_manifest(out / "old.json")
    assert result.ok and result.versions is None


# --- F7, F9, F10: subfolders noted, plurals, clipping counted ----------------------------------


def test_subfolders_are_noted_plurals_and_clipped_pixels_are_counted(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inp = tmp_path / "in"
    (inp / "sub").mkdir(parents=True)
    (inp / "sub2").mkdir()
    _square(inp / "a.png", 48)
    _square(inp / "sub" / "b.png", 48)
    argv = [str(inp), "--rx-px", "2", "--ry-px", "2", "--dose", "0.05"]
    assert main([*argv, "-o", str(tmp_path / "f")]) == 0
    notes = _notes(capsys.readouterr().err)
    assert "left out 2 subfolders: not searched" in notes[0]
    assert notes[-1].startswith("sem-degrade: note: 1 image (explicit) -> ")
    assert not any("clipped" in n for n in notes)  # float32 keeps every value
    float_out = read_image(tmp_path / "f" / "0000_a.tif").data
    expected = int(np.count_nonzero((float_out < 0) | (float_out > 255)))
    assert expected > 0
    assert main([*argv, "--format", "uint16-png", "-o", str(tmp_path / "p")]) == 0
    (clip,) = [n for n in _notes(capsys.readouterr().err) if "clipped" in n]
    assert f"({expected:,} of {float_out.size:,}, in 1 of 1 image;" in clip
    pct = float(re.search(r"clipped ([0-9.e+-]+) %", clip).group(1))
    assert pct == pytest.approx(100 * expected / float_out.size, rel=0.05)


def test_the_readme_seed_derivation_is_the_code_s() -> None:
    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    (code,) = [b for b in re.findall(r"```python\n(.*?)```", text, re.S) if "seed_i =" in b]
    code = re.sub(r"(?m)^S, i = .*$", "", code)  # the example's own master seed and index
    for master, index in [(0, 0), (0, 16236), (7, 3), (2**40, 99)]:
        scope = {"np": np, "S": master, "i": index}
        exec(code, scope)
        assert scope["seed_i"] == derive_seed(master, index)

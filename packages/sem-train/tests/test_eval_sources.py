"""Evaluation images: the generated kinds a benchmark config asks for, each with stable seeds,
and the files of an image folder."""

from __future__ import annotations

import os

import numpy as np
import pytest
import tifffile
from sem_physics import make_sample, write_image
from sem_physics.testing import symlink_or_skip
from sem_train.evaluation.config import load_benchmark_config, make_config
from sem_train.evaluation.sources import list_images, sample_images


def test_each_kind_keeps_its_images_whatever_the_other_kinds() -> None:
    default = sample_images(1, (64, 80), seed=5)
    chosen = sample_images(1, (64, 80), seed=5, kinds=("resist", "lines"))
    assert [im.kind for im in chosen] == ["resist", "lines"]
    np.testing.assert_array_equal(chosen[1].data, default[0].data)  # the same lines image
    np.testing.assert_array_equal(chosen[0].data, make_sample("resist", (64, 80), seed=5300))
    with pytest.raises(ValueError, match="unknown sample kind 'wires'"):
        sample_images(1, (64, 80), seed=5, kinds=("wires",))


def test_benchmark_config_takes_generated_kinds(tmp_path) -> None:
    path = tmp_path / "b.yaml"
    path.write_text("protocol: s2s\ngenerated: {n_per_kind: 2, kinds: [resist]}\n")
    assert load_benchmark_config(path).generated.kinds == ("resist",)
    with pytest.raises(ValueError, match="kinds"):
        make_config({"protocol": "s2s", "generated": {"kinds": ["wires"]}})


def test_image_folders_follow_links_once_and_name_a_loop(tmp_path, caplog) -> None:
    """A benchmark's ``images:`` folder is read as ``sem train --data`` is: the images of a
    linked folder count (they were passed over, so a folder of links held "no images"); a
    link loop is not followed and named in one warning, and in the error when nothing is left."""
    root, lab = tmp_path / "corpus", tmp_path / "other_disk" / "lab A"
    lab.mkdir(parents=True)
    write_image(lab / "b.png", make_sample("lines", (64, 80), seed=1), "uint8")
    write_image(root / "a.tif", make_sample("lines", (64, 80), seed=2), "uint8")
    symlink_or_skip(root / "lab A", lab, target_is_directory=True)
    symlink_or_skip(root / "loop", root, target_is_directory=True)
    with caplog.at_level("WARNING"):
        assert list_images(root) == [root / "a.tif", root / "lab A" / "b.png"]
        assert list_images(root) == [root / "a.tif", root / "lab A" / "b.png"]
    said = f"1 linked folder(s) under {root} not followed: loop (a link loop: it leads to "
    assert [m for m in caplog.messages if "not followed" in m] == [
        f"{said}{os.path.realpath(root)}, which holds it)"
    ]
    (root / "a.tif").unlink()
    (lab / "b.png").unlink()
    with pytest.raises(FileNotFoundError, match="no images") as err:
        list_images(root)
    assert said in str(err.value)


def test_a_skipped_files_reason_does_not_repeat_its_path(tmp_path) -> None:
    """Each unusable file (too small, empty, not decodable) is skipped with its path once, in
    ``path``; the reason, read after it as ``path: reason``, says what is wrong without the
    path the read error started with (nor the one Pillow's own message quotes)."""
    from sem_train.evaluation.sources import load_images

    good = tmp_path / "good.png"
    write_image(good, make_sample("lines", (64, 80), seed=1), "uint8")
    tiny, empty, broken = tmp_path / "tiny.png", tmp_path / "empty.tif", tmp_path / "cut.png"
    write_image(tiny, np.full((10, 12), 90, np.uint8), "uint8")
    empty.write_bytes(b"")
    broken.write_bytes(b"\x89PNG truncated")
    images, skipped = load_images([good, tiny, empty, broken], crop_fraction=0.0)
    assert [im.source for im in images] == [str(good)]
    assert [s.path for s in skipped] == [str(tiny), str(empty), str(broken)]
    for s in skipped:
        assert s.reason and s.path not in s.reason and not s.reason.startswith(":"), s
    assert "10×12 px" in skipped[0].reason and "empty" in skipped[1].reason
    assert skipped[2].reason.startswith("cannot decode as PNG"), skipped[2]


def test_a_dim_16_bit_file_is_named_in_the_report_notes_and_on_stderr(tmp_path, caplog) -> None:
    """12-bit counts in a 16-bit TIFF read as 0..16 of 255; the S→S noise (sigma 1-10 grey
    levels, offset 1-25) and the PSNR's peak of 255 are not scaled with it, so the picture is
    scored far noisier than at full range. The benchmark said nothing (training, `sem restore`,
    sem-degrade and sem-psf warn); now the report's notes and stderr name the file."""
    from sem_train.evaluation import runner as runner_mod

    folder = tmp_path / "imgs"
    folder.mkdir()
    lines = make_sample("lines", (96, 128), seed=3)
    counts = np.round(lines / 255.0 * 4095.0).astype(np.uint16)  # 12-bit data, 16-bit file
    tifffile.imwrite(folder / "twelve_bit.tif", counts)
    write_image(folder / "full.tif", lines, "uint8")
    write_image(folder / "dark8.tif", lines / 8.0, "uint8")  # dark 8-bit: dark, not 12-bit
    cfg = make_config(
        {
            "images": str(folder),
            "out": str(tmp_path / "out"),
            "methods": ["input"],
            "settings": ["midpoint"],
            "crop_fraction": 0,
        }
    )
    with caplog.at_level("WARNING"):
        notes = runner_mod.build_protocol(cfg).notes
    dim = [n for n in notes if n.startswith("Dim pictures")]
    assert len(dim) == 1, notes
    level = np.percentile(counts.astype(np.float64) * 255.0 / 65535.0, 99.9)  # as read
    assert level < 64
    assert f"`twelve_bit` ({level:.3g})" in dim[0] and "1 of 3" in dim[0]
    assert "dark8" not in dim[0] and "`full`" not in dim[0]
    assert any(
        "twelve_bit.tif" in r.getMessage() and "dim" in r.getMessage() for r in caplog.records
    )

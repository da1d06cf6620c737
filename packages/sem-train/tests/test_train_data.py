"""Dataset index, split, corrupt-file handling, augmentations, pairs and batch order."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from sem_train.config import AugmentConfig, DataConfig
from sem_train.data import (
    DefocusPairDataset,
    EpochBatchSampler,
    SEMImageDataset,
    augment,
    build_index,
    rotate,
    split_index,
    validation_batches,
)
from sem_train.data.sampler import sample_seed


def test_index_is_cached_sorted_and_ignores_other_files(image_folder, monkeypatch):
    (image_folder / "notes.txt").write_text("not an image")
    (image_folder / ".hidden.png").write_bytes(b"")
    idx = build_index(image_folder)
    assert len(idx) == 12 and idx.files == sorted(idx.files)
    assert idx.cache_path is not None and idx.cache_path.is_file()
    # The cache is really used: unchanged files are not checked again.
    from sem_train.data import index

    checked = []
    monkeypatch.setattr(index, "check_header", checked.append)
    assert build_index(image_folder).files == idx.files and checked == []


def test_linked_folders_are_read_once_and_loops_are_not_followed(tmp_path, folder_writer, caplog):
    """A linked folder outside the data folder is read as its own (a corpus gathered from
    other disks; they were left out without a word); a link back to a folder that holds it,
    into the data folder, or a second link to one folder is not followed, and one warning
    names each with the reason."""
    from sem_physics.testing import symlink_or_skip

    root, outside = tmp_path / "corpus", tmp_path / "other_disk"
    own = folder_writer(root / "own", 2, seed=1)
    linked = folder_writer(outside / "lab B", 3, seed=2)
    symlink_or_skip(root / "lab B", outside / "lab B", target_is_directory=True)
    symlink_or_skip(root / "same again", outside / "lab B", target_is_directory=True)
    symlink_or_skip(root / "loop", tmp_path, target_is_directory=True)
    symlink_or_skip(root / "everything", Path(tmp_path.anchor), target_is_directory=True)
    symlink_or_skip(root / "own link", root / "own", target_is_directory=True)
    symlink_or_skip(outside / "lab B" / "up", outside, target_is_directory=True)
    with caplog.at_level("WARNING", logger="sem_train.data.index"):
        idx = build_index(root, cache_dir=tmp_path / "cache")
    expected = [p.relative_to(root).as_posix() for p in own] + [
        (Path("lab B") / p.relative_to(outside / "lab B")).as_posix() for p in linked
    ]
    assert idx.files == sorted(expected) and not idx.duplicates
    said = [m for m in caplog.messages if "linked folder" in m]
    assert len(said) == 1 and said[0].startswith(f"5 linked folder(s) under {root} not followed")
    for where, why in [
        ("lab B/up", f"a link loop: it leads to {outside}, which holds it"),
        ("everything", f"a link loop: it leads to {tmp_path.anchor}, which holds it"),
        ("loop", f"a link loop: it leads to {tmp_path}, which holds it"),
        ("own link", "leads to own, read there"),
        ("same again", f"leads to {outside / 'lab B'}, read through lab B"),
    ]:
        assert f"{where} ({why})" in said[0]


def test_index_cache_sees_added_deleted_and_rewritten_files(image_folder, folder_writer):
    """The cache is keyed on each file's name, size and modification time."""
    idx = build_index(image_folder)
    folder_writer(image_folder / "later", 1, seed=5)
    gone = image_folder / idx.files[0]
    gone.unlink()
    victim = image_folder / idx.files[1]
    original = victim.read_bytes()
    victim.write_bytes(b"corrupted on disk")  # size and mtime change
    again = build_index(image_folder)
    assert len(again) == 11 and idx.files[0] not in again.files
    assert any(f.startswith("later/") for f in again.files)
    assert list(again.rejected) == [idx.files[1]]
    # A rejected file that is repaired is checked again and accepted.
    victim.write_bytes(original)
    assert len(build_index(image_folder)) == 12 and not build_index(image_folder).rejected


def _tiff_table_last(pixels: np.ndarray, rows_per_strip: int = 8) -> tuple[bytes, int]:
    """A baseline 8-bit grey TIFF whose tag table and strip tables follow the pixel data (as an
    SEM's own files have it), and the byte where its strip tables start."""
    import struct

    h, w = pixels.shape
    n = -(-h // rows_per_strip)
    table_at = 8 + pixels.size
    arrays_at = table_at + 2 + 8 * 12 + 4
    offsets = [8 + i * rows_per_strip * w for i in range(n)]
    counts = [min(rows_per_strip, h - i * rows_per_strip) * w for i in range(n)]
    tags = [(256, 3, 1, w), (257, 3, 1, h), (258, 3, 1, 8), (259, 3, 1, 1), (262, 3, 1, 1)]
    tags += [(273, 4, n, arrays_at), (278, 3, 1, rows_per_strip), (279, 4, n, arrays_at + 4 * n)]
    table = struct.pack("<H", len(tags))
    for tag, kind, count, value in tags:
        table += struct.pack("<HHII", tag, kind, count, value)
    arrays = struct.pack(f"<{n}I", *offsets) + struct.pack(f"<{n}I", *counts)
    head = b"II*\x00" + struct.pack("<I", table_at)
    return head + pixels.tobytes() + table + b"\x00" * 4 + arrays, arrays_at


def test_truncated_tiffs_are_rejected_by_the_header_check(tmp_path):
    """A TIFF cut short keeps a parseable header: the index still refuses it (its strip table
    points past the end, or, with the table at the end of the file, there is none), while
    intact plain and compressed TIFFs and a cut PNG are judged as before, without decoding."""
    import tifffile
    from sem_physics.io import ImageReadError
    from sem_train.data.io import check_header

    rng = np.random.default_rng(0)
    pixels = (rng.random((96, 128)) * 255).astype(np.uint8)
    tifffile.imwrite(tmp_path / "plain.tif", pixels)  # table before the pixel data
    tifffile.imwrite(tmp_path / "tiled.tif", pixels, compression="zlib", tile=(32, 32))
    for name in ("plain.tif", "tiled.tif"):
        check_header(tmp_path / name)
        data = (tmp_path / name).read_bytes()
        (tmp_path / f"cut-{name}").write_bytes(data[: len(data) - 64])
        with pytest.raises(ImageReadError, match="truncated TIFF"):
            check_header(tmp_path / f"cut-{name}")
    # the table after the pixels (as the SEM's own files have it), cut inside the table
    data, arrays_at = _tiff_table_last(pixels)
    (tmp_path / "late.tif").write_bytes(data)
    check_header(tmp_path / "late.tif")
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "late.tif"), pixels)
    (tmp_path / "cut-late.tif").write_bytes(data[: arrays_at + 8])  # strip tables cut
    with pytest.raises(ImageReadError, match="truncated or malformed TIFF"):
        check_header(tmp_path / "cut-late.tif")
    index = build_index(tmp_path, verify="header")
    assert sorted(index.rejected) == ["cut-late.tif", "cut-plain.tif", "cut-tiled.tif"]
    assert sorted(index.files) == ["late.tif", "plain.tif", "tiled.tif"]
    # one picture in three TIFF layouts: the full check, which decodes anyway, keeps it once
    full = build_index(tmp_path, verify="full", refresh=True)
    assert full.files == ["late.tif"]
    assert set(full.duplicates.values()) == {"same pixels as late.tif"}


def test_unreadable_files_are_reported_once_until_their_count_changes(image_folder, caplog):
    """A run indexes its folder in every step; each unreadable file and the count are logged
    the first time, and the count again only when it changes."""
    (image_folder / "group0" / "broken.tif").write_bytes(b"II*\x00garbage" * 3)
    with caplog.at_level("WARNING", logger="sem_train.data.index"):
        for _ in range(3):
            build_index(image_folder)
        (image_folder / "group1" / "empty.png").write_bytes(b"")
        build_index(image_folder)
    counts = [r.getMessage() for r in caplog.records if "unreadable and skipped" in r.message]
    assert [c.split(" files")[0] for c in counts] == ["1 of 13", "2 of 14"], counts
    files = [r.getMessage() for r in caplog.records if "skipping unreadable image" in r.message]
    assert len(files) == 2 and "broken.tif" in files[0] and "empty.png" in files[1]


def test_corrupt_files_are_skipped_and_counted(image_folder, tmp_path):
    (image_folder / "group0" / "broken.tif").write_bytes(b"II*\x00garbage" * 3)
    (image_folder / "group1" / "empty.png").write_bytes(b"")
    (image_folder / "group2" / "text.jpg").write_text("this is not a jpeg")
    idx = build_index(image_folder, cache_dir=tmp_path / "cache")
    assert len(idx) == 12
    assert sorted(idx.rejected) == ["group0/broken.tif", "group1/empty.png", "group2/text.jpg"]
    # Without verification the broken files enter the index; loading skips and counts them.
    idx = build_index(image_folder, cache_dir=tmp_path / "cache", verify="none")
    assert len(idx) == 15
    log = tmp_path / "skipped.jsonl"
    ds = SEMImageDataset(idx.paths(), image_size_px=16, log_path=log)
    items = [ds[(i, i)] for i in range(len(ds))]
    assert all(it["image"].shape == (1, 16, 16) for it in items)
    skipped_total = sum(int(it["skipped"]) for it in items)
    assert len(ds.bad) == 3 and skipped_total >= 3
    lines = [json.loads(x) for x in log.read_text().splitlines()]
    assert {a["path"].rsplit("/", 1)[-1] for a in lines} == {"broken.tif", "empty.png", "text.jpg"}


def test_a_single_image_has_no_validation_and_says_so(tmp_path, folder_writer, caplog):
    """With one image the split leaves nothing to validate on: the run would keep its last
    weights as "best"; a warning says so (two images: one validates, no warning)."""
    folder_writer(tmp_path / "one", 1)
    folder_writer(tmp_path / "two", 2)
    logger = "sem_train.data.dataset"
    with caplog.at_level("WARNING", logger=logger):
        _, val, _ = SEMImageDataset.from_config(
            DataConfig(root=tmp_path / "two", val_fraction=0.1, image_size_px=32)
        )
    assert val is not None and len(val) == 1 and not caplog.records
    with caplog.at_level("WARNING", logger=logger):
        _, val, _ = SEMImageDataset.from_config(
            DataConfig(root=tmp_path / "one", val_fraction=0.1, image_size_px=32)
        )
    assert val is None
    assert [r.getMessage() for r in caplog.records if r.name == logger] == [
        "data.val_fraction=0.1 but the data hold 1 image(s): no validation images, so the run "
        "keeps its last weights instead of the best ones (give 2 or more)"
    ]


def test_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        build_index(tmp_path / "nope")
    with pytest.raises(ValueError, match=r"data\.root"):
        SEMImageDataset.from_config(DataConfig())


def test_split_is_deterministic_disjoint_and_sized():
    tr, va = split_index(100, 0.1, seed=3)
    assert len(va) == 10 and not set(tr) & set(va) and sorted(tr + va) == list(range(100))
    assert split_index(100, 0.1, seed=3) == (tr, va)
    assert split_index(100, 0.1, seed=4)[1] != va
    assert split_index(5, 0.01, seed=0)[1] != []  # at least one validation image


def test_real_corpus_indexes_all_micrographs(corpus_dir, tmp_path):
    idx = build_index(corpus_dir, cache_dir=tmp_path / "c")
    assert len(idx) + len(idx.rejected) == 46  # 45 TIFF + 1 PNG; txt/csv/md/LICENSE ignored
    assert len(idx) >= 44
    ds = SEMImageDataset(idx.paths()[:2], image_size_px=32, channels=3)
    item = ds[(1, 7)]
    assert item["image"].shape == (3, 32, 32)
    assert 0.0 <= float(item["image"].min()) and float(item["image"].max()) <= 1.0


def test_augment_is_a_function_of_the_seed():
    img = torch.rand(1, 40, 52)
    cfg = AugmentConfig()
    a = augment(img, 24, cfg, torch.Generator().manual_seed(1))
    b = augment(img, 24, cfg, torch.Generator().manual_seed(1))
    c = augment(img, 24, cfg, torch.Generator().manual_seed(2))
    assert a.shape == (1, 24, 24) and torch.equal(a, b) and not torch.equal(a, c)
    assert float(a.min()) >= 0 and float(a.max()) <= 1


def test_rotation_by_quarter_turn_matches_rot90():
    img = torch.rand(1, 16, 16)
    # x to the right, y down: a positive angle turns +x towards -y (counter-clockwise on screen)
    assert torch.allclose(rotate(img, math.pi / 2), torch.rot90(img, 1, (-2, -1)), atol=1e-5)
    assert torch.allclose(rotate(img, 0.0), img, atol=1e-6)


@pytest.mark.parametrize("angle_deg", [30.0, 90.0, 200.0])
def test_rotation_moves_a_dot_about_the_centre_on_a_non_square_image(angle_deg):
    """Pixels are square whatever the aspect: a dot 7.2 px from the centre of a 32 x 64 image
    lands where the rigid rotation puts it (centroid within 0.2 px)."""
    h, w = 32, 64
    cy, cx = (h - 1) / 2, (w - 1) / 2
    dy, dx = 4.0, 6.0
    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")

    def dot(y0: float, x0: float) -> torch.Tensor:
        return torch.exp(-((yy - y0) ** 2 + (xx - x0) ** 2) / (2 * 1.5**2))[None].double()

    src = dot(cy + dy, cx + dx)
    out = rotate(src, math.radians(angle_deg))[0]
    a = math.radians(angle_deg)
    want_x = cx + math.cos(a) * dx + math.sin(a) * dy
    want_y = cy - math.sin(a) * dx + math.cos(a) * dy
    # the dot's mass within 6 px of where it belongs (the reflected borders may hold mirror
    # copies further out, where the rotated frame reaches beyond the 32 rows)
    near = ((yy - want_y) ** 2 + (xx - want_x) ** 2 <= 36).double()
    mass = float((out * near).sum())
    assert mass > 0.95 * float(src.sum())
    got_y = float((out * near * yy).sum()) / mass
    got_x = float((out * near * xx).sum()) / mass
    assert abs(got_x - want_x) < 0.2 and abs(got_y - want_y) < 0.2, (got_x, got_y)


def test_sampler_shards_equal_one_process_with_doubled_batch():
    one = EpochBatchSampler(37, 8, seed=5, epoch=2)
    r0 = EpochBatchSampler(37, 4, seed=5, epoch=2, rank=0, world_size=2)
    r1 = EpochBatchSampler(37, 4, seed=5, epoch=2, rank=1, world_size=2)
    assert [a + b for a, b in zip(r0, r1, strict=True)] == list(one)
    # Resume in the middle of the epoch continues with the same batches.
    assert list(EpochBatchSampler(37, 8, seed=5, epoch=2, start_step=2)) == list(one)[2:]
    # Different epochs shuffle differently; every epoch uses distinct indices.
    e3 = list(EpochBatchSampler(37, 8, seed=5, epoch=3))
    assert e3 != list(one)
    flat = [i for b in e3 for i, _ in b]
    assert len(set(flat)) == len(flat) == 32
    vb = validation_batches(7, 3, seed=0, rank=1, world_size=2)
    assert [i for b in vb for i, _ in b] == [1, 3, 5]


def test_defocus_pairs_are_seeded_blurred_and_sized():
    rng = np.random.default_rng(0)
    img = torch.from_numpy(rng.uniform(0, 1, (1, 90, 120)).astype(np.float32))
    ds = DefocusPairDataset([img], input_size_px=32, crop_sizes_px=(16, 64, 512), pairs_per_image=4)
    a, b = ds[(0, 11)], ds[(0, 11)]
    assert a["input"].shape == a["target"].shape == (1, 32, 32)
    assert torch.equal(a["input"], b["input"]) and torch.equal(a["target"], b["target"])
    assert not torch.equal(ds[(0, 12)]["input"], a["input"])

    # Blur removes most of the white-noise texture: high-frequency energy drops.
    def hf(x):
        return float((x[..., 1:] - x[..., :-1]).abs().mean())

    assert hf(a["input"]) < hf(a["target"])
    val = DefocusPairDataset([img], input_size_px=32, crop_sizes_px=(16, 64, 512), train=False)
    v = val[(0, 3)]
    assert torch.allclose(
        v["target"],
        torch.nn.functional.interpolate(
            img[None, :, 13:77, 28:92], size=(32, 32), mode="bilinear", antialias=True
        )[0],
    )
    # Several validation pairs per image: one centred crop, fixed but different degradations
    # (the best checkpoint is chosen on all of them, not on one random draw per image).
    val3 = DefocusPairDataset(
        [img, img[:, :80]], input_size_px=32, crop_sizes_px=(64,), train=False, pairs_per_image=3
    )
    assert len(val3) == 6
    items = [val3[(i, sample_seed(0, -1, i))] for i in range(len(val3))]
    assert [int(it["index"]) for it in items] == [0, 1, 0, 1, 0, 1]
    assert torch.equal(items[0]["target"], items[2]["target"])
    assert torch.equal(items[0]["target"], items[4]["target"])
    assert not torch.equal(items[0]["input"], items[2]["input"])
    assert torch.equal(items[2]["input"], val3[(2, sample_seed(0, -1, 2))]["input"])
    with pytest.raises(ValueError, match="pairs_per_image"):
        DefocusPairDataset([img], input_size_px=32, train=False, pairs_per_image=0)


def test_memory_cache_returns_the_same_items_without_rereading(image_folder):
    paths = build_index(image_folder).paths()[:3]
    plain = SEMImageDataset(paths, image_size_px=16)
    cached = SEMImageDataset(paths, image_size_px=16, cache_in_memory=True)
    first = [cached[(i, 5)]["image"] for i in range(3)]
    for p in paths:
        p.unlink()  # the cache must serve every later item
    again = [cached[(i, 5)]["image"] for i in range(3)]
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    assert int(cached[(0, 9)]["skipped"]) == 0 and not cached.bad
    with pytest.raises(RuntimeError, match="could be read"):
        plain[(0, 5)]


def test_defocus_pairs_draw_their_degradations_from_the_configured_ranges():
    """Tight ranges reach the pairs: the PSF radius (px of the crop, rescaled to the input
    size) stays within rx, ry in [1, 2] at the crop's own scale; gain 1 and offset 0 keep a
    constant image's level."""
    from sem_physics import ParameterRanges

    img = torch.from_numpy(np.random.default_rng(0).uniform(0, 1, (1, 90, 120)).astype(np.float32))
    tight = ParameterRanges(rx_px=(1.0, 2.0), ry_px=(1.0, 2.0))
    ds = DefocusPairDataset(
        [img], input_size_px=32, crop_sizes_px=(16, 64, 512), ranges=tight, pairs_per_image=4
    )
    for s in range(30):
        rx = float(ds[(0, s)]["psf"][0])  # radius on the 32-px input: rx_crop * 32 / crop side
        assert min(abs(rx * side / 32 - 1.5) for side in (16, 64, 90)) <= 0.5 + 1e-6, rx
    flat = ParameterRanges(gain=(1.0, 1.0), offset=(0.0, 0.0), sigma=(0.5, 0.5), dose=(1e6, 1e6))
    ds = DefocusPairDataset(
        [torch.full((1, 64, 64), 0.5)], input_size_px=32, crop_sizes_px=(64,), ranges=flat
    )
    for s in range(4):
        assert float(ds[(0, s)]["input"].mean()) == pytest.approx(0.5, abs=2e-3)


def test_training_images_lose_their_info_bar(tmp_path):
    """The bottom 0.0667 of a frame (a vendor bar, here white) never reaches a training crop."""
    from PIL import Image
    from sem_train.data.dataset import load_image_tensor

    frame = np.full((120, 160), 50, np.uint8)
    frame[-8:] = 255  # round(0.0667 * 120) = 8 rows
    Image.fromarray(frame).save(tmp_path / "a.png")
    t = load_image_tensor(tmp_path / "a.png", 0.0667)
    assert tuple(t.shape) == (1, 112, 160) and float(t.max()) * 255 == pytest.approx(50.0)
    view = SEMImageDataset([tmp_path / "a.png"], image_size_px=32, train=False)[(0, 0)]["image"]
    assert float(view.max()) * 255 == pytest.approx(50.0, abs=1e-3)


def test_the_data_package_loads_torch_only_for_what_needs_it():
    """Which images a run reads (``sem_train.data.index``) loads no torch, so the commands
    check the data first; the package's ``augment`` stays the function once its submodule
    of that name is imported."""
    import subprocess
    import sys

    code = (
        "import sys\nfrom sem_train.data import indexed_paths, split_index\n"
        "print('torch' in sys.modules)\n"
        "import sem_train.data.augment\nfrom sem_train.data import augment\n"
        "print(type(augment).__name__)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=300,
        check=True,
    )
    assert done.stdout.split() == ["False", "function"]


def test_a_tiff_whose_first_page_is_missing_is_one_skip_line(tmp_path, caplog):
    """tifffile logs ``invalid offset to first page`` before the file is skipped: a line
    without the file's name beside its skip line; it is held back now."""
    import struct

    root = tmp_path / "images"
    root.mkdir()
    pixels = np.zeros((40, 40), np.uint8)
    from PIL import Image

    Image.fromarray(pixels).save(root / "fine.png")
    cut = root / "cut.tif"
    cut.write_bytes(b"II*\x00" + struct.pack("<I", 1_000_000) + bytes(64))  # page 0 beyond the end
    with caplog.at_level("DEBUG"):
        idx = build_index(root, cache_dir=tmp_path / "cache")
    assert idx.files == ["fine.png"] and list(idx.rejected) == ["cut.tif"]
    assert [r.name for r in caplog.records if r.name.startswith("tifffile")] == []
    said = [r.getMessage() for r in caplog.records if "cut.tif" in r.getMessage()]
    assert len(said) == 2 and said[0].startswith(f"skipping unreadable image {cut} (")
    assert said[1] == f"1 of 2 files under {root} are unreadable and skipped: cut.tif"

"""``sem benchmark`` finds evaluation images that are training images in another form:

* re-saved (another format or bit depth), rescaled by an integer factor, or cropped: matched
  by picture (:mod:`sem_train.evaluation.likeness`); another acquisition of the same scene,
  an unrelated image or an unreadable file is not;
* on the real micrographs of ``SEM_REAL_DATA`` and ``SEM_CORPUS_DATA`` the threshold leaves a
  margin between copies and different micrographs (other detectors of the same field too).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image
from sem_physics.io import read_image
from sem_physics.samples import make_sample
from sem_train.evaluation.seen import seen_images


def _noisy(kind: str, seed: int, take: int = 0, noise: float = 12.0) -> np.ndarray:
    """Scene ``seed`` of ``kind`` with noise of its own: ``take`` > 0 acquires it again."""
    clean = make_sample(kind, (240, 320), seed=seed)
    rng = np.random.default_rng(1000 * take + seed)
    return np.clip(clean + rng.normal(0, noise, clean.shape), 0, 255).astype(np.float32)


def _run(root: Path, train: list[Path]) -> Path:
    root.mkdir(parents=True)
    split = {"kind": "finetune", "train": [str(p) for p in train], "validation": []}
    (root / "data_split.json").write_text(json.dumps(split))
    return root


def _u16(path: Path, img: np.ndarray) -> Path:
    tifffile.imwrite(path, np.round(img * 257).astype(np.uint16))
    return path


def _png8(path: Path, img: np.ndarray) -> Path:
    Image.fromarray(np.clip(np.round(img), 0, 255).astype(np.uint8)).save(path)
    return path


def test_resaved_rescaled_and_cropped_training_images_are_seen_others_not(tmp_path):
    train_dir, ev = tmp_path / "train", tmp_path / "eval"
    train_dir.mkdir()
    ev.mkdir()
    scenes = [_noisy(k, i) for i, k in enumerate(("lines", "contacts", "texture", "lines"))]
    train = [_u16(train_dir / f"t{i}.tif", s) for i, s in enumerate(scenes)]
    (train_dir / "broken.tif").write_bytes(b"II*\x00 not a tiff")  # unreadable: skipped
    run = _run(tmp_path / "run", [*train, train_dir / "broken.tif", tmp_path / "gone.tif"])
    s0, s1, s2, s3 = scenes
    half = s1.reshape(120, 2, 160, 2).mean(axis=(1, 3))
    files = {
        "png8": _png8(ev / "png8.png", s0),  # 16-bit TIFF -> 8-bit PNG
        "half": _png8(ev / "half.png", half),  # reduced by 2
        "double": _u16(ev / "double.tif", np.repeat(np.repeat(s3, 2, 0), 2, 1)),  # magnified
        "crop": _png8(ev / "crop.png", s2[37:197, 51:271]),  # a cut-out at an odd place
        # the same scene as t0, acquired again (its own noise), and an unrelated scene
        "again": _u16(ev / "again.tif", _noisy("lines", 0, take=1)),
        "other": _u16(ev / "other.tif", _noisy("contacts", 7)),
    }
    # CPU time of this process (all its threads): other work on the machine does not count
    t0 = time.process_time()
    seen = seen_images([run], {k: [str(v)] for k, v in files.items()})
    assert time.process_time() - t0 < 5
    got = {s.image: s for s in seen}
    assert sorted(got) == ["crop", "double", "half", "png8"]
    assert all(s.how == "picture" and getattr(s, "likeness", 0) > 0.9 for s in seen)
    assert got["crop"].file == str(train[2]) and got["half"].file == str(train[1])
    assert "the picture of" in got["crop"].describe() and "cropped" in got["crop"].describe()


def _micrographs() -> list[Path]:
    found = []
    for var in ("SEM_REAL_DATA", "SEM_CORPUS_DATA"):
        folder = os.environ.get(var)
        if not folder or not Path(folder).is_dir():
            pytest.skip(f"{var} not set (folder of real SEM micrographs)")
        found += [p for p in sorted(Path(folder).rglob("*")) if p.suffix in (".tif", ".png")]
    return found


#: Different micrographs most alike (other detectors or magnifications of one field).
_HARD = (
    "GUZ_001",
    "GUZ_002",
    "1-as-cast_16_Sch_10k_InLens",
    "1-as-cast_17_Sch_10k_SESI",
    "1-as-cast_18_Sch_10k_BSD-Compo",
    "P33_scale2s3_detectorA",
    "P33_scale2s3_detectorB",
    "InLens_keyframe_00001_slice_00006_z=1.6659um",
    "SESI_keyframe_00001_slice_00006_z=1.6659um",
    "lines_euv_resist_0p827nm",
)


def test_threshold_separates_copies_from_other_real_micrographs(tmp_path):
    """Copies of real micrographs (8-bit PNG, reduced by 2, a cut-out without the info bar)
    score above the threshold, the hardest different micrographs below it."""
    from sem_train.evaluation.likeness import MATCH_THRESHOLD, Likeness, signature

    files = {p.stem: p for p in _micrographs()}
    hard = [files[k] for k in _HARD if k in files]
    assert len(hard) >= 6, "the real-data folders lack the micrographs this test compares"
    compare = Likeness()
    train = [signature(p) for p in hard]
    copies, others = [], []
    for i, path in enumerate(hard[:6]):
        img = read_image(path, log_notes=False)
        data = img.data[: img.data.shape[0] - (img.info_bar_rows or 0)]
        h, w = data.shape
        kinds = {
            "png8": _png8(tmp_path / f"{i}_png8.png", img.data),
            "half": _png8(
                tmp_path / f"{i}_half.png",
                data[: h // 2 * 2, : w // 2 * 2].reshape(h // 2, 2, w // 2, 2).mean(axis=(1, 3)),
            ),
            "crop": _u16(tmp_path / f"{i}_crop.tif", data[h // 5 : h // 5 + 300, 77:477]),
        }
        for kind, copy in kinds.items():
            e = signature(copy)
            for j, t in enumerate(train):
                (copies if j == i else others).append((compare.score(e, t), kind, path.name))
    low, high = min(copies)[0], max(others)[0]
    assert low >= MATCH_THRESHOLD > high, (min(copies), max(others))


def test_signature_cache_keeps_the_recently_used_within_its_size(tmp_path, monkeypatch):
    """The signature cache stays under its byte limit: a write drops the least recently used
    signatures (a cache hit counts as a use), never the one just written."""
    from sem_train.evaluation import likeness

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(likeness, "_MEMORY", {})
    files = [_u16(tmp_path / f"img{i}.tif", _noisy("texture", i)) for i in range(5)]
    folder = tmp_path / "cache" / "sem-train" / "likeness"
    for i, f in enumerate(files[:4]):
        before = set(folder.glob("*.npz"))
        assert likeness.signature(f) is not None
        (entry,) = set(folder.glob("*.npz")) - before
        os.utime(entry, ns=(10**18 + i * 10**9, 10**18 + i * 10**9))  # written in this order
    sizes = {p.name: p.stat().st_size for p in folder.glob("*.npz")}
    assert len(sizes) == 4
    oldest = min(folder.glob("*.npz"), key=lambda p: p.stat().st_mtime_ns)
    second = sorted(folder.glob("*.npz"), key=lambda p: p.stat().st_mtime_ns)[1]
    monkeypatch.setattr(likeness, "_MEMORY", {})  # a new process: read from the cache
    first_sig = likeness.signature(files[0])
    assert first_sig is not None and oldest.exists()  # a hit, read from the cache
    assert oldest.stat().st_mtime_ns > 10**18 + 3 * 10**9  # ... and touched
    # room for three signatures: the fifth write drops the two least recently used
    monkeypatch.setattr(likeness, "CACHE_MAX_BYTES", 3 * max(sizes.values()) + 10)
    assert likeness.signature(files[4]) is not None
    left = sorted(p.name for p in folder.glob("*.npz"))
    assert len(left) == 3 and oldest.exists() and not second.exists(), left
    assert sum(p.stat().st_size for p in folder.glob("*.npz")) <= likeness.CACHE_MAX_BYTES

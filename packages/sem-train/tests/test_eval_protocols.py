"""S→S / S→R protocols: seeded selection, replayable manifests, pairing by sorted order."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sem_physics import ParameterRanges, degrade
from sem_train.evaluation import (
    EvalImage,
    ManifestMismatchError,
    build_s2r,
    build_s2s,
    load_manifest,
    replay,
    save_manifest,
    select_split,
)
from sem_train.evaluation.sources import array_sha256


def _pool(n: int, shape=(48, 56)) -> list[EvalImage]:
    rng = np.random.default_rng(123)
    return [
        EvalImage(name=f"img{i:02d}", data=rng.uniform(20, 230, shape).astype(np.float32))
        for i in range(n)
    ]


def test_select_split_is_seeded_and_disjoint():
    tr, va, ev = select_split(30, 10, 100, seed=7, n_val=2)
    assert len(tr) == 10 and len(va) == 2 and len(ev) == 18
    assert not set(tr) & set(ev) and not set(va) & (set(tr) | set(ev))
    assert (tr, va, ev) == select_split(30, 10, 100, seed=7, n_val=2)
    assert (tr, va, ev) != select_split(30, 10, 100, seed=8, n_val=2)
    with pytest.raises(ValueError, match="cannot give"):
        select_split(10, 10, 5, seed=0)


def test_manifest_reproduces_identical_inputs_across_runs(tmp_path):
    pool = _pool(8)
    m1, train1, val1, cases1 = build_s2s(pool, n_train=3, n_val=1, n_eval=4, seed=5)
    m2, _, _, cases2 = build_s2s(_pool(8), n_train=3, n_val=1, n_eval=4, seed=5)
    assert m1.model_dump_json() == m2.model_dump_json()
    assert [c.case_id for c in cases1] == [c.case_id for c in cases2]
    for a, b in zip(cases1, cases2, strict=True):
        np.testing.assert_array_equal(a.input, b.input)
    # 4 evaluation images x (random, midpoint), disjoint from the training/validation images.
    assert len(cases1) == 8 and len(val1) == 1 and len(m1.val) == 1
    assert {c.image for c in cases1}.isdisjoint({im.name for im in train1 + val1})
    # Saved, reloaded and replayed: bit-identical inputs, hashes verified.
    path = save_manifest(m1, tmp_path / "manifest.json")
    again = replay(load_manifest(path), pool)
    for a, b in zip(cases1, again, strict=True):
        np.testing.assert_array_equal(a.input, b.input)
        assert array_sha256(b.input) == next(
            r.input_sha256 for r in m1.cases if r.case_id == b.case_id
        )


def test_cases_follow_the_forward_model_and_midpoint():
    pool = _pool(4)
    manifest, _, _, cases = build_s2s(pool, n_train=1, n_eval=3, seed=1)
    ranges = ParameterRanges()
    by_id = {r.case_id: r for r in manifest.cases}
    for c in cases:
        rec = by_id[c.case_id]
        expected = degrade(c.reference, rec.params, np.random.default_rng(rec.noise_seed))
        np.testing.assert_array_equal(c.input, expected)
        assert c.params == rec.params
        if c.setting == "midpoint":
            assert rec.params == ranges.midpoint()
        else:
            for name in type(ranges).model_fields:
                lo, hi = getattr(ranges, name)
                assert lo <= getattr(rec.params, name) <= hi
    random_params = [r.params for r in manifest.cases if r.setting == "random"]
    assert len({p.rx_px for p in random_params}) == len(random_params)  # drawn per image


def test_replay_detects_changed_sources():
    pool = _pool(5)
    manifest, _, _, _ = build_s2s(pool, n_train=1, n_eval=2, seed=0)
    changed = [EvalImage(im.name, im.data + 1.0) for im in pool]
    with pytest.raises(ManifestMismatchError, match="differs"):
        replay(manifest, changed)
    with pytest.raises(ManifestMismatchError, match="missing"):
        replay(manifest, [])
    tampered = manifest.model_copy(deep=True)
    tampered.cases[0].noise_seed += 1
    with pytest.raises(ManifestMismatchError, match=tampered.cases[0].case_id):
        replay(tampered, pool)


def test_s2r_pairs_by_sorted_order_and_crops(tmp_path):
    import tifffile

    rng = np.random.default_rng(0)
    (tmp_path / "def").mkdir()
    (tmp_path / "foc").mkdir()
    focused = []
    # File names sort differently from creation order; pairs follow the sorted order.
    for name_d, name_f in (("b_2.tif", "y_2.tif"), ("a_1.tif", "x_1.tif")):
        f = rng.integers(0, 255, (60, 40), dtype=np.uint8)
        tifffile.imwrite(tmp_path / "foc" / name_f, f)
        tifffile.imwrite(tmp_path / "def" / name_d, (255 - f).astype(np.uint8))
        focused.append((name_f, f))
    manifest, cases = build_s2r(tmp_path / "def", tmp_path / "foc", pixel_size_nm=1.5)
    assert [c.image for c in cases] == ["x_1", "y_2"]
    for c in cases:
        assert c.input.shape == (56, 40)  # 60 rows minus round(0.0667 * 60) = 4
        np.testing.assert_allclose(c.input + c.reference, 255.0, atol=1e-3)
        assert c.pixel_size_nm == 1.5
    assert manifest.protocol == "s2r" and len(manifest.cases) == 2
    json.loads(manifest.model_dump_json())
    tifffile.imwrite(tmp_path / "def" / "c_3.tif", np.zeros((60, 40), np.uint8))
    with pytest.raises(ValueError, match="sorted index order or uses one reference"):
        build_s2r(tmp_path / "def", tmp_path / "foc")


def test_s2r_accepts_one_reference_for_all_and_skips_a_corrupt_file(tmp_path):
    import tifffile

    rng = np.random.default_rng(1)
    (tmp_path / "def").mkdir()
    (tmp_path / "foc").mkdir()
    f = rng.integers(0, 255, (60, 40), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "foc" / "slow_scan.tif", f)
    for i in range(3):
        tifffile.imwrite(tmp_path / "def" / f"d{i}.tif", (f // (i + 2)).astype(np.uint8))
    (tmp_path / "def" / "d9.tif").write_bytes(b"II*\x00 truncated")
    manifest, cases = build_s2r(tmp_path / "def", tmp_path / "foc", crop_fraction=0.0)
    assert [c.case_id for c in cases] == ["d0@real", "d1@real", "d2@real"]
    for i, c in enumerate(cases):
        np.testing.assert_array_equal(c.reference, f.astype(np.float32))
        np.testing.assert_array_equal(c.input, (f // (i + 2)).astype(np.float32))
    assert len(manifest.references) == 1 and len(manifest.cases) == 3
    assert [s.path for s in manifest.skipped] == [str(tmp_path / "def" / "d9.tif")]
    reason = manifest.skipped[0].reason  # the file is named once, in its path
    assert "TIFF" in reason and "d9.tif" not in reason, reason
    # A single focused reference that cannot be read: one error naming it and why.
    (tmp_path / "foc" / "slow_scan.tif").write_bytes(b"II*\x00 truncated")
    with pytest.raises(ValueError, match="focused reference cannot be read") as err:
        build_s2r(tmp_path / "def", tmp_path / "foc", crop_fraction=0.0)
    assert f"{tmp_path / 'foc' / 'slow_scan.tif'}: TIFF" in str(err.value)

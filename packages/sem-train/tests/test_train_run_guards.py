"""Guards of a training run: double SIGINT, model overrides, duplicate YAML
keys, resume fingerprints, routing summary, NaN files and duplicates in the split, degenerate
expert counts, export provenance."""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import time
from pathlib import Path

import numpy as np
import pytest
from sem_train.config import ConfigError, load_config

# --- 1: SIGINT delivered twice (uv run without a terminal) -------------------------------


def test_two_sigints_in_quick_succession_are_one_ctrl_c():
    from sem_train.interrupt import GracefulInterrupt

    try:
        with GracefulInterrupt(announce=False) as stop:
            signal.raise_signal(signal.SIGINT)  # the group's SIGINT
            signal.raise_signal(signal.SIGINT)  # ... forwarded again by uv, microseconds later
            assert stop.requested  # no KeyboardInterrupt: the step finishes and is saved
    except KeyboardInterrupt:
        pytest.fail("one Ctrl-C delivered twice stopped the run at once, without saving")


def test_two_spaced_sigints_still_stop_at_once():
    from sem_train.interrupt import GracefulInterrupt

    with pytest.raises(KeyboardInterrupt), GracefulInterrupt(announce=False) as stop:
        signal.raise_signal(signal.SIGINT)
        assert stop.requested
        time.sleep(0.7)  # a person pressing Ctrl-C again
        signal.raise_signal(signal.SIGINT)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


# --- 2: model.overrides contradicting top-level settings --------------------------------

_S1 = {"preset": "cpu-small"}


@pytest.mark.parametrize(
    ("overrides", "named", "instead"),
    [
        ({"mask_ratio": 0.1}, "model.overrides.mask_ratio", "mask_ratio"),
        ({"img_size": 32}, "model.overrides.img_size", "data.image_size_px"),
        ({"in_chans": 3}, "model.overrides.in_chans", "data.channels"),
        ({"moe": {"num_experts": 4}}, "model.overrides.moe", "Stage 2's `moe` section"),
    ],
)
def test_overrides_owned_elsewhere_are_refused_at_load(overrides, named, instead):
    body = {**_S1, "model": {"preset": "tiny", "overrides": {"patch_size": 8, **overrides}}}
    with pytest.raises(ConfigError) as err:
        load_config(body, "stage1")
    assert named in str(err.value) and instead in str(err.value)


def test_overrides_equal_to_the_top_level_value_and_presets_still_load():
    body = {**_S1, "model": {"preset": "tiny", "overrides": {"patch_size": 8, "img_size": 64}}}
    assert load_config(body, "stage1").model.overrides["img_size"] == 64
    assert load_config("cpu-base", "stage1").model.overrides["img_size"] == 128


def test_finetune_refuses_a_mask_ratio_override():
    body = {
        "model": {"preset": "tiny", "overrides": {"patch_size": 8, "mask_ratio": 0.5}},
        "data": {"image_size_px": 64},
    }
    with pytest.raises(ConfigError, match=r"model\.overrides\.mask_ratio"):
        load_config(body, "finetune")


def test_cli_refuses_a_contradicting_override_before_creating_the_run_folder(tmp_path, capsys):
    from sem_train.cli import main

    image_folder = tmp_path / "data"
    for i in range(4):
        _png(image_folder / f"im{i}.png", i)

    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        "preset: cpu-small\nmodel:\n  preset: tiny\n  overrides:\n    patch_size: 8\n"
        "    in_chans: 3\n"
    )
    out = tmp_path / "run"
    args = ["--config", str(cfg), "--data", str(image_folder), "--output-dir", str(out)]
    code = main(["train", "pretrain", "--stage", "1", *args, "--max-steps", "1"])
    assert code == 2
    assert "model.overrides.in_chans" in capsys.readouterr().err
    assert not out.exists()


# --- 3: duplicate keys in a training YAML --------------------------------------------------


def test_a_duplicate_key_in_a_training_yaml_is_refused(tmp_path):
    cfg = tmp_path / "dup.yaml"
    cfg.write_text("preset: cpu-small\nrun:\n  epochs: 1\n  epochs: 2\n")
    with pytest.raises(ConfigError, match=r"line 4: duplicate key 'run.epochs' \(first on line 3"):
        load_config(str(cfg), "stage1")


def test_the_shared_strict_loader_is_importable_where_the_benchmark_reader_needs_it():
    from sem_train.config import safe_yaml_loader
    from sem_train.yaml_strict import duplicate_key

    assert safe_yaml_loader()[1].__name__ == "_NoAliasLoader"
    assert duplicate_key("a: 1\nb:\n  c: 1\n", "f.yaml") is None
    assert "'b.c'" in duplicate_key("a: 1\nb:\n  c: 1\n  c: 2\n", "f.yaml")


# --- 4: --resume over a file rewritten under the same name -----------------------------------


def _png(path: Path, seed: int, size: int = 72) -> Path:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (size, size + 8), dtype=np.uint8)).save(path)
    return path


def _stage1(root: Path, cache: Path, **data) -> object:
    body = {
        **_S1,
        "data": {"root": str(root), "cache_dir": str(cache), "val_fraction": 0.3, **data},
    }
    return load_config(body, "stage1")


def _started_run(tmp_path: Path, fingerprints: bool = True) -> tuple[object, Path, dict]:
    """(config, run folder, record): six images split by a Stage-1 config, the record saved in
    the run folder as a run's start saves it (without fingerprints, as before they were kept)."""
    from sem_train.datasplit import split_record

    root = tmp_path / "data"
    for i in range(6):
        _png(root / f"im{i}.png", i)
    cfg = _stage1(root, tmp_path / "cache")
    run = tmp_path / "run"
    run.mkdir()
    record = split_record("stage1", cfg)
    if not fingerprints:
        record.pop("fingerprints", None)
    (run / "data_split.json").write_text(json.dumps(record), encoding="utf-8")
    return cfg, run, record


def test_resume_refuses_a_data_file_rewritten_under_the_same_name(tmp_path):
    from sem_train.datasplit import ResumeDataError, check_resume_split, split_record

    cfg, run, record = _started_run(tmp_path)
    victim = Path(record["validation"][0])
    _png(victim, 123, size=80)  # another readable image (another size) under its name
    with pytest.raises(ResumeDataError) as err:
        check_resume_split(run, split_record("stage1", cfg))
    assert victim.name in str(err.value) and "rewritten" in str(err.value)


def test_resume_warns_of_a_data_file_with_only_another_modification_time(tmp_path, caplog):
    """Same size, another time: a copy without its times (cp without -p, another machine)
    resumes, with a warning naming the file."""
    from sem_train.datasplit import check_resume_split, split_record

    cfg, run, record = _started_run(tmp_path)
    touched = Path(record["train"][0])
    os.utime(touched, ns=(1, 1))
    with caplog.at_level("WARNING", logger="sem_train.datasplit"):
        check_resume_split(run, split_record("stage1", cfg))
    assert touched.name in caplog.text and "modification time" in caplog.text


def test_resume_of_a_split_record_without_fingerprints_still_works(tmp_path):
    from sem_train.datasplit import check_resume_split, split_record

    cfg, run, record = _started_run(tmp_path, fingerprints=False)
    os.utime(record["train"][0], ns=(1, 1))
    check_resume_split(run, split_record("stage1", cfg))


# --- 5: routing summary keys are the true max / min / count over layers ---------------------


def test_routing_summary_max_min_unused_are_over_layers_not_means(monkeypatch):
    import sem_models
    import torch
    from sem_train import modeling

    layers = {
        "blocks.0.mlp": (1.0, 0.0, 3.0),  # collapsed
        "blocks.1.mlp": (0.25, 0.25, 0.0),
        "blocks.2.mlp": (0.25, 0.25, 0.0),
    }
    stats = {}
    for name, (hi, lo, unused) in layers.items():
        stats[f"{name}/routing_entropy"] = torch.tensor(0.5, dtype=torch.float64)
        stats[f"{name}/unused_experts"] = torch.tensor(unused, dtype=torch.float64)
        stats[f"{name}/max_token_fraction"] = torch.tensor(hi, dtype=torch.float64)
        stats[f"{name}/min_token_fraction"] = torch.tensor(lo, dtype=torch.float64)
    for key in ("routing_entropy", "unused_experts", "max_token_fraction", "min_token_fraction"):
        vals = [v for k, v in stats.items() if k.endswith("/" + key)]
        stats[f"mean/{key}"] = torch.stack(vals).mean()

    def fake(model, per_expert=False, tensors=False):
        return dict(stats) if tensors else {k: float(v) for k, v in stats.items()}

    monkeypatch.setattr(sem_models, "routing_stats", fake)
    out = modeling.routing_summary(object())
    assert out["max_token_fraction"] == 1.0
    assert out["min_token_fraction"] == 0.0
    assert out["unused_experts"] == 3.0
    assert out["routing_entropy"] == pytest.approx(0.5)  # a layer mean, as documented
    as_tensors = modeling.routing_summary(object(), tensors=True)
    assert float(as_tensors["max_token_fraction"]) == 1.0


# --- 6: a file with NaN pixels is listed as skipped, not as a training image ----------------


def test_a_float_tiff_with_nan_pixels_is_skipped_in_the_split(tmp_path):
    import tifffile
    from sem_train.datasplit import split_record

    root = tmp_path / "data"
    for i in range(5):
        _png(root / f"im{i}.png", i)
    bad = np.random.default_rng(0).random((72, 80)).astype(np.float32)
    bad[10:20, 10:20] = np.nan
    tifffile.imwrite(root / "float_nan.tif", bad)
    record = split_record("stage1", _stage1(root, tmp_path / "cache"))
    nan_file = str(root.resolve() / "float_nan.tif")
    assert nan_file not in record["train"] + record["validation"]
    assert "NaN" in record["skipped"][nan_file]


# --- 7: byte-identical duplicates ---------------------------------------------------------------


def test_byte_identical_copies_are_kept_once_and_named(tmp_path, caplog):
    from sem_train.data.index import build_index
    from sem_train.datasplit import split_record

    root = tmp_path / "data"
    for i in range(6):
        _png(root / f"im{i}.png", i)
    (root / "sub dir").mkdir()
    shutil.copyfile(root / "im2.png", root / "sub dir" / "copy of im2.png")
    _png(root / "same_size_other.png", 99)  # equal size, other content: not a duplicate
    with caplog.at_level(logging.WARNING):
        index = build_index(root, cache_dir=tmp_path / "cache")
        build_index(root, cache_dir=tmp_path / "cache")  # cached: warned about once
    assert "sub dir/copy of im2.png" not in index.files
    assert index.duplicates == {"sub dir/copy of im2.png": "byte-identical copy of im2.png"}
    assert "same_size_other.png" in index.files
    warned = [r.getMessage() for r in caplog.records if "byte-identical" in r.getMessage()]
    assert len(warned) == 1 and "copy of im2.png" in warned[0]
    record = split_record("stage1", _stage1(root, tmp_path / "cache"))
    copy = str(root.resolve() / "sub dir" / "copy of im2.png")
    assert copy in record["skipped"] and copy not in record["train"] + record["validation"]


def test_the_same_picture_in_other_bytes_is_kept_once_and_named(tmp_path, caplog, monkeypatch):
    """A picture saved as PNG and as TIFF (same pixels, other bytes) is one image: the copy is
    left out and named like a byte-identical one, so it cannot validate on a training image.
    A picture of the same size but other pixels stays; a later index decodes nothing again."""
    import tifffile
    from PIL import Image
    from sem_train.data import index as index_module
    from sem_train.datasplit import split_record

    root = tmp_path / "data"
    for i in range(6):
        _png(root / f"im{i}.png", i)
    pixels = np.asarray(Image.open(root / "im3.png"))
    (root / "tiff copies").mkdir()
    tifffile.imwrite(root / "tiff copies" / "im3.tif", pixels)
    other = pixels.copy()
    other[0, 0] ^= 1  # one grey level apart: another picture
    tifffile.imwrite(root / "near copy.tif", other)
    assert (root / "im3.png").read_bytes() != (root / "tiff copies" / "im3.tif").read_bytes()
    with caplog.at_level(logging.WARNING):
        index = index_module.build_index(root, cache_dir=tmp_path / "cache")
        monkeypatch.setattr(index_module, "_pixel_digest", lambda p: pytest.fail(f"decoded {p}"))
        again = index_module.build_index(root, cache_dir=tmp_path / "cache")  # from the cache
    assert index.duplicates == again.duplicates == {"tiff copies/im3.tif": "same pixels as im3.png"}
    assert "tiff copies/im3.tif" not in index.files
    assert {"im3.png", "near copy.tif"} <= set(index.files)
    warned = [r.getMessage() for r in caplog.records if "same pixels" in r.getMessage()]
    assert len(warned) == 1 and "tiff copies/im3.tif (= im3.png)" in warned[0]
    monkeypatch.undo()
    record = split_record("stage1", _stage1(root, tmp_path / "cache"))
    copy = str(root.resolve() / "tiff copies" / "im3.tif")
    assert record["skipped"][copy] == "same pixels as im3.png"
    assert copy not in record["train"] + record["validation"]


def test_a_corpus_in_one_format_is_not_decoded_to_find_copies(tmp_path, monkeypatch):
    """Equal-sized images all in one format (the usual large corpus) are never decoded for
    the same-pixels check: only a picture saved in another format can be such a copy."""
    from sem_train.data import index as index_module

    root = tmp_path / "data"
    for i in range(5):
        _png(root / f"im{i}.png", i)
    monkeypatch.setattr(index_module, "_pixel_digest", lambda p: pytest.fail(f"decoded {p}"))
    index = index_module.build_index(root, cache_dir=tmp_path / "cache")
    assert len(index.files) == 5 and index.duplicates == {}


# --- 8: absurd expert counts --------------------------------------------------------------------


def test_one_expert_is_warned_about_at_config_load(tmp_path, caplog):
    body = {"preset": "cpu-small", "init_from": str(tmp_path / "s1"), "moe": {"num_experts": 1}}
    with caplog.at_level(logging.WARNING):
        load_config(body, "stage2")
    assert any("num_experts=1" in r.getMessage() for r in caplog.records)


def test_more_experts_than_tokens_per_batch_is_warned_about():
    from sem_models import MoEConfig
    from sem_train.config import moe_size_notes
    from sem_train.preflight import tokens_per_batch

    cfg = load_config({"preset": "cpu-small", "init_from": "s1"}, "stage2")
    tokens = tokens_per_batch(cfg, {"patch_size": 8})
    assert tokens == 8 * (16 + 1)  # 64-px crops, 8-px patches, 25 % visible, plus CLS
    notes = moe_size_notes(MoEConfig(num_experts=160), tokens)
    assert len(notes) == 1 and "at least 24 of the 160 experts" in notes[0]
    assert moe_size_notes(MoEConfig(num_experts=4), tokens) == []


# --- 9: the export records the run, step and data it came from ---------------------------------


def test_the_best_export_records_run_step_and_data_split(tmp_path):
    import hashlib

    import sem_models
    from safetensors import safe_open
    from sem_train.checkpoint import Checkpointer

    run = tmp_path / "my-run"
    run.mkdir()
    split = {
        "kind": "stage1",
        "data_root": "/data",
        "train": ["/data/a.tif", "/data/b.tif"],
        "validation": ["/data/c.tif"],
        "skipped": {"/data/d.tif": "unreadable"},
    }
    (run / "data_split.json").write_text(json.dumps(split))
    model = sem_models.build_mae(
        "tiny",
        embed_dim=32,
        depth=1,
        num_heads=2,
        decoder_embed_dim=16,
        decoder_depth=1,
        decoder_num_heads=2,
        patch_size=8,
        img_size=32,
        in_chans=1,
    )
    ckpt = Checkpointer(run)
    export = ckpt.save_best(lambda d: sem_models.save_model(model, d), 12, 0.25)
    meta = json.loads((export / "config.json").read_text())
    training = meta["training"]
    assert training["run"] == "my-run" and training["global_step"] == 12
    assert training["val_loss"] == 0.25
    summary = training["data_split"]
    assert (summary["train"], summary["validation"], summary["skipped"]) == (2, 1, 1)
    want = hashlib.sha256(b"/data/a.tif\n/data/b.tif").hexdigest()
    assert summary["train_sha256"] == want
    with safe_open(str(export / "model.safetensors"), "pt") as fh:  # weights format unchanged
        assert fh.metadata() == {"format": sem_models.checkpoint.FORMAT}
    assert type(sem_models.load_model(export)).__name__ == "MaskedAutoencoder"


def test_a_best_export_killed_midway_leaves_no_best_folder_and_the_next_start_removes_it(
    tmp_path,
):
    """The export is written under a hidden name and renamed when complete: a kill during it
    never leaves a ``best-N`` folder that looks like a model, and the next start clears it."""
    from sem_train.checkpoint import Checkpointer

    run = tmp_path / "run"
    run.mkdir()
    ckpt = Checkpointer(run)

    def good(folder):
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "model.safetensors").write_bytes(b"w1")

    first = ckpt.save_best(good, 5, 0.5)
    seen: list[str] = []

    class Killed(BaseException):  # like SIGKILL: nothing after it runs in this process
        pass

    def killed(folder):
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "model.safetensors").write_bytes(b"half")
        seen.append(sorted(p.name for p in ckpt.dir.iterdir() if p.is_dir()))
        raise Killed

    with pytest.raises(Killed):
        ckpt.save_best(killed, 9, 0.4)
    assert seen == [[".partial-best-00000009", "best-00000005"]]
    assert not (ckpt.dir / "best-00000009").exists()  # no half-written model under its name
    assert ckpt.best_dir == first and (first / "model.safetensors").read_bytes() == b"w1"
    removed = Checkpointer(run).remove_stale_temporaries()
    assert removed == [ckpt.dir / ".partial-best-00000009"]
    assert not removed[0].exists() and first.is_dir()
    again = ckpt.save_best(good, 9, 0.4)  # the replayed step exports it whole
    assert again.name == "best-00000009" and not first.exists()

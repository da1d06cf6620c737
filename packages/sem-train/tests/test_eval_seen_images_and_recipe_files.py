"""Evaluating and restoring with your own runs:

* ``sem benchmark`` says when a given checkpoint (or a run it descends from) trained or
  validated on evaluation images: a warning on stderr, the row marked in ``table.md``;
  nothing new for a checkpoint without ``data_split.json``;
* ``sem restore`` passes on what the loaded model says of itself (a dense checkpoint under
  ``--method sem-foundation``);
* ``sem train recipe --config FILE`` takes a YAML/JSON config as ``pretrain``/``finetune`` do.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from sem_models import RestorationModel, build_mae, save_model
from sem_models.testing import MICRO_MAE
from sem_train.evaluation import run_benchmark
from sem_train.evaluation.config import make_config

pytestmark = pytest.mark.usefixtures("one_torch_thread")

WINDOW = {"window_px": 32, "overlap_px": 8, "device": "cpu"}
MARK = "†"


def _export(folder: Path, seed: int = 0) -> Path:
    """A tiny fine-tuned (residual, dense) restoration model exported by sem-models."""
    torch.manual_seed(seed)
    save_model(RestorationModel(build_mae("tiny", in_chans=1, **MICRO_MAE), residual=True), folder)
    return folder


def _run(root: Path, kind: str, train, validation, init_from: Path | None = None) -> Path:
    """A ``sem train`` run folder: best export, ``data_split.json``, ``run_info.json``."""
    export = _export(root / "checkpoints" / "best-00000010")
    (root / "checkpoints" / "best.json").write_text(json.dumps({"dir": export.name}))
    split = {"kind": kind, "train": [str(p) for p in train]}
    split |= {"validation": [str(p) for p in validation], "skipped": {}}
    (root / "data_split.json").write_text(json.dumps(split))
    info: dict = {"argv": ["sem", "train", kind]}
    if init_from is not None:
        info["model_exports"] = {"init_from": str(init_from / "checkpoints" / "best-00000010")}
    (root / "run_info.json").write_text(json.dumps(info))
    return root


def _images(folder: Path, n: int = 3, seed: int = 0) -> list[Path]:
    import tifffile

    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        img = (rng.random((64, 64)) * 200 + 20).astype(np.uint8)
        tifffile.imwrite(folder / f"img{i}.tif", img)
        paths.append(folder / f"img{i}.tif")
    return paths


def _bench(tmp_path: Path, images: Path, checkpoint: Path, out: str = "bench"):
    return make_config(
        {
            "out": str(tmp_path / out),
            "images": str(images),
            "crop_fraction": 0.0,
            "n_train": 0,
            "n_val": 0,
            "n_eval": 3,
            "settings": ["midpoint"],
            "methods": ["input", "sem-foundation"],
            "method_config": {"sem-foundation": {"checkpoint_dir": str(checkpoint), **WINDOW}},
            "quality_metrics": ["psnr"],
            "figure_cases": 0,
        }
    )


def test_benchmark_warns_and_marks_a_checkpoint_evaluated_on_its_runs_images(tmp_path, capsys):
    img = _images(tmp_path / "eval")
    elsewhere = tmp_path / "corpus" / "copy of img2.tif"  # the same bytes under another path
    elsewhere.parent.mkdir()
    shutil.copy(img[2], elsewhere)
    other = tmp_path / "corpus" / "other.tif"
    shutil.copy(img[0], other)
    other.write_bytes(other.read_bytes()[:-1] + b"\x01")  # same size, other content
    # Stage 1 trained on img0 and a copy of img2; the fine-tune started from it validated on img1
    s1 = _run(tmp_path / "runs" / "s1", "stage1", [img[0], elsewhere, other], [])
    ft = _run(tmp_path / "runs" / "ft", "finetune", [other], [img[1]], init_from=s1)
    out = run_benchmark(_bench(tmp_path, img[0].parent, ft), progress=False).parent
    err = capsys.readouterr().err
    warning = next(x for x in err.splitlines() if x.startswith("sem: warning: sem-foundation"))
    assert "3 of the 3 evaluation image(s)" in warning
    assert f"img0 (training of stage1 run {s1})" in warning
    assert f"img1 (validation of finetune run {ft})" in warning
    assert f"img2 (training of stage1 run {s1}, a copy of {elsewhere})" in warning
    table = (out / "table.md").read_text()
    assert f"| sem-foundation {MARK} |" in table and "| defocused input |" in table
    note = next(x for x in table.splitlines() if x.startswith(MARK))
    assert "sem-foundation: 3 of 3 (img0, img1, img2" in note and str(s1) in note
    assert table in (out / "report.md").read_text()
    methods = {m["method"]: m for m in json.loads((out / "results.json").read_text())["methods"]}
    seen = methods["sem-foundation"]["seen_in_training"]
    assert [(s["image"], s["role"]) for s in seen] == [
        ("img0", "training"),
        ("img1", "validation"),
        ("img2", "training"),
    ]
    assert "seen_in_training" not in methods["defocused input"]
    # the export itself (inside the run's checkpoints/) finds the same run and its parent
    out2 = run_benchmark(
        _bench(tmp_path, img[0].parent, ft / "checkpoints" / "best-00000010", "b2"),
        progress=False,
    ).parent
    assert "3 of the 3 evaluation image(s)" in capsys.readouterr().err
    assert f"| sem-foundation {MARK} |" in (out2 / "table.md").read_text()


def test_benchmark_says_nothing_new_for_unseen_images_or_a_checkpoint_without_a_split(
    tmp_path, capsys
):
    img = _images(tmp_path / "eval")
    unseen = _images(tmp_path / "train_imgs", 2, seed=1)
    ft = _run(tmp_path / "runs" / "ft", "finetune", unseen[:1], unseen[1:])
    external = _export(tmp_path / "external" / "model")  # no data_split.json anywhere
    for i, ck in enumerate((ft, external)):
        out = run_benchmark(_bench(tmp_path, img[0].parent, ck, f"b{i}"), progress=False).parent
        assert "evaluation image(s) are training" not in capsys.readouterr().err
        table = (out / "table.md").read_text()
        assert "| sem-foundation |" in table and MARK not in table
        assert MARK not in (out / "report.md").read_text()


def test_lineage_follows_config_init_from_and_stops_on_a_loop(tmp_path):
    from sem_train.evaluation.seen import lineage, run_folder_of

    a = _run(tmp_path / "a", "stage1", [], [])
    b = _run(tmp_path / "b", "stage3", [], [], init_from=a)
    # no run_info.json: the config's init_from (a run folder) is followed instead
    (b / "run_info.json").unlink()
    (b / "config.json").write_text(json.dumps({"init_from": str(a)}))
    # a loop in the records (a -> b -> a) ends
    (a / "run_info.json").write_text(json.dumps({"model_exports": {"init_from": str(b)}}))
    assert [r.run_dir for r in lineage(b)] == [b, a]
    weights = b / "checkpoints" / "best-00000010" / "model.safetensors"
    assert run_folder_of(weights) == b
    assert run_folder_of(tmp_path) is None


def test_restore_passes_on_the_models_note_that_a_checkpoint_is_dense(tmp_path, capsys):
    from sem_train.cli import main

    run = _run(tmp_path / "runs" / "dft", "finetune", [], [])  # a dense fine-tune (no MoE)
    src = _images(tmp_path / "in", 1)[0]
    out = tmp_path / "out"
    argv = ["restore", str(src), "-o", str(out), "--method", "sem-foundation"]
    assert main([*argv, "--checkpoint", str(run), "--set", "window_px=32"]) == 0
    notes = json.loads((out / "restore.json").read_text())["notes"]
    dense = [n for n in notes if "is a dense model (no Mixture-of-Experts)" in n]
    assert len(dense) == 1 and dense[0].startswith("sem-foundation: ")
    assert "not the paper's MAE + MoE" in dense[0]
    err = capsys.readouterr().err
    assert err.count("sem: note: sem-foundation: ") == 1 and "is a dense model" in err
    # restore() from Python says it as a RestoreWarning
    from sem_physics.io import read_image
    from sem_train.restoration import RestoreWarning, restore

    with pytest.warns(RestoreWarning, match="sem-foundation: .*is a dense model"):
        restore(read_image(src).data, "sem-foundation", checkpoint=run, window_px=32)
    # a deconvolution has no model: nothing new
    wiener = ["--method", "wiener", "--psf", "2,2,0,2"]
    assert main(["restore", str(src), "-o", str(tmp_path / "w"), *wiener]) == 0
    assert json.loads((tmp_path / "w" / "restore.json").read_text())["notes"] == []


_TINY_RECIPE = """\
preset: cpu-base
data:
  image_size_px: 32
  cache_in_memory: false
  generated: {n_per_kind: 5, shape: [64, 80]}
run: {epochs: 1, batch_size_per_process: 6, progress: false}
stage1:
  model: {preset: tiny, overrides: {patch_size: 16, img_size: 32}}
stage2:
  router_calibration_images: 2
finetune:
  crop_sizes_px: [32]
  refiner_width: 4
  pairs_per_image: 1
  run: {epochs: 2}
"""


def test_recipe_takes_a_yaml_config_with_settings_for_every_step_and_per_step(tmp_path, capsys):
    from sem_train.cli import main

    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(_TINY_RECIPE)
    out = tmp_path / "r"
    assert main(["train", "recipe", "--config", str(cfg), "--dense", "--output-dir", str(out)]) == 0
    assert "finished" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == ["finetune", "stage1", "stage3"]
    records = {k: json.loads((out / k / "config.json").read_text()) for k in ("stage1", "finetune")}
    assert records["stage1"]["run"]["epochs"] == 1 and records["finetune"]["run"]["epochs"] == 2
    assert records["stage1"]["data"]["image_size_px"] == 32
    assert records["finetune"]["refiner_width"] == 4
    assert Path(records["finetune"]["init_from"]) == out / "stage3"
    assert (out / "finetune" / "data_split.json").is_file()


@pytest.mark.parametrize(
    "text, needle",
    [
        ("preset: cpu-small\nrun: {output_dir: x}\n", "run.output_dir is set by the recipe"),
        ("preset: cpu-small\nstage3: {init_from: x}\n", "stage3.init_from is set by the recipe"),
        ("preset: cpu-small\nstage3: {kd_wieght: 1}\n", "recipe step stage3): kd_wieght (line 2)"),
        ("preset: cpu-small\nfinetune: 3\n", "`finetune:` must hold that step's settings"),
        (  # a field error names its line, in a step's section as in a single-stage file
            "preset: cpu-small\nstage2:\n  moe:\n    num_experts: true\n",
            "recipe step stage2): moe.num_experts (line 4) must be an integer >= 1, got True",
        ),
        ("preset:\nrun: {epochs: 2}\n", "line 1: preset is empty; choose from ['cpu-base'"),
        (  # every step's own run: mapping would replace the invalid run: 5 of all steps
            "preset: cpu-small\nrun: 5\n"
            + "".join(f"{k}: {{run: {{epochs: 1}}}}\n" for k in ("stage1", "stage2", "stage3"))
            + "finetune: {run: {epochs: 1}}\n",
            "line 2: run must be a mapping of settings (stage1.run is merged into it), got int",
        ),
    ],
)
def test_recipe_refuses_a_bad_config_file_in_one_line_before_any_step(
    tmp_path, capsys, text, needle
):
    from sem_train.cli import main

    cfg = tmp_path / "bad.yaml"
    cfg.write_text(text)
    out = tmp_path / "r"
    assert main(["train", "recipe", "--config", str(cfg), "--output-dir", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0] and str(cfg) in err[0], err
    assert not out.exists()


def test_recipe_configs_chain_the_steps_and_merge_the_step_sections(tmp_path):
    from sem_train.recipe import recipe_configs

    cfg = tmp_path / "r.yaml"
    cfg.write_text("preset: cpu-small\nrun: {epochs: 3}\nstage2: {moe: {num_experts: 2}}\n")
    out = tmp_path / "runs"
    configs = recipe_configs(str(cfg), data_root=None, output_dir=out)
    assert [c.run.epochs for c in configs.values()] == [3, 3, 3, 3]
    assert configs["stage2"].moe.num_experts == 2
    assert configs["stage2"].init_from == out / "stage1"
    assert configs["stage3"].init_from == out / "stage2"
    assert configs["stage3"].teacher_from == out / "stage1"
    assert configs["finetune"].run.output_dir == out / "finetune"
    # the same file for the dense ablation: its stage2 section is not used
    dense = recipe_configs(cfg, data_root=None, output_dir=out, kinds=("stage1", "stage3"))
    assert list(dense) == ["stage1", "stage3"] and dense["stage3"].init_from == out / "stage1"


def test_a_recipe_file_needs_no_preset(tmp_path):
    """Without ``preset:`` no step's section gives init_from (the file may not): Stage 2 was
    refused as needing one, though the recipe sets it; every step starts from the last now."""
    from itertools import pairwise

    from sem_train.recipe import RECIPE_KINDS as RECIPE_STEPS
    from sem_train.recipe import recipe_configs

    cfg = tmp_path / "own.yaml"
    cfg.write_text(
        "data: {image_size_px: 32}\nrun: {epochs: 2}\n"
        "stage1:\n  model: {preset: tiny, overrides: {patch_size: 16}}\n"
    )
    out = tmp_path / "runs"
    configs = recipe_configs(cfg, data_root=None, output_dir=out)
    assert [c.run.epochs for c in configs.values()] == [2, 2, 2, 2]
    assert configs["stage1"].init_from is None and configs["stage1"].model.overrides
    for before, kind in pairwise(RECIPE_STEPS):
        assert configs[kind].init_from == out / before
    assert configs["stage3"].teacher_from == out / "stage1"
    assert configs["finetune"].model is None  # it starts from Stage 3, not a fresh MAE


@pytest.mark.parametrize(
    "text, needle",
    [
        ("run: 5\nstage1: {run: {epochs: 2}}\n", "line 1: run must be a mapping"),
        (
            "data:\n  augment: 5\nstage3:\n  data: {augment: {hflip: false}}\n",
            "line 2: data.augment must be a mapping of settings (stage3.data.augment is merged "
            "into it), got int",
        ),
        ("model: [tiny]\nstage1: {model: {preset: tiny}}\n", "model must be a mapping"),
    ],
)
def test_a_section_for_every_step_that_is_no_mapping_is_not_hidden_by_a_steps_own(
    tmp_path, text, needle
):
    """A single-stage config refuses ``run: 5`` whatever the options set in ``run``; the
    recipe refused it only in a step without its own ``run:`` mapping, which replaced it."""
    from sem_train.config import ConfigError
    from sem_train.recipe import recipe_configs

    cfg = tmp_path / "r.yaml"
    cfg.write_text(text)
    with pytest.raises(ConfigError, match=re.escape(needle)) as exc:
        recipe_configs(cfg, data_root=None, output_dir=tmp_path / "out")
    assert str(exc.value).startswith(f"{cfg}, line ") and "\n" not in str(exc.value)

"""``sem train recipe``: Stage 1 -> 2 -> 3 -> fine-tune chained, finished steps skipped,
an interrupted step resumed, the data split recorded, generated images as training data."""

from __future__ import annotations

import json

import pytest
import torch
from sem_models import RestorationModel, load_model
from sem_models.testing import MICRO_MAE
from sem_train.config import GeneratedData, load_config
from sem_train.data import indexed_paths
from sem_train.data.dataset import GENERATED_ROOT, generated_paths, load_image_tensor
from sem_train.modeling import resolve_model_dir
from sem_train.recipe import DONE_FILE, RECIPE_KINDS, SPLIT_FILE, run_recipe

_SMALL_RUN = {"epochs": 1, "batch_size_per_process": 6, "progress": False}
_SMALL_DATA = {
    "image_size_px": 32,
    "cache_in_memory": False,
    "generated": {"n_per_kind": 5, "shape": (64, 80)},
}


def _overrides() -> dict[str, dict]:
    # the micro MAE (width 32, two blocks) at 16-px patches: the chain, not the model, is tested
    model = {"preset": "tiny", "overrides": {**MICRO_MAE, "patch_size": 16, "img_size": 32}}
    common = {"data": _SMALL_DATA, "run": _SMALL_RUN}
    return {
        "stage1": {**common, "model": model},
        "stage2": {**common, "router_calibration_images": 2},
        "stage3": common,
        "finetune": {**common, "crop_sizes_px": (32,), "refiner_width": 4, "pairs_per_image": 1},
    }


def test_generated_images_are_disjoint_from_protocol_seeds_and_readable():
    cfg = GeneratedData(n_per_kind=2, shape=(40, 48))
    paths = generated_paths(cfg)
    assert len(paths) == 6 and all(p.parent == GENERATED_ROOT for p in paths)
    seeds = [int(p.name.rsplit("-s", 1)[1]) for p in paths]
    assert min(seeds) >= 1_000_000 and len(set(seeds)) == 6
    img = load_image_tensor(paths[0], 0.0667)  # no info bar is cut from a generated image
    assert img.shape == (1, 40, 48) and 0 <= float(img.min()) <= float(img.max()) <= 1
    with pytest.raises(ValueError, match="not a generated sample name"):
        load_image_tensor(GENERATED_ROOT / "lines-40x48", 0.0)


def test_generated_kinds_are_chosen_and_keep_each_kinds_seeds():
    default = generated_paths(GeneratedData(n_per_kind=2, shape=(40, 48)))
    chosen = generated_paths(GeneratedData(n_per_kind=2, shape=(40, 48), kinds=("resist", "lines")))
    # Each kind keeps its seeds whatever the others: the lines are the default set's lines.
    assert [p.name for p in chosen[2:]] == [p.name for p in default[:2]]
    assert [p.name.split("-")[0] for p in chosen[:2]] == ["resist", "resist"]
    assert load_image_tensor(chosen[0], 0.0).shape == (1, 40, 48)
    for bad in (("wires",), ("lines", "lines"), ()):
        with pytest.raises(ValueError, match="kinds"):
            GeneratedData(n_per_kind=1, kinds=bad)


def test_folder_and_generated_images_are_indexed_together(tmp_path):
    from PIL import Image

    Image.fromarray((torch.rand(40, 40) * 255).byte().numpy()).save(tmp_path / "a.png")
    data = {"root": tmp_path, "cache_dir": tmp_path / "cache", "generated": {"n_per_kind": 1}}
    data["image_size_px"] = 32  # the 40-px image is not smaller than the training crop
    cfg = load_config({"data": data}, "stage1")
    paths, _ = indexed_paths(cfg.data)
    assert paths[0].name == "a.png" and len(paths) == 4


@pytest.mark.usefixtures("one_torch_thread")
def test_recipe_chains_the_steps_records_the_split_and_resumes(tmp_path):
    out = tmp_path / "run"
    logs: list[str] = []
    summary = run_recipe(
        "cpu-base", data_root=None, output_dir=out, overrides=_overrides(), log=logs.append
    )
    assert list(summary) == list(RECIPE_KINDS)
    for kind in RECIPE_KINDS:
        assert (out / kind / DONE_FILE).is_file()
        # each step's last line as a single stage's: its step and its loss to 5 digits
        best = summary[kind]["best_val_loss"]
        said = f"{kind}: finished at step {summary[kind]['global_step']} in "
        assert sum(m.startswith(said) for m in logs) == 1, logs
        assert any(m.startswith(said) and m.endswith(f"; best val loss {best:.5g}") for m in logs)
    # Each step starts from the previous one's model.
    assert load_config(json.loads((out / "stage2" / "config.json").read_text()), "stage2")
    s3 = json.loads((out / "stage3" / "config.json").read_text())
    assert s3["init_from"] == str(out / "stage2")
    ft_cfg = json.loads((out / "finetune" / "config.json").read_text())
    assert ft_cfg["init_from"] == str(out / "stage3")
    # The fine-tune's ten images and its validation images are recorded and disjoint.
    split = json.loads((out / "finetune" / SPLIT_FILE).read_text())
    assert len(split["train"]) == 10 and len(split["validation"]) == 4
    assert not set(split["train"]) & set(split["validation"])
    model = load_model(resolve_model_dir(out / "finetune"))
    assert isinstance(model, RestorationModel) and model.refiner_width == 4
    assert model.mae.config.moe is not None  # the MoE of Stage 2 is carried to the end

    with pytest.raises(FileExistsError, match="--resume"):
        run_recipe("cpu-base", data_root=None, output_dir=out, overrides=_overrides())
    # An interrupted last step (no done marker) continues from its checkpoint; others skip.
    (out / "finetune" / DONE_FILE).unlink()
    logs.clear()
    run_recipe(
        "cpu-base",
        data_root=None,
        output_dir=out,
        overrides=_overrides(),
        resume=True,
        log=logs.append,
    )
    assert sum("skipped" in m for m in logs) == 3
    assert any(m.startswith("finetune: resuming") for m in logs)


@pytest.mark.usefixtures("one_torch_thread")
def test_a_step_stopped_by_max_steps_says_so(tmp_path):
    """A step that run.max_steps stopped before its first validation is not called finished
    (nor given a best validation loss of None), and a resume says why it skips it."""
    overrides = _overrides()
    overrides["stage1"]["run"] = {**_SMALL_RUN, "epochs": 3, "max_steps": 1}
    out, logs = tmp_path / "run", []
    kw = {"data_root": None, "output_dir": out, "overrides": overrides, "kinds": ("stage1",)}
    run_recipe("cpu-base", **kw, log=logs.append)
    assert logs[-1].startswith("stage1: stopped early by run.max_steps at step 1 in ")
    assert logs[-1].endswith("; best val loss n/a")
    logs.clear()
    run_recipe("cpu-base", **kw, resume=True, log=logs.append)
    assert len(logs) == 1 and logs[0].startswith("stage1: already stopped by run.max_steps (")
    assert logs[0].endswith("), skipped")


def test_recipe_resume_refuses_a_folder_without_a_recipe_run(tmp_path, capsys):
    """--resume into a mistyped folder trained every step from step 0; it is refused now."""
    from sem_train.cli import main

    with pytest.raises(FileNotFoundError, match=r"--resume: no checkpoint in .*start without"):
        run_recipe(
            "cpu-base", data_root=None, output_dir=tmp_path / "typo", overrides=_overrides(),
            kinds=("stage1",), resume=True,
        )  # fmt: skip
    assert not (tmp_path / "typo").exists()
    (tmp_path / "other" / "stage1").mkdir(parents=True)  # a step folder, but no run in it
    argv = ["train", "recipe", "--config", "cpu-base", "--resume", "--output-dir"]
    assert main([*argv, str(tmp_path / "other")]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--resume: no checkpoint in" in err[0]
    assert sorted(p.name for p in (tmp_path / "other").iterdir()) == ["stage1"]


@pytest.mark.usefixtures("one_torch_thread")
def test_recipe_resume_refuses_changed_settings_of_a_step(tmp_path):
    """A step with a checkpoint, finished or not, was skipped or continued whatever the recipe's
    settings now; it is refused naming the step and the changed fields, as a single-stage
    --resume refuses them, before any step trains."""
    import shutil

    from sem_train.runinfo import ResumeConfigError

    out = tmp_path / "run"
    run_recipe(
        "cpu-base", data_root=None, output_dir=out, overrides=_overrides(), kinds=("stage1",)
    )
    changed = _overrides()
    for section in changed.values():
        section["run"] = {**_SMALL_RUN, "epochs": 2}
        section["optim"] = {"lr": 5e-4}
    needle = r"recipe step stage1\): .*optim\.lr 0\.001 → 0\.0005, run\.epochs 1 → 2"
    with pytest.raises(ResumeConfigError, match=needle) as exc:
        run_recipe("cpu-base", data_root=None, output_dir=out, overrides=changed, resume=True)
    # the way on is the recipe's (it has no --init-from for a step), not a single stage's
    said = str(exc.value)
    assert "--init-from" not in said and "\n" not in said
    assert said.endswith(
        "to resume, give the recipe the settings its steps started with; to train with the new "
        "ones (more epochs included), run the recipe into another --output-dir"
    )
    # The finished step copied into a new folder: refused before Stage 2 starts.
    shutil.copytree(out / "stage1", tmp_path / "new" / "stage1")
    with pytest.raises(ResumeConfigError, match=needle):
        run_recipe(
            "cpu-base", data_root=None, output_dir=tmp_path / "new", overrides=changed,
            kinds=("stage1", "stage2"), resume=True,
        )  # fmt: skip
    assert not (tmp_path / "new" / "stage2").exists()
    # Unfinished (its done marker gone): refused by the recipe too, before the imports.
    (out / "stage1" / DONE_FILE).unlink()
    with pytest.raises(ResumeConfigError, match=needle):
        run_recipe("cpu-base", data_root=None, output_dir=out, overrides=changed, resume=True)
    # Resumable settings (the device, logging) may still change.
    same = _overrides()
    same["stage1"]["run"] = {**_SMALL_RUN, "log_every_steps": 3}
    logs: list[str] = []
    run_recipe(
        "cpu-base", data_root=None, output_dir=out, overrides=same, kinds=("stage1",),
        resume=True, log=logs.append,
    )  # fmt: skip
    assert logs[0] == f"stage1: resuming into {out / 'stage1'}"


@pytest.mark.usefixtures("one_torch_thread")
def test_recipe_resume_over_changed_data_names_the_recipes_way_on(tmp_path, folder_writer):
    """An interrupted step resumed over a data folder with a file added is refused before it
    trains, naming the recipe's new run, not a single stage's ``--init-from``."""
    from sem_train.datasplit import ResumeDataError

    images = tmp_path / "images"
    folder_writer(images, 4, size=48)
    out = tmp_path / "run"
    kinds = ("stage1",)
    run_recipe("cpu-base", data_root=images, output_dir=out, overrides=_overrides(), kinds=kinds)
    (out / "stage1" / DONE_FILE).unlink()  # interrupted after its checkpoint
    folder_writer(images / "later", 1, size=48, seed=7)
    logs: list[str] = []
    with pytest.raises(ResumeDataError, match=r"1 file\(s\) added") as exc:
        run_recipe(
            "cpu-base", data_root=images, output_dir=out, overrides=_overrides(), kinds=kinds,
            resume=True, log=logs.append,
        )  # fmt: skip
    said = str(exc.value)
    assert "--init-from" not in said and "\n" not in said
    assert said.endswith("or start a new run (sem train recipe ... --output-dir NEW_FOLDER)")
    assert logs == []  # refused before the step said it resumes


@pytest.mark.usefixtures("one_torch_thread")
def test_recipe_resume_with_another_number_of_processes_is_refused_before_it_says_so(tmp_path):
    """A step started by two processes and resumed by one is refused before the recipe says
    the step resumes (the engine refused it only after that line)."""
    from sem_train.runinfo import ResumeConfigError

    out = tmp_path / "run"
    kinds = ("stage1",)
    run_recipe("cpu-base", data_root=None, output_dir=out, overrides=_overrides(), kinds=kinds)
    (out / "stage1" / DONE_FILE).unlink()  # interrupted after its checkpoint
    info_path = out / "stage1" / "run_info.json"
    info = json.loads(info_path.read_text())
    assert info["world_size"] == 1
    info_path.write_text(json.dumps({**info, "world_size": 2}))
    logs: list[str] = []
    with pytest.raises(ResumeConfigError, match=r"started with 2 process\(es\) and this run has 1"):
        run_recipe(
            "cpu-base", data_root=None, output_dir=out, overrides=_overrides(), kinds=kinds,
            resume=True, log=logs.append,
        )  # fmt: skip
    assert logs == []


def _stage_records(run_dir) -> list[dict]:
    """A step's metrics.jsonl without the wall-clock field."""
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(x).items() if k != "images_per_s"} for x in lines]


@pytest.mark.usefixtures("one_torch_thread")
def test_recipe_resumes_a_step_interrupted_before_its_first_checkpoint(tmp_path, monkeypatch):
    """Stage 2 interrupted after its start-of-run validation, its training and its best-model
    export, just before its first checkpoint: --resume skips Stage 1 and runs Stage 2 again
    from step 0, to the same model and the same metrics lines (none twice)."""
    from safetensors.torch import load_file
    from sem_train.checkpoint import Checkpointer

    kinds = ("stage1", "stage2")
    overrides = _overrides()
    overrides["stage2"] = {**overrides["stage2"], "run": {**_SMALL_RUN, "validate_at_start": True}}
    out = tmp_path / "run"
    cut, save = out / "stage2", Checkpointer.save

    def ctrl_c_in_stage2(self, *args, **kwargs):
        if self.run_dir == cut:
            raise KeyboardInterrupt
        return save(self, *args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(Checkpointer, "save", ctrl_c_in_stage2)
        with pytest.raises(KeyboardInterrupt):
            run_recipe("cpu-base", data_root=None, output_dir=out, overrides=overrides, kinds=kinds)
    ck = cut / "checkpoints"
    assert not (ck / "latest.json").exists() and (out / "stage1" / DONE_FILE).is_file()
    # The interrupted Stage 2 did all an uninterrupted one does but its checkpoint (1 epoch).
    best = ck / json.loads((ck / "best.json").read_text())["dir"] / "model.safetensors"
    expected_weights, expected_records = load_file(str(best)), _stage_records(cut)
    # 2 steps, fewer than log_every_steps: the last one is logged all the same
    assert [(r["split"], r["step"]) for r in expected_records] == [
        ("val", 0),
        ("train", 2),
        ("val", 2),
    ]
    logs: list[str] = []
    run_recipe(
        "cpu-base", data_root=None, output_dir=out, overrides=overrides, kinds=kinds, resume=True,
        log=logs.append,
    )  # fmt: skip
    assert logs[0].startswith("stage1: already finished") and logs[0].endswith("skipped")
    assert logs[1] == f"stage2: no checkpoint yet, starting again from step 0 into {cut}"
    final = load_file(str(ck / json.loads((ck / "latest.json").read_text())["weights"]))
    assert final.keys() == expected_weights.keys()
    assert all(torch.equal(final[k], expected_weights[k]) for k in final)
    assert _stage_records(cut) == expected_records
    assert (cut / DONE_FILE).is_file()


@pytest.mark.usefixtures("one_torch_thread")
def test_a_recipe_killed_while_its_first_step_started_can_run_again(tmp_path):
    """A recipe killed before its first step wrote run_info.json leaves that step's folder
    holding the lock file and a write temporary of the dead process: no step started, so
    --resume refuses the folder, and a fresh recipe (which had refused it too, naming
    --resume) takes it."""
    from sem_physics.testing import dead_pid

    out, kinds = tmp_path / "run", ("stage1",)
    step, pid = out / "stage1", dead_pid()
    step.mkdir(parents=True)
    (step / ".sem-lock").write_text(json.dumps({"pid": pid, "command": "sem train recipe"}))
    (step / f".run_info.{pid}.tmp.json").write_text('{"argv": ')
    with pytest.raises(FileNotFoundError, match="--resume: no checkpoint in"):
        run_recipe("cpu-base", data_root=None, output_dir=out, kinds=kinds, resume=True)
    run_recipe("cpu-base", data_root=None, output_dir=out, overrides=_overrides(), kinds=kinds)
    assert (step / DONE_FILE).is_file()
    assert not [p.name for p in step.iterdir() if ".tmp" in p.name]


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["--config", "nope"], "choose a preset"),
        (["--config", "cpu-base", "--data", "/nonexistent/folder"], "is not a directory"),
    ],
)
def test_recipe_command_refuses_bad_input_in_one_line(argv, needle, capsys, tmp_path):
    from sem_train.cli import main

    status = main(["train", "recipe", *argv, "--output-dir", str(tmp_path / "r")])
    err = capsys.readouterr().err.strip().splitlines()
    assert status != 0 and len(err) == 1 and needle in err[0] and "Traceback" not in err[0]
    assert not (tmp_path / "r").exists()


def test_recipe_command_refuses_an_existing_run(capsys, tmp_path):
    from sem_train.cli import main

    (tmp_path / "r" / "stage1").mkdir(parents=True)
    (tmp_path / "r" / "stage1" / "run_info.json").write_text("{}")  # a started step
    status = main(["train", "recipe", "--config", "cpu-base", "--output-dir", str(tmp_path / "r")])
    err = capsys.readouterr().err.strip().splitlines()
    assert status != 0 and len(err) == 1 and "--resume" in err[0]


def test_the_recorded_split_is_the_one_the_stage_trains_on(tmp_path, folder_writer):
    """data_split.json lists exactly the images the dataset trains and validates on."""
    from sem_train.config import load_config
    from sem_train.data import SEMImageDataset
    from sem_train.datasplit import split_record, write_split_record

    folder_writer(tmp_path / "img", 10, size=40, seed=3)
    data = {
        "root": str(tmp_path / "img"),
        "val_fraction": 0.3,
        "split_seed": 5,
        "image_size_px": 32,
    }
    cfg = load_config({"data": data}, "stage1")
    written = write_split_record(tmp_path / "out", split_record("stage1", cfg))
    record = json.loads(written.read_text())
    train, val, _ = SEMImageDataset.from_config(cfg.data)
    assert record["train"] == [str(p) for p in train.paths]
    assert record["validation"] == [str(p) for p in val.paths] and len(val.paths) == 3


def test_ctrl_c_in_a_recipe_step_saves_it_and_names_the_recipe_command(tmp_path, monkeypatch):
    """A SIGINT in Stage 2's first step: Stage 2 saves that step; the line names the step, its
    checkpoint and the recipe command with --resume, which finishes the recipe from there."""
    import signal
    import time

    import sem_train.engine
    from sem_train.commands.train import recipe_interrupt_message
    from sem_train.interrupt import TrainingInterrupted

    kinds, out = ("stage1", "stage2"), tmp_path / "run"
    clip, calls = sem_train.engine._clip, []

    def ctrl_c_in_stage2(task, max_norm):
        if (out / "stage1" / DONE_FILE).is_file():
            calls.append(1)
        if len(calls) == 1:
            calls.append(1)
            signal.raise_signal(signal.SIGINT)
            time.sleep(0.01)
        return clip(task, max_norm)

    with monkeypatch.context() as patch:
        patch.setattr(sem_train.engine, "_clip", ctrl_c_in_stage2)
        with pytest.raises(KeyboardInterrupt) as stop:
            run_recipe(
                "cpu-base", data_root=None, output_dir=out, overrides=_overrides(), kinds=kinds
            )
    assert isinstance(stop.value, TrainingInterrupted) and stop.value.global_step == 1
    argv = ["train", "recipe", "--config", "cpu-base", "--output-dir", str(out)]
    line = recipe_interrupt_message(out, kinds, argv, saved=True)
    assert line.startswith("stage2: interrupted; saved a checkpoint at step 1 (") and line.endswith(
        f"continue with: sem train recipe --config cpu-base --output-dir {out} --resume"
    )
    logs: list[str] = []
    run_recipe(
        "cpu-base", data_root=None, output_dir=out, overrides=_overrides(), kinds=kinds,
        resume=True, log=logs.append,
    )  # fmt: skip
    assert logs[1] == f"stage2: resuming into {out / 'stage2'}"
    assert (out / "stage2" / DONE_FILE).is_file()


def test_the_recipe_command_reports_a_ctrl_c_in_one_line(tmp_path, monkeypatch, capsys):
    """`sem train recipe` turns an interrupt into the one line of recipe_interrupt_message."""
    import sem_train.recipe
    from sem_train.cli import main

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(sem_train.recipe, "run_recipe", interrupted)
    out = tmp_path / "r"
    assert main(["train", "recipe", "--config", "cpu-base", "--output-dir", str(out)]) == 130
    assert capsys.readouterr().err == (
        f"sem: stage1: interrupted before the run started; nothing was written to {out / 'stage1'}\n"
    )


def test_the_recipe_message_leaves_out_an_unknown_run_length(tmp_path):
    """A step folder whose config.json is gone but whose checkpoint is there: the line names
    the step and epoch, not "all 0 epochs done"."""
    from sem_train.commands.train import recipe_interrupt_message

    ck = tmp_path / "stage1" / "checkpoints"
    ck.mkdir(parents=True)
    (ck / "latest.json").write_text(
        json.dumps({"global_step": 7, "epoch": 1, "step_in_epoch": 2, "weights": "w"})
    )
    line = recipe_interrupt_message(tmp_path, ("stage1",), None, saved=True)
    assert line.startswith("stage1: interrupted; saved a checkpoint at step 7 (epoch 2, after 2 ")


def test_the_dense_ablation_runs_beside_the_moe_recipe_not_into_its_folder(tmp_path):
    """``sem train recipe --dense`` without --output-dir wrote into runs/<preset>, the MoE
    recipe's folder (refused as an existing run, or mixed into it); the documented
    ``mae-sem.checkpoint_dir=runs/cpu-base-dense/finetune`` is where it now lands."""
    from pathlib import Path

    from sem_train.commands.train import recipe_dir

    assert recipe_dir("cpu-base", False, None) == Path("runs/cpu-base")
    assert recipe_dir("cpu-base", True, None) == Path("runs/cpu-base-dense")
    assert recipe_dir("cpu-base", True, tmp_path) == tmp_path

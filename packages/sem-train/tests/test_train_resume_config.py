"""``--resume`` continues the run that was started: a changed setting that the optimizer or
schedule depends on is refused (naming old → new) before any weights load, ``config.json``
stays the run's, each resume is recorded, and Ctrl-C says which step is saved and how to
continue."""

from __future__ import annotations

import json
import shlex
import signal
import time
from pathlib import Path

import pytest
import sem_train.engine
import torch
import yaml
from sem_models.testing import MICRO_MAE
from sem_physics.samples import write_samples
from sem_physics.testing import main_in_fresh_interpreter
from sem_train.checkpoint import Checkpointer, CheckpointError
from sem_train.cli import main
from sem_train.config import OptimConfig, RunConfig
from sem_train.engine import Task
from sem_train.runinfo import ResumeConfigError, check_resume_world_size

TINY = {k: v for k, v in MICRO_MAE.items() if k != "img_size"} | {"depth": 1}


def _without_notes(err: str) -> list[str]:
    """The stderr lines but the run's progress notes (``sem: note: epoch 1/3, ...``) and the
    empty line that puts the Ctrl-C message on a line of its own."""
    lines = err.strip().splitlines()
    return [line for line in lines if line and not line.startswith("sem: note: ")]


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("resume") / "images"
    write_samples(root, n_per_kind=2, shape=(48, 56), seed=0)
    return root


def _config(path: Path, **changes) -> Path:
    """A Stage-1 config: 3 steps an epoch, 2 epochs; ``changes`` as ``{"optim": {...}}``."""
    body = {
        "preset": "cpu-small",
        "model": {"preset": "tiny", "overrides": TINY},
        "data": {"image_size_px": 32, "val_fraction": 0.25},
        "optim": {"lr": 1e-3, "warmup_steps": 1},
        "run": {"epochs": 2, "batch_size_per_process": 2, "progress": False,
                "tensorboard": False, "checkpoint_every_steps": 2},
    }  # fmt: skip
    for section, values in changes.items():
        body[section] = {**body[section], **values}
    path.write_text(yaml.safe_dump(body), encoding="utf-8")
    return path


def _argv(cfg: Path, images: Path, out: Path, *more: str) -> list[str]:
    return ["train", "pretrain", "--stage", "1", "--config", str(cfg), "--data", str(images),
            "--output-dir", str(out), *more]  # fmt: skip


class SmoothTask(Task):
    """A one-layer convolution learning to reproduce its input (a loop test's model)."""

    def __init__(self) -> None:
        torch.manual_seed(0)
        self.model = torch.nn.Conv2d(1, 1, 3, padding=1)

    def training_loss(self, model, batch):
        return (model(batch["image"]) - batch["image"]).abs().mean(), {}

    def validation_step(self, model, batch):
        pred = model(batch["image"])
        return (pred - batch["image"]).abs().mean(), pred, batch["image"]


def _files(folder: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def cut_run(images, tmp_path, capsys) -> tuple[Path, Path]:
    """A run stopped by --max-steps 1 (2 steps an epoch), and its config file."""
    cfg = _config(tmp_path / "s1.yaml")
    out = tmp_path / "run"
    assert main(_argv(cfg, images, out, "--max-steps", "1")) == 0, capsys.readouterr().err
    capsys.readouterr()
    return cfg, out


@pytest.mark.parametrize(
    ("changes", "option", "named"),
    [
        ({"optim": {"lr": 5e-4}}, [], "optim.lr 0.001 → 0.0005"),
        ({}, ["--epochs", "3"], "run.epochs 2 → 3"),
        ({"run": {"batch_size_per_process": 3}}, [], "run.batch_size_per_process 2 → 3"),
        ({"data": {"image_size_px": 48}}, [], "data.image_size_px 32 → 48"),
    ],
    ids=["lr", "epochs", "batch-size", "image-size"],
)
def test_a_resume_with_changed_settings_is_refused_before_torch_and_changes_nothing(
    cut_run, images, tmp_path, changes, option, named
):
    """The audit's cases: lr, epochs, batch size (the schedule's length) and image size (the
    weights' shapes) are named old → new, in a process that has not even imported torch,
    and the run folder is left byte for byte as it was (config.json, run_info.json)."""
    _, out = cut_run
    before = _files(out)
    changed = _config(tmp_path / "changed.yaml", **changes)
    run = main_in_fresh_interpreter(
        "sem_train.cli", _argv(changed, images, out, *option, "--resume")
    )
    assert (run.status, run.loaded, run.stdout) == (2, [], []), run
    (line,) = run.stderr
    assert line.startswith(f"sem: error: --resume: {out} was started with other settings")
    assert named in line and "does not match the model" not in line
    assert ("--init-from" in line) == ("epochs" in named)  # how to train longer instead
    assert _files(out) == before


def test_a_resume_takes_only_resumable_changes_and_records_each_invocation(
    cut_run, images, capsys, monkeypatch
):
    """Device and max_steps may change: the run continues from its step, says so, keeps its
    config.json and its start record, and lists the resume with its command."""
    cfg, out = cut_run
    config_before = (out / "config.json").read_bytes()
    start = json.loads((out / "run_info.json").read_text())
    more = ["--resume", "--device", "cpu", "--max-steps", "3"]
    monkeypatch.setattr("sys.argv", ["sem", *_argv(cfg, images, out, *more)])  # as run by `sem`
    assert main(_argv(cfg, images, out, *more)) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[0] == f"resuming {out} from step 1 (epoch 1 of 2, after 1 of its steps)"
    assert (out / "config.json").read_bytes() == config_before
    info = json.loads((out / "run_info.json").read_text())
    assert info["argv"] == start["argv"] and info["time"] == start["time"]
    (entry,) = info["resumes"]
    assert entry["argv"][-len(more) :] == more and entry["resumed_from_step"] == 1
    assert entry["changed"] == {"run.max_steps": [1, 3]}
    assert json.loads((out / "checkpoints" / "latest.json").read_text())["global_step"] == 3
    assert main(_argv(cfg, images, out, "--resume")) == 0  # a second resume: a second entry
    assert len(json.loads((out / "run_info.json").read_text())["resumes"]) == 2


def test_the_library_loop_refuses_a_changed_optimizer_on_resume(images, tmp_path):
    """:func:`sem_train.engine.fit` without a config records its run and optim settings and
    compares them too, before the checkpoint is loaded."""
    from sem_train.data import SEMImageDataset, build_index
    from sem_train.engine import fit

    paths = build_index(images).paths()
    train = SEMImageDataset(paths[:6], image_size_px=16)
    run = RunConfig(epochs=2, batch_size_per_process=2, output_dir=tmp_path / "r",
                    progress=False, tensorboard=False, device="cpu", max_steps=2)  # fmt: skip
    fit(SmoothTask(), train, None, run, OptimConfig(lr=1e-3))
    before = _files(tmp_path / "r")
    resumed = run.model_copy(update={"max_steps": None})
    with pytest.raises(ResumeConfigError, match=r"optim\.lr 0\.001 → 0\.002"):
        fit(SmoothTask(), train, None, resumed, OptimConfig(lr=2e-3), resume=True)
    assert _files(tmp_path / "r") == before
    done = fit(SmoothTask(), train, None, resumed, OptimConfig(lr=1e-3), resume=True)
    assert done.global_step == 6


def test_a_checkpoint_with_another_schedule_is_refused(tmp_path):
    """Restoring a saved schedule of another length would train on the old one (lr ~0 after
    its end): the checkpointer compares the schedules and refuses."""
    from sem_train.engine import WarmupCosine

    def parts(total: int):
        model = torch.nn.Linear(2, 1)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
        return model, opt, torch.optim.lr_scheduler.LambdaLR(opt, WarmupCosine(2, total, 0.0))

    ckpt = Checkpointer(tmp_path)
    ckpt.save(*parts(8), {"global_step": 3})
    with pytest.raises(CheckpointError, match=r"warm-up 2, 8 steps.*warm-up 2, 12 steps"):
        Checkpointer(tmp_path).resume(*parts(12))
    assert Checkpointer(tmp_path).resume(*parts(8))["global_step"] == 3


@pytest.mark.parametrize(
    ("saved", "now", "words"),
    [((0.0, False), (0.1, False), r"cosine, floor 0\).*cosine, floor 0\.1\)"),
     ((0.0, False), (0.0, True), r"cosine, floor 0\).*constant, floor 0\)")],
    ids=["floor", "constant"],
)  # fmt: skip
def test_a_refused_schedule_shows_the_field_that_differs(tmp_path, saved, now, words):
    """Every field compared is shown: schedules differing only in floor or shape read apart."""
    from sem_train.engine import WarmupCosine

    def parts(floor: float, constant: bool):
        model = torch.nn.Linear(2, 1)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
        shape = WarmupCosine(2, 8, floor, constant)
        return model, opt, torch.optim.lr_scheduler.LambdaLR(opt, shape)

    Checkpointer(tmp_path).save(*parts(*saved), {"global_step": 3})
    with pytest.raises(CheckpointError, match=words):
        Checkpointer(tmp_path).resume(*parts(*now))


def _loop_run(images: Path, out: Path, **update):
    from sem_train.data import SEMImageDataset, build_index

    train = SEMImageDataset(build_index(images).paths()[:6], image_size_px=16)
    run = RunConfig(epochs=2, batch_size_per_process=2, output_dir=out, progress=False,
                    tensorboard=False, device="cpu", max_steps=2).model_copy(update=update)  # fmt: skip
    return train, run


def test_a_run_that_recorded_no_config_resumes_and_says_it_was_not_compared(images, tmp_path):
    """Older versions recorded ``{}`` for ``fit(config=None)``: such a run resumes (nothing to
    compare with) and its resume entry says its settings were not compared."""
    from sem_train.engine import fit

    train, run = _loop_run(images, tmp_path / "r")
    fit(SmoothTask(), train, None, run, OptimConfig(lr=1e-3))
    (tmp_path / "r" / "config.json").write_text("{}")
    resumed = run.model_copy(update={"max_steps": None})
    done = fit(SmoothTask(), train, None, resumed, OptimConfig(lr=1e-3), resume=True)
    assert done.global_step == 6
    (entry,) = json.loads((tmp_path / "r" / "run_info.json").read_text())["resumes"]
    assert entry["compared"] is False and entry["changed"] == {}
    assert (tmp_path / "r" / "config.json").read_text() == "{}"


def _without(record: dict, *dotted: str) -> dict:
    out = json.loads(json.dumps(record))
    for key in dotted:
        *parents, leaf = key.split(".")
        node = out
        for part in parents:
            node = node[part]
        del node[leaf]
    return out


@pytest.mark.parametrize("kind", ["stage1", "run"])
def test_a_field_added_since_the_run_started_counts_as_its_default(tmp_path, kind):
    """A field the run's record lacks is compared as the current default: that value resumes,
    another is refused naming the default (``fit(config=None)`` records run and optim)."""
    from sem_train.config import Stage1Config
    from sem_train.runinfo import check_resume_config, recorded_config

    def record(**optim) -> dict:
        cfg = Stage1Config(optim=OptimConfig(**optim), run=RunConfig(output_dir=tmp_path))
        full = recorded_config(cfg.model_dump(mode="json"))
        return full if kind == "stage1" else {"run": full["run"], "optim": full["optim"]}

    old = _without(record(), "optim.schedule", "optim.min_lr", "run.validate_at_start")
    (tmp_path / "config.json").write_text(json.dumps(old))
    assert check_resume_config(tmp_path, record()) == {}
    with pytest.raises(ResumeConfigError, match=r"optim\.schedule cosine → constant"):
        check_resume_config(tmp_path, record(schedule="constant"))
    with pytest.raises(ResumeConfigError, match=r"optim\.min_lr 0\.0 → 1e-05"):
        check_resume_config(tmp_path, record(min_lr=1e-5))


def test_a_cli_resume_checks_its_folder_once_before_torch(cut_run, images, monkeypatch, capsys):
    """``sem train`` checks the folder and the resume's settings once, before the training
    code, which does not check them again; called from Python, the stage checks them."""
    import sem_train.runinfo
    from sem_train.config import load_config
    from sem_train.runfolder import RunFolder
    from sem_train.stages import run_stage1

    cfg, out = cut_run
    calls = {"start": 0, "resume": 0}
    check_start, check_resume = RunFolder.check_start, sem_train.runinfo.check_resume_config

    def counted_start(self, resume):
        calls["start"] += 1
        return check_start(self, resume)

    def counted_resume(*args):
        calls["resume"] += 1
        return check_resume(*args)

    monkeypatch.setattr(RunFolder, "check_start", counted_start)
    monkeypatch.setattr(sem_train.runinfo, "check_resume_config", counted_resume)
    assert main(_argv(cfg, images, out, "--resume", "--max-steps", "2")) == 0
    assert calls == {"start": 1, "resume": 1}
    (entry,) = json.loads((out / "run_info.json").read_text())["resumes"]
    assert entry["changed"] == {"run.max_steps": [1, 2]}  # the CLI's finding, recorded
    body = yaml.safe_load(cfg.read_text())
    body["data"]["root"], body["run"]["output_dir"] = str(images), str(out)
    body["optim"]["lr"] = 5e-4
    with pytest.raises(ResumeConfigError, match=r"optim\.lr 0\.001 → 0\.0005"):
        run_stage1(load_config(body, "stage1"), resume=True)
    assert calls == {"start": 2, "resume": 2}


def test_a_resume_with_another_number_of_processes_is_refused(tmp_path):
    (tmp_path / "run_info.json").write_text(json.dumps({"world_size": 2}))
    with pytest.raises(ResumeConfigError, match=r"started with 2 process\(es\).*has 1"):
        check_resume_world_size(tmp_path, 1)
    check_resume_world_size(tmp_path, 2)


def test_a_cli_resume_with_another_number_of_processes_is_refused_before_saying_it_resumes(
    cut_run, images
):
    """A run started by ``torchrun --nproc_per_node 2`` and resumed by one process is refused
    in one line before torch loads, and never said "resuming ... from step N" first; the run
    folder stays as it was."""
    cfg, out = cut_run
    info = json.loads((out / "run_info.json").read_text())
    assert info["world_size"] == 1
    (out / "run_info.json").write_text(json.dumps({**info, "world_size": 2}))
    before = _files(out)
    run = main_in_fresh_interpreter("sem_train.cli", _argv(cfg, images, out, "--resume"))
    assert (run.status, run.loaded, run.stdout) == (2, [], []), run
    (line,) = run.stderr
    assert line.startswith(f"sem: error: --resume: {out} was started with 2 process(es)")
    assert "this run has 1" in line and "--nproc_per_node 2" in line
    assert _files(out) == before


def test_ctrl_c_names_the_saved_step_and_the_command_that_continues(
    images, tmp_path, capsys, monkeypatch
):
    """Ctrl-C during training (2 steps an epoch): one line with the newest checkpoint's step and the command
    (with --resume) that continues; that command resumes from the step it named."""
    cfg = _config(tmp_path / "s1.yaml", run={"epochs": 3, "checkpoint_every_steps": 1})
    out = tmp_path / "run"
    save = Checkpointer.save

    def ctrl_c_after_step_3(self, model, optimizer, scheduler, progress):
        path = save(self, model, optimizer, scheduler, progress)
        if progress["global_step"] >= 3:
            raise KeyboardInterrupt
        return path

    with monkeypatch.context() as patch:
        patch.setattr(Checkpointer, "save", ctrl_c_after_step_3)
        assert main(_argv(cfg, images, out)) == 130
    (line,) = _without_notes(capsys.readouterr().err)
    where = "step 3 (epoch 2 of 3, after 1 of its steps)"
    assert line.startswith(f"sem: interrupted; the newest checkpoint is {where} in {out}")
    command = line.split("continue with: ", 1)[1]
    words = shlex.split(command)
    assert words[0] == "sem" and words[1:] == [*_argv(cfg, images, out), "--resume"]
    assert main(words[1:]) == 0
    assert capsys.readouterr().out.startswith(f"resuming {out} from {where}\n")


def test_a_ctrl_c_mid_step_saves_that_step_and_says_so(images, tmp_path, capsys, monkeypatch):
    """A real SIGINT in step 3 of a run checkpointing every 100 steps: the loop finishes the
    step, saves it, and the one line names it; the printed command continues from it."""
    cfg = _config(tmp_path / "s1.yaml", run={"epochs": 3, "checkpoint_every_steps": 100})
    out = tmp_path / "run"
    clip, calls = sem_train.engine._clip, []

    def ctrl_c_in_step_3(task, max_norm):
        calls.append(1)
        if len(calls) == 3:
            signal.raise_signal(signal.SIGINT)
            time.sleep(0.01)
        return clip(task, max_norm)

    with monkeypatch.context() as patch:
        patch.setattr(sem_train.engine, "_clip", ctrl_c_in_step_3)
        assert main(_argv(cfg, images, out)) == 130
    err = _without_notes(capsys.readouterr().err)
    assert err[0].startswith("sem: Ctrl-C: finishing this step and saving a checkpoint")
    where = "step 3 (epoch 2 of 3, after 1 of its steps)"
    assert err[-1].startswith(f"sem: interrupted; saved a checkpoint at {where} in {out}")
    assert main([*shlex.split(err[-1].split("continue with: ", 1)[1])[1:]]) == 0
    assert capsys.readouterr().out.startswith(f"resuming {out} from {where}\n")

"""The ``sem`` command starts fast and turns every error into one line with the right status."""

from __future__ import annotations

import errno
import json
import pickle
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from safetensors import SafetensorError
from sem_physics.testing import main_in_fresh_interpreter
from sem_train.cli import COMMAND_MODULES, describe_error, main

HEAVY = ("torch", "timm", "scipy", "matplotlib", "sklearn", "skimage")


def _modules_after(code: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", f"{code}\nimport sys; print(' '.join(sys.modules))"],
        capture_output=True,
        text=True,
        encoding="utf-8",
        check=True,
        timeout=120,
    ).stdout.split()
    return {m.split(".")[0] for m in out}


def test_importing_the_cli_and_listing_commands_loads_no_heavy_module():
    loaded = _modules_after("import sem_train.cli as c; c.build_parser()")
    assert not loaded & set(HEAVY), sorted(loaded & set(HEAVY))


def _best_of(argv: list[str], repeats: int = 3) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        subprocess.run(argv, capture_output=True, check=True, timeout=120)
        best = min(best, time.perf_counter() - t0)
    return best


def test_sem_help_takes_under_half_a_second_beyond_python_startup():
    """``sem --help`` <= 0.5 s. Measured as the best of 3 runs minus the best of 3 runs of
    ``python -c pass`` in the same test, so a loaded machine slows both sides alike."""
    base = _best_of([sys.executable, "-c", "pass"])
    helped = _best_of([sys.executable, "-m", "sem_train.cli", "--help"])
    assert helped - base <= 0.5, f"sem --help took {helped:.2f} s, python itself {base:.2f} s"


def test_help_lists_every_command(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    out = capsys.readouterr().out
    assert exc.value.code == 0 and all(name in out for name in COMMAND_MODULES)


def _one_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("sem: error: "), err
    return err[0]


def test_a_file_given_as_output_folder_is_one_line_exit_2(tmp_path, capsys):
    target = tmp_path / "not_a_folder"
    target.write_text("keep me")
    data = tmp_path / "images"
    data.mkdir()
    argv = ["train", "pretrain", "--stage", "1", "--config", "cpu-small", "--data", str(data)]
    assert main([*argv, "--output-dir", str(target)]) == 2
    assert str(target) in _one_line(capsys)
    assert target.read_text() == "keep me"


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("run:\n\tepochs: 3\n", "line 2"),
        ("run: !!python/object/apply:os.system ['true']\n", "line 1"),
        ("a: &x 1\nb: *x\n", "line 1"),
        ("run: [\n", "line 2"),
    ],
)
def test_malformed_yaml_configs_are_one_line_exit_2(tmp_path, capsys, text, where):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(text)
    assert main(["train", "finetune", "--config", str(cfg)]) == 2
    line = _one_line(capsys)
    assert str(cfg) in line and where in line


def test_a_non_checkpoint_given_as_init_from_is_one_line_exit_2(tmp_path, capsys, folder_writer):
    fake = tmp_path / "export"
    fake.mkdir()
    (fake / "config.json").write_text("{}")
    (fake / "model.safetensors").write_bytes(b"this is not a safetensors file")
    data = tmp_path / "images"
    folder_writer(data, 4, size=72)  # data to train on: what fails is the model's contents
    argv = ["train", "finetune", "--config", "cpu-small", "--init-from", str(fake)]
    argv += ["--data", str(data)]
    assert main([*argv, "--output-dir", str(tmp_path / "ft")]) == 2
    assert str(fake) in _one_line(capsys)


def test_resume_from_a_corrupt_state_file_is_one_line_exit_2(tmp_path, capsys, folder_writer):
    data = tmp_path / "images"
    folder_writer(data, 4, size=72)  # at least cpu-small's 64-px input after the info bar
    out = tmp_path / "run"
    ck = out / "checkpoints"
    ck.mkdir(parents=True)
    (ck / "latest.json").write_text(json.dumps({"weights": "w.safetensors", "state": "s.pt"}))
    (ck / "w.safetensors").write_bytes(b"\x00" * 64)
    argv = ["train", "pretrain", "--stage", "1", "--config", "cpu-small", "--data", str(data)]
    assert main([*argv, "--output-dir", str(out), "--resume"]) == 2
    assert "w.safetensors" in _one_line(capsys)


@pytest.mark.parametrize(
    ("err", "code", "text"),
    [
        (PermissionError(errno.EACCES, "Permission denied", "/ro/out"), 2, "/ro/out"),
        (OSError(errno.EROFS, "Read-only file system", "/ro/out/x.json"), 2, "/ro/out/x.json"),
        (OSError(errno.ENOSPC, "No space left on device", "/full/w.pt"), 1, "/full/w.pt"),
        (MemoryError(), 1, "out of memory"),
        (TypeError("expected an image, got NoneType"), 2, "expected an image"),
        (KeyError("weights"), 2, "'weights'"),
        (yaml.YAMLError("bad yaml"), 2, "bad yaml"),
        (SafetensorError("header too large"), 2, "not a checkpoint: header too large"),
        (pickle.UnpicklingError("invalid load key"), 2, "invalid load key"),
        (RuntimeError("CUDA error: device-side assert\nlong trace"), 1, "RuntimeError: CUDA"),
    ],
)
def test_every_error_type_maps_to_a_status_and_one_line(err, code, text):
    got_code, msg = describe_error(err)
    assert got_code == code and text in msg and "\n" not in msg


def test_debug_adds_the_traceback_and_keeps_the_status(monkeypatch, capsys):
    from sem_train.commands import train

    def boom(args):
        raise TypeError("bad input\nsecond line")

    monkeypatch.setattr(train, "_finetune", boom)
    assert main(["train", "finetune", "--config", "cpu-small"]) == 2
    assert _one_line(capsys) == "sem: error: bad input"
    assert main(["--debug", "train", "finetune", "--config", "cpu-small"]) == 2
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and "TypeError: bad input" in err
    assert err.strip().splitlines()[-1] == "sem: error: bad input"


def test_a_fresh_run_into_an_existing_run_is_refused_without_resume(tmp_path, capsys):
    out = tmp_path / "run"
    (out / "checkpoints").mkdir(parents=True)
    latest = out / "checkpoints" / "latest.json"
    latest.write_text('{"weights": "step-00000004.safetensors"}')
    before = {p: p.read_bytes() for p in Path(out).rglob("*") if p.is_file()}
    argv = ["train", "pretrain", "--stage", "1", "--config", "cpu-small"]
    data = tmp_path / "images"
    data.mkdir()
    assert main([*argv, "--data", str(data), "--output-dir", str(out)]) == 2
    line = _one_line(capsys)
    assert "already holds a run" in line and "--resume" in line and str(out) in line
    assert {p: p.read_bytes() for p in Path(out).rglob("*") if p.is_file()} == before


_TRAIN_COMMANDS = {
    "pretrain": ["train", "pretrain", "--stage", "1", "--config", "cpu-small"],
    "finetune": ["train", "finetune", "--config", "cpu-small"],
    "baseline": ["train", "baseline", "n2v", "--config", "cpu-small"],
    "recipe": ["train", "recipe", "--config", "cpu-small"],
}


def test_a_second_training_run_into_a_busy_folder_stops_at_once(tmp_path, capsys, hold_folder):
    data = tmp_path / "images"
    data.mkdir()
    out = tmp_path / "run"
    child = hold_folder(out, "sem train pretrain --stage 1")
    (out / "metrics.jsonl").write_text('{"step": 1}\n')  # the live run has logged a step
    for argv in _TRAIN_COMMANDS.values():  # busy, not "pass --resume" (into a live run)
        assert main([*argv, "--data", str(data), "--output-dir", str(out)]) == 1, argv
        line = _one_line(capsys)
        assert f"{out}: another run (pid {child.pid}, sem train pretrain --stage 1)" in line
    assert sorted(p.name for p in out.iterdir()) == [".sem-lock", "metrics.jsonl"]
    # Killed (kill -9), it leaves the folder free: the next run gets to the fresh-run check.
    child.kill()
    child.wait()
    assert main([*_TRAIN_COMMANDS["pretrain"], "--data", str(data), "--output-dir", str(out)]) == 2
    assert "already holds a run" in _one_line(capsys)


def test_a_busy_output_dir_is_refused_before_the_config_is_read(tmp_path, capsys, hold_folder):
    """``--output-dir`` is held before the config (and torch) load: with a config that does
    not exist, a busy folder is what the command reports (exit 1), not the config (exit 2)."""
    out = tmp_path / "run"
    child = hold_folder(out, "sem train finetune")
    missing = str(tmp_path / "no-such-config.yaml")
    for argv in _TRAIN_COMMANDS.values():
        argv = [missing if a == "cpu-small" else a for a in argv]
        assert main([*argv, "--output-dir", str(out)]) == 1, argv
        assert f"{out}: another run (pid {child.pid}, sem train finetune)" in _one_line(capsys)
    child.kill()
    child.wait()
    assert main([*_TRAIN_COMMANDS["finetune"][:-1], missing, "--output-dir", str(out)]) == 2
    assert "no-such-config.yaml" in _one_line(capsys)
    fresh = tmp_path / "runs" / "fresh"
    assert main(["train", "recipe", "--config", "no-such-preset", "--output-dir", str(fresh)]) == 2
    assert "choose a preset" in _one_line(capsys)
    assert not fresh.parent.exists()  # the folders the lock created are gone again


def test_number_arguments_name_the_range_and_refuse_nan():
    import argparse

    from sem_physics.cli_support import number

    fraction = number(float, low=0, high=1, high_open=True)
    assert fraction("0") == 0.0 and fraction("0.5") == 0.5
    for bad, message in (("1", "must be in [0, 1), got 1"), ("nan", "must be in [0, 1)"),
                         ("x", "expected a number, got 'x'")):  # fmt: skip
        with pytest.raises(argparse.ArgumentTypeError, match=re.escape(message)):
            fraction(bad)
    at_least_two = number(int, low=2)
    assert at_least_two("2") == 2
    with pytest.raises(argparse.ArgumentTypeError, match="must be >= 2, got 1"):
        at_least_two("1")
    with pytest.raises(
        argparse.ArgumentTypeError, match=re.escape("expected an integer, got '2.5'")
    ):
        at_least_two("2.5")
    parser = argparse.ArgumentParser(prog="sem")
    parser.add_argument("--overlap", type=number(float, low=0, low_open=True))
    with pytest.raises(SystemExit):
        parser.parse_args(["--overlap", "-1"])


def _console_scripts() -> list[tuple[str, str]]:
    from importlib.metadata import entry_points

    names = ("sem-physics", "sem-metrology", "sem-train")
    return sorted(
        (ep.name, ep.value)
        for ep in entry_points(group="console_scripts")
        if ep.dist is not None and ep.dist.name in names
    )


@pytest.mark.parametrize(("prog", "target"), _console_scripts())
def test_every_console_script_ends_a_ctrl_c_with_one_line(prog, target, monkeypatch, capsys):
    """Ctrl-C at any point of a command, even while its arguments are parsed: one line and
    exit 130 (128 + SIGINT), never a traceback."""
    import argparse
    from importlib import import_module

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(
        argparse.ArgumentParser, "parse_known_args", interrupted
    )  # under parse_args
    module, _, func = target.partition(":")
    assert getattr(import_module(module), func)(["x"]) == 130
    assert capsys.readouterr().err == f"{prog}: interrupted\n"


def test_the_toolkit_has_its_four_console_scripts():
    assert [name for name, _ in _console_scripts()] == [
        "sem", "sem-degrade", "sem-measure", "sem-psf"
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["demo", "--methods", "wienr", "--out", "{tmp}/out"], "--methods: unknown method"),
        (["benchmark", "--config", "{tmp}"], "is not a file but a folder"),
        (["train", "finetune", "--config", "{tmp}/none.yaml"], "does not exist"),
        (["train", "finetune", "--config", "cpu-small", "--data", "{tmp}/x"], "not a directory"),
        # sem demo: every option before the default method list is settled (mae-sem's code)
        (["demo", "--quick", "--seed", "-1", "--out", "{tmp}/out"], "--seed must be in [0, 42"),
        (["demo", "--metrics", "psnrr", "--out", "{tmp}/out"], "unknown quality metric"),
        (["demo", "--images", "{tmp}/empty", "--out", "{tmp}/out"], "no images"),
        (
            ["demo", "--set", "mae-imagenet.weights_path={tmp}/w.pth", "--out", "{tmp}/out"],
            "--set mae-imagenet.weights_path={tmp}/w.pth does not exist",
        ),
        (
            ["benchmark", "--config", "{cfg}", "--set", "mae-sem.checkpoint_dir={tmp}/run"],
            "--set mae-sem.checkpoint_dir={tmp}/run does not exist",
        ),
        (["benchmark", "--config", "{cfg}", "--out", "{cfg}"], "exists and is not a folder"),
        (["benchmark", "--config", "{cfg_no_images}"], "does not exist or is not a folder"),
    ],
)
def test_option_errors_come_before_torch_is_loaded(tmp_path, argv, words):
    """A mistyped option is refused in the time of a config read, not after seconds of torch:
    the process that refuses it has not imported torch."""
    (tmp_path / "empty").mkdir()
    cfg, cfg_no_images = tmp_path / "bench.yaml", tmp_path / "no-images.yaml"
    cfg.write_text(f"methods: [input]\nout: {tmp_path / 'bench'}\n")
    cfg_no_images.write_text(f"images: {tmp_path / 'none'}\nout: {tmp_path / 'bench'}\n")
    fields = {"tmp": tmp_path, "cfg": cfg, "cfg_no_images": cfg_no_images}
    argv = [a.format(**fields) for a in argv]
    words = words.format(**fields)
    run = main_in_fresh_interpreter("sem_train.cli", argv)
    assert (run.status, run.loaded, run.stdout) == (2, [], []), run
    assert len(run.stderr) == 1 and words in run.stderr[0], run.stderr


@pytest.mark.parametrize("command", ["pretrain", "finetune", "baseline"])
def test_resume_without_a_run_is_refused_before_the_training_code_is_imported(tmp_path, command):
    """``--resume`` into a folder holding no run (a mistyped path) is refused when the folder is
    taken, not after the stage's, the fine-tune's or the baseline's code has been imported."""
    (tmp_path / "images").mkdir()
    argv = [*_TRAIN_COMMANDS[command], "--data", str(tmp_path / "images")]
    argv += ["--output-dir", str(tmp_path / "typo"), "--resume"]
    heavy = ("sem_train.stages", "sem_train.finetune", "sem_train.baselines", "sem_train.engine")
    run = main_in_fresh_interpreter("sem_train.cli", argv, watch=heavy)
    assert (run.status, run.loaded, run.stdout) == (2, [], []), run
    assert len(run.stderr) == 1 and "--resume: no checkpoint in" in run.stderr[0], run.stderr
    assert not (tmp_path / "typo").exists()


def _fake_export(folder: Path) -> Path:
    """A folder that looks like a model export by its paths (what the early checks read)."""
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    (folder / "model.safetensors").write_bytes(b"not read by a path check")
    return folder


_SOURCES_MD = "{tmp}/SOURCES.md"  # a text file given as a model
_EMPTY = "{tmp}/images"  # a folder without images (nor a model)
_EXPORT = "{tmp}/export"  # an export by its paths (not by its contents)

_BAD_INPUTS = {
    # --resume into a folder holding no run (checkpoint.py's checks, now runfolder.py's)
    "resume-pretrain": ([*_TRAIN_COMMANDS["pretrain"], "--resume"], "--resume: no checkpoint in"),
    "resume-finetune": ([*_TRAIN_COMMANDS["finetune"], "--resume"], "--resume: no checkpoint in"),
    "resume-baseline": ([*_TRAIN_COMMANDS["baseline"], "--resume"], "--resume: no checkpoint in"),
    # a fresh run into a run's folder, a recipe into a recipe's
    "fresh-over-a-run": (
        [*_TRAIN_COMMANDS["pretrain"], "--output-dir", "{tmp}/run"],
        "already holds a run (latest.json exists)",
    ),
    "recipe-over-a-recipe": (
        ["train", "recipe", "--config", "cpu-small", "--output-dir", "{tmp}/recipe"],
        "already holds a recipe run",
    ),
    # the model preset and its overrides (sem_models.config.check_preset, a config validator)
    "unknown-preset": (
        ["train", "pretrain", "--stage", "1", "--config", "{tmp}/preset.yaml"],
        "model (line 1): unknown preset 'tinyy'; choose one of",
    ),
    "unknown-model-field": (
        ["train", "pretrain", "--stage", "1", "--config", "{tmp}/field.yaml"],
        "unknown MAE config field(s) ['depthh']",
    ),
    # the data: none set, none readable
    "no-data-root": (
        ["train", "pretrain", "--stage", "1", "--config", "{tmp}/empty.yaml"],
        "data.root is not set",
    ),
    "recipe-without-data": (
        ["train", "recipe", "--config", "cpu-small", "--output-dir", "{tmp}/fresh"],
        "data.root is not set",
    ),
    "data-without-images": (
        [*_TRAIN_COMMANDS["pretrain"], "--data", "{tmp}/images"],
        "no readable images under",
    ),
    # the model a run starts from
    "finetune-from-nothing": (
        ["train", "finetune", "--config", "{tmp}/empty.yaml"],
        "empty.yaml): fine-tuning needs init_from (a pretrained run) or model (a preset)",
    ),
    "stage2-from-nothing": (
        ["train", "pretrain", "--stage", "2", "--config", "{tmp}/empty.yaml"],
        "empty.yaml): stage 2 needs init_from: the Stage-1 run directory",
    ),
    "stage3-from-nothing": (
        ["train", "pretrain", "--stage", "3", "--config", "{tmp}/empty.yaml"],
        "empty.yaml): stage 3 needs init_from: the Stage-2 run directory",
    ),
    "init-from-missing": (
        [*_TRAIN_COMMANDS["finetune"], "--init-from", "{tmp}/no-such-run"],
        "init_from={tmp}/no-such-run does not exist",
    ),
    "init-from-a-text-file": (
        [*_TRAIN_COMMANDS["finetune"], "--init-from", _SOURCES_MD],
        f"init_from={_SOURCES_MD}: no exported model found",
    ),
    "init-from-an-empty-folder": (
        ["train", "pretrain", "--stage", "2", "--config", "cpu-small", "--init-from", _EMPTY],
        f"init_from={_EMPTY}: no exported model found",
    ),
    "stage3-without-a-teacher": (
        ["train", "pretrain", "--stage", "3", "--config", "cpu-small", "--init-from", _EXPORT],
        "stage 3 with kd_weight=1.0 needs the Stage-1 teacher",
    ),
    # the baseline method
    "unknown-baseline": (
        ["train", "baseline", "n2vv", "--config", "cpu-small"],
        "baseline must be one of n2v, n2n, mrn, got 'n2vv'",
    ),
    "baseline-that-does-not-train": (
        ["train", "baseline", "bm3d", "--config", "cpu-small"],
        "baseline must be one of n2v, n2n, mrn, got 'bm3d'",
    ),
}


@pytest.mark.parametrize("case", list(_BAD_INPUTS))
def test_bad_training_input_is_refused_before_torch_is_loaded(tmp_path, case):
    """Every input check of ``sem train`` that needs only paths, file headers or the config
    (the run folder, the model to start from, the baseline method, the data) refuses in the
    time of a config read: the refusing process has not imported torch, and wrote nothing."""
    (tmp_path / "images").mkdir()  # a folder without images
    (tmp_path / "empty.yaml").write_text("")
    (tmp_path / "preset.yaml").write_text("model:\n  preset: tinyy\n")
    (tmp_path / "field.yaml").write_text("model:\n  overrides: {depthh: 3}\n")
    (tmp_path / "SOURCES.md").write_text("# where the images come from\n")
    _fake_export(tmp_path / "export")
    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    (tmp_path / "run" / "checkpoints" / "latest.json").write_text('{"weights": "w.safetensors"}')
    (tmp_path / "recipe" / "stage1").mkdir(parents=True)
    (tmp_path / "recipe" / "stage1" / "run_info.json").write_text("{}")  # a started step
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    argv, words = _BAD_INPUTS[case]
    argv = [a.format(tmp=tmp_path) for a in argv]
    if "--data" not in argv and case not in ("no-data-root", "recipe-without-data"):
        argv += ["--data", str(tmp_path / "images")]
    if "--output-dir" not in argv:
        argv += ["--output-dir", str(tmp_path / "typo")]
    run = main_in_fresh_interpreter("sem_train.cli", argv)
    assert (run.status, run.loaded, run.stdout) == (2, [], []), run
    assert len(run.stderr) == 1 and words.format(tmp=tmp_path) in run.stderr[0], run.stderr
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before

"""Configs (presets, files, strictness) and the command line."""

from __future__ import annotations

import json
import re

import pytest
from sem_models import MoEConfig
from sem_train.cli import build_parser, main
from sem_train.config import ConfigError, Stage1Config, load_config, preset


def test_presets_carry_the_paper_hyperparameters():
    s1, s2, s3 = (preset("paper", f"stage{k}") for k in (1, 2, 3))
    ft = preset("paper", "finetune")
    assert s1.model.preset == "large" and s1.optim.lr == 1e-4 and s1.optim.weight_decay == 0
    assert (
        s1.run.epochs == 400 and s1.run.batch_size_per_process * 2 == 64 and s1.mask_ratio == 0.75
    )
    assert s2.moe.num_experts == 8 and s2.moe.top_k == 1 and s2.lb_weight == 0.01
    assert s3.optim.lr == 1e-5 and s3.optim.weight_decay == 0.05
    assert s3.fft_weight == 0.1 and s3.psd_weight == 0.1
    assert ft.optim.lr == 1e-4 and ft.run.batch_size_per_process == 1 and ft.run.epochs == 400
    assert ft.loss.edge_weight == 3 and ft.loss.tv_weight == 10
    assert tuple(ft.crop_sizes_px) == (128, 256, 512, 1024)
    small = preset("cpu-small", "stage1")
    assert small.data.image_size_px <= 64 and small.run.device == "cpu"


def test_config_files_override_presets_and_reject_unknown_keys(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("preset: cpu-small\nrun:\n  epochs: 7\n")
    cfg = load_config(f, "stage1")
    assert isinstance(cfg, Stage1Config) and cfg.run.epochs == 7 and cfg.data.image_size_px == 64
    j = tmp_path / "c.json"
    j.write_text(json.dumps({"run": {"epochz": 3}}))
    with pytest.raises(ValueError, match=r"run\.epochz"):
        load_config(j, "stage1")
    with pytest.raises(ValueError, match="mask_ratio"):
        load_config({"mask_ratio": 1.5}, "stage1")


def test_cli_bad_input_is_one_line_and_exit_2(tmp_path, capsys):
    assert main(["train", "pretrain", "--stage", "1", "--config", str(tmp_path / "x.yaml")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("sem: error:") and "x.yaml" in err[0]
    bad = tmp_path / "bad.yaml"
    bad.write_text("run:\n  batch_size_per_process: 0\n")
    assert main(["train", "finetune", "--config", str(bad)]) == 2
    assert "batch_size_per_process" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["train", "pretrain", "--stage", "4", "--config", "cpu-small"])
    assert exc.value.code == 2


def test_a_mistyped_preset_names_the_presets():
    with pytest.raises(ConfigError, match=r"unknown preset 'cpu-smal'; choose from \['cpu-base'"):
        load_config("cpu-smal", "stage1")


def test_an_empty_preset_key_is_refused_not_read_as_no_preset(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("run:\n  epochs: 3\npreset:\n")  # the name forgotten: not the defaults
    with pytest.raises(ConfigError) as exc:
        load_config(f, "stage1")
    assert str(exc.value) == (
        f"{f}, line 3: preset is empty; choose from ['cpu-base', 'cpu-small', 'paper']"
    )


def test_a_finetune_refuses_a_fresh_model_beside_init_from(tmp_path, capsys):
    """A pretraining config (with ``model:``) given to ``sem train finetune --init-from``:
    the fine-tune started from init_from and ignored ``model`` without a word."""
    f = tmp_path / "s1.yaml"
    f.write_text("model: {preset: tiny, overrides: {patch_size: 8}}\ndata: {image_size_px: 64}\n")
    assert load_config(f, "finetune").model is not None  # a fresh MAE alone is taken
    out = tmp_path / "ft"
    argv = ["train", "finetune", "--config", str(f), "--init-from", str(tmp_path)]
    assert main([*argv, "--output-dir", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"invalid finetune config ({f})" in err[0]
    assert "init_from (a pretrained run) or model (a fresh MAE), not both" in err[0]
    assert not out.exists()


def test_cli_commands_are_registered_from_modules():
    parser = build_parser("train")
    args = parser.parse_args(["train", "baseline", "n2v", "--config", "cpu-small"])
    assert args.method == "n2v" and callable(args.handler)
    args = parser.parse_args(["--debug", "train", "pretrain", "--stage", "2", "--config", "paper"])
    assert args.debug and args.stage == 2


@pytest.mark.parametrize("value", [".inf", "-.inf", ".nan", "1.0e30", "0", "-1e-4"])
def test_learning_rates_outside_0_1_are_refused_naming_the_field(tmp_path, value):
    f = tmp_path / "c.yaml"
    f.write_text(f"preset: cpu-small\noptim:\n  lr: {value}\n")
    with pytest.raises(ConfigError, match=r"c\.yaml.*optim\.lr \(line 3\)"):
        load_config(f, "stage1")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"min_lr": 1e-3, "lr": 1e-4}, "min_lr=0.001 must not exceed lr"),
        ({"betas": [0.9, 1.0]}, "optim.betas.1"),
        ({"weight_decay": 5.0}, "optim.weight_decay"),
        ({"grad_clip_norm": float("inf")}, "optim.grad_clip_norm"),
        ({"warmup_steps": -1}, "optim.warmup_steps"),
    ],
)
def test_optimiser_values_are_bounded(body, field):
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        load_config({"optim": body}, "stage1")


def test_moe_options_are_sem_models_moe_config_with_unknown_keys_refused():
    stage1 = {"init_from": "runs/stage1"}
    cfg = load_config({**stage1, "moe": {"num_experts": 4, "gate_weighting": "raw"}}, "stage2")
    assert isinstance(cfg.moe, MoEConfig) and cfg.moe.gate_weighting == "raw"
    with pytest.raises(ConfigError, match=r"moe\.bogus"):
        load_config({**stage1, "moe": {"num_experts": 4, "bogus": 1}}, "stage2")
    with pytest.raises(ConfigError, match="top_k=3 exceeds num_experts=2"):
        load_config({**stage1, "moe": {"num_experts": 2, "top_k": 3}}, "stage2")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a: &x [1, 2]\nb: *x\n", r"line 1, column 4: YAML anchors and aliases"),
        ("run:\n  epochs: &e 3\n", r"line 2, column 11: YAML anchors and aliases"),
        (
            'run: !!python/object/apply:os.system ["true"]\n',
            r"line 1, column 6: could not determine",
        ),
        ("run:\n\tepochs: 3\n", r"line 2, column 1: found character '\\t'"),
        ("run: {epochs: 3\n", r"line 2"),
        ("run:\n  epochs: \x07\n", r"c\.yaml"),
        ("- 1\n- 2\n", "must hold a mapping"),
    ],
)
def test_yaml_configs_refuse_aliases_tags_and_malformed_text(tmp_path, text, message):
    f = tmp_path / "c.yaml"
    f.write_text(text)
    with pytest.raises(ConfigError, match=message) as exc:
        load_config(f, "stage1")
    assert str(f) in str(exc.value)


def test_a_540_byte_alias_bomb_is_refused_before_it_expands(tmp_path):
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 9)]
    f = tmp_path / "bomb.yaml"
    f.write_text("\n".join(lines) + "\n")
    assert f.stat().st_size < 1000  # 9**9 = 387 million strings once expanded
    with pytest.raises(ConfigError, match="anchors and aliases"):
        load_config(f, "stage1")


def test_field_errors_name_the_line_of_the_key(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("preset: cpu-small\nrun:\n  epochs: 2\n  batch_size_per_process: 0\n")
    with pytest.raises(
        ConfigError,
        match=re.escape("run.batch_size_per_process (line 4) must be in [1, 65536], got 0"),
    ):
        load_config(f, "stage1")


def test_finetune_list_rules_and_misspelt_keys_name_their_line(tmp_path):
    f = tmp_path / "f.yaml"
    f.write_text(
        "preset: cpu-small\ninit_from: x\ncrop_sizes_px: [4, 64]\nguide_balances: [0.3, -1]\n"
        "run:\n  sead: 3\n"
    )
    with pytest.raises(ConfigError) as info:
        load_config(f, "finetune")
    msg = str(info.value)
    assert "crop_sizes_px (line 3): must be non-empty, each >= 8 px, got [4, 64]" in msg
    assert "guide_balances (line 4): each must be in (0, 1e6], got [0.3, -1.0]" in msg
    assert "run.sead (line 6): not a known key (did you mean seed?); known keys: epochs" in msg


def test_baseline_params_are_checked_against_the_method(tmp_path, capsys, folder_writer):
    f = tmp_path / "b.yaml"
    f.write_text("preset: cpu-small\nparams:\n  unet: {depth: 1}\n  bogus_field: 3\n")
    data = tmp_path / "images"
    folder_writer(data, 2, size=72)  # data for a 64-px patch: what is wrong is the params
    out = str(tmp_path / "run")
    argv = ["train", "baseline", "n2v", "--config", str(f), "--data", str(data)]
    assert main([*argv, "--output-dir", out]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "bogus_field" in err[0]


def test_baseline_accepts_what_the_registry_trains(tmp_path, capsys):
    """A registered method that does not train (bm3d) is refused in one line naming those
    that do; the list comes from the registry, not from the command."""
    from sem_baselines import list_restorers, registry_entry, trainable_restorers

    names = trainable_restorers()
    assert names and "bm3d" not in names and "mae-sem" not in names
    assert all(registry_entry(n).fitting == "fit" for n in names)
    assert set(names) == {
        n for n in list_restorers() if hasattr(registry_entry(n).cls, "make_batch")
    }
    f = tmp_path / "b.yaml"
    f.write_text("preset: cpu-small\n")
    out = tmp_path / "run"
    argv = ["train", "baseline", "bm3d", "--config", str(f), "--data", str(tmp_path)]
    assert main([*argv, "--output-dir", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "bm3d" in err[0] and all(n in err[0] for n in names)
    assert not (out / "checkpoints").exists()


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("deep.json", "[" * 100_000 + "]" * 100_000, "nested too deeply"),
        ("deep.yaml", "[" * 100_000 + "]" * 100_000, "nested too deeply"),
        ("bad.json", '{"run": {"epochs": 3,}}', r"bad\.json, line 1"),
        ("latin1.yaml", "run: caf\xe9", "not UTF-8"),
    ],
)
def test_unparseable_config_files_are_config_errors(tmp_path, name, text, message):
    f = tmp_path / name
    f.write_bytes(text.encode("latin-1"))
    with pytest.raises(ConfigError, match=message):
        load_config(f, "stage1")
    with pytest.raises(ConfigError, match="is not a file"):
        load_config(tmp_path, "stage1")


def test_training_and_benchmark_configs_share_one_reader(tmp_path, capsys):
    """A malformed file: its line and column; a folder: the configs in it; for both loaders."""
    from sem_train.evaluation import load_benchmark_config

    bad = tmp_path / "table.md"
    bad.write_text("| a | b |\n|---|---|\n")
    folder = tmp_path / "configs"
    folder.mkdir()
    (folder / "stage1.yaml").write_text("run: {epochs: 1}\n")
    (folder / "readme.txt").write_text("hi")
    for load, what in [
        (lambda p: load_config(p, "stage1"), "config file"),
        (load_benchmark_config, "benchmark config"),
    ]:
        with pytest.raises(ConfigError, match=rf"^{what} {bad}, line 1, column 3: expected"):
            load(bad)
        with pytest.raises(ConfigError, match=r"e\.g\. one of: stage1\.yaml$") as exc:
            load(folder)
        assert str(exc.value).startswith(f"{what} {folder} is not a file but a folder; give a")
    out = tmp_path / "run"
    argv = ["train", "pretrain", "--stage", "1", "--config", str(bad), "--output-dir", str(out)]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        f"sem: error: config file {bad}, line 1, column 3: expected a comment or a line break, "
        "but found 'a'"
    ]


@pytest.mark.parametrize("section", ["run", "data"])
def test_a_section_that_is_no_mapping_is_refused_whatever_the_options(
    tmp_path, capsys, image_folder, section
):
    f = tmp_path / "r.yaml"
    f.write_text(f"preset: cpu-small\n{section}: 5\n")
    argv = ["train", "pretrain", "--stage", "1", "--config", str(f), "--data", str(image_folder)]
    assert main([*argv, "--output-dir", str(tmp_path / "out"), "--max-steps", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"{section} (line 2): Input should be a valid dictionary" in err[0]
    assert "(got 5)" in err[0]


def test_errors_about_command_line_values_name_the_option(tmp_path, capsys, image_folder):
    f = tmp_path / "mb.yaml"
    f.write_text("preset: cpu-small\ndata:\n  image_size_px: 64\nrun:\n  epochs: 3\n")
    argv = ["train", "pretrain", "--stage", "1", "--config", str(f), "--data", str(image_folder)]
    argv += ["--output-dir", str(tmp_path / "out")]
    for option, said in (
        ("--max-steps", "run.max_steps (--max-steps) must be >= 1, got 0"),
        ("--epochs", "run.epochs (--epochs) must be in [1, 1000000], got 0"),
    ):
        assert main([*argv, option, "0"]) == 2
        err = capsys.readouterr().err.strip()
        assert said in err and "(line" not in err
    # without the option names: the command line, never the line of the parent key
    with pytest.raises(ConfigError, match=re.escape("run.max_steps (from the command line) must")):
        load_config(f, "stage1", overrides={"run": {"max_steps": 0}})


def test_a_field_absent_from_the_file_gets_no_line_of_its_parent():
    from pydantic import BaseModel, ValidationError
    from sem_train.config import problems

    class Inner(BaseModel):
        x: int

    class Outer(BaseModel):
        run: Inner

    with pytest.raises(ValidationError) as exc:
        Outer.model_validate({"run": {}})
    said = problems(exc.value, {("run",): 4}, Outer, given={"run": {}})
    assert said.startswith("run.x: Field required") and "(line" not in said


def _numeric_fields(model: type, prefix: tuple[str, ...] = ()):
    """(key path, annotation) of every int, float or integer-Literal field of ``model`` and
    of the models nested in it."""
    import typing

    from pydantic import BaseModel

    for name, field in model.model_fields.items():
        members = [field.annotation, *typing.get_args(field.annotation)]
        nested = [m for m in members if isinstance(m, type) and issubclass(m, BaseModel)]
        if nested:
            yield from _numeric_fields(nested[0], (*prefix, name))
        elif (
            int in members
            or float in members
            or (
                typing.get_origin(field.annotation) is typing.Literal
                and all(type(a) is int for a in typing.get_args(field.annotation))
            )
        ):
            yield (*prefix, name), field.annotation


_REQUIRED = {
    "stage2": {"init_from": "s1"},
    "stage3": {"init_from": "s2"},
    "finetune": {"init_from": "s3"},
}


@pytest.mark.parametrize("kind", ["stage1", "stage2", "stage3", "finetune", "baseline"])
def test_no_numeric_field_takes_a_bool_for_a_number(kind):
    """pydantic takes ``true`` as 1 and ``false`` as 0: ``run.epochs: true`` trained one
    epoch. Every number of every training config (sem_models' ``moe`` and sem_physics'
    ``ranges`` included) refuses a bool, naming the field."""
    from sem_train.config import config_class

    fields = list(_numeric_fields(config_class(kind)))
    assert len(fields) > 20  # the walk finds the numbers (run, optim, data, ...)
    for path, _ in fields:
        for value in (True, False):
            body: dict = {**_REQUIRED.get(kind, {})}
            node = body
            for part in path[:-1]:
                node = node.setdefault(part, {})
            node[path[-1]] = value
            with pytest.raises(ConfigError, match=re.escape(".".join(path))):
                load_config(body, kind)
    # bool fields keep their bools; a bool or None keeps both
    cfg = load_config({**_REQUIRED.get(kind, {}), "run": {"bf16": False, "progress": True}}, kind)
    assert cfg.run.bf16 is False and cfg.run.progress is True


@pytest.mark.parametrize(
    ("kind", "text", "said"),
    [
        ("stage1", "run:\n  epochs: true\n", "run.epochs (line 3) must be an integer in [1, 1000000], got True"),
        ("stage1", "optim:\n  lr: true\n", "optim.lr (line 3) must be a number in (0, 1], got True"),
        ("stage1", "data:\n  channels: true\n", "data.channels (line 3): Input should be 1 or 3 (got True)"),
        ("stage1", "run:\n  seed: false\n", "run.seed (line 3) must be an integer in [0, 4294967295], got False"),
        ("stage1", "data:\n  augment:\n    crop_scale: [true, 1]\n", "data.augment.crop_scale.0 (line 4): Input should be a valid number"),
        ("stage1", "model:\n  overrides: {depth: true}\n", "model.overrides.depth (line 3): Input should be a valid integer (got True)"),
        ("stage2", "init_from: s1\nmoe:\n  num_experts: true\n", "moe.num_experts (line 4) must be an integer >= 1, got True"),
        ("finetune", "init_from: s3\nranges:\n  rx_px: [true, 5]\n", "ranges.rx_px (line 4): low and high must be numbers in (0, 1000], got (True, 5)"),
        ("finetune", "init_from: s3\nguide_balances: [false]\nrefiner_width: 4\n", "guide_balances.0 (line 3): Input should be a valid number (got False)"),
    ],
)  # fmt: skip
def test_a_bool_for_a_number_is_refused_naming_the_field_and_its_line(tmp_path, kind, text, said):
    f = tmp_path / "c.yaml"
    f.write_text("preset: cpu-small\n" + text)
    with pytest.raises(ConfigError) as exc:
        load_config(f, kind)
    assert said in str(exc.value) and str(f) in str(exc.value)


@pytest.mark.parametrize(
    ("text", "said"),
    [
        ("run: {seed: -1}", "run.seed (line 2) must be in [0, 4294967295], got -1"),
        ("data: {split_seed: -1}", "data.split_seed (line 2) must be in [0, 4294967295], got -1"),
        ("run: {seed: 100000000000000000}", "run.seed (line 2) must be in [0, 4294967295], got 1e17"),
    ],
)  # fmt: skip
def test_seeds_are_bounded_to_what_the_random_generators_take(tmp_path, text, said):
    """A negative split seed stopped the run with numpy's "expected non-negative integer",
    a seed of 1e17 with torch's "Overflow when unpacking long long" after the run folder was
    written; neither named the field."""
    f = tmp_path / "c.yaml"
    f.write_text(f"preset: cpu-small\n{text}\n")
    with pytest.raises(ConfigError) as exc:
        load_config(f, "stage1")
    assert said in str(exc.value)
    from sem_train.config import SEED_MAX
    from sem_train.data.sampler import loader_generator, worker_base_seed

    # the largest seed is taken, and its loader seeds stay in torch's range for any epoch
    cfg = load_config({"run": {"seed": SEED_MAX}, "data": {"split_seed": SEED_MAX}}, "stage1")
    assert loader_generator(cfg.run.seed, 1_000_000).initial_seed() > 0
    assert isinstance(worker_base_seed(cfg.run.seed, 1_000_000), int)


def test_a_benchmark_seed_is_one_its_trainings_take():
    """The benchmark passes its seed to the runs it trains (run.seed): a larger one would be
    refused only when the first training starts."""
    from sem_train.config import SEED_MAX
    from sem_train.evaluation.config import make_config

    assert make_config({"seed": SEED_MAX}).seed == SEED_MAX
    with pytest.raises(ValueError, match=r"seed must be in \[0, 4294967295\], got 4294967296"):
        make_config({"seed": SEED_MAX + 1})


@pytest.mark.parametrize(
    ("kind", "text", "field"),
    [
        ("stage1", "data:\n  root: ''\n", "data.root (line 3)"),
        ("stage1", "run: {output_dir: ''}\n", "run.output_dir (line 2)"),
        ("stage1", "data: {cache_dir: ''}\n", "data.cache_dir (line 2)"),
        ("stage3", "init_from: s2\nteacher_from: ''\n", "teacher_from (line 3)"),
        ("finetune", "init_from: ''\n", "init_from (line 2)"),
    ],
)
def test_an_empty_path_is_refused_not_read_as_the_current_folder(tmp_path, kind, text, field):
    """pydantic takes '' as the path '.': ``root: ''`` trained on the current folder and
    ``output_dir: ''`` wrote the run into it."""
    f = tmp_path / "c.yaml"
    f.write_text("preset: cpu-small\n" + text)
    with pytest.raises(ConfigError) as exc:
        load_config(f, kind)
    said = str(exc.value)
    assert f"{field}: must be a path, got '' (which would be the current folder)" in said


def test_the_command_refuses_epochs_true_in_one_line(tmp_path, capsys, image_folder):
    f = tmp_path / "c.yaml"
    f.write_text("preset: cpu-small\nrun:\n  epochs: true\n")
    out = tmp_path / "out"
    argv = ["train", "pretrain", "--stage", "1", "--config", str(f), "--data", str(image_folder)]
    assert main([*argv, "--output-dir", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        f"sem: error: invalid stage1 config ({f}): run.epochs (line 3) must be an integer in "
        "[1, 1000000], got True"
    ]
    assert not out.exists()

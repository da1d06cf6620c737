"""What a config file's values are taken as: numbers with an exponent read as numbers, a value
that converts without loss taken converted (and recorded so), anything else refused."""

from __future__ import annotations

import json

import pytest
from sem_train.config import ConfigError, load_config
from sem_train.preflight import run_record


def _load(tmp_path, body: str, kind: str = "stage1"):
    f = tmp_path / "c.yaml"
    f.write_text("preset: cpu-small\n" + body)
    return load_config(f, kind), f


def test_numbers_with_an_exponent_are_numbers(tmp_path):
    """YAML 1.1 reads ``1e3`` as text: ``warmup_steps: 1e3`` was refused as "got '1e3'"."""
    cfg, _ = _load(tmp_path, "optim:\n  lr: 1e-4\n  warmup_steps: 1e3\nrun:\n  max_steps: 2.5e3\n")
    assert cfg.optim.lr == pytest.approx(1e-4) and type(cfg.optim.lr) is float
    assert (cfg.optim.warmup_steps, cfg.run.max_steps) == (1000, 2500)
    assert type(cfg.optim.warmup_steps) is int and type(cfg.run.max_steps) is int


def test_a_value_that_converts_without_loss_is_taken_and_recorded_converted(tmp_path):
    """``epochs: "3"``, ``3.0``, ``bf16: 1``, ``tensorboard: "no"`` say one thing only (a
    sweep tool writes 32.0 for an integer, a template quotes numbers): they are taken, and the
    run's config.json holds the converted value, so a resume compares like with like."""
    body = (
        'run:\n  epochs: "3"\n  batch_size_per_process: 4.0\n  bf16: 1\n  tensorboard: "no"\n'
        "data:\n  channels: 1.0\n"
    )
    cfg, _ = _load(tmp_path, body)
    record = json.loads(json.dumps(run_record("stage1", cfg)))
    run = record["run"]
    assert (run["epochs"], run["batch_size_per_process"], run["bf16"], run["tensorboard"]) == (
        3,
        4,
        True,
        False,
    )
    assert type(run["epochs"]) is int and type(run["bf16"]) is bool
    assert record["data"]["channels"] == 1 and type(record["data"]["channels"]) is int


@pytest.mark.parametrize(
    ("body", "said"),
    [
        (
            "run:\n  epochs: 2.5\n",
            "run.epochs (line 3) must be an integer in [1, 1000000], got 2.5",
        ),
        ("optim:\n  warmup_steps: 1e-3\n", "optim.warmup_steps (line 3) must be an integer"),
        (
            "run:\n  epochs: true\n",
            "run.epochs (line 3) must be an integer in [1, 1000000], got True",
        ),
        ("run:\n  bf16: 2\n", "run.bf16 (line 3)"),
        ('run:\n  epochs: "three"\n', "run.epochs (line 3) must be an integer"),
    ],
)
def test_a_value_that_would_change_meaning_is_refused_naming_file_line_and_field(
    tmp_path, body, said
):
    with pytest.raises(ConfigError) as exc:
        _load(tmp_path, body)
    text = str(exc.value)
    assert text.startswith(f"invalid stage1 config ({tmp_path / 'c.yaml'}): ") and said in text
    assert "\n" not in text

"""Configs (presets, files, strictness) and the command line."""

from __future__ import annotations

import json

import pytest
from sem_train.cli import build_parser, main
from sem_train.config import Stage1Config, load_config, preset


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


def test_cli_commands_are_registered_from_modules():
    parser = build_parser()
    args = parser.parse_args(["train", "baseline", "n2v", "--config", "cpu-small"])
    assert args.method == "n2v" and callable(args.handler)
    args = parser.parse_args(["--debug", "train", "pretrain", "--stage", "2", "--config", "paper"])
    assert args.debug and args.stage == 2

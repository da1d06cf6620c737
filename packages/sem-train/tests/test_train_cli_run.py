"""The ``sem train`` commands run in-process at tiny size: Stage 1 -> 2 -> 3 -> fine-tune,
each writing its resolved config and provenance, and a killed run resumed from the command
line ends with the weights of an uninterrupted one."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file
from sem_models.testing import MICRO_MAE
from sem_train.cli import main

# The micro MAE at one encoder block; the input size comes from data.image_size_px.
TINY = {k: v for k, v in MICRO_MAE.items() if k != "img_size"} | {"depth": 1}


def _yaml(path: Path, body: dict) -> Path:
    data = {"preset": "cpu-small", **body}
    data.setdefault("data", {}).update({"image_size_px": 32, "val_fraction": 0.25})
    data.setdefault("run", {}).update(
        {"epochs": 2, "batch_size_per_process": 3, "progress": False, "tensorboard": False}
    )
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def folder(tmp_path_factory, folder_writer) -> Path:
    root = tmp_path_factory.mktemp("cli") / "images"
    folder_writer(root, 8, size=40, seed=3)
    return root


@pytest.mark.usefixtures("one_torch_thread")
def test_pretrain_stages_and_finetune_from_the_command_line(folder, tmp_path, capsys):
    c1 = _yaml(tmp_path / "s1.yaml", {"model": {"preset": "tiny", "overrides": TINY}})
    c2 = _yaml(tmp_path / "s2.yaml", {"moe": {"num_experts": 2}})
    c3 = _yaml(tmp_path / "s3.yaml", {})
    cf = _yaml(
        tmp_path / "ft.yaml",
        {
            "n_train_images": 2,
            "n_val_images": 1,
            "crop_sizes_px": [16, 32],
            "pairs_per_image": 3,
            "ranges": {"rx_px": [1.0, 3.0], "ry_px": [1.0, 3.0]},
        },
    )
    common = ["--data", str(folder), "--epochs", "1"]  # one epoch: a validation and best.json
    runs = tmp_path / "runs"
    argv = [
        ["train", "pretrain", "--stage", "1", "--config", str(c1), "--output-dir", str(runs / "1")],
        ["train", "pretrain", "--stage", "2", "--config", str(c2), "--output-dir", str(runs / "2"),
         "--init-from", str(runs / "1")],
        ["train", "pretrain", "--stage", "3", "--config", str(c3), "--output-dir", str(runs / "3"),
         "--init-from", str(runs / "2")],
        ["train", "finetune", "--config", str(cf), "--output-dir", str(runs / "ft"),
         "--init-from", str(runs / "3")],
    ]  # fmt: skip
    for args in argv:
        assert main(args + common) == 0, capsys.readouterr().err
        assert "finished at step" in capsys.readouterr().out
    for name, kind_key in (("1", "model"), ("2", "moe"), ("3", "fft_weight"), ("ft", "loss")):
        out = runs / name
        cfg = json.loads((out / "config.json").read_text())
        assert kind_key in cfg and Path(cfg["data"]["root"]) == folder
        assert cfg["data"]["image_size_px"] == 32 and cfg["run"]["output_dir"] == str(out)
        info = json.loads((out / "run_info.json").read_text())
        assert info["packages"]["sem-train"] and info["packages"]["torch"]
        assert "commit" in info["git"]
        assert (out / "checkpoints" / "best.json").is_file()
        split = json.loads((out / "data_split.json").read_text())  # what it trained on
        assert split["train"] and all(Path(f).is_relative_to(folder) for f in split["train"])
        assert not set(split["train"]) & set(split["validation"])
    ft_split = json.loads((runs / "ft" / "data_split.json").read_text())
    assert (len(ft_split["train"]), len(ft_split["validation"])) == (2, 1)
    ft_cfg = json.loads((runs / "ft" / "config.json").read_text())
    assert ft_cfg["init_from"] == str(runs / "3")


def test_cli_kill_and_resume_equals_uninterrupted(folder, tmp_path):
    cfg = _yaml(tmp_path / "s1.yaml", {"model": {"preset": "tiny", "overrides": TINY}})
    base = ["train", "pretrain", "--stage", "1", "--config", str(cfg), "--data", str(folder)]
    assert main([*base, "--output-dir", str(tmp_path / "full"), "--epochs", "3"]) == 0
    killed = [*base, "--output-dir", str(tmp_path / "cut"), "--epochs", "3"]
    assert main([*killed, "--max-steps", "3"]) == 0  # stops mid-epoch 2 with a checkpoint
    assert json.loads((tmp_path / "cut/checkpoints/latest.json").read_text())["global_step"] == 3
    assert main([*killed, "--resume"]) == 0

    def final(run: Path) -> dict:
        ptr = json.loads((run / "checkpoints" / "latest.json").read_text())
        return load_file(str(run / "checkpoints" / ptr["weights"]))

    a, b = final(tmp_path / "full"), final(tmp_path / "cut")
    assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)


def test_missing_data_folder_is_one_clear_line(tmp_path, capsys):
    code = main(
        [
            "train",
            "pretrain",
            "--stage",
            "1",
            "--config",
            "cpu-small",
            "--data",
            str(tmp_path / "x"),
        ]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "is not a directory" in err[0]
    for what in ("pretrain", "finetune", "baseline"):  # checked before the config is read
        argv = [
            "train",
            what,
            "--config",
            str(tmp_path / "none.yaml"),
            "--data",
            str(tmp_path / "x"),
        ]
        argv[2:2] = {"pretrain": ["--stage", "1"], "baseline": ["n2v"]}.get(what, [])
        assert main(argv) == 2
        assert (
            capsys.readouterr().err == f"sem: error: --data {tmp_path / 'x'} is not a directory\n"
        )
    code = main(["train", "pretrain", "--stage", "2", "--config", "cpu-small", "--data",
                 str(tmp_path), "--init-from", str(tmp_path / "no_stage1")])  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "no_stage1" in err[0] and "does not exist" in err[0]


@pytest.mark.parametrize(
    ("method", "params"),
    [
        ("n2v", {"unet": {"depth": 1, "width": 4}}),
        ("n2n", {"unet": {"depth": 1, "width": 4}}),
        ("mrn", {"net": {"width": 4}}),
    ],
)
def test_learned_baselines_train_from_the_command_line(folder, tmp_path, capsys, method, params):
    import numpy as np
    import sem_baselines

    cfg = tmp_path / "b.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "preset": "cpu-small",
                "data": {"image_size_px": 32, "val_fraction": 0.25},
                "run": {"epochs": 2, "batch_size_per_process": 2, "progress": False},
                "n_train_images": 3,
                "params": params,
                "patches_per_image": 2,
                "val_patches": 2,
            }
        )
    )
    out = tmp_path / method
    argv = ["train", "baseline", method, "--config", str(cfg), "--data", str(folder)]
    assert main([*argv, "--output-dir", str(out)]) == 0, capsys.readouterr().err
    assert "finished at step 6 (epoch 2)" in capsys.readouterr().out
    recs = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    val = [r for r in recs if r["split"] == "val"]
    assert len(val) == 2 and all(np.isfinite([r["loss"], r["psnr_db"]]).all() for r in val)
    assert json.loads((out / "config.json").read_text())["params"] == params
    assert "commit" in json.loads((out / "run_info.json").read_text())["git"]
    latest = json.loads((out / "checkpoints" / "latest.json").read_text())
    assert latest["global_step"] == 6 and (out / "checkpoints" / latest["weights"]).is_file()
    restorer = sem_baselines.load_restorer(out / "model")
    assert restorer.name == method
    image = np.full((40, 48), 120.0, np.float32)
    assert restorer.restore(image).shape == image.shape


def test_baseline_honours_max_steps_and_resume(folder, tmp_path, capsys):
    """A baseline run cut by --max-steps resumes to the weights of an uninterrupted one."""
    cfg = tmp_path / "b.yaml"
    body = {
        "preset": "cpu-small",
        "data": {"image_size_px": 32, "val_fraction": 0.25},
        "run": {"epochs": 2, "batch_size_per_process": 2, "progress": False},
        "n_train_images": 3,
        "params": {"unet": {"depth": 1, "width": 4}},
        "patches_per_image": 2,
        "val_patches": 2,
    }
    cfg.write_text(yaml.safe_dump(body))
    argv = ["train", "baseline", "n2n", "--config", str(cfg), "--data", str(folder)]
    assert main([*argv, "--output-dir", str(tmp_path / "full")]) == 0
    cut = [*argv, "--output-dir", str(tmp_path / "cut")]
    assert main([*cut, "--max-steps", "4"]) == 0
    assert "stopped early at step 4" in capsys.readouterr().out
    ptr = json.loads((tmp_path / "cut" / "checkpoints" / "latest.json").read_text())
    assert ptr["global_step"] == 4
    assert main([*cut, "--resume"]) == 0

    def final(run: Path) -> dict:
        ptr = json.loads((run / "checkpoints" / "latest.json").read_text())
        return load_file(str(run / "checkpoints" / ptr["weights"]))

    a, b = final(tmp_path / "full"), final(tmp_path / "cut")
    assert ptr["global_step"] < 6 and a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_stage_1_init_from_must_name_an_existing_model(tmp_path, capsys):
    """Stage 1 takes --init-from (a new run training a Stage-1 model further); a path that
    holds no model is refused, naming it."""
    argv = ["train", "pretrain", "--stage", "1", "--config", "cpu-small", "--init-from",
            str(tmp_path / "x"), "--data", str(tmp_path), "--output-dir", str(tmp_path / "o")]  # fmt: skip
    assert main(argv) == 2
    assert (
        capsys.readouterr().err == f"sem: error: init_from={tmp_path / 'x'} does not exist "
        "(run the previous stage first, or fix the path)\n"
    )
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("method", ["n2v", "n2n", "mrn"])
def test_a_baseline_pair_depends_on_its_sample_alone(method):
    """Each training pair comes from its own sample's seed: a batch split across two processes
    (DDP) gives the pairs of the whole batch in one process."""
    import torch
    from sem_baselines import get_restorer
    from sem_physics import ParameterRanges
    from sem_train.baselines import BaselineTask

    task = BaselineTask(get_restorer(method), ParameterRanges())
    g = torch.Generator().manual_seed(0)
    batch = {
        "clean": 255 * torch.rand(4, 1, 32, 32, generator=g),
        "seed": torch.tensor([5, 9, 2, 7]),
    }
    whole = task._pair(batch)
    halves = [task._pair({k: v[i : i + 2] for k, v in batch.items()}) for i in (0, 2)]
    for key, value in whole.items():
        torch.testing.assert_close(torch.cat([h[key] for h in halves]), value, rtol=0, atol=0)
    again = task._pair({k: v[[1, 0, 3, 2]] for k, v in batch.items()})  # another order
    torch.testing.assert_close(again["input"][[1, 0, 3, 2]], whole["input"], rtol=0, atol=0)
    assert not torch.equal(whole["input"][0], whole["input"][1])


def test_the_final_line_is_printed_once_per_launch(monkeypatch, capsys):
    """Under torchrun only rank 0 prints where the outputs are (every rank returns 0)."""
    from types import SimpleNamespace

    from sem_train.commands.train import _report

    done = SimpleNamespace(
        best_loss=0.5, stopped_early=False, global_step=8, epoch=4, output_dir="runs/x"
    )
    monkeypatch.setenv("RANK", "1")
    assert _report(done) == 0 and capsys.readouterr().out == ""
    monkeypatch.setenv("RANK", "0")
    assert _report(done) == 0
    assert capsys.readouterr().out.startswith("finished at step 8 (epoch 4)")

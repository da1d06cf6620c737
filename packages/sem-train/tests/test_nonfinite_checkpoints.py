"""Weights holding NaN or inf are refused where a run or a restore loads them: a resumed
run's weights and AdamW moments, a saved baseline restorer given to ``sem restore``, a start
model given as ``--init-from``; each in one line naming the file and the tensors."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
import yaml
from safetensors.torch import load_file, save_file
from sem_models.testing import MICRO_MAE
from sem_train.checkpoint import CheckpointError, load_weights
from sem_train.cli import main
from sem_train.config import OptimConfig, RunConfig
from sem_train.data import SEMImageDataset, build_index
from sem_train.engine import Task, fit

pytestmark = pytest.mark.usefixtures("one_torch_thread")


class _Denoiser(Task):
    """Two convolutions with parameters of distinct shapes (a parameter is known by its shape)."""

    def __init__(self) -> None:
        torch.manual_seed(0)
        self.model = torch.nn.Sequential(
            torch.nn.Conv2d(1, 8, 3, padding=1),
            torch.nn.GELU(),
            torch.nn.Conv2d(8, 1, 3, padding=1),
        )

    def _pair(self, batch):
        x = batch["image"]
        return x + 0.1 * torch.sin(40 * x), x

    def training_loss(self, model, batch):
        y, x = self._pair(batch)
        return (model(y) - x).abs().mean(), {}

    def validation_step(self, model, batch):
        y, x = self._pair(batch)
        pred = model(y)
        return (pred - x).abs().mean(), pred, x


def _cut_run(image_folder: Path, out: Path) -> tuple[Path, Path, Callable[[], object]]:
    """A run stopped at step 3 by max_steps: its newest weights and training-state files, and
    the call that resumes it."""
    paths = build_index(image_folder).paths()
    train = SEMImageDataset(paths[:8], image_size_px=16)
    val = SEMImageDataset(paths[8:10], image_size_px=16, train=False)
    run = RunConfig(epochs=2, batch_size_per_process=2, output_dir=out, max_steps=3,
                    progress=False, tensorboard=False, device="cpu")  # fmt: skip
    optim = OptimConfig(lr=3e-3, warmup_steps=1)
    fit(_Denoiser(), train, val, run, optim)
    latest = json.loads((out / "checkpoints" / "latest.json").read_text())
    resumed = run.model_copy(update={"max_steps": None})

    def resume() -> object:
        return fit(_Denoiser(), train, val, resumed, optim, resume=True)

    return out / "checkpoints" / latest["weights"], out / "checkpoints" / latest["state"], resume


def test_a_resume_refuses_nan_weights_naming_the_file_and_tensors(image_folder, tmp_path):
    """The checkpoint loaded without complaint and the first step stopped the run for a
    non-finite loss, calling that very checkpoint the last good one."""
    weights, _, resume = _cut_run(image_folder, tmp_path / "r")
    state = load_file(str(weights))
    state["2.bias"][0] = float("nan")
    state["0.weight"].view(-1)[[1, 5]] = float("inf")
    save_file(state, str(weights))
    before = weights.read_bytes()
    with pytest.raises(CheckpointError) as info:
        resume()
    message = str(info.value)
    assert message.startswith(f"{weights}: NaN or infinite weights in 0.weight (2 of 72), ")
    assert "2.bias (1 of 1);" in message and "\n" not in message
    assert "diverged" in message and "lower optim.lr" in message
    assert weights.read_bytes() == before  # nothing was trained on or written over it
    with pytest.raises(CheckpointError, match=r"0\.weight \(2 of 72\)"):  # the loader itself
        load_weights(_Denoiser().model, weights)


@pytest.mark.parametrize("entry,value", [("exp_avg", "nan"), ("exp_avg_sq", "inf")])
def test_a_resume_refuses_nonfinite_optimizer_moments_naming_the_parameter(
    image_folder, tmp_path, entry, value
):
    """AdamW moments were not looked at: a NaN first moment made the weights NaN after the
    resume, an infinite second moment silently froze the weight (its update is m / inf = 0)
    and the run finished as if nothing had happened."""
    _, state_path, resume = _cut_run(image_folder, tmp_path / "r")
    state = torch.load(state_path, weights_only=True)
    bias_shape = _Denoiser().model[0].bias.shape  # the one parameter of shape (8,)
    (slot,) = [s for s in state["optimizer"]["state"].values() if s[entry].shape == bias_shape]
    slot[entry][3] = float(value)
    torch.save(state, state_path)
    with pytest.raises(CheckpointError) as info:
        resume()
    assert str(info.value).startswith(
        f"{state_path}: NaN or infinite optimizer state in {entry} of 0.bias (1 of 8); "
    )


def _tiny_stage1(tmp_path: Path) -> Path:
    overrides = {k: v for k, v in MICRO_MAE.items() if k != "img_size"} | {"depth": 1}
    body = {
        "preset": "cpu-small",
        "model": {"preset": "tiny", "overrides": overrides},
        "data": {"image_size_px": 32, "val_fraction": 0.25},
        "run": {"epochs": 2, "batch_size_per_process": 3, "progress": False, "tensorboard": False},
    }
    path = tmp_path / "s1.yaml"
    path.write_text(yaml.safe_dump(body), encoding="utf-8")
    return path


def test_sem_train_resume_says_in_one_line_how_to_go_on_from_a_diverged_run(
    tmp_path, capsys, folder_writer
):
    """``--resume`` of a run whose newest checkpoint holds NaN exits 2 on one line naming the
    file, the tensor and the new run to start from its best model; that new run trains."""
    folder_writer(tmp_path / "images", 8, size=40, seed=3)
    cfg, run = _tiny_stage1(tmp_path), tmp_path / "s1"
    argv = ["train", "pretrain", "--stage", "1", "--config", str(cfg), "--data",
            str(tmp_path / "images")]  # fmt: skip
    assert main([*argv, "--output-dir", str(run), "--max-steps", "2"]) == 0
    latest = json.loads((run / "checkpoints" / "latest.json").read_text())
    best = json.loads((run / "checkpoints" / "best.json").read_text())
    weights = run / "checkpoints" / latest["weights"]
    state = load_file(str(weights))
    state["norm.weight"][0] = float("nan")
    save_file(state, str(weights))
    capsys.readouterr()
    assert main([*argv, "--output-dir", str(run), "--resume"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"sem: error: {weights}: NaN or infinite weights")
    assert f"norm.weight (1 of {state['norm.weight'].numel()})" in err[0]
    advice = f"(step {best['global_step']}: --init-from {run} --output-dir NEW_FOLDER)"
    assert advice in err[0]
    assert main([*argv, "--init-from", str(run), "--output-dir", str(tmp_path / "new")]) == 0


def test_sem_restore_refuses_a_saved_restorer_with_nan_weights_before_any_image(tmp_path, capsys):
    """The saved N2V restorer loaded, restored every image to NaN and each image was reported
    as invalid output; now the checkpoint is refused in one line naming its file and tensor."""
    from sem_baselines import get_restorer

    saved = get_restorer("n2v", unet={"depth": 2, "width": 4}).save(tmp_path / "n2v")
    weights = saved / "model.safetensors"
    state = load_file(str(weights))
    name = next(iter(state))
    state[name].view(-1)[0] = float("nan")
    save_file(state, str(weights))
    image = tmp_path / "in.tif"
    tifffile.imwrite(image, np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8))
    out = tmp_path / "out"
    rc = main(
        ["restore", str(image), "-o", str(out), "--method", "n2v", "--checkpoint", str(saved)]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and not out.exists()
    assert f"{weights}: NaN or infinite weights in {name} (1 of {state[name].numel()})" in err[0]
    # the right kind of checkpoint: not blamed on the method it was given as
    assert err[0].startswith(f"sem: error: --checkpoint {saved}: {weights}: NaN")
    assert "cannot load it as method" not in err[0]


def test_lpips_weights_are_checked_and_worded_as_every_other_loaders() -> None:
    """sem-metrology (no sem-models dependency) writes the check and the message again for
    LPIPS' weight files: they find and say the same as sem_models' for every dtype, a sum that
    overflows though every value is finite, and more tensors than the message names."""
    from sem_metrology import quality
    from sem_models.checkpoint import nonfinite_message, nonfinite_tensors

    big = torch.full((8,), 3e38)  # finite values whose float32 sum is inf
    state = {"big": big, "steps": torch.arange(4)}
    for i, dtype in enumerate((torch.float16, torch.bfloat16, torch.float32, torch.float64)):
        t = torch.linspace(-1, 1, 10 + i, dtype=dtype)
        t[: i + 1] = float("nan") if i % 2 else float("inf")
        state[f"t{i}"] = t
    state["clean"] = torch.ones(3)
    found = quality._nonfinite_tensors(state)
    assert found == nonfinite_tensors(state) and [f[0] for f in found] == ["t0", "t1", "t2", "t3"]
    for n in range(1, 5):
        assert quality._nonfinite_message(Path("w.pth"), found[:n], "why") == nonfinite_message(
            Path("w.pth"), found[:n], "why"
        )

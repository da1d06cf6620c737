"""``sem train baseline`` under torchrun + Gloo DDP: 2 ranks x batch 2 == 1 process x batch 4
for Noise2Void (also with a mask whose size varies per patch), Noise2Noise and MRN."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from unittest import mock

import pytest
import torch
from safetensors.torch import load_file
from sem_baselines.learned import noise2void
from sem_models.testing import one_torch_thread
from sem_train.baselines import run_baseline
from sem_train.config import load_config
from sem_train.distributed import DistContext

UNET = {"unet": {"depth": 1, "width": 4}}
# (name, method, restorer params): "n2v-ragged" masks a different number of pixels per patch
CASES = [
    ("n2v-ragged", "n2v", UNET),
    ("n2v", "n2v", UNET),
    ("n2n", "n2n", UNET),
    ("mrn", "mrn", {"net": {"width": 4}}),
]
_blind_spot_mask = noise2void.blind_spot_mask


def _ragged_mask(y, ratio, radius, generator=None):
    """The blind-spot mask without its pixels darker than 0.4: a count that varies per patch,
    so a rank's own count is not half the global batch's."""
    masked, mask = _blind_spot_mask(y, ratio, radius, generator)
    return masked, mask & (y > 0.4)


def _case(name: str) -> contextlib.AbstractContextManager:
    """The ragged mask in place of Noise2Void's for case ``n2v-ragged``."""
    if name == "n2v-ragged":
        return mock.patch.object(noise2void, "blind_spot_mask", _ragged_mask)
    return contextlib.nullcontext()


def _train_losses(run: Path) -> list[float]:
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [r["loss"] for r in map(json.loads, lines) if r.get("split") == "train"]


def _config(method: str, params: dict, folder: str, out: str, batch: int):
    run = {
        "epochs": 2, "batch_size_per_process": batch, "device": "cpu", "progress": False,
        "tensorboard": False, "log_every_steps": 1, "output_dir": out,
    }  # fmt: skip
    body = {
        "method": method,
        "data": {"root": folder, "image_size_px": 32, "val_fraction": 0.25, "channels": 1},
        "optim": {"lr": 3e-3, "warmup_steps": 1},
        "run": run,
        "n_train_images": 4,
        "patches_per_image": 2,
        "val_patches": 2,
        "params": params,
    }
    return load_config(body, "baseline")


def ddp_worker_main(folder: str, out: str) -> None:
    """Body of each torchrun rank (run by the ``ddp_runs`` fixture): every case in turn."""
    torch.set_num_threads(1)
    ctx = DistContext.from_env(torch.device("cpu"))
    try:
        for name, method, params in CASES:
            with _case(name):
                run_baseline(_config(method, params, folder, f"{out}/{name}", batch=2))
    finally:
        ctx.close()


def test_two_rank_baselines_equal_one_process_with_doubled_batch(ddp_runs, tmp_path):
    """The Noise2Void loss is the mean over the masked pixels of the global batch (not of each
    rank's), the others plain means over equal rank batches: weights agree to float32
    rounding after 4 AdamW steps (as the dense DDP test)."""
    image_folder, ddp_out = ddp_runs / "images", ddp_runs / Path(__file__).stem
    for name, method, params in CASES:
        with one_torch_thread(), _case(name):
            one = run_baseline(_config(method, params, str(image_folder), str(tmp_path / name), 4))
        assert one.global_step == 4
        ddp_ckpt = sorted((ddp_out / name / "checkpoints").glob("step-*.safetensors"))
        ddp, single = load_file(str(ddp_ckpt[-1])), load_file(str(one.latest_checkpoint))
        assert ddp.keys() == single.keys()
        worst = max(float((ddp[k] - single[k]).abs().max()) for k in single)
        assert worst <= 1e-5, f"{name}: largest weight difference {worst:.3g}"
        logged = _train_losses(ddp_out / name)  # the global batch's loss, every step
        assert logged == pytest.approx(_train_losses(tmp_path / name), rel=1e-5), name


def test_the_baseline_is_built_on_the_device_of_its_rank(image_folder, tmp_path, monkeypatch):
    """Under torchrun each rank builds its network on the device the engine then selects for
    it (its own GPU), not on the default device (GPU 0 for every rank)."""
    from sem_train import baselines

    asked, built = [], []

    def fake_select(name, local_rank=0):
        asked.append((name, local_rank))
        return torch.device("cpu")

    class Built(Exception):
        pass

    def fake_restorer(name, params):
        built.append(params["device"])
        raise Built

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setattr(baselines, "select_device", fake_select)
    monkeypatch.setattr(baselines, "_restorer", fake_restorer)
    with pytest.raises(Built):
        run_baseline(_config("n2n", UNET, str(image_folder), str(tmp_path / "b"), 2))
    assert asked == [("cpu", 1)] and built == ["cpu"]

"""Small synthetic SEM-like images and tiny learned-restorer settings shared by the tests."""

from __future__ import annotations

import numpy as np
from sem_models.testing import MICRO_MAE

# Tiny networks so that every learned restorer trains for a few steps in well under a second.
TINY = {
    "n2n": {"unet": {"depth": 2, "width": 4}},
    "n2v": {"unet": {"depth": 2, "width": 4}},
    "mrn": {"net": {"width": 4}},
}
TINY_FIT = {"epochs": 1, "steps_per_epoch": 2, "batch_size": 2, "patch_size": 32}


def lines_image(
    shape: tuple[int, int] = (64, 64), seed: int = 0, period_px: float = 16.0, blob_px: float = 5.0
) -> np.ndarray:
    """Rough vertical lines (period ``period_px``) plus three bright blobs, 0..255 float32."""
    rng = np.random.default_rng(seed)
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    shift = np.cumsum(rng.normal(0, 0.3, h))[:, None]
    phase = 2 * np.pi * (xx + shift) / period_px + rng.uniform(0, 2 * np.pi)
    img = 50 + 150 / (1 + np.exp(-4 * np.sin(phase)))
    for _ in range(3):
        cy, cx, r = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(0.4, 1.0) * blob_px
        img += 40 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r * r))
    return np.clip(img, 0, 255).astype(np.float32)


def psnr(ref: np.ndarray, x: np.ndarray) -> float:
    mse = float(np.mean((ref.astype(np.float64) - x.astype(np.float64)) ** 2))
    return 10 * np.log10(255.0**2 / mse)


# A small ViT-MAE (32-px windows, 8-px patches) standing in for the public / SEM weights.
MAE_ARCH = MICRO_MAE
MAE_WINDOW = {"window_px": 32, "overlap_px": 8, "device": "cpu"}
_MAE_FILES: dict[str, dict] = {}


#: Registry entries that load a ViT-MAE: their tests get small weights made here.
MAE_METHODS = ("mae-imagenet", "mae-sem", "sem-foundation", "sem-foundation-zero-shot")
TINY_MOE = {"num_experts": 2}


def mae_registry_config(name: str, tmp_path_factory) -> dict:
    """Config of an MAE entry (:data:`MAE_METHODS`) pointing at small weights made here
    (cached): a facebookresearch encoder file, a dense sem-models MAE, a fine-tuned MAE + MoE
    restoration model and a pretrained MAE + MoE."""
    if name in _MAE_FILES:
        return _MAE_FILES[name]
    import torch
    from sem_models import MoEConfig, RestorationModel, build_mae, save_model

    folder = tmp_path_factory.mktemp(name)
    torch.manual_seed(11)
    if name == "mae-imagenet":  # facebookresearch layout: {"model": encoder state dict}, RGB
        mae = build_mae("tiny", in_chans=3, **MAE_ARCH)
        state = {k: v for k, v in mae.state_dict().items() if not k.startswith(("decoder", "mask"))}
        torch.save({"model": state}, folder / "mae_pretrain_tiny.pth")
        cfg = {
            "weights_path": str(folder / "mae_pretrain_tiny.pth"),
            "preset": "tiny",
            "overrides": MAE_ARCH,
            **MAE_WINDOW,
        }
    elif name == "mae-sem":  # a sem-models checkpoint of a dense grayscale MAE
        save_model(build_mae("tiny", in_chans=1, **MAE_ARCH), folder / "ckpt")
        cfg = {"checkpoint_dir": str(folder / "ckpt"), **MAE_WINDOW}
    elif name in ("sem-foundation", "sem-foundation-zero-shot"):  # MAE + MoE, grayscale
        mae = build_mae("tiny", in_chans=1, moe=MoEConfig(**TINY_MOE), **MAE_ARCH)
        model = RestorationModel(mae, residual=True) if name == "sem-foundation" else mae
        save_model(model, folder / "ckpt")
        cfg = {"checkpoint_dir": str(folder / "ckpt"), **MAE_WINDOW}
    else:
        raise KeyError(name)
    _MAE_FILES[name] = cfg
    return cfg

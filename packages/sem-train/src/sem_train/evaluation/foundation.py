"""The paper's method at demo scale: a tiny SEM-pretrained ViT-MAE, fine-tuned few-shot.

Stage 1 (masked-autoencoder pretraining, :func:`sem_train.stages.run_stage1`) on the protocol's
focused training images, then the defocus-to-focus fine-tune (:func:`sem_train.finetune.
run_finetune`: encoder frozen, decoder trained on synthetic defocus from the SPEC ranges). The
fine-tuned model is restored by sem-baselines' ``"mae-sem"`` restorer (sliding windows of the
model's input size, Hann-blended). ViT ``tiny`` with 128-px inputs (the demo's setting) trains
in about a minute and a half on a 2-core CPU; the paper's ViT-L + MoE runs through the same stages
with the ``paper`` preset (``sem train ...``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

__all__ = ["FOUNDATION_NAME", "FoundationDemoConfig", "train_foundation"]

#: Row name of the paper's method in the demo tables.
FOUNDATION_NAME = "sem-mae few-shot (ours, tiny)"


class FoundationDemoConfig(BaseModel):
    """Size and budget of the on-the-spot foundation model."""

    model_config = ConfigDict(extra="forbid")

    image_size_px: int = Field(64, ge=16, description="model input side (px), = inference window")
    preset: str = Field("tiny", description="sem-models architecture preset")
    pretrain_epochs: int = Field(6, ge=1)
    finetune_epochs: int = Field(6, ge=1)
    batch_size: int = Field(8, ge=1)
    pairs_per_image: int = Field(16, ge=1, description="fine-tune crops per image per epoch")
    lr: float = Field(1e-3, gt=0)
    loss_variant: str = Field(
        "L1", description="fine-tune loss: 'L1' (Charbonnier) or 'L1+TV' (paper's variants)"
    )


def _run(out: Path, cfg: FoundationDemoConfig, epochs: int, progress: bool) -> dict[str, Any]:
    run: dict[str, Any] = {
        "epochs": epochs,
        "batch_size_per_process": cfg.batch_size,
        "device": "auto",
        "progress": progress,
        "tensorboard": False,
        "log_every_steps": 5,
        "output_dir": str(out),
    }
    return run


def train_foundation(
    train_images: Sequence[np.ndarray],
    work_dir: str | Path,
    cfg: FoundationDemoConfig | None = None,
    *,
    seed: int = 0,
    progress: bool = True,
) -> Path:
    """Pretrain (Stage 1) and fine-tune a small MAE on ``train_images``; return the folder of
    the best fine-tuned restoration model (a sem-models checkpoint)."""
    from sem_physics import write_image

    from ..config import load_config
    from ..finetune import run_finetune
    from ..modeling import resolve_model_dir
    from ..stages import run_stage1

    cfg = cfg or FoundationDemoConfig()
    if not train_images:
        raise ValueError("the foundation model needs at least one focused training image")
    work = Path(work_dir)
    root = work / "train_images"
    root.mkdir(parents=True, exist_ok=True)
    for i, img in enumerate(train_images):
        write_image(root / f"train_{i:03d}.png", np.clip(img, 0, 255), "uint16")
    size = cfg.image_size_px
    data = {
        "root": str(root),
        "image_size_px": size,
        "channels": 1,
        "info_bar_fraction": 0.0,  # the protocol images are already cropped
        "val_fraction": 0.0,
        "cache_dir": str(work / "index_cache"),
    }
    model = {"preset": cfg.preset, "overrides": {"img_size": size, "in_chans": 1}}
    s1 = load_config(
        {
            "model": model,
            "data": data,
            "optim": {"lr": cfg.lr, "warmup_steps": 2},
            "run": {**_run(work / "stage1", cfg, cfg.pretrain_epochs, progress), "seed": seed},
        },
        "stage1",
    )
    run_stage1(s1)
    h, w = np.asarray(train_images[0]).shape
    crops = tuple(c for c in (size, 2 * size, 4 * size) if c <= min(h, w)) or (min(h, w),)
    ft = load_config(
        {
            "init_from": str(resolve_model_dir(work / "stage1")),
            "data": data,
            "optim": {"lr": cfg.lr, "warmup_steps": 2},
            "run": {**_run(work / "finetune", cfg, cfg.finetune_epochs, progress), "seed": seed},
            "n_train_images": len(train_images),
            "n_val_images": 0,
            "crop_sizes_px": list(crops),
            "pairs_per_image": cfg.pairs_per_image,
            "loss": {"variant": cfg.loss_variant},
        },
        "finetune",
    )
    result = run_finetune(ft)
    best = result.best_dir or resolve_model_dir(work / "finetune")
    return Path(best)

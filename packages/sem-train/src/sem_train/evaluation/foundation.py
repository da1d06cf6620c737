"""The paper's method at evaluation scale: a small SEM-pretrained ViT-MAE, fine-tuned few-shot.

This is the trainer of the registry's ``"pretrained"`` methods (``mae-sem``) when no checkpoint
is configured. Stage 1 (masked-autoencoder pretraining) on the protocol's focused training
images, then the defocus-to-focus fine-tune (encoder frozen, decoder trained on synthetic
defocus from the paper's ranges; best model by the loss on the validation images). Both stages
train from the in-memory arrays through the same engine as ``sem train`` (no image files are
written). ViT ``tiny`` with 128-px inputs (the demo's setting) trains in about a minute and a
half on a 2-core CPU; the paper's ViT-L + MoE runs through the same stages with the ``paper``
preset (``sem train ...``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field
from sem_physics import image_to_tensor

from ..data import DefocusPairDataset, SEMImageDataset
from .methods import Pretrained

__all__ = ["FoundationConfig", "train_foundation"]


class FoundationConfig(BaseModel):
    """Size and budget of a foundation model trained during an evaluation."""

    model_config = ConfigDict(extra="forbid")

    image_size_px: int = Field(64, ge=16, le=1024, description="model input side (px) = window")
    preset: str = Field("tiny", description="sem-models architecture preset")
    pretrain_epochs: int = Field(6, ge=1, le=100_000)
    finetune_epochs: int = Field(6, ge=1, le=100_000)
    batch_size: int = Field(8, ge=1, le=4096)
    pairs_per_image: int = Field(16, ge=1, le=10_000, description="fine-tune crops per image")
    lr: float = Field(1e-3, gt=0, le=1.0)
    loss_variant: str = Field(
        "L1", description="fine-tune loss: 'L1' (Charbonnier) or 'L1+TV' (paper's variants)"
    )


class _ArrayImages(SEMImageDataset):
    """Stage-1 views of in-memory focused images (float32 (H, W), 0..255, bar removed)."""

    def __init__(self, images: Sequence[np.ndarray], **kw: Any) -> None:
        super().__init__([Path(f"<array {i}>") for i in range(len(images))], **kw)
        self.arrays = [image_to_tensor(im)[0] / 255.0 for im in images]

    def _load(self, j: int) -> torch.Tensor:
        return self.arrays[j]


def _run(out: Path, cfg: FoundationConfig, epochs: int, seed: int, progress: bool) -> dict:
    return {
        "epochs": epochs,
        "batch_size_per_process": cfg.batch_size,
        "device": "auto",
        "progress": progress,
        "tensorboard": False,
        "log_every_steps": 5,
        "output_dir": str(out),
        "seed": seed,
    }


def train_foundation(
    train_images: Sequence[np.ndarray],
    val_images: Sequence[np.ndarray],
    work_dir: str | Path,
    cfg: FoundationConfig | None = None,
    *,
    seed: int = 0,
    progress: bool = True,
) -> Pretrained:
    """Pretrain (Stage 1) and fine-tune a small MAE on ``train_images``; the best fine-tuned
    restoration model (by the loss on ``val_images``, else on the training pairs) is returned
    as a checkpoint with the inference window it was trained for."""
    from ..config import load_config
    from ..engine import fit_config
    from ..finetune import build_finetune_task
    from ..modeling import resolve_model_dir
    from ..stages.stage1 import build_stage1_task

    cfg = cfg or FoundationConfig()
    if not train_images:
        raise ValueError("the foundation model needs at least one focused training image")
    work = Path(work_dir)
    size = cfg.image_size_px
    data = {"image_size_px": size, "channels": 1, "info_bar_fraction": 0.0}
    model = {"preset": cfg.preset, "overrides": {"img_size": size, "in_chans": 1}}
    optim = {"lr": cfg.lr, "warmup_steps": 2}
    s1 = load_config(
        {
            "model": model,
            "data": data,
            "optim": optim,
            "run": _run(work / "stage1", cfg, cfg.pretrain_epochs, seed, progress),
        },
        "stage1",
    )
    common = {"image_size_px": size, "channels": 1, "augment_cfg": s1.data.augment}
    train1 = _ArrayImages(train_images, train=True, **common)
    val1 = _ArrayImages(val_images, train=False, **common) if val_images else None
    fit_config(build_stage1_task(s1), train1, val1, s1)
    smallest = min(min(np.shape(im)) for im in [*train_images, *val_images])
    crops = tuple(c for c in (size, 2 * size, 4 * size) if c <= smallest) or (smallest,)
    ft = load_config(
        {
            "init_from": str(resolve_model_dir(work / "stage1")),
            "data": data,
            "optim": optim,
            "run": _run(work / "finetune", cfg, cfg.finetune_epochs, seed, progress),
            "n_train_images": len(train_images),
            "n_val_images": len(val_images),
            "crop_sizes_px": list(crops),
            "pairs_per_image": cfg.pairs_per_image,
            "loss": {"variant": cfg.loss_variant},
        },
        "finetune",
    )
    pairs = {"input_size_px": size, "crop_sizes_px": crops, "ranges": ft.ranges, "channels": 1}
    to_t = [image_to_tensor(im)[0] / 255.0 for im in train_images]
    train2 = DefocusPairDataset(to_t, train=True, pairs_per_image=cfg.pairs_per_image, **pairs)
    val2 = (
        DefocusPairDataset(
            [image_to_tensor(im)[0] / 255.0 for im in val_images], train=False, **pairs
        )
        if val_images
        else None
    )
    result = fit_config(build_finetune_task(ft), train2, val2, ft)
    best = Path(result.best_dir or resolve_model_dir(work / "finetune"))
    n_val = f", best of {len(val_images)} validation image(s)" if val_images else ""
    return Pretrained(
        checkpoint=best,
        config={"window_px": size},
        note=(
            f"ViT-{cfg.preset} MAE pretrained (Stage 1) and fine-tuned here on "
            f"{len(train_images)} image(s), {size}-px windows{n_val}"
        ),
    )

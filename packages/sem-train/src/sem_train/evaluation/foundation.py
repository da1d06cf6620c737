"""The paper's method at evaluation scale: pretraining and the few-shot restoration fine-tune.

Two trainers for the registry's methods (:mod:`.methods`), both from in-memory arrays through
the same engine as ``sem train`` (no image files are written):

* :func:`finetune_network`, the trainer of ``"finetune"`` methods (``mae-imagenet`` with its
  weights, ``sem-foundation`` with ``finetune_here``): the restorer's network is fine-tuned on
  the protocol's focused training images with the paper's protocol (arXiv 2604.05960,
  Sec. 2.4: encoder frozen, decoder and MoE routing trained on synthetic defocus from the
  paper's ranges, best model by the loss on the validation images). Every fine-tuned method
  gets the same budget (:class:`FoundationConfig`), so the comparison is fair.
* :func:`train_foundation`, the trainer of ``"pretrained"`` methods (``mae-sem``) without a
  checkpoint: Stage 1 (masked-autoencoder pretraining) on the same images, then the same
  fine-tune. ViT ``tiny`` with 128-px inputs (the demo's setting) trains in about a minute and
  a half on a 2-core CPU; the paper's ViT-L + MoE runs through the same stages with the
  ``paper`` preset (``sem train ...``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sem_models import RestorationModel
from sem_physics import image_to_tensor

from ..data import DefocusPairDataset, SEMImageDataset
from .config import FoundationConfig
from .methods import Pretrained

__all__ = ["finetune_network", "train_foundation"]


def _tensors(images: Sequence[np.ndarray]) -> list[torch.Tensor]:
    return [image_to_tensor(im)[0] / 255.0 for im in images]


class _ArrayImages(SEMImageDataset):
    """Stage-1 views of in-memory focused images (float32 (H, W), 0..255, bar removed)."""

    def __init__(self, images: Sequence[np.ndarray], **kw: Any) -> None:
        super().__init__([Path(f"<array {i}>") for i in range(len(images))], **kw)
        self.arrays = _tensors(images)

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


def _validation_change(run_dir: Path) -> str:
    """'validation loss a before -> b best' from the run's metrics log ('' without validation)."""
    path = run_dir / "metrics.jsonl"
    records = (
        [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
        if path.is_file()
        else []
    )
    val = [r for r in records if r.get("split") == "val" and math.isfinite(r.get("loss", math.nan))]
    start = [r["loss"] for r in val if r.get("step") == 0 and r.get("epoch") == -1]
    after = [r["loss"] for r in val if r.get("epoch", -1) >= 0]
    if not (start and after):
        return ""
    return f"validation loss {start[0]:.4g} before fine-tuning, {min(after):.4g} best"


def finetune_network(
    network: RestorationModel,
    train_images: Sequence[np.ndarray],
    val_images: Sequence[np.ndarray],
    work_dir: str | Path,
    cfg: FoundationConfig | None = None,
    *,
    seed: int = 0,
    progress: bool = True,
) -> Pretrained:
    """Fine-tune a "finetune" method's ``network`` on ``train_images`` (the paper's protocol).

    The network is saved to ``work_dir/initial`` and fine-tuned from there by
    :mod:`sem_train.finetune` into ``work_dir/finetune`` with ``cfg``'s budget
    (``finetune_epochs``, ``batch_size``, ``pairs_per_image``, ``lr``, ``image_size_px``,
    ``loss_variant``), with its own head (residual or direct output, refiner, physics guides)
    and its encoder frozen as the network says. Returns the best export (lowest
    validation loss; the last one without validation images) with the window it was trained
    for and a note: the budget and the validation loss before and after.
    """
    from ..config import load_config
    from ..engine import fit_config
    from ..finetune import build_finetune_task
    from ..modeling import resolve_model_dir, save_model

    cfg = cfg or FoundationConfig()
    if not train_images:
        raise ValueError("fine-tuning needs at least one focused training image")
    work = Path(work_dir)
    save_model(network, work / "initial")
    size = cfg.image_size_px
    smallest = min(min(np.shape(im)) for im in [*train_images, *val_images])
    crops = tuple(c for c in (size, 2 * size, 4 * size) if c <= smallest) or (smallest,)
    run = _run(work / "finetune", cfg, cfg.finetune_epochs, seed, progress)
    ft: Any = load_config(
        {
            "init_from": str(work / "initial"),
            "data": {"image_size_px": size, "channels": 1, "info_bar_fraction": 0.0},
            "optim": {"lr": cfg.lr, "warmup_steps": 2},
            "run": {**run, "validate_at_start": True},
            "n_train_images": len(train_images),
            "n_val_images": len(val_images),
            "crop_sizes_px": list(crops),
            "pairs_per_image": cfg.pairs_per_image,
            "val_pairs_per_image": cfg.val_pairs_per_image,
            "loss": {"variant": cfg.loss_variant},
            "freeze_encoder": network.freeze_encoder,
            # the network keeps its own head: residual or direct, refiner, physics guides
            "residual": network.residual,
            "refiner_width": network.refiner_width,
            "guide_balances": list(network.guide_balances),
        },
        "finetune",
    )
    pairs = {"input_size_px": size, "crop_sizes_px": crops, "ranges": ft.ranges, "channels": 1}
    train = DefocusPairDataset(
        _tensors(train_images), train=True, pairs_per_image=cfg.pairs_per_image, **pairs
    )
    val = (
        DefocusPairDataset(
            _tensors(val_images), train=False, pairs_per_image=cfg.val_pairs_per_image, **pairs
        )
        if val_images
        else None
    )
    result = fit_config(build_finetune_task(ft), train, val, ft)
    n_val = len(val_images)
    best = (
        f", best on {n_val} validation image(s) × {cfg.val_pairs_per_image} degradations"
        if n_val
        else ", last epoch (no validation)"
    )
    change = _validation_change(work / "finetune")
    return Pretrained(
        checkpoint=Path(result.best_dir or resolve_model_dir(work / "finetune")),
        config={"window_px": size},
        note=(
            f"fine-tuned here on {len(train_images)} image(s), {cfg.finetune_epochs} epochs × "
            f"{cfg.pairs_per_image} pairs per image, {size}-px inputs{best}"
            + (f"; {change}" if change else "")
        ),
    )


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
    from ..modeling import load_model, resolve_model_dir
    from ..stages.stage1 import build_stage1_task

    cfg = cfg or FoundationConfig()
    if not train_images:
        raise ValueError("the foundation model needs at least one focused training image")
    work = Path(work_dir)
    size = cfg.image_size_px
    s1: Any = load_config(
        {
            "model": {"preset": cfg.preset, "overrides": {"img_size": size, "in_chans": 1}},
            "data": {"image_size_px": size, "channels": 1, "info_bar_fraction": 0.0},
            "optim": {"lr": cfg.lr, "warmup_steps": 2},
            "run": _run(work / "stage1", cfg, cfg.pretrain_epochs, seed, progress),
        },
        "stage1",
    )
    common = {"image_size_px": size, "channels": 1, "augment_cfg": s1.data.augment}
    train1 = _ArrayImages(train_images, train=True, **common)
    val1 = _ArrayImages(val_images, train=False, **common) if val_images else None
    fit_config(build_stage1_task(s1), train1, val1, s1)
    mae: Any = load_model(resolve_model_dir(work / "stage1"))  # the Stage-1 MAE just trained
    # Residual, starting as the identity, as the recipe's fine-tune (FinetuneConfig.residual):
    # a small MAE trained briefly that predicts the focused image directly returns blurry,
    # blocky patch averages.
    network = RestorationModel(mae, freeze_encoder=True, residual=True).start_as_identity()
    done = finetune_network(
        network, train_images, val_images, work, cfg, seed=seed, progress=progress
    )
    return replace(done, note=f"ViT-{cfg.preset} MAE pretrained (Stage 1) and {done.note}")

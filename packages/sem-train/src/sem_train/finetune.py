"""Low-shot defocus-to-focus fine-tuning (arXiv 2604.05960, Sec. 2.4): frozen encoder, decoder (+ routing) trained.

A few focused images (the paper: 10, or 2) are taken from ``data.root`` (seeded split); every
step draws random multi-scale crops, degrades them with the physics forward model at their
native pixel scale, resizes both to the model input and minimises the restoration loss
(Charbonnier, + edge and TV for "L1+TV"). Validation uses centred crops of held-out images
with fixed degradations.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from . import modeling
from .config import FinetuneConfig, LossConfig
from .data import DefocusPairDataset
from .data.pairs import GuideMaker, PairSynthesizer
from .datasplit import finetune_paths, prepare_split
from .engine import FitResult, Task, fit_config, unwrap
from .losses import restoration_loss
from .preflight import check_run_start, start_model_dir

__all__ = [
    "RestorationTask",
    "build_finetune_task",
    "finetune_datasets",
    "finetune_split",
    "run_finetune",
]


class RestorationTask(Task):
    """``pred = model(defocused)``; loss of eq. 17 against the focused crop (plus
    ``lb_weight`` x the MoE balance term while the routers train)."""

    def __init__(
        self,
        model: nn.Module,
        loss: LossConfig,
        synthesizer: PairSynthesizer | None = None,
        guides: GuideMaker | None = None,
        lb_weight: float = 0.0,
    ) -> None:
        self.model = model
        self.loss_cfg = loss
        self.synthesizer = synthesizer or PairSynthesizer()
        self.guides = guides or GuideMaker(getattr(model, "guide_balances", ()))
        self.lb_weight = lb_weight

    def training_loss(self, model, batch):
        if "input" not in batch:  # items of a DefocusPairDataset(synthesis="step")
            batch = self.synthesizer(batch)
        pred = model(self.guides(batch, train=True)["input"])
        loss, parts = restoration_loss(pred, batch["target"], self.loss_cfg)
        core = unwrap(model)
        if self.lb_weight > 0:
            lb = modeling.moe_aux_loss(core)
            if lb is not None:  # a dense model has none
                loss = loss + self.lb_weight * lb
                parts = {**parts, "lb": lb.detach()}
        # the routers' balance as in the pretraining stages (read when logged; none if dense)
        return loss, {**parts, **modeling.routing_summary(core, tensors=True)}

    def validation_step(self, model, batch):
        pred = model(self.guides(batch, train=False)["input"])
        loss, _ = restoration_loss(pred, batch["target"], self.loss_cfg)
        return loss, pred, batch["target"]

    def export(self, directory: Path) -> None:
        modeling.save_model(self.model, directory)


def finetune_split(cfg: FinetuneConfig) -> tuple[list[Path], list[Path]]:
    """The ``n_train_images`` training and ``n_val_images`` validation images of a fine-tune
    (:func:`sem_train.datasplit.finetune_paths`: a seeded split, then a seeded sample)."""
    train, val, _paths, _index = finetune_paths(cfg)
    return train, val


def finetune_datasets(
    cfg: FinetuneConfig, split: dict[str, Any] | None = None
) -> tuple[DefocusPairDataset, DefocusPairDataset | None]:
    """``n_train_images`` training and ``n_val_images`` validation images: those of ``split``
    (the run's :func:`sem_train.datasplit.prepare_split`), else :func:`finetune_split`."""
    if split is None:
        train_paths, val_paths = finetune_split(cfg)
    else:
        train_paths = [Path(p) for p in split["train"]]
        val_paths = [Path(p) for p in split["validation"]]
    common: dict[str, Any] = {
        "input_size_px": cfg.data.image_size_px,
        "crop_sizes_px": cfg.crop_sizes_px,
        "ranges": cfg.ranges,
        "channels": cfg.data.channels,
        "info_bar_fraction": cfg.data.info_bar_fraction,
    }
    train = DefocusPairDataset.from_paths(
        train_paths,
        train=True,
        pairs_per_image=cfg.pairs_per_image,
        synthesis=cfg.synthesis,
        dihedral=cfg.dihedral_augment,
        **common,
    )
    val = (
        DefocusPairDataset.from_paths(
            val_paths, train=False, pairs_per_image=cfg.val_pairs_per_image, **common
        )
        if val_paths
        else None
    )
    return train, val


def build_finetune_task(cfg: FinetuneConfig) -> RestorationTask:
    """Restoration model from the pretrained MAE (``init_from``) or a fresh one (``model``).

    Every new weight (a fresh MAE, the refiner) is drawn after seeding with ``run.seed``: the
    initial weights are part of the run's seed, so a rerun starts from the same model.
    """
    torch.manual_seed(cfg.run.seed)
    if cfg.init_from is not None:
        mae = modeling.load_model(start_model_dir("finetune", cfg.init_from))
    else:  # a FinetuneConfig has init_from or model (its validator says so)
        assert cfg.model is not None
        mae = modeling.build_mae(
            cfg.model, channels=cfg.data.channels, image_size_px=cfg.data.image_size_px
        )
    model = modeling.restoration_model(
        mae,
        freeze_encoder=cfg.freeze_encoder,
        train_routing=cfg.train_routing,
        residual=cfg.residual,
        refiner_width=cfg.refiner_width,
        guide_balances=cfg.guide_balances,
    )
    guides = GuideMaker(cfg.guide_balances, cfg.guide_psf_jitter)
    lb = cfg.lb_weight if cfg.train_routing else 0.0
    return RestorationTask(model, cfg.loss, PairSynthesizer(cfg.ranges), guides, lb_weight=lb)


def run_finetune(cfg: FinetuneConfig, *, resume: bool = False) -> FitResult:
    """Fine-tune on synthetic pairs; best model by validation loss. The images it trains and
    validates on are recorded in ``data_split.json`` of the run folder."""
    check_run_start("finetune", cfg, resume)  # the folder and a resume's settings, first
    task = build_finetune_task(cfg)  # a missing init_from fails before indexing
    split = prepare_split("finetune", cfg, resume)  # a resume over other data refused
    train, val = finetune_datasets(cfg, split)
    return fit_config(task, train, val, cfg, resume=resume, split=split)

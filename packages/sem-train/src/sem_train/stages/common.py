"""The masked-autoencoder task shared by the three pretraining stages.

One task class covers eq. 4-16: ``L = L_MAE + kd_weight L_KD + lb_weight L_LB
+ fft_weight L_FFT + psd_weight L_PSD``; Stage 1 uses the first term, Stage 2 the first three
(with a frozen teacher), Stage 3 all but KD. Masks come from per-sample seeds, so the student
and the teacher see the same mask and a resumed or distributed run sees the same masks.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import sem_models
import torch
from sem_models import MaskedAutoencoder
from sem_models.masking import patch_noise, pixel_mask, reconstruction
from torch import nn

from .. import modeling
from ..config import DataConfig
from ..data import SEMImageDataset
from ..engine import Task, unwrap
from ..losses import distillation_loss, frequency_loss

__all__ = ["MAELossWeights", "MAETask", "image_datasets"]


def unwrap_mae(model: nn.Module) -> MaskedAutoencoder:
    """The masked autoencoder a pretraining task trains (inside a DDP wrapper or not)."""
    return cast(MaskedAutoencoder, unwrap(model))


@dataclass
class MAELossWeights:
    """Weights of the pretraining objective (0 switches a term off)."""

    kd: float = 0.0
    lb: float = 0.0
    fft: float = 0.0
    psd: float = 0.0
    psd_bins: int | None = None


class MAETask(Task):
    """Masked reconstruction with optional distillation, balance and frequency terms."""

    def __init__(
        self,
        model: nn.Module,
        *,
        mask_ratio: float,
        weights: MAELossWeights | None = None,
        teacher: nn.Module | None = None,
    ) -> None:
        self.model = model
        self.mask_ratio = mask_ratio
        self.w = weights or MAELossWeights()
        if self.w.kd > 0 and teacher is None:
            raise ValueError("kd weight > 0 needs a teacher model")
        self.teacher = teacher
        self._balance: sem_models.BalanceTotals | None = None
        if teacher is not None:
            teacher.eval()
            teacher.requires_grad_(False)

    @property
    def fp32_reason(self) -> str | None:
        # Measured under CPU bf16 autocast (tiny Stage 2 and 3 models): student and teacher differ by
        # about 2.5e-4, below bf16's resolution of the activations, so in bf16 the term reads
        # 9x too large and its gradient (cosine 0.61 to fp32's) is mostly rounding noise.
        if self.w.kd > 0:
            return (
                "the distillation term (student and teacher nearly equal) is below bf16's "
                "resolution; it trains in fp32"
            )
        return None

    def to(self, device: torch.device) -> None:
        self.model.to(device)
        if self.teacher is not None:
            self.teacher.to(device)

    def _forward(self, model: nn.Module, batch: dict[str, Any]):
        imgs = batch["image"]  # (N, C, H, W) in [0, 1]
        core = unwrap_mae(model)
        p = int(core.patch_size)
        hw = (imgs.shape[-2] // p, imgs.shape[-1] // p)
        noise = patch_noise(batch["seed"], hw[0] * hw[1], imgs.device)
        loss, pred, mask = model(imgs, mask_ratio=self.mask_ratio, noise=noise)
        return imgs, noise, hw, loss, pred, mask

    def _objective(self, model: nn.Module, batch: dict[str, Any], balance: bool = True):
        imgs, noise, hw, loss, pred, mask = self._forward(model, batch)
        core = unwrap_mae(model)
        parts: dict[str, torch.Tensor | float] = {"mae": loss.detach()}
        total = loss
        if self.w.lb > 0 and balance:
            lb = modeling.moe_aux_loss(core)
            if lb is not None:
                total = total + self.w.lb * lb
                parts["lb"] = lb.detach()
        if self.w.kd > 0:
            assert self.teacher is not None  # __init__ refuses kd > 0 without one
            with torch.no_grad():
                _, t_pred, _ = self.teacher(imgs, mask_ratio=self.mask_ratio, noise=noise)
            kd = distillation_loss(pred, t_pred, mask[..., None])
            total = total + self.w.kd * kd
            parts["kd"] = kd.detach()
        if self.w.fft > 0 or self.w.psd > 0:
            # Eq. 11-14 on images assembled from patches, in the space of the MAE loss.
            m = pixel_mask(core, mask, hw)
            freq, fparts = frequency_loss(
                core.unpatchify(pred, hw),
                core.unpatchify(core.target(imgs), hw),
                m,
                fft_weight=self.w.fft,
                psd_weight=self.w.psd,
                bins=self.w.psd_bins,
            )
            total = total + freq
            parts.update(fparts)
        parts.update(modeling.routing_summary(core, tensors=True))  # read when logged
        return total, parts, imgs, hw, pred, mask

    def training_loss(self, model, batch):
        total, parts, *_ = self._objective(model, batch)
        return total, parts

    def validation_begin(self) -> None:
        self._balance = sem_models.BalanceTotals(unwrap(self.model)) if self.w.lb > 0 else None

    def validation_step(self, model, batch):
        """The stage's full objective on fixed masks (model selection) and the composite image
        (visible patches from the input, masked ones reconstructed) for PSNR/SSIM. The balance
        term is the validation set's, added once by :meth:`validation_end`."""
        loss, _, imgs, hw, pred, mask = self._objective(model, batch, balance=False)
        if self._balance is not None:
            self._balance.add()
        core = unwrap_mae(model)
        recon = reconstruction(core, imgs, pred)
        m = pixel_mask(core, mask, hw)
        # Visible patches from the input, masked ones from the reconstruction (MAE convention).
        composite = m * recon + (1 - m) * imgs
        return loss, composite, imgs

    def validation_end(self, reduce) -> float:
        """``lb_weight`` x the balance term of the whole validation set (its token sums over
        every batch and rank): independent of the batch size and of the number of ranks."""
        if self._balance is None:
            return 0.0
        return self.w.lb * self._balance.loss(reduce)

    def export(self, directory: Path) -> None:
        modeling.save_model(self.model, directory)


def image_datasets(data: DataConfig, out_dir: Path, split: dict[str, Any] | None = None):
    """(train, val, index) image datasets of a pretraining stage: the files of its ``split``
    (:func:`sem_train.datasplit.prepare_split`; no index then), else of the config's;
    unreadable files logged."""
    log_path = Path(out_dir) / "skipped_files.jsonl"
    return SEMImageDataset.from_config(data, log_path=log_path, split=split)

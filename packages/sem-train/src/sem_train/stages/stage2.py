"""Stage 2: MoE upcycling, gates only, distillation from the frozen Stage-1 teacher.

``L_joint = L_MAE + lambda L_KD + mu L_LB`` (arXiv 2604.05960, Sec. 4.2, Eq. 10); ``L_KD`` is
the masked L1 between student and teacher reconstructions under the same mask (Eq. 7); only
router parameters are trained.

Routing that specialises without collapsing (measured in packages/sem-train/README.md):

* symmetry breaking as in the paper: relative noise on the expert copies (``moe.noise_std``)
  and distillation from the frozen dense teacher, which tells the routers which of the
  slightly different copies reproduces the teacher best for a token;
* routers calibrated on training tokens before the first step
  (:func:`sem_models.calibrate_routers`): a randomly drawn router scores the component that
  all tokens share, and one expert wins almost every token before training starts;
* the ``runner_up`` router gradient: the chosen expert against the next one, so the shared
  part of the experts' outputs cancels and the gradient says which expert serves the token
  better (the straight-through gradient of the chosen weight alone drifts every token
  towards whichever expert it already uses);
* the Switch balance term ``K sum_k f_k P_k``, whose gradient is proportional to the hard
  token fractions ``f_k``; the paper's ``K sum_k P_k^2`` reads about 1 ("balanced") while
  most experts receive no token.
"""

from __future__ import annotations

import copy
import json
import logging
import os
from pathlib import Path
from typing import Any

import sem_models
import torch
from sem_models.masking import patch_noise
from torch import nn

from .. import modeling
from ..config import Stage2Config
from ..datasplit import prepare_split
from ..distributed import env_local_rank, select_device
from ..engine import FitResult, fit_config, unwrap
from ..preflight import check_run_start, start_model_dir
from ..runfolder import RunFolder
from .common import MAELossWeights, MAETask, image_datasets, unwrap_mae

log = logging.getLogger(__name__)

#: The share of tokens below which an expert counts as starved (issue: every expert >= 5 %).
MIN_EXPERT_SHARE = 0.05

__all__ = ["MoETask", "build_stage2_task", "calibrate_student", "run_stage2"]


class MoETask(MAETask):
    """:class:`MAETask` that also logs, per MoE layer and expert, the hard token fraction and
    the mean gate probability (global over ranks when distributed)."""

    def training_loss(self, model: nn.Module, batch: dict[str, Any]):
        total, parts = super().training_loss(model, batch)
        parts.update(sem_models.routing_stats(unwrap(model), per_expert=True, tensors=True))
        return total, parts


def build_stage2_task(cfg: Stage2Config) -> MoETask:
    """Teacher = the Stage-1 model (frozen); student = its upcycled copy with only gates trainable."""
    assert cfg.init_from is not None  # Stage2Config requires it
    teacher = modeling.load_model(start_model_dir("stage2", cfg.init_from))
    student = modeling.upcycle(copy.deepcopy(teacher), cfg.moe, seed=cfg.run.seed)
    modeling.freeze_all_but_gates(student)
    weights = MAELossWeights(kd=cfg.kd_weight, lb=cfg.lb_weight)
    return MoETask(student, mask_ratio=cfg.mask_ratio, weights=weights, teacher=teacher)


def calibrate_student(
    task: MAETask,
    train_set,
    n_images: int,
    seed: int,
    device: torch.device | None = None,
) -> None:
    """Initialise the student's routers from the tokens of ``n_images`` training images.

    The images, their augmentations and masks come from fixed seeds, so every rank of a
    distributed run computes the same routers. ``device`` runs the forward pass there (the
    model is moved back to where it was).
    """
    n = min(n_images, len(train_set))
    if n == 0:
        return
    items = [train_set[(i, seed * 1_000_003 + i)] for i in range(n)]
    core = unwrap_mae(task.model)
    home = next(core.parameters()).device
    device = device or home
    imgs = torch.stack([it["image"] for it in items]).to(device)
    seeds = torch.tensor([int(it["seed"]) for it in items])
    p = int(core.patch_size)
    noise = patch_noise(seeds, (imgs.shape[-2] // p) * (imgs.shape[-1] // p), device)
    torch.manual_seed(seed)
    was_training = core.training
    core.to(device).eval()
    sem_models.calibrate_routers(core, imgs, mask_ratio=task.mask_ratio, noise=noise)
    core.to(home).train(was_training)


def run_stage2(cfg: Stage2Config, *, resume: bool = False) -> FitResult:
    """Train Stage 2 from ``cfg.init_from`` (resume restores the student's weights too; a run
    resumed before its first checkpoint calibrates its routers again, as a fresh one does)."""
    check_run_start("stage2", cfg, resume)  # the folder and a resume's settings, before any load
    task = build_stage2_task(cfg)  # a missing init_from fails before the data is indexed
    split = prepare_split("stage2", cfg, resume)  # a resume over other data refused
    train, val, _ = image_datasets(cfg.data, cfg.run.output_dir, split)
    if not (resume and RunFolder(cfg.run.output_dir).has_checkpoint):  # else loaded from it
        device = select_device(cfg.run.device, env_local_rank())
        calibrate_student(task, train, cfg.router_calibration_images, cfg.run.seed, device)
    result = fit_config(task, train, val, cfg, resume=resume, split=split)
    if int(os.environ.get("RANK", "0")) == 0:
        for line in starved_experts(Path(cfg.run.output_dir) / "metrics.jsonl"):
            log.warning(line)
    return result


def starved_experts(metrics_path: Path, share: float = MIN_EXPERT_SHARE) -> list[str]:
    """One line per MoE layer whose least-used expert got less than ``share`` of the tokens
    at the run's last logged training step (routing collapse: Stage 2 did not specialise)."""
    last: dict[str, Any] | None = None
    try:
        with open(metrics_path, encoding="utf-8") as fh:
            for line in fh:
                record = json.loads(line)
                if record.get("split") == "train":
                    last = record
    except (OSError, ValueError):
        return []
    if last is None:
        return []
    suffix = "/min_token_fraction"
    return [
        f"routing: in {key.removesuffix(suffix)} the least-used expert got {value:.1%} of the "
        f"tokens at step {last.get('step')} (below {share:.0%}); see the per-expert fractions "
        f"in {metrics_path}"
        for key, value in last.items()
        if key.endswith(suffix) and not key.startswith("mean/") and value < share
    ]

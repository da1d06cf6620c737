"""The generic training loop shared by every stage, fine-tuning and the learned baselines.

A :class:`Task` says what is trained (its ``model``), how a batch becomes a loss and how a
validation batch becomes (loss, prediction, target). :func:`fit` does everything else:

* device selection, DDP from the ``torchrun`` environment (Gloo on CPU, NCCL on GPU,
  ``find_unused_parameters`` for MoE), bf16 autocast on CUDA;
* deterministic, rank-sharded data order (:class:`~sem_train.data.sampler.EpochBatchSampler`),
  gradient accumulation (``no_sync`` on the intermediate micro-batches), gradient clipping;
* AdamW with warm-up + cosine schedule, stepped per optimizer step;
* atomic checkpoints every ``checkpoint_every_steps`` and at each epoch end, exact resume
  (weights, optimizer, scheduler, RNG, epoch and position within the epoch);
* a non-finite loss or gradient stops the run with :class:`NonFiniteLossError` and writes no
  checkpoint, so the last good one stays the newest;
* validation loss, PSNR and SSIM after every ``validate_every_epochs`` epochs (and of the
  initial model with ``validate_at_start``), best checkpoint by minimum validation loss;
* tqdm progress with throughput, JSONL metrics and TensorBoard (when installed).
"""

from __future__ import annotations

import contextlib
import math
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from .checkpoint import (
    capture_rng,
    load_training_state,
    load_weights,
    read_pointer,
    restore_rng,
    save_state,
    save_weights,
    write_pointer,
)
from .config import OptimConfig, RunConfig
from .data.sampler import EpochBatchSampler, validation_batches
from .distributed import DistContext, select_device
from .metrics import MetricsLogger, psnr, ssim
from .runinfo import write_run_info

__all__ = [
    "FitResult",
    "NonFiniteLossError",
    "Task",
    "WarmupCosine",
    "fit",
    "fit_config",
    "unwrap",
]


class NonFiniteLossError(RuntimeError):
    """The loss or the gradient norm became NaN/inf; the run was stopped."""


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside a DistributedDataParallel wrapper (or the module itself)."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


class Task(ABC):
    """What is trained. ``model`` holds every parameter that is checkpointed."""

    model: nn.Module

    def trainable_parameters(self) -> list[tuple[str, nn.Parameter]]:
        """Named parameters given to the optimizer (default: those with ``requires_grad``)."""
        return [(n, p) for n, p in self.model.named_parameters() if p.requires_grad]

    def to(self, device: torch.device) -> None:
        """Move every module of the task (the model, teachers, ...) to ``device``."""
        self.model.to(device)

    @abstractmethod
    def training_loss(
        self, model: nn.Module, batch: dict[str, Any]
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Scalar loss (mean over the batch) and detached parts for logging.

        ``model`` is ``self.model`` or its DDP wrapper: call it for the forward pass.
        """

    @abstractmethod
    def validation_step(
        self, model: nn.Module, batch: dict[str, Any]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(mean loss, prediction, target) with images (N, C, H, W) in [0, 1]."""

    def export(self, directory: Path) -> None:
        """Save a deployable copy of the model (default: ``model.safetensors``)."""
        directory.mkdir(parents=True, exist_ok=True)
        save_weights(self.model, directory / "model.safetensors")


@dataclass
class FitResult:
    """What a run produced."""

    output_dir: Path
    global_step: int
    epoch: int
    stopped_early: bool
    best_val_loss: float | None
    best_dir: Path | None
    latest_checkpoint: Path | None
    last_train_loss: float | None
    first_train_loss: float | None


class WarmupCosine:
    """``lr(t)/lr0``: linear warm-up over ``warmup`` steps, then cosine down to ``floor``."""

    def __init__(self, warmup: int, total: int, floor: float, constant: bool = False) -> None:
        self.warmup, self.total, self.floor, self.constant = warmup, max(total, 1), floor, constant

    def __call__(self, step: int) -> float:
        if self.warmup > 0 and step < self.warmup:
            return (step + 1) / self.warmup
        if self.constant:
            return 1.0
        t = min(1.0, (step - self.warmup) / max(1, self.total - self.warmup))
        return self.floor + (1 - self.floor) * 0.5 * (1 + math.cos(math.pi * t))


def _param_groups(named: list[tuple[str, nn.Parameter]], weight_decay: float) -> list[dict]:
    """No weight decay on biases, norms and embeddings/tokens (1-D or token parameters)."""
    decay, no_decay = [], []
    for name, p in named:
        if p.ndim <= 1 or name.endswith(("pos_embed", "cls_token", "mask_token")):
            no_decay.append(p)
        else:
            decay.append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return [g for g in groups if g["params"]]


def _to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    nb = device.type == "cuda"
    return {k: v.to(device, non_blocking=nb) if torch.is_tensor(v) else v for k, v in batch.items()}


class _Checkpointer:
    def __init__(self, out_dir: Path, keep_last: int) -> None:
        self.dir = out_dir / "checkpoints"
        self.keep_last = keep_last

    @property
    def latest(self) -> dict[str, Any] | None:
        return read_pointer(self.dir / "latest.json")

    def save(self, task: Task, optimizer, scheduler, progress: dict[str, Any]) -> Path:
        name = f"step-{progress['global_step']:08d}"
        weights = self.dir / f"{name}.safetensors"
        state_path = self.dir / f"{name}.state.pt"
        save_weights(task.model, weights, metadata={"global_step": str(progress["global_step"])})
        state = {
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "rng": capture_rng(),
            "progress": dict(progress),
        }
        save_state(state, state_path)
        write_pointer(
            self.dir / "latest.json",
            {"weights": weights.name, "state": state_path.name, **progress},
        )
        self._prune()
        return weights

    def _prune(self) -> None:
        steps = sorted(self.dir.glob("step-*.safetensors"))
        for old in steps[: -self.keep_last]:
            old.unlink(missing_ok=True)
            old.with_name(old.name.replace(".safetensors", ".state.pt")).unlink(missing_ok=True)

    def save_best(self, task: Task, step: int, val_loss: float | None) -> Path:
        import shutil

        new_dir = self.dir / f"best-{step:08d}"
        if new_dir.exists():
            shutil.rmtree(new_dir)
        task.export(new_dir)
        old = read_pointer(self.dir / "best.json")
        write_pointer(
            self.dir / "best.json", {"dir": new_dir.name, "global_step": step, "val_loss": val_loss}
        )
        if old and old.get("dir") != new_dir.name:
            shutil.rmtree(self.dir / old["dir"], ignore_errors=True)
        return new_dir


def _evaluate(
    task: Task, val_set: Dataset, run: RunConfig, ctx: DistContext, device: torch.device, amp
) -> dict[str, float]:
    batches = validation_batches(
        len(val_set),
        run.batch_size_per_process,
        seed=run.seed,
        rank=ctx.rank,
        world_size=ctx.world_size,
    )
    loader = DataLoader(val_set, batch_sampler=batches, num_workers=0)
    sums = torch.zeros(4, dtype=torch.float64, device=device)  # loss*n, psnr, ssim, n
    task.model.eval()
    with torch.no_grad():
        for batch in loader:
            batch = _to_device(batch, device)
            with amp():
                loss, pred, target = task.validation_step(task.model, batch)
            n = pred.shape[0]
            pred, target = pred.float().clamp(0, 1), target.float()
            sums += torch.stack(
                [
                    loss.double() * n,
                    psnr(pred, target).double().sum(),
                    ssim(pred, target).double().sum(),
                    torch.tensor(n, dtype=torch.float64, device=device),
                ]
            )
    task.model.train()
    ctx.all_reduce_sum(sums)
    n = max(sums[3].item(), 1.0)
    return {"loss": sums[0].item() / n, "psnr_db": sums[1].item() / n, "ssim": sums[2].item() / n}


def fit(
    task: Task,
    train_set: Dataset,
    val_set: Dataset | None,
    run: RunConfig,
    optim: OptimConfig,
    *,
    resume: bool = False,
    config: dict[str, Any] | None = None,
    num_workers: int = 0,
) -> FitResult:
    """Train ``task`` on ``train_set``; see the module docstring for what is handled.

    Parameters
    ----------
    task : model + loss definition.
    train_set : items addressed by ``(index, seed)`` (e.g. :class:`SEMImageDataset`).
    val_set : validation items, or None (then the last epoch's weights count as best).
    run, optim : loop and optimizer settings.
    resume : continue from ``<output_dir>/checkpoints/latest.json``.
    config : the resolved configuration, written beside the outputs.
    num_workers : DataLoader worker processes (augmentations are seeded per sample, so the
        result does not depend on this number).
    """
    out_dir = Path(run.output_dir)
    device = select_device(run.device, 0)
    ctx = DistContext.from_env(device)
    if ctx.enabled and device.type == "cuda":
        device = select_device(run.device, ctx.local_rank)
    torch.manual_seed(run.seed)
    task.to(device)
    use_bf16 = run.bf16 and device.type == "cuda"

    def amp():
        if use_bf16:
            return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    named = task.trainable_parameters()
    if not named:
        raise ValueError("the task has no trainable parameters")
    model: nn.Module = task.model
    if ctx.enabled:
        model = nn.parallel.DistributedDataParallel(
            task.model,
            device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=run.find_unused_parameters,
        )
    optimizer = torch.optim.AdamW(
        _param_groups(named, optim.weight_decay), lr=optim.lr, betas=optim.betas
    )
    probe = EpochBatchSampler(len(train_set), run.batch_size_per_process, world_size=ctx.world_size)
    micro_per_epoch = probe.steps_per_epoch()
    steps_per_epoch = max(1, micro_per_epoch // run.grad_accum_steps)
    total_steps = steps_per_epoch * run.epochs
    schedule = WarmupCosine(
        optim.warmup_steps, total_steps, optim.min_lr / optim.lr, optim.schedule == "constant"
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    ckpt = _Checkpointer(out_dir, run.keep_last)
    metrics = MetricsLogger(
        out_dir / "metrics.jsonl",
        tensorboard_dir=out_dir / "tensorboard" if run.tensorboard else None,
        enabled=ctx.is_main,
    )
    progress: dict[str, Any] = {
        "epoch": 0,
        "step_in_epoch": 0,
        "global_step": 0,
        "best_val_loss": None,
        "best_step": None,
        "skipped_files": 0,
    }
    latest_path: Path | None = None
    if resume:
        pointer = ckpt.latest
        if pointer is None:
            raise FileNotFoundError(
                f"--resume: no checkpoint in {ckpt.dir} (expected latest.json); start without --resume"
            )
        load_weights(task.model, ckpt.dir / pointer["weights"])
        state = load_training_state(ckpt.dir / pointer["state"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        restore_rng(state["rng"])
        progress.update(state["progress"])
        latest_path = ckpt.dir / pointer["weights"]
        metrics.truncate_after(progress["global_step"])
    if ctx.is_main:
        write_run_info(
            out_dir,
            config or {},
            {
                "world_size": ctx.world_size,
                "device": str(device),
                "bf16": use_bf16,
                "resumed_from_step": progress["global_step"] if resume else None,
            },
        )
    ctx.barrier()

    if run.validate_at_start and val_set is not None and progress["global_step"] == 0:
        val = _evaluate(task, val_set, run, ctx, device, amp)
        metrics.log({"split": "val", "step": 0, "epoch": -1, **val})

    first_loss: float | None = None
    last_loss: float | None = None
    stopped = False
    global_batch = run.batch_size_per_process * ctx.world_size * run.grad_accum_steps
    model.train()
    try:
        while progress["epoch"] < run.epochs and not stopped:
            epoch = progress["epoch"]
            sampler = EpochBatchSampler(
                len(train_set),
                run.batch_size_per_process,
                seed=run.seed,
                epoch=epoch,
                rank=ctx.rank,
                world_size=ctx.world_size,
                start_step=progress["step_in_epoch"] * run.grad_accum_steps,
            )
            loader = DataLoader(
                train_set,
                batch_sampler=sampler,
                num_workers=num_workers,
                persistent_workers=False,
                pin_memory=device.type == "cuda",
            )
            bar = _progress_bar(run, ctx, steps_per_epoch, progress["step_in_epoch"], epoch)
            t_log, n_log, micro = time.perf_counter(), 0, 0
            parts_acc: dict[str, float] = {}
            optimizer.zero_grad(set_to_none=True)
            for batch in loader:
                if progress["step_in_epoch"] >= steps_per_epoch:
                    break
                batch = _to_device(batch, device)
                micro += 1
                sync = micro % run.grad_accum_steps == 0
                ctx_sync = (
                    model.no_sync() if (ctx.enabled and not sync) else contextlib.nullcontext()
                )
                with ctx_sync:
                    with amp():
                        loss, parts = task.training_loss(model, batch)
                    bad = not bool(torch.isfinite(loss.detach()).all())
                    if ctx.any_true(bad, device):
                        raise NonFiniteLossError(
                            _nonfinite_msg("loss", loss, progress, latest_path)
                        )
                    (loss / run.grad_accum_steps).backward()
                progress["skipped_files"] += int(batch.get("skipped", torch.zeros(1)).sum().item())
                lv = float(loss.detach())
                for k, v in {"loss": lv, **{k: float(v) for k, v in parts.items()}}.items():
                    parts_acc[k] = parts_acc.get(k, 0.0) + v / run.grad_accum_steps
                if not sync:
                    continue
                grad_norm = _clip(task, optim.grad_clip_norm)
                if ctx.any_true(not math.isfinite(grad_norm), device):
                    raise NonFiniteLossError(
                        _nonfinite_msg("gradient norm", grad_norm, progress, latest_path)
                    )
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                progress["global_step"] += 1
                progress["step_in_epoch"] += 1
                n_log += 1
                step_loss = parts_acc["loss"]
                first_loss = step_loss if first_loss is None else first_loss
                last_loss = step_loss
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{step_loss:.4g}")
                if progress["global_step"] % run.log_every_steps == 0:
                    dt = max(time.perf_counter() - t_log, 1e-9)
                    rec = {
                        "split": "train",
                        "step": progress["global_step"],
                        "epoch": epoch,
                        **parts_acc,
                        "lr": scheduler.get_last_lr()[0],
                        "grad_norm": grad_norm,
                        "images_per_s": n_log * global_batch / dt,
                        "skipped_files": progress["skipped_files"],
                    }
                    metrics.log(rec)
                    if bar is not None:
                        bar.set_postfix(loss=f"{step_loss:.4g}", img_s=f"{rec['images_per_s']:.1f}")
                    t_log, n_log = time.perf_counter(), 0
                parts_acc = {}
                at_limit = run.max_steps is not None and progress["global_step"] >= run.max_steps
                epoch_done = progress["step_in_epoch"] >= steps_per_epoch
                if not epoch_done and (
                    at_limit or progress["global_step"] % run.checkpoint_every_steps == 0
                ):
                    latest_path = _save(ckpt, task, optimizer, scheduler, progress, ctx)
                if at_limit and not epoch_done:
                    stopped = True
                    break
            if bar is not None:
                bar.close()
            if stopped:
                break
            # ---- epoch end: validation, best model, checkpoint
            progress["epoch"] += 1
            progress["step_in_epoch"] = 0
            is_last = progress["epoch"] >= run.epochs
            if val_set is not None and (
                progress["epoch"] % run.validate_every_epochs == 0 or is_last
            ):
                val = _evaluate(task, val_set, run, ctx, device, amp)
                metrics.log(
                    {"split": "val", "step": progress["global_step"], "epoch": epoch, **val}
                )
                best = progress["best_val_loss"]
                if best is None or val["loss"] < best:
                    progress["best_val_loss"], progress["best_step"] = (
                        val["loss"],
                        progress["global_step"],
                    )
                    if ctx.is_main:
                        ckpt.save_best(task, progress["global_step"], val["loss"])
            elif val_set is None and ctx.is_main:
                progress["best_step"] = progress["global_step"]
                ckpt.save_best(task, progress["global_step"], None)
            latest_path = _save(ckpt, task, optimizer, scheduler, progress, ctx)
            if (
                run.max_steps is not None
                and progress["global_step"] >= run.max_steps
                and not is_last
            ):
                stopped = True
    except BaseException:
        metrics.close()
        ctx.close()
        raise
    metrics.close()
    ctx.barrier()
    ctx.close()
    best_ptr = read_pointer(ckpt.dir / "best.json")
    return FitResult(
        output_dir=out_dir,
        global_step=progress["global_step"],
        epoch=progress["epoch"],
        stopped_early=stopped,
        best_val_loss=progress["best_val_loss"],
        best_dir=ckpt.dir / best_ptr["dir"] if best_ptr else None,
        latest_checkpoint=latest_path,
        last_train_loss=last_loss,
        first_train_loss=first_loss,
    )


def fit_config(
    task: Task, train_set: Dataset, val_set: Dataset | None, cfg: Any, *, resume: bool = False
) -> FitResult:
    """:func:`fit` with the ``run``, ``optim`` and ``data.num_workers`` of a stage config.

    The whole resolved config is written beside the outputs, so every run says how it was made.
    """
    return fit(
        task,
        train_set,
        val_set,
        cfg.run,
        cfg.optim,
        resume=resume,
        config=cfg.model_dump(mode="json"),
        num_workers=cfg.data.num_workers,
    )


def _save(ckpt: _Checkpointer, task, optimizer, scheduler, progress, ctx: DistContext) -> Path:
    path = ckpt.dir / f"step-{progress['global_step']:08d}.safetensors"
    if ctx.is_main:
        ckpt.save(task, optimizer, scheduler, progress)
    ctx.barrier()
    return path


def _clip(task: Task, max_norm: float | None) -> float:
    params = [p for _, p in task.trainable_parameters() if p.grad is not None]
    if not params:
        return 0.0
    if max_norm is None:
        norms = torch.stack([p.grad.detach().float().norm() for p in params])
        return float(norms.norm())
    return float(torch.nn.utils.clip_grad_norm_(params, max_norm))


def _nonfinite_msg(what: str, value: Any, progress: dict[str, Any], latest: Path | None) -> str:
    where = latest if latest is not None else "none written yet"
    return (
        f"non-finite {what} ({float(value.detach() if torch.is_tensor(value) else value)}) at epoch {progress['epoch']}, step "
        f"{progress['global_step'] + 1}; the run was stopped and no checkpoint was written "
        f"after it; last good checkpoint: {where}. Lower optim.lr, keep grad clipping on, "
        f"or use bf16 instead of fp16"
    )


def _progress_bar(run: RunConfig, ctx: DistContext, total: int, initial: int, epoch: int):
    if not (run.progress and ctx.is_main):
        return None
    from tqdm.auto import tqdm

    return tqdm(
        total=total,
        initial=initial,
        desc=f"epoch {epoch + 1}/{run.epochs}",
        unit="step",
        dynamic_ncols=True,
        leave=False,
    )

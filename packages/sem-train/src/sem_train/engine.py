"""The training loop of every stage, fine-tuning and ``sem train baseline``.

A :class:`Task` says what is trained (its ``model``), how a batch becomes a loss and how a
validation batch becomes (loss, prediction, target). The loop is three functions and a
checkpointer, read top to bottom like facebookresearch/mae's ``engine_pretrain.py``:

* :func:`fit` sets up the device, DDP (from the ``torchrun`` environment), AdamW with a
  warm-up + cosine schedule and the :class:`~sem_train.checkpoint.Checkpointer`, then runs
  epochs until ``run.epochs`` or ``run.max_steps``;
* :func:`train_one_epoch` walks the epoch's deterministic, rank-sharded batches
  (resuming mid-epoch), accumulates gradients, clips, steps, logs and checkpoints every
  ``checkpoint_every_steps``; a task's loss parts (the MoE routing statistics among them) stay
  device tensors and are read from the device, in one transfer, only on the steps logged. The
  batches come from one :class:`TrainLoader` per run, whose DataLoader worker processes persist
  across epochs (a spawned worker, on Windows and macOS, imports torch once per run, not once
  per epoch) and are seeded at each epoch's start as a loader built for that epoch would seed
  them;
* :func:`validate` gives the mean validation loss, PSNR and SSIM over all ranks.

All progress lives in one typed :class:`TrainState`, saved with every checkpoint, so a
resumed run continues bit-identically; one interrupted before its first checkpoint starts
again from step 0 (to the result of an uninterrupted run). A non-finite loss, gradient norm
or validation score stops the run with :class:`NonFiniteLossError` before any checkpoint is
written for that step, so the last good checkpoint stays the newest. Ctrl-C finishes the step,
saves a checkpoint there and raises :class:`~sem_train.interrupt.TrainingInterrupted` (a
second Ctrl-C stops at once). bf16 autocast runs on CUDA, except for a task whose objective it
would spoil (:attr:`Task.fp32_reason`: a distillation term below bf16's resolution).
"""

from __future__ import annotations

import contextlib
import logging
import math
import random
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sized
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from sem_models.precision import accumulation_dtype, native_bf16
from sem_models.training import FitResult
from sem_physics.cli_support import stderr_is_terminal
from sem_physics.locking import output_lock
from torch import nn
from torch.utils.data import DataLoader, Dataset

from .checkpoint import Checkpointer, save_weights
from .config import OptimConfig, RunConfig
from .data.sampler import (
    EpochBatchSampler,
    EpochSeededWorkers,
    loader_generator,
    validation_batches,
)
from .datasplit import write_split_record
from .distributed import DistContext, env_local_rank, is_rank_zero, select_device
from .interrupt import GracefulInterrupt, TrainingInterrupted, ignore_sigint
from .metrics import MetricsLogger, psnr, ssim
from .runfolder import resolve_model_dir
from .runinfo import (
    check_resume_world_size,
    model_digest,
    record_resume,
    recorded_config,
    write_run_info,
)

__all__ = [
    "FitResult",
    "Loop",
    "NonFiniteLossError",
    "Task",
    "TrainLoader",
    "TrainState",
    "fit",
    "fit_config",
    "train_one_epoch",
    "unwrap",
    "validate",
]


log = logging.getLogger(__name__)


class NonFiniteLossError(RuntimeError):
    """The loss, the gradient norm or a validation score became NaN/inf; the run stopped."""


class TrainLoader:
    """A run's training batches: one ``DataLoader`` over one
    :class:`~sem_train.data.sampler.EpochBatchSampler`, moved to each epoch (and the step a
    resume starts at) by :meth:`epoch`.

    Its worker processes persist across epochs (``persistent_workers``), are seeded at each
    epoch's start as the epoch's own loader would seed them
    (:class:`~sem_train.data.sampler.EpochSeededWorkers`), ignore Ctrl-C
    (:func:`~sem_train.interrupt.ignore_sigint`) and stop at :meth:`close` (:func:`fit` closes
    its loader however the run ends). ``num_workers=0`` loads in the main process, as before.
    """

    def __init__(
        self,
        train_set: Dataset,
        run: RunConfig,
        ctx: DistContext,
        device: torch.device,
        num_workers: int,
    ) -> None:
        self.train_set, self.num_workers, self.seed = train_set, num_workers, run.seed
        self.sampler = EpochBatchSampler(
            len(train_set),  # type: ignore[arg-type]
            run.batch_size_per_process,
            seed=run.seed,
            rank=ctx.rank,
            world_size=ctx.world_size,
        )
        self.loader = DataLoader(
            EpochSeededWorkers(train_set, run.seed) if num_workers else train_set,
            batch_sampler=self.sampler,
            num_workers=num_workers,
            pin_memory=device.type == "cuda",
            persistent_workers=num_workers > 0,
            worker_init_fn=ignore_sigint if num_workers else None,
        )

    def epoch(self, epoch: int, start_step: int = 0) -> DataLoader:
        """The loader, to iterate ``epoch`` from micro-step ``start_step``."""
        self.sampler.set_epoch(epoch, start_step)
        # its own generator: a loader draws its workers' base seed when iterated, which from the
        # global RNG would make a run resumed mid-epoch diverge from the uninterrupted one (the
        # persistent workers draw theirs once; EpochSeededWorkers reseeds them each epoch)
        self.loader.generator = loader_generator(self.seed, epoch)
        return self.loader

    def close(self) -> None:
        """Stop the worker processes (if any were started)."""
        iterator, self.loader._iterator = self.loader._iterator, None
        shutdown = getattr(iterator, "_shutdown_workers", None)
        if shutdown is not None:
            shutdown()


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
        save_weights(self.model, Path(directory) / "model.safetensors")

    def validation_begin(self) -> None:  # noqa: B027 (a hook: overriding it is optional)
        """Called on every rank before a validation pass (see :meth:`validation_end`)."""

    def validation_end(self, reduce: Callable[[torch.Tensor], torch.Tensor]) -> float:
        """A term of the validation loss that is not a mean over samples (a set statistic),
        from what :meth:`validation_step` gathered; ``reduce`` sums a tensor over ranks in
        place. Called on every rank after the pass (default: none)."""
        return 0.0

    @property
    def fp32_reason(self) -> str | None:
        """Why bf16 autocast would spoil this task's objective (then it trains in fp32)."""
        return None


def autocast_bf16(run: RunConfig, device: torch.device, task: Task) -> bool:
    """bf16 autocast for this run: asked for (``run.bf16``), on CUDA, and not refused by the
    task (:attr:`Task.fp32_reason`, said once in the log)."""
    if not (run.bf16 and device.type == "cuda"):
        return False
    if not native_bf16(device):
        log.info("bf16 autocast off: %s computes bf16 only by emulation", device)
        return False
    if task.fp32_reason:
        log.info("bf16 autocast off: %s", task.fp32_reason)
        return False
    return True


@dataclass
class TrainState:
    """Where a run is: saved with every checkpoint and restored on resume."""

    epoch: int = 0
    step_in_epoch: int = 0
    global_step: int = 0
    best_val_loss: float | None = None
    best_step: int | None = None
    skipped_files: int = 0
    first_train_loss: float | None = None
    last_train_loss: float | None = None

    @classmethod
    def from_dict(cls, progress: dict[str, Any]) -> TrainState:
        """The state recorded in a checkpoint (unknown keys ignored, missing ones default)."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in progress.items() if k in names})


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


@dataclass
class Loop:
    """Everything a run holds besides its :class:`TrainState`: the task, its (DDP-wrapped)
    model, optimizer, schedule, settings, devices, log and checkpointer (built by :func:`fit`)."""

    task: Task
    model: nn.Module  # task.model or its DDP wrapper
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    run: RunConfig
    optim: OptimConfig
    ctx: DistContext
    device: torch.device
    use_bf16: bool
    metrics: MetricsLogger
    ckpt: Checkpointer
    steps_per_epoch: int
    interrupt: GracefulInterrupt = field(default_factory=GracefulInterrupt)
    train_loader: TrainLoader | None = field(default=None, repr=False)
    #: When this process began training, and the step it began at (a resume's), for the
    #: time to go in the epoch lines.
    started: tuple[float, int] = field(default_factory=lambda: (time.perf_counter(), 0))

    def loader_for(self, train_set: Dataset, num_workers: int) -> TrainLoader:
        """The run's :class:`TrainLoader` (built at the first epoch, then kept)."""
        held = self.train_loader
        if held is not None and held.train_set is train_set and held.num_workers == num_workers:
            return held
        self.close_loader()
        self.train_loader = TrainLoader(train_set, self.run, self.ctx, self.device, num_workers)
        return self.train_loader

    def close_loader(self) -> None:
        """Stop the training loader's workers (they persist across epochs until then)."""
        if self.train_loader is not None:
            self.train_loader.close()
            self.train_loader = None

    def amp(self) -> contextlib.AbstractContextManager:
        if self.use_bf16:
            return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def save(self, state: TrainState) -> None:
        """Step checkpoint on the main rank; every rank waits for it."""
        if self.ctx.is_main:
            self.ckpt.save(self.task.model, self.optimizer, self.scheduler, asdict(state))
        self.ctx.barrier()

    def stop(
        self, what: str, value: float, state: TrainState, when: str = ""
    ) -> NonFiniteLossError:
        where = self.ckpt.latest_path or "none written yet"
        when = when or f"at epoch {state.epoch}, step {state.global_step + 1}"
        return NonFiniteLossError(
            f"non-finite {what} ({value}) {when}; "
            f"the run was stopped and no checkpoint was written after it; last good "
            f"checkpoint: {where}. Lower optim.lr, keep grad clipping on, or use bf16 "
            f"instead of fp16"
        )


def train_one_epoch(loop: Loop, train_set: Dataset, state: TrainState, num_workers: int) -> bool:
    """Train from ``state.step_in_epoch`` to the end of ``state.epoch``.

    Returns True when ``run.max_steps`` stopped the run inside the epoch (after a checkpoint).
    The batches come from ``loop``'s :class:`TrainLoader`, whose workers stay for the next
    epoch (:meth:`Loop.close_loader` stops them; :func:`fit` does).
    """
    run, ctx = loop.run, loop.ctx
    loader = loop.loader_for(train_set, num_workers).epoch(
        state.epoch, state.step_in_epoch * run.grad_accum_steps
    )
    bar = _progress_bar(loop, state)
    global_batch = run.batch_size_per_process * ctx.world_size * run.grad_accum_steps
    t_log, n_log, micro, skipped_acc = time.perf_counter(), 0, 0, 0
    parts_acc: dict[str, torch.Tensor | float] = {}
    loop.optimizer.zero_grad(set_to_none=True)
    try:
        for batch in loader:
            if state.step_in_epoch >= loop.steps_per_epoch:
                break
            skipped = int(batch["skipped"].sum()) if "skipped" in batch else 0  # on the host
            batch = _to_device(batch, loop.device)
            micro += 1
            sync = micro % run.grad_accum_steps == 0
            no_sync = ctx.enabled and not sync
            with loop.model.no_sync() if no_sync else contextlib.nullcontext():  # type: ignore[operator]
                with loop.amp():
                    loss, parts = loop.task.training_loss(loop.model, batch)
                (loss / run.grad_accum_steps).backward()
            skipped_acc += skipped
            for k, v in {"loss": loss, **parts}.items():  # on the device until the step's read
                v = v.detach() if torch.is_tensor(v) else v
                parts_acc[k] = parts_acc.get(k, 0.0) + v / run.grad_accum_steps
            if not sync:
                continue
            # One all-reduce and one read from the device per optimizer step (no wait on the
            # GPU per micro-step): the global batch's loss, files skipped, a non-finite loss or
            # gradient norm on any rank (caught before the optimizer moves), a Ctrl-C anywhere.
            norm = _clip(loop.task, loop.optim.grad_clip_norm)
            step = ctx.sum_over_ranks(
                [
                    parts_acc["loss"],
                    float(skipped_acc),
                    _non_finite(parts_acc["loss"]),
                    norm,
                    _non_finite(norm),
                    float(loop.interrupt.requested),
                ],
                loop.device,
            )
            loss_value, grad_norm = step[0] / ctx.world_size, step[3] / ctx.world_size
            state.skipped_files += round(step[1])
            skipped_acc = 0
            if step[2] > 0:
                raise loop.stop("loss", loss_value, state)
            if step[4] > 0:
                raise loop.stop("gradient norm", grad_norm, state)
            stop_here = step[5] > 0
            loop.optimizer.step()
            loop.scheduler.step()
            loop.optimizer.zero_grad(set_to_none=True)
            state.global_step += 1
            state.step_in_epoch += 1
            n_log += 1
            if state.first_train_loss is None:
                state.first_train_loss = loss_value
            state.last_train_loss = loss_value
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{state.last_train_loss:.4g}")
            at_limit = run.max_steps is not None and state.global_step >= run.max_steps
            epoch_end = state.step_in_epoch >= loop.steps_per_epoch
            run_end = at_limit or (epoch_end and state.epoch + 1 >= run.epochs)
            # the run's last step is always logged: a run shorter than log_every_steps has its
            # metrics too (every rank reaches the same decision: the log is a collective)
            if state.global_step % run.log_every_steps == 0 or run_end:
                rate = n_log * global_batch / max(time.perf_counter() - t_log, 1e-9)
                loop.metrics.log(
                    {
                        "split": "train",
                        "step": state.global_step,
                        "epoch": state.epoch,
                        **ctx.mean_over_ranks(_host_values(parts_acc), loop.device),
                        "loss": loss_value,
                        "lr": loop.scheduler.get_last_lr()[0],
                        "grad_norm": grad_norm,
                        "images_per_s": rate,
                        "skipped_files": state.skipped_files,
                    }
                )
                t_log, n_log = time.perf_counter(), 0
            parts_acc = {}
            if epoch_end:
                break  # the epoch-end checkpoint follows validation (then a Ctrl-C stops)
            if at_limit or stop_here or state.global_step % run.checkpoint_every_steps == 0:
                loop.save(state)
            if at_limit:
                return True  # the run's own end comes first: a Ctrl-C here changes nothing
            if stop_here:
                raise TrainingInterrupted(state.global_step, state.epoch, loop.interrupt.signum)
    finally:
        if bar is not None:
            bar.close()
    return False


def _host_values(values: dict[str, Any]) -> dict[str, float]:
    """Floats of a dict of floats and 0-dim device tensors, read in one transfer (stacked in
    float64, float32 on a device without float64)."""
    keys = [k for k, v in values.items() if torch.is_tensor(v)]
    out = {k: float(v) for k, v in values.items() if not torch.is_tensor(v)}
    if keys:
        wide = accumulation_dtype(values[keys[0]].device)
        stacked = torch.stack([values[k].reshape(()).to(wide) for k in keys])
        out.update(zip(keys, stacked.tolist(), strict=True))
    return {k: out[k] for k in values}  # the caller's order


@torch.no_grad()
def validate(loop: Loop, val_set: Dataset) -> dict[str, float]:
    """Mean validation loss, PSNR (dB) and SSIM of the current weights over every rank (summed
    in float64 on the device; float32 on a device without float64, Apple's ``mps``)."""
    run, ctx, device = loop.run, loop.ctx, loop.device
    batches = validation_batches(
        len(cast(Sized, val_set)), run.batch_size_per_process, seed=run.seed, rank=ctx.rank,
        world_size=ctx.world_size,
    )  # fmt: skip
    wide = accumulation_dtype(device)
    sums = torch.zeros(4, dtype=wide, device=device)  # loss*n, psnr, ssim, n
    loop.task.model.eval()
    loop.task.validation_begin()
    try:
        loader = DataLoader(
            val_set, batch_sampler=batches, num_workers=0, generator=loader_generator(run.seed)
        )
        for batch in loader:
            batch = _to_device(batch, device)
            with loop.amp():
                loss, pred, target = loop.task.validation_step(loop.task.model, batch)
            n = pred.shape[0]
            pred, target = pred.float().clamp(0, 1), target.float()
            sums += torch.stack(
                [
                    loss.to(wide) * n,
                    psnr(pred, target).to(wide).sum(),
                    ssim(pred, target).to(wide).sum(),
                    torch.tensor(n, dtype=wide, device=device),
                ]
            )
    finally:
        loop.task.model.train()
    ctx.all_reduce_sum(sums)
    count = max(sums[3].item(), 1.0)
    mean_loss = sums[0].item() / count + loop.task.validation_end(ctx.all_reduce_sum)
    return {"loss": mean_loss, "psnr_db": sums[1].item() / count, "ssim": sums[2].item() / count}


def _end_of_epoch(loop: Loop, val_set: Dataset | None, state: TrainState) -> None:
    """Validation, best-model selection and the epoch's checkpoint (after ``state.epoch += 1``)."""
    is_last = state.epoch >= loop.run.epochs
    if val_set is not None and (state.epoch % loop.run.validate_every_epochs == 0 or is_last):
        val = validate(loop, val_set)
        for name, value in val.items():
            if not math.isfinite(value):
                when = f"after epoch {state.epoch}, step {state.global_step}"
                raise loop.stop(f"validation {name}", value, state, when)
        record = {"split": "val", "step": state.global_step, "epoch": state.epoch - 1, **val}
        loop.metrics.log(record)
        if state.best_val_loss is None or val["loss"] < state.best_val_loss:
            state.best_val_loss, state.best_step = val["loss"], state.global_step
            if loop.ctx.is_main:
                loop.ckpt.save_best(loop.task.export, state.global_step, val["loss"])
        if loop.ctx.is_main:
            log.info("%s", epoch_line(loop, state, val))
    elif val_set is None:
        state.best_step = state.global_step  # no validation: the newest weights count as best
        if loop.ctx.is_main:
            loop.ckpt.save_best(loop.task.export, state.global_step, None)
            if state.epoch % loop.run.validate_every_epochs == 0 or is_last:
                log.info("%s", epoch_line(loop, state, None))
    loop.save(state)


def _duration(seconds: float) -> str:
    """``42 s``, ``3.5 min``, ``2.1 h``."""
    if seconds < 60:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.1f} min" if seconds < 3600 else f"{seconds / 3600:.1f} h"


def epoch_line(loop: Loop, state: TrainState, val: dict[str, float] | None) -> str:
    """The log line of an epoch that ended with a validation (or, without validation images,
    at the validation cadence): where the run is, the last training loss, the validation
    scores against the best so far, the time spent and an estimate of the time to go. It is
    the progress a log file shows (progress bars are off there) and stays above the bars on a
    terminal."""
    run = loop.run
    total = loop.steps_per_epoch * run.epochs
    if run.max_steps is not None:
        total = min(total, run.max_steps)
    text = f"epoch {state.epoch}/{run.epochs}, step {state.global_step}/{total}: "
    last = state.last_train_loss
    text += "train loss n/a" if last is None else f"train loss {last:.5g}"
    if val is None:
        text += " (no validation images: the newest weights are the model)"
    else:
        best = state.best_step == state.global_step
        was = f"best {state.best_val_loss:.5g} at step {state.best_step}"
        text += (
            f"; val loss {val['loss']:.5g} ({'best so far' if best else was}), "
            f"PSNR {val['psnr_db']:.2f} dB, SSIM {val['ssim']:.3f}"
        )
    t0, step0 = loop.started
    elapsed, done = time.perf_counter() - t0, state.global_step - step0
    text += f"; {_duration(elapsed)}"
    if 0 < done and state.global_step < total:
        text += f", about {_duration(elapsed / done * (total - state.global_step))} to go"
    return text


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
    provenance: dict[str, Any] | None = None,
    split: dict[str, Any] | None = None,
) -> FitResult:
    """Train ``task`` on ``train_set``; see the module docstring for what is handled.

    Parameters
    ----------
    task : model + loss definition.
    train_set : items addressed by ``(index, seed)`` (e.g. :class:`SEMImageDataset`).
    val_set : validation items, or None (then the last epoch's weights count as best).
    run, optim : loop and optimizer settings.
    resume : continue from ``<output_dir>/checkpoints/latest.json``, or, in a run folder
        interrupted before its first checkpoint, start that run again from step 0 (its
        ``metrics.jsonl`` restarts too); without it an output folder that already holds a run
        is refused (:class:`~sem_train.checkpoint.RunExistsError`). Either way, temporaries
        left by a run killed while writing are removed first. The folder is held for the
        run (:func:`sem_physics.locking.output_lock`): another run into it stops at once.
    config : the resolved configuration, written beside the outputs as ``config.json``
        (paths absolute; default: ``run`` and ``optim``). A resume from a checkpoint is
        refused when it differs from the recorded one in a setting a resumed run cannot take
        (:func:`sem_train.runinfo.check_resume_config`); ``config.json`` then stays the
        run's, and ``run_info.json`` gains an entry under ``resumes``.
    num_workers : DataLoader worker processes, started once per run (augmentations are
        seeded per sample, so the result does not depend on this number).
    provenance : more fields for ``run_info.json`` (e.g. the model exports a run started from).
    split : the images the run trains and validates on and those it skipped
        (:func:`sem_train.datasplit.split_record`), written to ``data_split.json`` once the
        run has started (a run refused before, e.g. for a missing GPU, leaves none); a resume
        keeps the saved one. Its counts go into the run's first log line.
    """
    if config is None:
        config = {"run": run.model_dump(mode="json"), "optim": optim.model_dump(mode="json")}
    record = recorded_config(config)
    # every rank of one run writes there: rank 0 holds the folder for them
    with output_lock(run.output_dir) if is_rank_zero() else contextlib.nullcontext():
        return _fit(
            task, train_set, val_set, run, optim, resume, record, num_workers, provenance, split
        )


def _fit(
    task: Task,
    train_set: Dataset,
    val_set: Dataset | None,
    run: RunConfig,
    optim: OptimConfig,
    resume: bool,
    config: dict[str, Any],
    num_workers: int,
    provenance: dict[str, Any] | None,
    split: dict[str, Any] | None = None,
) -> FitResult:
    ckpt = Checkpointer(Path(run.output_dir), run.keep_last)
    from_checkpoint = resume and ckpt.has_checkpoint
    changed = _check_folder(ckpt, resume, config)  # before any weights load
    loop = _setup(task, train_set, run, optim, ckpt)
    try:
        if from_checkpoint:
            check_resume_world_size(ckpt.run_dir, loop.ctx.world_size)
        state = TrainState()
        if loop.ctx.is_main:
            for path in loop.ckpt.remove_stale_temporaries():
                log.info("removed %s, left by a run killed while writing it", path)
        if from_checkpoint:
            state = TrainState.from_dict(
                loop.ckpt.resume(task.model, loop.optimizer, loop.scheduler)
            )
            loop.metrics.truncate_after(state.global_step)
        elif resume:  # started, interrupted before its first checkpoint: it runs again
            if loop.ctx.is_main:
                log.warning("no checkpoint yet in %s: starting from step 0", loop.ckpt.dir)
            loop.metrics.truncate_after(-1)  # every line: the log restarts with the run
        if loop.ctx.is_main:
            _record_invocation(loop, config, state, from_checkpoint, changed, provenance)
            if split is not None:
                write_split_record(loop.ckpt.run_dir, split, resume=from_checkpoint)
            log.info("%s", data_summary(loop, train_set, val_set, split))
        loop.ctx.barrier()
        if run.validate_at_start and val_set is not None and state.global_step == 0:
            val = validate(loop, val_set)
            loop.metrics.log({"split": "val", "step": 0, "epoch": -1, **val})
        # resumed at or past max_steps: the run ends where it is, not one step further
        done = run.max_steps is not None and state.global_step >= run.max_steps
        if done and loop.ctx.is_main:
            log.info("step %d reaches max_steps=%d: nothing to train", state.global_step,
                     run.max_steps)  # fmt: skip
        stopped = done and state.epoch < run.epochs
        loop.started = (time.perf_counter(), state.global_step)
        loop.model.train()
        with loop.interrupt, _bars_apart(loop):
            while state.epoch < run.epochs and not done:
                if train_one_epoch(loop, train_set, state, num_workers):
                    stopped = True
                    break
                state.epoch += 1
                state.step_in_epoch = 0
                _end_of_epoch(loop, val_set, state)  # saves a checkpoint
                if run.max_steps is not None and state.global_step >= run.max_steps:
                    stopped = state.epoch < run.epochs
                    break
                if state.epoch < run.epochs and loop.ctx.any_true(
                    loop.interrupt.requested, loop.device
                ):
                    raise TrainingInterrupted(state.global_step, state.epoch, loop.interrupt.signum)
        if stopped and not done and state.best_step is None and loop.ctx.is_main:
            # stopped by max_steps before any validation: the current weights are the model a
            # user can restore with (loss unknown); a resumed run's first validation replaces it
            loop.ckpt.save_best(loop.task.export, state.global_step, None)
        loop.ctx.barrier()
    finally:
        loop.close_loader()
        loop.metrics.close()
        loop.ctx.close()
    latest = loop.ckpt.latest_path
    if latest is None and state.global_step:  # ranks other than the main one
        latest = loop.ckpt.dir / f"step-{state.global_step:08d}.safetensors"
    return FitResult(
        output_dir=loop.ckpt.run_dir,
        global_step=state.global_step,
        epoch=state.epoch,
        stopped_early=stopped,
        best_loss=state.best_val_loss,
        best_dir=loop.ckpt.best_dir,
        latest_checkpoint=latest,
        last_train_loss=state.last_train_loss,
        first_train_loss=state.first_train_loss,
    )


def data_summary(
    loop: Loop, train_set: Dataset, val_set: Dataset | None, split: dict[str, Any] | None
) -> str:
    """The run's data in one line: its training and validation images (and the files
    skipped, from ``split``), the steps per epoch and the training samples each epoch leaves
    out (the last incomplete global batch is dropped) or repeats (fewer samples than a batch).
    """
    n_train = len(train_set)  # type: ignore[arg-type]
    n_val = 0 if val_set is None else len(val_set)  # type: ignore[arg-type]
    if split is not None:
        images = len(split.get("train", [])), len(split.get("validation", []))
        skipped = len(split.get("skipped", {}))
        where = f", listed in {loop.ckpt.run_dir / 'data_split.json'}" if skipped else ""
        text = f"{images[0]} training / {images[1]} validation images ({skipped} skipped{where})"
        if (n_train, n_val) != images:
            text += f", {n_train} training / {n_val} validation samples"
    else:
        text = f"{n_train} training / {n_val} validation samples"
    micro = loop.run.batch_size_per_process * loop.ctx.world_size
    batch = micro * loop.run.grad_accum_steps
    used = loop.steps_per_epoch * batch
    text += f"; {loop.steps_per_epoch} step(s) per epoch of {batch} samples"
    if used < n_train:
        text += (
            f"; {n_train - used} of the {n_train} training samples are left out of each epoch "
            f"(the last incomplete batch is dropped; a different one each epoch)"
        )
    elif used > n_train:
        text += f"; {used - n_train} sample(s) repeated in each epoch (fewer than a batch)"
    return text


@contextlib.contextmanager
def _bars_apart(loop: Loop):
    """With progress bars on, log lines are written above the bar, never onto its line."""
    if not (_progress_on(loop.run) and loop.ctx.is_main):
        yield
        return
    from tqdm.contrib.logging import logging_redirect_tqdm

    with logging_redirect_tqdm():
        yield


def _progress_on(run: RunConfig) -> bool:
    """``run.progress``; unset (None), bars only when stderr is a terminal (not in a log
    file of nohup or a batch system, which bars fill with carriage returns)."""
    if run.progress is not None:
        return bool(run.progress)
    return stderr_is_terminal()


def _check_folder(ckpt: Checkpointer, resume: bool, config: dict[str, Any]) -> dict:
    """The folder may take the run and a resume keeps its settings; the resumable ones it
    changes. Checked once: not again when a ``sem train`` command checked it
    (:meth:`~sem_train.runfolder.RunFolder.checked`)."""
    changed = ckpt.checked_changes(resume)
    if changed is not None:
        return changed
    ckpt.check_start(resume)
    return ckpt.check_resume(config) if resume else {}


def _record_invocation(
    loop: Loop,
    config: dict[str, Any],
    state: TrainState,
    from_checkpoint: bool,
    changed: dict[str, list[Any]],
    provenance: dict[str, Any] | None,
) -> None:
    """``run_info.json`` and ``config.json`` of a run starting at step 0; a resume from a
    checkpoint only adds its entry (the settings it changed) to ``run_info.json``."""
    extra = {
        "world_size": loop.ctx.world_size,
        "device": str(loop.device),
        "bf16": loop.use_bf16,
        **(provenance or {}),
    }
    if from_checkpoint:
        step = {"resumed_from_step": state.global_step, "resumed_from_epoch": state.epoch}
        record_resume(loop.ckpt.run_dir, changed, {**step, **extra})
    else:
        write_run_info(loop.ckpt.run_dir, config, {**extra, "resumed_from_step": None})


def _seed_host_rngs(seed: int) -> None:
    """Seed Python's and numpy's global RNGs from the run's seed. Nothing in a run draws from
    them (data workers seed their own), but the checkpoint saves them: seeded, two runs of one
    seed, and a resumed run, save identical state files."""
    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002 (the legacy global state is what is saved)


def _setup(
    task: Task, train_set: Dataset, run: RunConfig, optim: OptimConfig, ckpt: Checkpointer
) -> Loop:
    """Device, process group, model wrapper, optimizer, schedule, checkpointer and log."""
    device = select_device(run.device, env_local_rank())  # before the group: its own GPU
    ctx = DistContext.from_env(device)
    torch.manual_seed(run.seed)
    _seed_host_rngs(run.seed)
    ckpt.device = device  # the generators its checkpoints carry: the CPU's and this device's
    task.to(device)
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
    micro = EpochBatchSampler(
        len(cast(Sized, train_set)), run.batch_size_per_process, world_size=ctx.world_size
    )
    steps_per_epoch = max(1, micro.steps_per_epoch() // run.grad_accum_steps)
    schedule = WarmupCosine(
        optim.warmup_steps,
        steps_per_epoch * run.epochs,
        optim.min_lr / optim.lr,
        optim.schedule == "constant",
    )
    out_dir = Path(run.output_dir)
    return Loop(
        task=task,
        model=model,
        optimizer=optimizer,
        scheduler=torch.optim.lr_scheduler.LambdaLR(optimizer, schedule),
        run=run,
        optim=optim,
        ctx=ctx,
        device=device,
        use_bf16=autocast_bf16(run, device, task),
        metrics=MetricsLogger(
            out_dir / "metrics.jsonl",
            tensorboard_dir=out_dir / "tensorboard" if run.tensorboard else None,
            enabled=ctx.is_main,
        ),
        ckpt=ckpt,
        steps_per_epoch=steps_per_epoch,
        interrupt=GracefulInterrupt(announce=ctx.is_main),
    )


def fit_config(
    task: Task,
    train_set: Dataset,
    val_set: Dataset | None,
    cfg: Any,
    *,
    resume: bool = False,
    split: dict[str, Any] | None = None,
) -> FitResult:
    """:func:`fit` with the ``run``, ``optim`` and ``data.num_workers`` of a stage config.

    The whole resolved config (:func:`sem_train.preflight.run_record`: paths absolute, Stage
    3's teacher) is written beside the outputs, so every run says how it was made, and the
    model exports it started from go into ``run_info.json``.
    """
    from .config import config_kind
    from .preflight import run_record

    record = run_record(config_kind(cfg), cfg)
    exports = {
        key: str(resolve_model_dir(record[key]))
        for key in ("init_from", "teacher_from")
        if record.get(key)
    }
    # a resume may name these models at a new path (run folders moved) when the weights match
    digests = {key: model_digest(path) for key, path in exports.items()}
    return fit(
        task,
        train_set,
        val_set,
        cfg.run,
        cfg.optim,
        resume=resume,
        config=record,
        num_workers=cfg.data.num_workers,
        provenance={"model_exports": exports, "model_sha256": digests} if exports else None,
        split=split,
    )


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


#: Batch entries the tasks read on the host (masks and pairs are drawn from them there):
#: copying them to a GPU would only make each step copy them back and wait.
HOST_KEYS = frozenset({"seed", "index"})


def _to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    """The batch's tensors on ``device`` (but :data:`HOST_KEYS`); float64 ones (a pair's PSF)
    become float32 first, on the host, for a device without float64 (Apple's ``mps``)."""
    nb = device.type == "cuda"
    wide = accumulation_dtype(device)

    def move(v: torch.Tensor) -> torch.Tensor:
        if v.dtype == torch.float64 and wide != torch.float64:
            v = v.to(wide)
        return v.to(device, non_blocking=nb)

    return {
        k: move(v) if torch.is_tensor(v) and k not in HOST_KEYS else v for k, v in batch.items()
    }


def _clip(task: Task, max_norm: float | None) -> torch.Tensor | float:
    """The gradients' global norm (clipped to ``max_norm`` when given), left on the device."""
    params = [p for _, p in task.trainable_parameters() if p.grad is not None]
    if not params:
        return 0.0
    if max_norm is None:
        norms = torch.stack(
            [g.detach().float().norm() for p in params if (g := p.grad) is not None]
        )
        return norms.norm()
    return torch.nn.utils.clip_grad_norm_(params, max_norm)


def _non_finite(value: torch.Tensor | float) -> torch.Tensor | float:
    """1 where ``value`` is NaN or infinite, else 0 (on the device for a tensor)."""
    if torch.is_tensor(value):
        return (~torch.isfinite(value.detach().float())).float()
    return float(not math.isfinite(value))


def _progress_bar(loop: Loop, state: TrainState):
    if not (_progress_on(loop.run) and loop.ctx.is_main):
        return None
    from tqdm.auto import tqdm

    return tqdm(
        total=loop.steps_per_epoch,
        initial=state.step_in_epoch,
        desc=f"epoch {state.epoch + 1}/{loop.run.epochs}",
        unit="step",
        dynamic_ncols=True,
        leave=False,
    )

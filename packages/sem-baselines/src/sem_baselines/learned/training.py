"""The compact standalone training loop of the learned baselines: seeded, device-agnostic.

``NetworkRestorer.fit`` runs it for library use (no checkpoints, no resume). ``sem train
baseline`` (sem-train) drives the same two per-step pieces, ``make_batch`` and
``training_loss`` (:class:`TrainablePieces`), with the toolkit's full training loop, which
adds checkpoints, ``--resume``, ``--max-steps`` and multi-GPU training.

Each step draws ``batch_size`` random patches (random image, position, flip and 90-degree
rotation) from the focused training images, samples one degradation setting per patch from
the paper's ranges, lets the restorer synthesise its input/target pair (``make_batch``) and
takes an Adam step on ``training_loss``. Patches are degraded on their own with reflective
borders (the forward model's convention) on the training device. Validation uses fixed
patches and fixed degradations drawn once from ``seed + 1``; the weights of the epoch with
the lowest validation loss (training loss when there are no validation images) are kept.
Mixed precision (``precision``, by default the restorer's ``train_precision``): ``auto`` is
bf16 autocast where the device computes bf16 in hardware (:func:`native_bf16`: CUDA with bf16,
a CPU with AVX512-BF16 or AMX) and full fp32 elsewhere, ``bf16`` bf16 autocast on any device,
``fp32`` full fp32. Weights, optimiser state and losses stay fp32 either way; restoring
(inference) is fp32 on the CPU. A non-finite loss stops training and keeps the best weights so far.
A step reads its loss from the device once, after the forward pass (the non-finite check needs
it before the update; the epoch's mean and the progress bar reuse it), and a validation pass
once for all its batches.
"""

from __future__ import annotations

import math
import warnings
from contextlib import nullcontext
from typing import Any, Literal, Protocol

import numpy as np
import torch
from pydantic import ConfigDict, Field, ValidationError
from sem_models.precision import checked_device, native_bf16
from sem_models.training import FitResult
from sem_physics import DegradationParams, ParameterRanges, image_to_tensor
from sem_physics.cli_support import validation_message
from sem_physics.fields import NoBoolNumbers
from torch import nn
from tqdm.auto import tqdm

from ..restorer import RestorerConfigError, check_image, list_restorers, registry_entry

__all__ = [
    "DEFAULT_PATCH_PX",
    "FitConfig",
    "FitResult",
    "TrainablePieces",
    "fit_restorer",
    "native_bf16",
    "resolve_device",
    "sample_patches",
    "trainable_restorers",
]

DEFAULT_PATCH_PX = 128


def resolve_device(device: str | None) -> torch.device:
    """``None`` means CUDA when available, else CPU; an unknown or absent device, or ``meta``
    (no data: nothing to restore or train with), is a RestorerConfigError naming it."""
    try:
        dev = checked_device(device)
    except ValueError as err:
        raise RestorerConfigError(str(err)) from None
    if dev.type == "meta":
        raise RestorerConfigError(
            f"device={device!r} holds no weights and computes nothing; a restorer runs on "
            "cpu, cuda, cuda:N or mps (None: cuda if present, else cpu)"
        )
    return dev


class TrainablePieces(Protocol):
    """What a training loop needs from a learned restorer (``NetworkRestorer`` has it)."""

    network: nn.Module

    @property
    def name(self) -> str: ...  # read-only: a class attribute of the restorer satisfies it

    @property
    def default_lr(self) -> float: ...

    @property
    def default_batch_size(self) -> int: ...

    @property
    def device(self) -> torch.device: ...

    def make_batch(
        self, clean: torch.Tensor, params: list[DegradationParams], generator: torch.Generator
    ) -> dict[str, torch.Tensor]: ...

    def training_loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor: ...


def trainable_restorers() -> list[str]:
    """Registered methods a training loop can drive: fitted by training (``fitting="fit"``)
    with the per-step pieces of :class:`TrainablePieces` (``make_batch``, ``training_loss``).

    The registry decides which methods ``sem train baseline`` accepts; no name is special.
    """
    entries = [registry_entry(name) for name in list_restorers()]
    return [
        e.name
        for e in entries
        if e.fitting == "fit"
        and all(callable(getattr(e.cls, m, None)) for m in ("make_batch", "training_loss"))
    ]


class FitConfig(NoBoolNumbers):
    """Keyword arguments of ``fit`` (unknown keys are rejected)."""

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    epochs: int = Field(default=1, ge=1, description="number of epochs")
    batch_size: int | None = Field(default=None, ge=1, description="None = method default")
    seed: int = Field(default=0, ge=0, description="seed of patches, degradations, masks")
    ranges: ParameterRanges = Field(default_factory=ParameterRanges)
    patch_size: int | None = Field(
        default=None,
        ge=16,
        le=4096,
        multiple_of=8,
        description="patch side (px); None = 128, or less to fit the smallest image",
    )
    steps_per_epoch: int | None = Field(
        default=None, ge=1, description="None = one pass over the training pixels"
    )
    lr: float | None = Field(default=None, gt=0, le=1, description="None = method default")
    weight_decay: float = Field(default=0.0, ge=0)
    grad_clip: float | None = Field(default=1.0, gt=0, description="max gradient norm")
    val_patches: int = Field(default=16, ge=1, description="fixed validation patches")
    device: str | None = Field(default=None, description="None = restorer's device setting")
    precision: Literal["auto", "fp32", "bf16"] | None = Field(
        default=None, description="None = the restorer's train_precision (else auto)"
    )
    progress: bool = Field(default=True, description="show a progress bar")


def sample_patches(
    images: list[np.ndarray], n: int, size: int, rng: np.random.Generator
) -> np.ndarray:
    """``n`` random ``size`` x ``size`` crops with random flips / 90-degree rotations."""
    out = np.empty((n, 1, size, size), dtype=np.float32)
    for i in range(n):
        img = images[int(rng.integers(len(images)))]
        y = int(rng.integers(img.shape[0] - size + 1))
        x = int(rng.integers(img.shape[1] - size + 1))
        p = img[y : y + size, x : x + size]
        p = np.rot90(p, int(rng.integers(4)))
        if rng.integers(2):
            p = p[:, ::-1]
        out[i, 0] = p
    return out


def _auto_patch(images: list[np.ndarray]) -> int:
    smallest = min(min(np.shape(im)[:2]) for im in images)
    if smallest < 16:
        raise ValueError(f"training/validation images must be at least 16 px, got {smallest} px")
    return min(DEFAULT_PATCH_PX, smallest // 8 * 8)


def _check_images(images: list[np.ndarray] | None, what: str, size: int) -> list[np.ndarray]:
    if images is None:
        return []
    checked = [check_image(im, f"{what}[{i}]") for i, im in enumerate(images)]
    for i, im in enumerate(checked):
        if min(im.shape) < size:
            raise ValueError(f"{what}[{i}] has shape {im.shape}, smaller than patch_size={size}")
    return checked


def _bf16(precision: str, device: torch.device) -> bool:
    """Whether forward passes run under bf16 autocast (see the module docstring)."""
    if precision == "auto":
        return native_bf16(device)
    return precision == "bf16"


def fit_restorer(
    restorer: TrainablePieces,
    train_images: list[np.ndarray],
    val_images: list[np.ndarray] | None = None,
    **kwargs: Any,
) -> FitResult:
    """Train ``restorer.network`` in place (see the module docstring)."""
    try:
        cfg = FitConfig(**kwargs)
    except ValidationError as err:
        reason = validation_message(err, FitConfig)
        raise RestorerConfigError(
            f"invalid fit arguments for {restorer.name!r}: {reason}"
        ) from None
    if not train_images:
        raise ValueError("train_images is empty: give at least one focused image")
    patch = cfg.patch_size or _auto_patch(list(train_images) + list(val_images or []))
    train = _check_images(train_images, "train_images", patch)
    val = _check_images(val_images, "val_images", patch)
    device = resolve_device(cfg.device) if cfg.device else restorer.device
    bs = cfg.batch_size or restorer.default_batch_size
    steps = cfg.steps_per_epoch or max(1, math.ceil(sum(im.size for im in train) / (bs * patch**2)))
    net = restorer.network.to(device)
    rng = np.random.default_rng(cfg.seed)
    gen = torch.Generator(device=device).manual_seed(cfg.seed)

    def batch_from(images: list[np.ndarray], n: int, r: np.random.Generator, g: torch.Generator):
        clean = image_to_tensor(sample_patches(images, n, patch, r)[:, 0], device=device)
        return restorer.make_batch(clean, cfg.ranges.sample_many(r, n), g)

    val_batches = []
    if val:
        vr = np.random.default_rng(cfg.seed + 1)
        vg = torch.Generator(device=device).manual_seed(cfg.seed + 1)
        for start in range(0, cfg.val_patches, bs):
            val_batches.append(batch_from(val, min(bs, cfg.val_patches - start), vr, vg))

    opt = torch.optim.Adam(
        net.parameters(), lr=cfg.lr or restorer.default_lr, weight_decay=cfg.weight_decay
    )
    precision = cfg.precision or getattr(getattr(restorer, "config", None), "train_precision", None)
    use_bf16 = _bf16(precision or "auto", device)

    def autocast():
        return torch.autocast(device.type, dtype=torch.bfloat16) if use_bf16 else nullcontext()

    best_loss, best_epoch, best_state = math.inf, -1, None
    history: list[dict[str, float]] = []
    stopped = False
    step, first, last = 0, None, None  # steps taken; losses of the first and last step
    bar = tqdm(total=cfg.epochs * steps, desc=f"fit {restorer.name}", disable=not cfg.progress)
    try:
        for epoch in range(cfg.epochs):
            net.train()
            total = 0.0
            for _ in range(steps):
                batch = batch_from(train, bs, rng, gen)
                with autocast():
                    loss = restorer.training_loss(batch)
                # the step's one read from the device: the guard needs it before the update,
                # and the log, the progress bar and the epoch's sum reuse it
                value = float(loss.detach())
                if not math.isfinite(value):
                    warnings.warn(
                        f"non-finite training loss at epoch {epoch}; stopping with the best weights",
                        RuntimeWarning,
                        stacklevel=2,
                    )
                    stopped = True
                    break
                opt.zero_grad(set_to_none=True)
                loss.backward()
                if cfg.grad_clip is not None:
                    torch.nn.utils.clip_grad_norm_(net.parameters(), cfg.grad_clip)
                opt.step()
                step, last, first = step + 1, value, value if first is None else first
                total += value
                bar.update(1)
                bar.set_postfix(loss=f"{value:.4g}")
            if stopped:
                break
            train_loss = total / steps
            row = {"epoch": float(epoch), "train_loss": train_loss}
            score = train_loss
            if val_batches:
                net.eval()
                with torch.no_grad(), autocast():  # one read from the device per validation
                    losses = [restorer.training_loss(b).detach().float() for b in val_batches]
                score = float(np.mean(torch.stack(losses).tolist()))
                row["val_loss"] = score
            history.append(row)
            if score < best_loss:
                best_loss, best_epoch = score, epoch
                best_state = {k: v.detach().clone() for k, v in net.state_dict().items()}
    finally:
        bar.close()  # before an interrupt's message, not redrawn after it
    if best_state is not None:
        net.load_state_dict(best_state)
    net.eval()
    restorer.history = history  # type: ignore[attr-defined]
    return FitResult(
        epoch=len(history),
        global_step=step,
        stopped_early=stopped,
        best_loss=best_loss if best_state is not None else None,
        best_epoch=best_epoch if best_state is not None else None,
        history=history,
        first_train_loss=first,
        last_train_loss=last,
    )

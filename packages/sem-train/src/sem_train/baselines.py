"""``sem train baseline``: sem-baselines' learned restorers (Noise2Void, Noise2Noise, MRN)
trained with the engine's loop, so they get its checkpoints, resume, ``max_steps``,
non-finite stop, best-model selection and multi-GPU training.

A restorer defines two per-step pieces (``make_batch``, ``training_loss``); this module
feeds them random patches of the focused training images (grayscale, information bar
removed, 0..255) and one degradation setting per patch drawn from the patch's seed. The
run folder holds what every run holds (``config.json``, ``run_info.json``,
``metrics.jsonl``, ``checkpoints/``) and ``model/``, the best restorer, reloadable with
``sem_baselines.load_restorer``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import ValidationError
from sem_baselines.learned.base import WEIGHTS_FILE
from sem_baselines.learned.training import sample_patches, trainable_restorers
from sem_baselines.restorer import CONFIG_FILE
from sem_physics import ParameterRanges
from sem_physics.convert import image_to_tensor
from torch import nn
from torch.utils.data import Dataset

from .config import BaselineTrainConfig, ConfigError, OptimConfig, problems
from .data.index import note_too_small, too_small
from .data.io import crop_bottom, read_gray
from .datasplit import prepare_split
from .distributed import env_local_rank, is_rank_zero, select_device
from .engine import FitResult, Task, fit
from .preflight import check_baseline_method

__all__ = ["BaselineTask", "PatchDataset", "check_model_folder", "run_baseline"]


class PatchDataset(Dataset):
    """``n_items`` random patches (position, 90-degree rotation, flip fixed by the seed).

    Item ``(i, seed)`` comes from image ``i % len(images)``: ``{"clean": (1, P, P) float32
    on 0..255, "seed": int64}``.
    """

    def __init__(self, images: list[np.ndarray], patch_px: int, n_items: int) -> None:
        if not images:
            raise ValueError("no images to draw patches from")
        self.images, self.patch_px, self.n_items = images, patch_px, n_items

    def __len__(self) -> int:
        return self.n_items

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, torch.Tensor]:
        i, seed = (key, key) if isinstance(key, int) else (int(key[0]), int(key[1]))
        img = self.images[i % len(self.images)]
        patch = sample_patches([img], 1, self.patch_px, np.random.default_rng(seed))[:, 0]
        return {"clean": image_to_tensor(patch)[0], "seed": torch.tensor(seed, dtype=torch.int64)}


@contextmanager
def _network(restorer: Any, model: nn.Module) -> Iterator[None]:
    """Let the restorer's loss call ``model`` (its network or the network's DDP wrapper)."""
    own = restorer.network
    restorer.network = model
    try:
        yield
    finally:
        restorer.network = own


class BaselineTask(Task):
    """A learned restorer's own loss on pairs it synthesises from seeded clean patches."""

    def __init__(self, restorer: Any, ranges: ParameterRanges) -> None:
        self.restorer = restorer
        self.model = restorer.network
        self.ranges = ranges

    def _pair(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Each sample's pair from its own seed (parameters and noise), so a sample is the
        same whatever batch it is in, and a global batch split across processes gives the
        pairs of one process's batch."""
        seeds = [int(s) for s in batch["seed"].tolist()]  # one host read per batch
        clean = batch["clean"]
        parts = []
        for i, seed in enumerate(seeds):
            params = [self.ranges.sample(np.random.default_rng([seed, 1]))]
            g = torch.Generator(device=clean.device).manual_seed(seed % (1 << 63))
            parts.append(self.restorer.make_batch(clean[i : i + 1], params, g))
        return {key: torch.cat([p[key] for p in parts]) for key in parts[0]}

    def training_loss(self, model, batch):
        pair = self._pair(batch)
        with _network(self.restorer, model):
            return self.restorer.training_loss(pair), {}

    def validation_step(self, model, batch):
        """The method's loss (model selection) and its output against the clean patch."""
        pair = self._pair(batch)
        loss = self.restorer.training_loss(pair)
        pred = self.restorer.predict(pair["input"]).float()
        return loss, pred, batch["clean"] / 255.0

    def export(self, directory: Path) -> None:
        self.restorer.save(directory)


def _images(paths: list[Path], fraction: float, patch_px: int) -> list[np.ndarray]:
    """The images of ``paths`` (information bar removed); one smaller than the patch is
    skipped with a warning, as the index skips those its header shows too small (the rule of
    every ``sem train`` command)."""
    out = []
    for p in paths:
        data, rows = read_gray(p)
        img = crop_bottom(data, fraction, rows)
        reason = too_small(data.shape[0], data.shape[1], fraction, patch_px, rows)
        if reason is not None:
            note_too_small(p, reason, patch_px)
            continue
        out.append(img)
    return out


#: The files a learned restorer's ``save`` writes (``sem_baselines`` NetworkRestorer).
_RESTORER_FILES = frozenset({CONFIG_FILE, WEIGHTS_FILE})


def _saved_restorer_name(folder: Path) -> str | None:
    """The ``restorer`` field of ``folder/config.json``, or None when it has none."""
    try:
        meta = json.loads((folder / CONFIG_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    name = meta.get("restorer") if isinstance(meta, dict) else None
    return name if isinstance(name, str) else None


def check_model_folder(dest: Path) -> None:
    """Refuse a ``model/`` folder a run would replace unless it holds a saved restorer only
    (``config.json`` with a ``restorer`` field, its weights): other files are the user's."""
    if not dest.exists() and not dest.is_symlink():
        return
    if dest.is_symlink() or not dest.is_dir():
        found = "is a file or a link, not a folder a run wrote"
    else:
        names = sorted(p.name for p in dest.iterdir())
        foreign = [n for n in names if n not in _RESTORER_FILES]
        if not names or (not foreign and _saved_restorer_name(dest) is not None):
            return
        listed = foreign or names  # or a config.json without a "restorer" field
        more = ", ..." if len(listed) > 3 else ""
        found = f"holds files that are not a saved restorer's ({', '.join(listed[:3])}{more})"
    raise ValueError(
        f"{dest} {found}; a run replaces {dest.name}/ with its best restorer: move it away "
        "or choose another --output-dir"
    )


def _publish(best: Path, dest: Path) -> None:
    """Copy the best export to ``dest`` through a temporary folder and a rename; an earlier
    ``dest`` is replaced only if it holds a saved restorer (:func:`check_model_folder`).
    The temporary folders of an earlier run killed while publishing are removed first (the
    run holds its folder, so no other process publishes there)."""
    check_model_folder(dest)
    stale = re.compile(rf"\.{re.escape(dest.name)}\.\d+\.tmp")
    for old in dest.parent.glob(f".{dest.name}.*.tmp"):
        if stale.fullmatch(old.name) and old.is_dir() and not old.is_symlink():
            shutil.rmtree(old, ignore_errors=True)
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(best, tmp)
    if dest.exists():
        shutil.rmtree(dest)
    os.replace(tmp, dest)


def _restorer(name: str, params: dict[str, Any]) -> Any:
    """The registered restorer ``name`` built from ``params``; bad fields named one per line."""
    import sem_baselines

    try:
        return sem_baselines.get_restorer(name, **params)
    except ValueError:
        config_cls = type(sem_baselines.get_restorer(name)).config_cls
        try:
            config_cls.model_validate(params)
        except ValidationError as err:
            raise ConfigError(
                f"params of restorer {name!r}: {problems(err, model=config_cls)}"
            ) from None
        raise


def run_baseline(
    cfg: BaselineTrainConfig, method: str | None = None, *, resume: bool = False
) -> FitResult:
    """Train baseline ``method`` (default ``cfg.method``), one of
    :func:`sem_baselines.trainable_restorers` (n2v, n2n, mrn); see the module doc."""
    name = check_baseline_method(method or cfg.method, trainable_restorers())
    check_model_folder(Path(cfg.run.output_dir) / "model")  # before any training
    # built on this process's device, the one the engine trains on: under torchrun each rank
    # its own GPU (built on the default device, every rank would open a context on GPU 0)
    device = select_device(cfg.run.device, env_local_rank())
    restorer = _restorer(name, {**cfg.params, "device": str(device)})
    patch = cfg.patch_size_px or cfg.data.image_size_px
    optim = cfg.optim or OptimConfig(
        lr=restorer.default_lr, betas=(0.9, 0.999), schedule="constant", grad_clip_norm=1.0
    )
    split = prepare_split("baseline", cfg, resume)  # a resume over other data refused
    fraction = cfg.data.info_bar_fraction
    train_images = _images([Path(p) for p in split["train"]], fraction, patch)
    val_images = _images([Path(p) for p in split["validation"]], fraction, patch)
    if not train_images:
        raise ValueError(
            f"no training image under {cfg.data.root} is at least {patch} px after the "
            f"info-bar crop; lower patch_size_px or data.image_size_px"
        )
    train = PatchDataset(train_images, patch, len(train_images) * cfg.patches_per_image)
    val = PatchDataset(val_images, patch, cfg.val_patches) if val_images else None
    task = BaselineTask(restorer, cfg.ranges)
    config = {**cfg.model_dump(mode="json"), "method": name}
    result = fit(
        task,
        train,
        val,
        cfg.run,
        optim,
        resume=resume,
        config=config,
        num_workers=cfg.data.num_workers,
        split=split,
    )
    if result.best_dir is not None and is_rank_zero():
        _publish(result.best_dir, Path(cfg.run.output_dir) / "model")
    return result

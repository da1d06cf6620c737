"""Unlabeled SEM images from a folder tree: robust loading and augmentation.

* The folder index, the images of a data config and the seeded split are
  :mod:`sem_train.data.index` (no torch), re-exported here.
* :class:`SEMImageDataset` reads, crops the information bar and augments one image. Its items
  are addressed by ``(index, seed)`` pairs coming from :class:`~sem_train.data.sampler.EpochBatchSampler`,
  so the augmentation of a sample is fixed by the seed. An unreadable file never stops an
  epoch: it is logged, counted and replaced by the next readable file.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch
from sem_physics.convert import image_to_tensor
from sem_physics.io import DEFAULT_CROP_FRACTION
from torch.utils.data import Dataset

from ..config import AugmentConfig, DataConfig
from ..ranks import rank
from .augment import augment, center_resize
from .index import (
    GENERATED_ROOT,
    ImageIndex,
    build_index,
    generated_paths,
    indexed_paths,
    note_too_small,
    split_index,
)
from .io import crop_bottom, read_gray

__all__ = [
    "GENERATED_ROOT",
    "ImageIndex",
    "ImageTooSmallError",
    "SEMImageDataset",
    "build_index",
    "generated_paths",
    "indexed_paths",
    "load_image_tensor",
    "split_index",
]

log = logging.getLogger(__name__)


def _skip_record(path: Path, err: BaseException) -> dict[str, Any]:
    """One ``skipped_files.jsonl`` line: the file, why, and which process met it (each rank
    and DataLoader worker keeps its own record of bad files, so one file may appear once per
    process that drew it)."""
    worker = torch.utils.data.get_worker_info()
    return {
        "path": str(path),
        "error": str(err),
        "rank": rank(),
        "worker": worker.id if worker is not None else None,
    }


class ImageTooSmallError(ValueError):
    """An image whose side after the information-bar crop is below the training crop."""


def _generated(path: Path) -> torch.Tensor:
    from sem_physics.samples import make_sample

    try:
        kind, size, seed = path.name.split("-")
        rows, cols = (int(v) for v in size.split("x"))
        data = make_sample(kind, (rows, cols), seed=int(seed[1:]))
    except ValueError as err:
        raise ValueError(f"{path}: not a generated sample name (kind-RxC-sSEED): {err}") from None
    return image_to_tensor(data)[0].div_(255.0)


def load_image_tensor(path: Path, info_bar_fraction: float) -> torch.Tensor:
    """Read ``path``, remove the information bar, return (1, H, W) float32 in [0, 1].

    A path under :data:`GENERATED_ROOT` is rendered by the sample generator (no info bar).
    """
    if path.parent == GENERATED_ROOT:
        return _generated(path)
    data, rows = read_gray(path)
    data = crop_bottom(data, info_bar_fraction, rows)
    return image_to_tensor(data)[0].div_(255.0)


class SEMImageDataset(Dataset):
    """Augmented (training) or centre-cropped (validation) views of indexed SEM images.

    Items are addressed by ``(i, seed)`` (an int ``i`` alone uses seed ``i``). Each item is a
    dict ``{"image": (C, S, S) float32 in [0, 1], "seed": int64, "index": int64,
    "skipped": int64}``, where ``skipped`` counts unreadable files that were replaced.
    """

    def __init__(
        self,
        paths: list[Path],
        *,
        image_size_px: int,
        channels: int = 1,
        train: bool = True,
        info_bar_fraction: float = DEFAULT_CROP_FRACTION,
        augment_cfg: AugmentConfig | None = None,
        log_path: Path | None = None,
        cache_in_memory: bool = False,
    ) -> None:
        if not paths:
            raise ValueError("dataset has no images (check data.root and its file extensions)")
        if channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {channels}")
        self.paths = list(paths)
        self.size = int(image_size_px)
        self.channels = channels
        self.train = train
        self.info_bar_fraction = info_bar_fraction
        self.augment_cfg = augment_cfg or AugmentConfig()
        self.log_path = log_path
        self.bad: set[int] = set()
        self.cache: dict[int, torch.Tensor] | None = {} if cache_in_memory else None

    def __len__(self) -> int:
        return len(self.paths)

    def _note_bad(self, i: int, err: BaseException) -> None:
        self.bad.add(i)
        if isinstance(err, ImageTooSmallError):
            note_too_small(self.paths[i], str(err), self.size)
        else:
            log.warning(f"skipping unreadable image {self.paths[i]} ({type(err).__name__}: {err})")
        if self.log_path is not None:
            try:
                self.log_path.parent.mkdir(parents=True, exist_ok=True)
                with open(self.log_path, "a", encoding="utf-8") as fh:
                    fh.write(json.dumps(_skip_record(self.paths[i], err)) + "\n")
            except OSError:
                pass

    def _load(self, j: int) -> torch.Tensor:
        if self.cache is not None and j in self.cache:
            return self.cache[j]
        img = load_image_tensor(self.paths[j], self.info_bar_fraction)
        if min(img.shape[-2:]) < self.size:  # the index's check missed it (no header shape)
            rows, cols = img.shape[-2:]
            raise ImageTooSmallError(
                f"{rows}x{cols} px after the info-bar crop is smaller than the {self.size}-px "
                f"training crop"
            )
        if self.cache is not None:
            self.cache[j] = img
        return img

    def view(self, img: torch.Tensor, seed: int) -> torch.Tensor:
        """The training (augmented with ``seed``) or validation (centre) view of (1, H, W)."""
        if self.train:
            g = torch.Generator().manual_seed(int(seed))
            out = augment(img, self.size, self.augment_cfg, g)
        else:
            out = center_resize(img, self.size)
        if out is img:  # never hand out the (possibly cached) source tensor itself
            out = out.clone()
        return out.expand(self.channels, -1, -1).contiguous() if self.channels == 3 else out

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        i, seed = (key, key) if isinstance(key, int) else (int(key[0]), int(key[1]))
        n = len(self.paths)
        for attempt in range(n):
            j = (i + attempt) % n
            if j in self.bad:
                continue
            try:
                img = self._load(j)
            except Exception as err:  # unreadable file: log, count, use the next one
                self._note_bad(j, err)
                continue
            return {
                "image": self.view(img, seed),
                "seed": torch.tensor(seed, dtype=torch.int64),
                "index": torch.tensor(j, dtype=torch.int64),
                "skipped": torch.tensor(attempt, dtype=torch.int64),
            }
        raise RuntimeError(f"none of the {n} images of the dataset could be read")

    @classmethod
    def from_config(
        cls,
        cfg: DataConfig,
        *,
        log_path: Path | None = None,
        split: dict[str, Any] | None = None,
    ) -> tuple[SEMImageDataset, SEMImageDataset | None, ImageIndex | None]:
        """Index ``cfg.root`` and return (train, val or None, index) datasets; with ``split``
        (a run's :func:`sem_train.datasplit.split_record`, which indexed the folder already)
        its training and validation files and no index, so that the data a run trains on is
        the one its ``data_split.json`` records."""
        index: ImageIndex | None = None
        if split is None:
            paths, index = indexed_paths(cfg)
            tr, va = split_index(len(paths), cfg.val_fraction, cfg.split_seed)
            train_paths, val_paths = [paths[i] for i in tr], [paths[i] for i in va]
        else:
            train_paths = [Path(p) for p in split["train"]]
            val_paths = [Path(p) for p in split["validation"]]
        if cfg.val_fraction > 0 and not val_paths:
            log.warning(
                "data.val_fraction=%g but the data hold %d image(s): no validation images, so "
                "the run keeps its last weights instead of the best ones (give 2 or more)",
                cfg.val_fraction,
                len(train_paths),
            )
        common: dict[str, Any] = {
            "image_size_px": cfg.image_size_px,
            "channels": cfg.channels,
            "info_bar_fraction": cfg.info_bar_fraction,
            "augment_cfg": cfg.augment,
            "log_path": log_path,
            "cache_in_memory": cfg.cache_in_memory,
        }
        train = cls(train_paths, train=True, **common)
        val = cls(val_paths, train=False, **common) if val_paths else None
        return train, val, index

"""The image folder index and the data split: which images a run reads, without torch.

* :func:`build_index` lists the tree (sorted, so the order is the same on every machine),
  checks every file's header and caches each file's verdict as JSON, keyed on its name, size
  and modification time: an added, deleted or rewritten (e.g. corrupted) file is seen on the
  next run, and only such files are checked again. The cache lives in ``cache_dir`` or
  ``$XDG_CACHE_HOME/sem-train`` (``~/.cache/sem-train``), never inside the data folder, which
  is often read-only or shared; its name is a hash of the root path and options. Files that
  fail the check are listed (with the reason) and counted.
* :func:`indexed_paths` is a data config's images (the folder's, then the generated ones):
  the one check that a run has data to read, made by the ``sem train`` commands before they
  load torch and again by the dataset that reads the images.
* :func:`split_index` makes a deterministic train/validation split from a seed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from sem_physics.atomic import atomic_write_text

from ..config import DataConfig, GeneratedData
from .io import IMAGE_EXTENSIONS, check_header, read_gray

__all__ = [
    "GENERATED_ROOT",
    "ImageIndex",
    "build_index",
    "generated_paths",
    "indexed_paths",
    "split_index",
]

#: Parent of the stand-in paths of generated sample images (``<generated>/lines-480x640-s7``).
GENERATED_ROOT = Path("<generated>")

log = logging.getLogger(__name__)
#: The unreadable-file count last reported per indexed folder (reported again when it changes).
_REPORTED: dict[Path, tuple[int, int]] = {}

INDEX_VERSION = 2


@dataclass
class ImageIndex:
    """The readable image files under ``root`` (relative POSIX paths, sorted) and the rejects."""

    root: Path
    files: list[str]
    rejected: dict[str, str] = field(default_factory=dict)
    cache_path: Path | None = None

    def __len__(self) -> int:
        return len(self.files)

    def paths(self) -> list[Path]:
        """Absolute paths of the readable files."""
        return [self.root / f for f in self.files]


def _walk(root: Path, extensions: tuple[str, ...]) -> list[str]:
    found: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        rel = Path(dirpath).relative_to(root)
        for name in filenames:
            if name.startswith("."):
                continue
            if os.path.splitext(name)[1].lower() in extensions:
                found.append((rel / name).as_posix())
    return sorted(found)


#: Version of the file checks: a cached verdict of older checks is not reused (2: truncated
#: TIFFs refused by the header check).
CHECK_VERSION = 2


def _cache_location(root: Path, cache_dir: Path | None, key: str) -> Path:
    name = f"index-{key}.json"
    if cache_dir is not None:
        return Path(cache_dir) / name
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "sem-train" / name


def build_index(
    root: str | Path,
    *,
    cache_dir: str | Path | None = None,
    refresh: bool = False,
    verify: str = "header",
    extensions: tuple[str, ...] = IMAGE_EXTENSIONS,
) -> ImageIndex:
    """Index the image files under ``root`` once and cache the result.

    Parameters
    ----------
    root : folder tree of TIFF (8/16-bit), PNG, JPEG or BMP files; other files are ignored.
    cache_dir : where to keep the JSON index (default: see module doc).
    refresh : check every file again, ignoring the cached verdicts.
    verify : ``"none"`` (list only), ``"header"`` (parse each header) or ``"full"`` (decode).

    Returns
    -------
    ImageIndex with the readable files and a ``{path: reason}`` map of rejected ones.
    """
    root = Path(root).expanduser().resolve()
    if not root.is_dir():
        raise FileNotFoundError(
            f"data folder {root} does not exist or is not a directory (set data.root or --data)"
        )
    if verify not in ("none", "header", "full"):
        raise ValueError(f"verify must be 'none', 'header' or 'full', got {verify!r}")
    rule = f"{root}|{sorted(extensions)}|{verify}|{CHECK_VERSION}"
    key = hashlib.sha1(rule.encode()).hexdigest()[:12]
    cache = _cache_location(root, Path(cache_dir) if cache_dir else None, key)
    known = {} if refresh else _cached_entries(cache, root)
    t0 = time.perf_counter()
    found = _walk(root, tuple(e.lower() for e in extensions))
    entries: dict[str, list[Any]] = {}
    from tqdm.auto import tqdm

    bar = tqdm(
        found,
        desc=f"indexing {root.name}",
        unit="file",
        disable=verify == "none" or len(found) < 1000,  # a bar only where it takes a while
        leave=False,
    )
    for rel in bar:
        try:
            st = (root / rel).stat()
        except OSError as err:  # vanished or unreadable between listing and stat
            entries[rel] = [-1, -1, f"{type(err).__name__}: {err}"]
            continue
        old = known.get(rel)
        if old is not None and old[:2] == [st.st_size, st.st_mtime_ns]:
            entries[rel] = old
            continue
        entries[rel] = [st.st_size, st.st_mtime_ns, _check(root / rel, verify)]
    files = [rel for rel, e in entries.items() if e[2] is None]
    rejected = {rel: e[2] for rel, e in entries.items() if e[2] is not None}
    for rel, reason in rejected.items():
        if known.get(rel) != entries[rel]:
            log.warning("skipping unreadable image %s (%s)", root / rel, reason)
    index = ImageIndex(root, files, rejected, cache)
    if entries != known:
        payload = {
            "version": INDEX_VERSION,
            "root": str(root),
            "verify": verify,
            "built_s": round(time.perf_counter() - t0, 3),
            "entries": entries,
        }
        try:
            atomic_write_text(cache, json.dumps(payload, indent=0))
        except OSError as err:
            log.warning("could not cache the image index at %s (%s); continuing", cache, err)
            index.cache_path = None
    summary = (len(rejected), len(rejected) + len(files))
    if rejected and _REPORTED.get(root) != summary:
        # once per folder and count, like each file's reason: a run indexes its folder again
        # in every step (the command's early check, the stage, a recipe's next stage)
        log.warning("%d of %d files under %s are unreadable and skipped", *summary, root)
    _REPORTED[root] = summary
    return index


def _check(path: Path, verify: str) -> str | None:
    """None if ``path`` passes the ``verify`` check, else the reason."""
    try:
        if verify == "header":
            check_header(path)
        elif verify == "full":
            read_gray(path)
    except Exception as err:  # any decoder error means: skip this file
        return f"{type(err).__name__}: {err}"
    return None


def _cached_entries(cache: Path, root: Path) -> dict[str, list[Any]]:
    """``{relative path: [size, mtime_ns, reason or None]}`` of a previous index of ``root``."""
    if not cache.is_file():
        return {}
    try:
        data = json.loads(cache.read_text())
        if data.get("version") == INDEX_VERSION and data.get("root") == str(root):
            return {str(k): list(v) for k, v in dict(data["entries"]).items()}
    except (OSError, ValueError, KeyError, TypeError):
        log.warning("ignoring unreadable index cache %s; rebuilding", cache)
    return {}


def split_index(n: int, val_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Deterministic split of ``range(n)`` into (train, val) by a seeded permutation.

    ``ceil(val_fraction * n)`` items go to validation (at least one when ``val_fraction > 0``
    and ``n >= 2``); both lists are returned sorted.
    """
    if not 0 <= val_fraction < 1:
        raise ValueError(f"val_fraction={val_fraction} must be in [0, 1)")
    n_val = 0 if val_fraction == 0 else min(n - 1, max(1, int(np.ceil(val_fraction * n))))
    n_val = max(n_val, 0)
    perm = np.random.default_rng(seed).permutation(n)
    return sorted(perm[n_val:].tolist()), sorted(perm[:n_val].tolist())


def generated_paths(cfg: GeneratedData) -> list[Path]:
    """Stand-in paths of ``cfg``'s generated images, read back by
    :func:`sem_train.data.dataset.load_image_tensor`."""
    from sem_physics.samples import ALL_SAMPLE_KINDS

    rows, cols = cfg.shape
    return [
        GENERATED_ROOT
        / f"{kind}-{rows}x{cols}-s{cfg.seed + 10_000 * ALL_SAMPLE_KINDS.index(kind) + i}"
        for kind in cfg.kinds
        for i in range(cfg.n_per_kind)
    ]


def indexed_paths(cfg: DataConfig) -> tuple[list[Path], ImageIndex]:
    """The readable images under ``cfg.root`` (at most ``cfg.max_images``), then the generated
    ones (``cfg.generated``), and the index of the folder.

    Raises ValueError when there is neither a root nor generated images, or nothing to read.
    """
    extra = generated_paths(cfg.generated)
    if cfg.root is None:
        if extra:
            return extra, ImageIndex(root=GENERATED_ROOT, files=[])
        raise ValueError("data.root is not set: give a folder of SEM images (or --data)")
    index = build_index(
        cfg.root, cache_dir=cfg.cache_dir, refresh=cfg.refresh_index, verify=cfg.verify
    )
    paths = index.paths()[: cfg.max_images] if cfg.max_images else index.paths()
    paths = paths + extra
    if not paths:
        raise ValueError(
            f"no readable images under {index.root} (extensions {IMAGE_EXTENSIONS}; "
            f"{len(index.rejected)} unreadable)"
        )
    return paths, index

"""The image folder index and the data split: which images a run reads, without torch.

* :func:`build_index` lists the tree (sorted, so the order is the same on every machine),
  checks every file's header and caches each file's verdict as JSON, keyed on its name, size
  and modification time: an added, deleted or rewritten (e.g. corrupted) file is seen on the
  next run, and only such files are checked again. A float TIFF is decoded as well (NaN or
  inf pixels make it unreadable: refused here, not at every epoch). Copies of one picture
  are kept once: byte-identical files (same size, same SHA-256; hashed only among files of
  equal size) and files whose decoded pixels are identical (the same picture saved as PNG and
  as TIFF; decoded only among files of equal rows and columns in two or more formats, or
  in any format with ``verify="full"``; the digest cached). The first in sorted order stays, each copy is left out with a warning
  naming both (a copy on the other side of the train/validation split would validate on a
  training image). The cache lives in ``cache_dir`` or
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
from sem_physics.cli_support import stderr_is_terminal
from sem_physics.folders import image_files, report_not_followed
from sem_physics.io import max_pixels_limit, read_image

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

INDEX_VERSION = 3  # 3: each entry holds the image's rows and columns (from its header)


@dataclass
class ImageIndex:
    """The readable image files under ``root`` (relative POSIX paths, sorted) and the rejects
    (``{relative path: reason}``); ``shapes`` holds each readable file's (rows, columns) when
    its header was read (not with ``verify="none"``)."""

    root: Path
    files: list[str]
    rejected: dict[str, str] = field(default_factory=dict)
    cache_path: Path | None = None
    shapes: dict[str, tuple[int, int]] = field(default_factory=dict)
    #: Readable files :func:`indexed_paths` left out as smaller than the training crop.
    too_small: dict[str, str] = field(default_factory=dict)
    #: Copies left out: ``{copy: "byte-identical copy of <kept file>"}`` or, for the same
    #: picture in other bytes, ``{copy: "same pixels as <kept file>"}``.
    duplicates: dict[str, str] = field(default_factory=dict)

    def skipped(self) -> dict[str, str]:
        """``{absolute path: reason}`` of every file left out: unreadable, a copy of another
        file (byte-identical or the same pixels), or too small."""
        out = {str(self.root / rel): reason for rel, reason in self.rejected.items()}
        out.update({str(self.root / rel): reason for rel, reason in self.duplicates.items()})
        out.update({str(self.root / rel): reason for rel, reason in self.too_small.items()})
        return dict(sorted(out.items()))

    def __len__(self) -> int:
        return len(self.files)

    def paths(self) -> list[Path]:
        """Absolute paths of the readable files."""
        return [self.root / f for f in self.files]


#: Version of the file checks: a cached verdict of older checks is not reused (2: truncated
#: TIFFs refused by the header check; 3: the pixel limit applied to the declared size; 4: float
#: TIFFs decoded, NaN or inf pixels refused).
CHECK_VERSION = 4


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
    root : folder tree of TIFF (8/16-bit), PNG, JPEG or BMP files; other files are ignored,
        linked folders are read unless they loop (:func:`sem_physics.folders.image_files`,
        the walk of every command; one warning names those not followed).
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
    # the pixel limit (SEM_MAX_PIXELS) decides verdicts too: another limit, another cache
    rule = f"{root}|{sorted(extensions)}|{verify}|{CHECK_VERSION}|{max_pixels_limit()}"
    key = hashlib.sha1(rule.encode()).hexdigest()[:12]
    cache = _cache_location(root, Path(cache_dir) if cache_dir else None, key)
    known = {} if refresh else _cached_entries(cache, root)
    t0 = time.perf_counter()
    listing = image_files(root, extensions)
    found = listing.files
    report_not_followed(listing, log)  # once per folder: a run indexes it again
    entries: dict[str, list[Any]] = {}
    from tqdm.auto import tqdm

    bar = tqdm(
        found,
        desc=f"indexing {root.name}",
        unit="file",
        # a bar only where it takes a while, and not into a log file
        disable=verify == "none" or len(found) < 1000 or not _on_terminal(),
        leave=False,
    )
    for rel in bar:
        try:
            st = (root / rel).stat()
        except OSError as err:  # vanished or unreadable between listing and stat
            entries[rel] = [-1, -1, f"{type(err).__name__}: {err}", None]
            continue
        old = known.get(rel)
        if old is not None and old[:2] == [st.st_size, st.st_mtime_ns]:
            entries[rel] = old
            continue
        entries[rel] = [st.st_size, st.st_mtime_ns, *_check(root / rel, verify)]
    files = [rel for rel, e in entries.items() if e[2] is None]
    rejected = {rel: e[2] for rel, e in entries.items() if e[2] is not None}
    shapes = {
        rel: (int(e[3][0]), int(e[3][1]))
        for rel, e in entries.items()
        if e[2] is None and len(e) > 3 and isinstance(e[3], list) and len(e[3]) == 2
    }
    for rel, reason in rejected.items():
        if known.get(rel) != entries[rel]:
            log.warning("skipping unreadable image %s (%s)", root / rel, reason)
    duplicates = {} if verify == "none" else _duplicates(root, files, entries)
    if verify != "none":
        rest = [rel for rel in files if rel not in duplicates]
        same = _same_pixels(root, rest, entries, any_format=verify == "full")
        duplicates = dict(sorted({**duplicates, **same}.items()))
    if duplicates:
        files = [rel for rel in files if rel not in duplicates]
        _note_duplicates(root, duplicates)
    index = ImageIndex(root, files, rejected, cache, shapes, duplicates=duplicates)
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
        # naming them: a later run reads the verdicts from the cache and logs only this line
        log.warning(
            "%d of %d files under %s are unreadable and skipped: %s",
            *summary,
            root,
            _listed(sorted(rejected)),
        )
    _REPORTED[root] = summary
    return index


#: Bytes hashed at each end of a file to group candidates before a full hash.
_EDGE_BYTES = 64 * 1024


def _edge_digest(path: Path, size: int) -> str:
    """SHA-256 of the first and last :data:`_EDGE_BYTES` of a file (all of a small one)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        h.update(fh.read(_EDGE_BYTES))
        if size > 2 * _EDGE_BYTES:
            fh.seek(size - _EDGE_BYTES)
        h.update(fh.read(_EDGE_BYTES))
    return h.hexdigest()


def _full_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _duplicates(root: Path, files: list[str], entries: dict[str, list[Any]]) -> dict[str, str]:
    """``{copy: reason}`` for every readable file byte-identical to an earlier one (sorted
    order). Only files of equal size are compared: first by a hash of their first and last
    64 KiB (kept in the index cache with the file's entry, so a later run reads nothing
    again), then, where those agree, by the SHA-256 of the whole file."""
    by_size: dict[int, list[str]] = {}
    for rel in files:
        by_size.setdefault(int(entries[rel][0]), []).append(rel)
    out: dict[str, str] = {}
    for size, group in by_size.items():
        if len(group) < 2:
            continue
        by_edges: dict[str, list[str]] = {}
        for rel in group:
            entry = entries[rel]
            if len(entry) > 4 and isinstance(entry[4], str):
                digest = entry[4]
            else:
                try:
                    digest = _edge_digest(root / rel, size)
                except OSError:
                    continue
                entries[rel] = _with_field(entry, _EDGE_FIELD, digest)
            by_edges.setdefault(digest, []).append(rel)
        for same_edges in by_edges.values():
            if len(same_edges) < 2:
                continue
            first: dict[str, str] = {}
            for rel in same_edges:  # sorted: the first of identical files is kept
                try:
                    digest = _full_digest(root / rel)
                except OSError:
                    continue
                if digest in first:
                    out[rel] = f"{_BYTE_COPY}{first[digest]}"
                else:
                    first[digest] = rel
    return dict(sorted(out.items()))


#: Where an index entry (``[size, mtime_ns, reason, shape, ...]``) keeps the hash of the
#: file's first and last 64 KiB, and the digest of its decoded pixels.
_EDGE_FIELD, _PIXEL_FIELD = 4, 5

_BYTE_COPY, _SAME_PIXELS = "byte-identical copy of ", "same pixels as "


def _with_field(entry: list[Any], i: int, value: str) -> list[Any]:
    """``entry`` with field ``i`` set to ``value`` (padded with None; later fields kept)."""
    out = [*entry, *([None] * (i + 1 - len(entry)))]
    out[i] = value
    return out


def _pixel_digest(path: Path) -> str:
    """SHA-256 of the picture as training reads it (the pixels :func:`read_gray` returns:
    float32 grey levels on 0..255) and its shape: equal for the same picture in any format or
    bit depth. The file's notes (e.g. on JPEG input) are left to training, which reads it."""
    data = np.ascontiguousarray(read_image(path, log_notes=False).data, dtype=np.float32)
    h = hashlib.sha256(f"{data.shape[0]}x{data.shape[1]}|".encode())
    h.update(data.tobytes())
    return h.hexdigest()


#: File suffixes of one format (other suffixes are their own format).
_SAME_FORMAT = {".tiff": ".tif", ".jpeg": ".jpg"}


def _format(rel: str) -> str:
    """The image format of a file, from its suffix (``.tif`` and ``.tiff`` are one)."""
    suffix = Path(rel).suffix.lower()
    return _SAME_FORMAT.get(suffix, suffix)


def _same_pixels(
    root: Path, files: list[str], entries: dict[str, list[Any]], *, any_format: bool = False
) -> dict[str, str]:
    """``{copy: reason}`` for every readable file whose decoded pixels equal an earlier
    one's (sorted order) though its bytes differ: the same picture saved as PNG and as TIFF.
    Only files of equal rows and columns (from the header) among which two formats occur
    are decoded, each once (a corpus in one format is not decoded at all; ``any_format``,
    the ``verify="full"`` check that decodes every file anyway: every group of equal rows
    and columns): the digest is kept in the index cache with the file's entry."""
    by_shape: dict[Any, list[str]] = {}
    for rel in files:
        entry = entries[rel]
        shape = entry[3] if len(entry) > 3 and isinstance(entry[3], list) else None
        by_shape.setdefault(None if shape is None else tuple(shape), []).append(rel)
    # a corpus in one format decodes nothing here unless verify="full" decodes it anyway
    todo = [
        rel
        for group in by_shape.values()
        if len(group) > 1 and (any_format or len({_format(rel) for rel in group}) > 1)
        for rel in group
    ]
    from tqdm.auto import tqdm

    bar = tqdm(
        todo,
        desc=f"comparing pictures in {root.name}",
        unit="file",
        disable=len(todo) < 200 or not _on_terminal(),
        leave=False,
    )
    first: dict[str, str] = {}
    out: dict[str, str] = {}
    for rel in bar:  # sorted: the first of identical pictures is kept
        entry = entries[rel]
        digest = entry[_PIXEL_FIELD] if len(entry) > _PIXEL_FIELD else None
        if not isinstance(digest, str):
            try:
                digest = _pixel_digest(root / rel)
            except Exception:  # unreadable after all: the dataset reports it when it reads it
                continue
            entries[rel] = _with_field(entry, _PIXEL_FIELD, digest)
        if digest in first:
            out[rel] = f"{_SAME_PIXELS}{first[digest]}"
        else:
            first[digest] = rel
    return out


#: The copies already warned about, per indexed folder (warned about once per process).
_DUPES_REPORTED: dict[Path, dict[str, str]] = {}


def _note_duplicates(root: Path, duplicates: dict[str, str]) -> None:
    """One warning for the byte-identical copies and one for the other copies of a picture,
    naming each with the file kept; again only when the copies change."""
    if _DUPES_REPORTED.get(root) == duplicates:
        return
    _DUPES_REPORTED[root] = dict(duplicates)
    for prefix, what in (
        (_BYTE_COPY, "are byte-identical copies of another file"),
        (_SAME_PIXELS, "hold the same pixels as another file (the same picture in other bytes)"),
    ):
        pairs = [
            f"{rel} (= {reason.removeprefix(prefix)})"
            for rel, reason in duplicates.items()
            if reason.startswith(prefix)
        ]
        if pairs:
            log.warning(
                "%d file(s) under %s %s and are left out (each image once, on one side of "
                "the train/validation split): %s",
                len(pairs),
                root,
                what,
                _listed(pairs),
            )


def _on_terminal() -> bool:
    return stderr_is_terminal()


def _listed(names: list[str], most: int = 5) -> str:
    """``a.tif, b.tif`` (the first ``most`` names, then how many more)."""
    shown = ", ".join(names[:most])
    return shown + (f" and {len(names) - most} more" if len(names) > most else "")


def _check(path: Path, verify: str) -> tuple[str | None, list[int] | None]:
    """(None, its rows and columns or None) if ``path`` passes the ``verify`` check, else
    (the reason, None)."""
    shape: tuple[int, ...] | None = None
    try:
        if verify == "header":
            shape = check_header(path)
            if _float_tiff(path):  # NaN or inf pixels: unreadable, found here, not per epoch
                read_gray(path)
        elif verify == "full":
            shape = read_gray(path)[0].shape
    except Exception as err:  # any decoder error means: skip this file
        return f"{type(err).__name__}: {err}", None
    if isinstance(shape, tuple | list) and len(shape) >= 2:
        return None, [int(shape[0]), int(shape[1])]
    return None, None


def _float_tiff(path: Path) -> bool:
    """Whether ``path`` is a TIFF of floating-point samples (the one format here that can
    hold NaN or inf pixels)."""
    if path.suffix.lower() not in (".tif", ".tiff"):
        return False
    import tifffile

    with tifffile.TiffFile(path) as tif:
        return bool(tif.pages) and getattr(tif.pages[0].dtype, "kind", "") == "f"


def _cached_entries(cache: Path, root: Path) -> dict[str, list[Any]]:
    """``{relative path: [size, mtime_ns, reason or None]}`` of a previous index of ``root``."""
    if not cache.is_file():
        return {}
    try:
        data = json.loads(cache.read_text(encoding="utf-8"))
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


def too_small(
    rows: int, cols: int, fraction: float, min_side_px: int, bar_rows: int | None = None
) -> str | None:
    """Why an image of ``rows`` x ``cols`` px is left out of training (its side after the
    information-bar crop, ``bar_rows`` or ``round(fraction rows)``, is below the training crop
    ``min_side_px``), or None. The one rule of every ``sem train`` command: such an image is
    skipped with a warning, never upscaled."""
    cut = bar_rows if bar_rows is not None else round(fraction * rows)
    left = rows - min(int(cut), rows - 1)
    if min(left, cols) >= min_side_px:
        return None
    return (
        f"{left}x{cols} px after the info-bar crop is smaller than the {min_side_px}-px "
        f"training crop"
    )


#: (file, crop) pairs already warned about as too small (once per process, like the index).
_SMALL_REPORTED: set[tuple[str, int]] = set()


def note_too_small(path: Path | str, reason: str, min_side_px: int) -> None:
    """Log the one-line warning for an image left out as too small (once per file)."""
    key = (str(path), int(min_side_px))
    if key not in _SMALL_REPORTED:
        _SMALL_REPORTED.add(key)
        log.warning("skipping image %s: %s", path, reason)


def indexed_paths(cfg: DataConfig, min_side_px: int | None = None) -> tuple[list[Path], ImageIndex]:
    """The readable images under ``cfg.root`` (at most ``cfg.max_images``), then the generated
    ones (``cfg.generated``), and the index of the folder.

    A readable image whose side after the information-bar crop (``cfg.info_bar_fraction`` of
    its rows, from its header) is below ``min_side_px`` (default ``cfg.image_size_px``, the
    training crop) is left out with a one-line warning naming it and its size, and listed in
    the index's ``too_small``; ``cfg.max_images`` counts the images kept.

    Raises ValueError when there is neither a root nor generated images, or nothing to read.
    """
    min_side = cfg.image_size_px if min_side_px is None else int(min_side_px)
    extra = generated_paths(cfg.generated)
    if cfg.root is None:
        if extra:
            return extra, ImageIndex(root=GENERATED_ROOT, files=[])
        raise ValueError("data.root is not set: give a folder of SEM images (or --data)")
    index = build_index(
        cfg.root, cache_dir=cfg.cache_dir, refresh=cfg.refresh_index, verify=cfg.verify
    )
    kept = []
    for rel in index.files:
        shape = index.shapes.get(rel)
        reason = None if shape is None else too_small(*shape, cfg.info_bar_fraction, min_side)
        if reason is None:
            kept.append(rel)
        else:
            index.too_small[rel] = reason
            note_too_small(index.root / rel, reason, min_side)
    kept = kept[: cfg.max_images] if cfg.max_images else kept
    paths = [index.root / rel for rel in kept] + extra
    if not paths:
        small = f", {len(index.too_small)} smaller than the {min_side}-px training crop"
        raise ValueError(
            f"no readable images under {index.root} (extensions {IMAGE_EXTENSIONS}; "
            f"{len(index.rejected)} unreadable{small if index.too_small else ''})"
        )
    return paths, index

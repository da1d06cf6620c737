"""``data_split.json``: the images a run trains and validates on, and those it left out.

Every training run (the pretraining stages, the fine-tune, the baselines) records in its run
folder the files of its training and validation sets and, under ``skipped``, every file of the
data folder it left out with the reason (unreadable, or smaller than the training crop). A
``--resume`` compares the data with that record before it continues (:func:`prepare_split`):
a file added, removed, rewritten (another size than the record's ``fingerprints``) or no
longer readable, or another split, is refused with one line (a file of the same size with
another modification time is logged as a warning: a copy without its times, or a rewrite)
(a resumed run must keep validating on the images it started with), and the saved record is
never overwritten by a resume. No torch is imported here.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
from sem_physics.atomic import atomic_write_text

from .runfolder import RunFolder, read_json

log = logging.getLogger(__name__)

__all__ = [
    "SPLIT_FILE",
    "ResumeDataError",
    "check_resume_split",
    "finetune_paths",
    "fingerprints",
    "min_side_px",
    "prepare_split",
    "split_record",
    "write_split_record",
]

SPLIT_FILE = "data_split.json"


class ResumeDataError(ValueError):
    """``--resume`` over data other than the run started with."""


def min_side_px(kind: str, cfg: Any) -> int:
    """The training crop of a run of ``kind``: images smaller than it are skipped
    (:func:`sem_train.data.index.indexed_paths`). A baseline's patch, else the model input."""
    if kind == "baseline":
        return int(getattr(cfg, "patch_size_px", None) or cfg.data.image_size_px)
    return int(cfg.data.image_size_px)


def finetune_paths(cfg: Any) -> tuple[list[Path], list[Path], list[Path], Any]:
    """(training, validation, every indexed image, the index) of a fine-tune: validation
    images from a seeded split, training images a seeded random sample of the rest (not the
    first files in folder order, which would draw all ten from one or two sources of a corpus
    sorted by name)."""
    from .data.index import indexed_paths, split_index

    paths, index = indexed_paths(cfg.data, min_side_px("finetune", cfg))
    frac = cfg.n_val_images / max(len(paths), 1) if cfg.n_val_images else 0.0
    tr, va = split_index(len(paths), min(frac, 0.9), cfg.data.split_seed)
    if len(tr) < cfg.n_train_images:
        raise ValueError(
            f"n_train_images={cfg.n_train_images} but only {len(tr)} training images under "
            f"{cfg.data.root}"
        )
    pick = np.random.default_rng(cfg.data.split_seed).permutation(len(tr))[: cfg.n_train_images]
    train = [paths[tr[i]] for i in sorted(pick)]
    return train, [paths[i] for i in va[: cfg.n_val_images]], paths, index


def split_record(kind: str, cfg: Any) -> dict[str, Any]:
    """What ``data_split.json`` of a run of ``kind`` with ``cfg`` holds: ``train`` and
    ``validation`` (absolute paths), ``files`` (every image the split was drawn from, for the
    runs that train on a sample of them: the fine-tune and the baselines), ``skipped``
    (``{path: reason}``) and ``fingerprints`` (``{path: [size, mtime_ns]}``, :func:`fingerprints`)."""
    from .data.index import indexed_paths, split_index

    files: list[Path] | None = None
    if kind == "finetune":
        train, val, files, index = finetune_paths(cfg)
    else:
        paths, index = indexed_paths(cfg.data, min_side_px(kind, cfg))
        tr, va = split_index(len(paths), cfg.data.val_fraction, cfg.data.split_seed)
        if kind == "baseline":
            tr, files = tr[: cfg.n_train_images], paths
        train, val = [paths[i] for i in tr], [paths[i] for i in va]
    record: dict[str, Any] = {
        "kind": kind,
        "data_root": None if cfg.data.root is None else os.path.abspath(cfg.data.root),
        "train": [str(p) for p in train],
        "validation": [str(p) for p in val],
    }
    if files is not None:
        record["files"] = [str(p) for p in files]
    record["skipped"] = index.skipped()
    record["fingerprints"] = fingerprints(sorted(_files(record)))
    return record


def fingerprints(paths: list[str]) -> dict[str, list[int]]:
    """``{path: [size in bytes, mtime in ns]}`` of each file (generated images, which have no
    file, are left out): what :func:`check_resume_split` compares to see a file rewritten under
    the same name. One ``stat`` per file, no byte read: a corpus of 100 000 images costs no
    more than the index already does (a content hash would read every file at each start)."""
    out: dict[str, list[int]] = {}
    for p in paths:
        try:
            st = os.stat(p)
        except OSError:
            continue
        out[p] = [int(st.st_size), int(st.st_mtime_ns)]
    return out


def _changed(saved: dict[str, Any], record: dict[str, Any]) -> tuple[list[str], list[str]]:
    """(files of both records whose size differs, files of the same size whose modification
    time differs); none for a record written before fingerprints were kept."""
    old, new = saved.get("fingerprints"), record.get("fingerprints")
    if not isinstance(old, dict) or not isinstance(new, dict):
        return [], []
    both = sorted(set(old) & set(new))
    resized = [p for p in both if list(old[p])[:1] != list(new[p])[:1]]
    retimed = [p for p in both if p not in resized and list(old[p]) != list(new[p])]
    return resized, retimed


def _files(record: dict[str, Any]) -> set[str]:
    files = record.get("files")
    if isinstance(files, list):
        return {str(f) for f in files}
    return {str(f) for f in [*record.get("train", []), *record.get("validation", [])]}


def _short(path: str, root: str | None) -> str:
    if root and path.startswith(root.rstrip(os.sep) + os.sep):
        return path[len(root.rstrip(os.sep)) + 1 :]
    return path


def _listed(names: list[str], most: int = 3) -> str:
    shown = ", ".join(names[:most])
    return shown + (f" and {len(names) - most} more" if len(names) > most else "")


def _rebased(saved: dict[str, Any], root: str | None) -> dict[str, Any]:
    """``saved`` (a ``data_split.json``) with the paths under its ``data_root`` moved under
    ``root``: a data folder moved or renamed since the run started holds the same files at the
    same places in it, which the comparison then sees as the same."""
    old = saved.get("data_root")
    if not (isinstance(old, str) and isinstance(root, str)) or old == root:
        return saved
    head = old.rstrip(os.sep) + os.sep

    def moved(path: Any) -> Any:
        text = str(path)
        return os.path.join(root, text[len(head) :]) if text.startswith(head) else path

    out = dict(saved, data_root=root)
    for key in ("train", "validation", "files"):
        if isinstance(saved.get(key), list):
            out[key] = [moved(p) for p in saved[key]]
    for key in ("fingerprints", "skipped"):
        if isinstance(saved.get(key), dict):
            out[key] = {moved(p): v for p, v in saved[key].items()}
    return out


def check_resume_split(
    run_dir: str | Path, record: dict[str, Any], new_run: str | None = None
) -> None:
    """Refuse to resume the run in ``run_dir`` over data other than it started with: the files
    of ``record`` (:func:`split_record`) against its ``data_split.json`` (nothing to compare
    without one: an older run, or one interrupted before it was written). The refusal says
    how to start a new run instead: ``new_run`` when given (a recipe's way), else a single
    stage's (``--init-from`` the run's model)."""
    run_dir = Path(run_dir)
    saved = read_json(run_dir / SPLIT_FILE)
    if saved is None or not isinstance(saved.get("train"), list):
        return
    saved = _rebased(saved, record.get("data_root"))
    old, new = _files(saved), _files(record)
    same = saved.get("train") == record["train"] and saved.get("validation") == record["validation"]
    changed, retimed = _changed(saved, record)
    root = record.get("data_root")
    if retimed:  # a copy without its times (cp without -p, another machine) or a rewrite
        names = [_short(p, root) for p in retimed]
        log.warning(
            "%d data file(s) of the same size as when the run started have another "
            "modification time (%s): copied without their times, or rewritten; the resume "
            "continues (a rewritten image would make it another run)",
            len(names),
            _listed(names),
        )
    if old == new and same and not changed:
        return
    added = sorted(_short(p, root) for p in new - old)
    gone = sorted(old - new)
    skipped = record.get("skipped", {})
    parts = []
    if added:
        parts.append(f"{len(added)} file(s) added ({_listed(added)})")
    unreadable = [_short(p, root) for p in gone if p in skipped]
    removed = [_short(p, root) for p in gone if p not in skipped]
    if removed:
        parts.append(f"{len(removed)} file(s) removed ({_listed(removed)})")
    if unreadable:
        parts.append(f"{len(unreadable)} file(s) now skipped ({_listed(unreadable)})")
    if changed:
        names = [_short(p, root) for p in changed]
        parts.append(
            f"{len(names)} file(s) rewritten under the same name, another size ({_listed(names)})"
        )
    if not parts and not same:
        parts.append("the same files are split differently into training and validation")
    kind = saved.get("kind") or record.get("kind")
    if new_run is None and kind in ("stage1", "stage3", "finetune"):
        new_run = f"--init-from {run_dir} --output-dir NEW_FOLDER to continue from its model"
    elif new_run is None:
        new_run = "--output-dir NEW_FOLDER"
    raise ResumeDataError(
        f"--resume: the data changed since {run_dir} started ({run_dir / SPLIT_FILE}): "
        f"{'; '.join(parts)}; a resumed run keeps the training and validation images it "
        f"started with; restore the data folder to resume it, or start a new run ({new_run})"
    )


def prepare_split(kind: str, cfg: Any, resume: bool) -> dict[str, Any]:
    """The :func:`split_record` of a run, checked against the run's saved one when it resumes
    from a checkpoint (:func:`check_resume_split`)."""
    record = split_record(kind, cfg)
    folder = RunFolder(cfg.run.output_dir)
    if resume and folder.has_checkpoint:
        check_resume_split(folder.run_dir, record)
    return record


def write_split_record(out: str | Path, record: dict[str, Any], resume: bool = False) -> Path:
    """Write ``record`` to ``out/data_split.json``; a resume writes it only where the run has
    none yet (the split a run started with is never replaced by a resume)."""
    out = Path(out)
    path = out / SPLIT_FILE
    if resume and path.is_file():
        return path
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(record, indent=2))
    return path

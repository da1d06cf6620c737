"""Evaluation images a given checkpoint trained or validated on (``sem benchmark``).

A ``sem train`` run writes ``data_split.json`` into its run folder (its training and
validation images, :mod:`sem_train.datasplit`) and names in ``run_info.json`` the model
exports it started from (``model_exports``: ``init_from``, and Stage 3's ``teacher_from``).
For every weights source the user gave a method (``checkpoint_dir``, ``weights_path``) the
run folder holding it is found (the folder itself, or the run whose ``checkpoints/`` or
``model/`` folder holds the export), then the runs it descends from, as far as they are
recorded: a fine-tune -> its Stage 3 -> Stage 2 -> Stage 1. An evaluation image is *seen*
when its file is among those runs' training or validation images: the same resolved path,
a file of the same size and SHA-256 (a copy of one, under another name), or the same
picture in another form: re-saved in another format or bit depth, rescaled by an integer
factor, or cropped (:mod:`.likeness`; compared for up to :data:`CONTENT_MAX_FILES` files).

Evaluating on such images is sometimes intended, so the benchmark only says so (a warning on
stderr, the row marked in ``table.md`` and the report): its scores on them are optimistic.
A checkpoint without a ``data_split.json`` (the shipped model, an external one) is not looked
into. Reads JSON, file contents (equal-sized files) and pictures (:mod:`.likeness`); no
torch.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "SEEN_MARK",
    "RunSplit",
    "SeenImage",
    "format_warning",
    "lineage",
    "method_note",
    "report_footnote",
    "run_folder_of",
    "seen_cells",
    "seen_images",
    "table_note",
]

log = logging.getLogger(__name__)

SPLIT_FILE = "data_split.json"  # as sem_train.datasplit.SPLIT_FILE (not imported: no numpy)
RUN_INFO_FILE = "run_info.json"
#: The run_info/config keys naming the models a run started from.
_PARENT_KEYS = ("init_from", "teacher_from")
#: Runs followed at most from one checkpoint (a recipe is 4; a loop in the records stops too).
_MAX_RUNS = 32
#: The mark of a row whose evaluation images its checkpoint's runs trained or validated on.
SEEN_MARK = "†"
#: What :data:`SEEN_MARK` means, in every note that explains it.
SEEN_MEANING = (
    "evaluated on images its checkpoint (or a run it descends from) trained or validated on "
    "(the same files, or their pictures re-saved, rescaled or cropped), so its scores are "
    "optimistic"
)
#: Training and validation files compared by picture at most (each is read once, then cached).
CONTENT_MAX_FILES = 5000


def _read(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _real(path: str | Path) -> str:
    return os.path.realpath(os.path.expanduser(str(path)))


@dataclass
class RunSplit:
    """The training and validation images one run recorded, and the run it started from."""

    run_dir: Path
    kind: str
    train: list[str]
    validation: list[str]
    parents: list[Path] = field(default_factory=list)


def run_folder_of(path: str | Path) -> Path | None:
    """The ``sem train`` run folder holding ``path`` (a run folder, an export in its
    ``checkpoints/`` or ``model/`` folder, or a weights file there): the nearest of the path
    and its two parent folders that holds ``data_split.json``; None when there is none."""
    p = Path(path)
    if p.is_file():
        p = p.parent
    for depth, folder in enumerate([p, *list(p.parents)[:2]]):
        if not (folder / SPLIT_FILE).is_file():
            continue
        # a parent folder counts only as a run folder (not any folder with such a file)
        if depth == 0 or (folder / RUN_INFO_FILE).is_file() or (folder / "checkpoints").is_dir():
            return folder
    return None


def _parents(run_dir: Path) -> list[Path]:
    """The model exports the run in ``run_dir`` started from (``run_info.json``'s
    ``model_exports``, else the ``init_from``/``teacher_from`` of its ``config.json``)."""
    found: list[str] = []
    info = _read(run_dir / RUN_INFO_FILE) or {}
    exports = info.get("model_exports")
    if isinstance(exports, Mapping):
        found = [str(exports[k]) for k in _PARENT_KEYS if exports.get(k)]
    if not found:
        config = _read(run_dir / "config.json") or {}
        found = [str(config[k]) for k in _PARENT_KEYS if isinstance(config.get(k), str)]
    return [Path(f) for f in found]


def _split(run_dir: Path) -> RunSplit | None:
    record = _read(run_dir / SPLIT_FILE)
    if record is None:
        return None
    lists = {k: record.get(k) for k in ("train", "validation")}
    paths = {k: [str(x) for x in v] if isinstance(v, list) else [] for k, v in lists.items()}
    return RunSplit(
        run_dir=run_dir,
        kind=str(record.get("kind") or "run"),
        train=paths["train"],
        validation=paths["validation"],
        parents=_parents(run_dir),
    )


def lineage(checkpoint: str | Path) -> list[RunSplit]:
    """The recorded splits of the run holding ``checkpoint`` and of every run it descends
    from (``init_from``, ``teacher_from``, followed as far as they are recorded), nearest
    first; empty when ``checkpoint`` is not in a run folder with a ``data_split.json``."""
    start = run_folder_of(checkpoint)
    queue = [start] if start is not None else []
    seen: set[str] = set()
    runs: list[RunSplit] = []
    while queue and len(runs) < _MAX_RUNS:
        run_dir = queue.pop(0)
        key = _real(run_dir)
        if key in seen:
            continue
        seen.add(key)
        split = _split(run_dir)
        if split is None:
            continue
        runs.append(split)
        for parent in split.parents:
            folder = run_folder_of(parent) if parent.exists() else None
            if folder is not None:
                queue.append(folder)
    return runs


@dataclass
class SeenImage:
    """One evaluation image among a checkpoint's runs' training or validation images."""

    image: str
    role: str  # "training" or "validation"
    run_dir: str
    run_kind: str
    file: str  # the file as the run recorded it
    #: "path"; "content" (the same bytes under another path); "picture" (the same picture
    #: re-saved, rescaled or cropped: :mod:`.likeness`, its score in ``likeness``)
    how: str = "path"
    other_runs: list[str] = field(default_factory=list)  # further runs that used it
    likeness: float | None = None

    def describe(self) -> str:
        copy = f", a copy of {self.file}" if self.how == "content" else ""
        if self.how == "picture":
            copy = f", the picture of {self.file} re-saved, rescaled or cropped"
        more = f"; also in {len(self.other_runs)} earlier run(s)"
        more = more if self.other_runs else ""
        return f"{self.image} ({self.role} of {self.run_kind} run {self.run_dir}{copy}{more})"


def _sha256(path: str) -> str | None:
    try:
        with open(path, "rb") as fh:
            return hashlib.file_digest(fh, "sha256").hexdigest()
    except OSError:
        return None


def _size(path: str) -> int | None:
    try:
        return os.stat(path).st_size
    except OSError:
        return None


def seen_images(
    checkpoints: Iterable[str | Path], evaluated: Mapping[str, Sequence[str]]
) -> list[SeenImage]:
    """The images of ``evaluated`` (image name -> its files: the focused reference and, for
    real input, the defocused file) that the runs of ``checkpoints`` (:func:`lineage`)
    trained or validated on. Matched by resolved path; a file of another path is compared by
    SHA-256 when its size equals an evaluated file's (so only likely copies are read); the
    images still unmatched then by picture (:mod:`.likeness`: re-saved, rescaled, cropped)."""
    runs: list[RunSplit] = []
    done: set[str] = set()
    for ck in checkpoints:
        for run in lineage(ck):
            if _real(run.run_dir) not in done:
                done.add(_real(run.run_dir))
                runs.append(run)
    if not runs:
        return []
    by_path: dict[str, str] = {}
    for image, files in evaluated.items():
        for f in files:
            by_path.setdefault(_real(f), image)
    sizes: dict[int, list[str]] = {}
    for path in by_path:
        size = _size(path)
        if size is not None:
            sizes.setdefault(size, []).append(path)
    digests: dict[str, str | None] = {}

    def digest(path: str) -> str | None:
        if path not in digests:
            digests[path] = _sha256(path)
        return digests[path]

    found: dict[str, SeenImage] = {}

    def record(
        image: str, run: RunSplit, role: str, f: str, how: str, score: float | None = None
    ) -> None:
        if image not in found:
            found[image] = SeenImage(image, role, str(run.run_dir), run.kind, f, how)
            found[image].likeness = score
        elif str(run.run_dir) not in [found[image].run_dir, *found[image].other_runs]:
            found[image].other_runs.append(str(run.run_dir))

    for run, role, f in _files_of(runs):
        real = _real(f)
        found_as: str | None = by_path.get(real)
        how = "path"
        if found_as is None:
            same_size = sizes.get(_size(real) or -1, [])
            d = digest(real) if same_size else None
            match = next((p for p in same_size if d is not None and digest(p) == d), None)
            found_as, how = (by_path[match], "content") if match else (None, how)
        if found_as is not None:
            record(found_as, run, role, f, how)
    rest = {k: v for k, v in evaluated.items() if k not in found}
    for image, run, role, f, score in _same_pictures(runs, rest):
        record(image, run, role, f, "picture", round(score, 4))
    order = list(evaluated)
    return sorted(found.values(), key=lambda s: order.index(s.image))


def _files_of(runs: Sequence[RunSplit]) -> list[tuple[RunSplit, str, str]]:
    """(run, role, file) of every training and validation file of ``runs``, nearest run first."""
    return [
        (run, role, f)
        for run in runs
        for role, files in (("training", run.train), ("validation", run.validation))
        for f in files
    ]


def _same_pictures(
    runs: Sequence[RunSplit], evaluated: Mapping[str, Sequence[str]]
) -> list[tuple[str, RunSplit, str, str, float]]:
    """(image, run, role, file, likeness) of each file of ``runs`` whose picture an image of
    ``evaluated`` is in another form (:mod:`.likeness`); files that cannot be read are skipped."""
    from .likeness import MATCH_THRESHOLD, Likeness, signature

    files = _files_of(runs)
    if not evaluated or not files:
        return []
    if len({_real(f) for _, _, f in files}) > CONTENT_MAX_FILES:
        log.warning(
            "%d training/validation files: more than %d, so evaluation images are matched to "
            "them by path and exact copy only, not by picture",
            len(files),
            CONTENT_MAX_FILES,
        )
        return []
    mine = {k: [s for s in map(signature, v) if s is not None] for k, v in evaluated.items()}
    compare = Likeness()
    out = []
    for run, role, f in files:
        theirs = signature(f)
        if theirs is None:
            continue
        for image, sigs in mine.items():
            score = max((compare.score(e, theirs) for e in sigs), default=0.0)
            if score >= MATCH_THRESHOLD:
                out.append((image, run, role, f, score))
    return out


def _listed(seen: Sequence[SeenImage], most: int = 6) -> str:
    shown = "; ".join(s.describe() for s in seen[:most])
    return shown + (f"; and {len(seen) - most} more" if len(seen) > most else "")


def format_warning(method: str, seen: Sequence[SeenImage], n_images: int) -> str:
    """The stderr line of method ``method`` (``sem: warning: ...``)."""
    return (
        f"sem: warning: {method}: {len(seen)} of the {n_images} evaluation image(s) are "
        f"training or validation images of the checkpoint it was given (or of a run it "
        f"descends from): {_listed(seen)}; its scores on them are optimistic (evaluate on "
        "images none of its runs used, e.g. another `images` folder)"
    )


def table_note(seen: Mapping[str, Sequence[SeenImage]], n_images: int) -> str:
    """The line under ``table.md`` explaining the rows marked :data:`SEEN_MARK`."""
    parts = [
        f"{method}: {len(s)} of {n_images} ({', '.join(x.image for x in s)}; runs: "
        f"{', '.join(dict.fromkeys(x.run_dir for x in s))})"
        for method, s in seen.items()
        if s
    ]
    if not parts:
        return ""
    return f"{SEEN_MARK}: {SEEN_MEANING} — {' — '.join(parts)}."


def report_footnote() -> str:
    """The line closing ``report.md`` when a row is marked :data:`SEEN_MARK`."""
    return (
        f"{SEEN_MARK} after a method's name, in every table: {SEEN_MEANING}. The Summary's note "
        "and the Methods section name the images and the runs."
    )


def seen_cells(seen: Mapping[str, Sequence[SeenImage]]) -> set[tuple[str, str]]:
    """(method, image) of every seen evaluation image: the per-image rows to flag."""
    return {(method, x.image) for method, images in seen.items() for x in images}


def method_note(seen: Sequence[SeenImage]) -> str:
    """The methods table's note of a method with seen images."""
    return (
        f"{SEEN_MARK} {len(seen)} evaluation image(s) among its checkpoint's training/validation "
        f"images: {_listed(seen)}"
    )

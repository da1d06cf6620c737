"""The weights a learned method of an evaluation reads: which files, their fingerprint, and
whether a given checkpoint is of the kind the method takes.

A stored method result is reused only while the weights it was made with are unchanged, so
the resume key (:func:`sem_train.evaluation.runner.method_hash`) holds a fingerprint of what
the method will read, not of the path as written: a ``sem train`` run folder resolves to its
best export, a sem-models export is its ``config.json`` + ``model.safetensors``, an unset
checkpoint is the model shipped with sem-models. The fingerprint is the SHA-256 of every byte
of those files. Size and mtime would not do: a retrained model of the same architecture has the
same size, and a copy (``cp -p``, ``rsync -t``, an unpacked archive) keeps an older mtime.
Measured on this project's 2-core CPU: ~10 ms for the shipped model (12 MB), 0.8 s (1.5 s
uncached) for ViT-L weights (1.2 GB), once per run, against the minutes to hours of fine-tuning
that model.

The report names these weights per method (:meth:`MethodWeights.describe`), so a row credits
the model that made it. The evaluation config checks a given checkpoint's kind
(:func:`check_checkpoint_kind`, by sem_baselines' rules) from its ``config.json`` before any
work. No weights are loaded here, but :func:`method_weights` and, for a method given a
``checkpoint_dir``, :func:`checkpoint_kind_problem` validate the settings with the method's
config class: they import the method's module (and, for a learned method, torch).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "MethodWeights",
    "WeightsSource",
    "check_checkpoint_kind",
    "checkpoint_kind_problem",
    "method_weights",
]

#: The files of a sem-models export (and of a saved restorer: ``network/`` for the MAE ones).
_EXPORT_FILES = ("config.json", "model.safetensors")
_FOLDER_FILES = (*_EXPORT_FILES, "network/config.json", "network/model.safetensors")
_SHORT = 12  # hex digits of the fingerprint shown in reports


class WeightsSource(BaseModel):
    """One source of weights (or of the config read with them) and its fingerprint."""

    model_config = ConfigDict(extra="forbid")

    role: Literal["weights", "head"] = Field(
        default="weights",
        description="weights: the model loaded; head: only its restoration head read",
    )
    setting: str | None = Field(default=None, description="the method's setting that named it")
    given: str | None = Field(default=None, description="the path as given (None: shipped model)")
    shipped: str | None = Field(
        default=None, description="name of the model shipped with sem-models"
    )
    version: str | None = Field(default=None, description="sem-models version of a shipped model")
    path: str = Field(description="the folder or file read")
    files: dict[str, str] = Field(default_factory=dict, description="file -> SHA-256")
    missing: str | None = Field(default=None, description="why nothing could be read there")

    @property
    def sha256(self) -> str:
        """One SHA-256 over the files and their digests ("" when nothing was found)."""
        if not self.files:
            return ""
        lines = "".join(f"{k}\0{v}\n" for k, v in sorted(self.files.items()))
        return hashlib.sha256(lines.encode()).hexdigest()

    def key(self) -> list[str]:
        """What the resume key holds: the contents, not where they lie."""
        return [self.role, self.sha256 or f"missing: {self.missing}"]

    def describe(self) -> str:
        """One line for the report, e.g. ``runs/ft -> runs/ft/checkpoints/best-... (sha256 ..)``."""
        digest = f"sha256 {self.sha256[:_SHORT]}" if self.files else f"not found: {self.missing}"
        if self.shipped is not None:
            what = f"the `{self.shipped}` model shipped with sem-models {self.version or ''}"
            what = what.rstrip()
        else:
            what = f"`{self.given}`" + (f" → `{self.path}`" if self.path != self.given else "")
        if self.role == "head":
            what = f"restoration head from {what} (`config.json`)"
        return f"{what} ({digest})"


class MethodWeights(BaseModel):
    """Every weights source a method reads, and whether it is trained or fine-tuned here."""

    model_config = ConfigDict(extra="forbid")

    sources: list[WeightsSource] = Field(default_factory=list)
    trained_here: bool = False
    unset: str | None = Field(default=None, description="the weights setting it needs, left unset")

    def key(self) -> list[list[str]]:
        """The contents part of a method's resume key."""
        return [s.key() for s in self.sources]

    def describe(self) -> str:
        """The report's line: what was loaded, and whether it was trained here."""
        loaded = "; ".join(s.describe() for s in self.sources)
        if self.unset is not None and not loaded:
            return f"none ({self.unset} not set)"
        if not loaded:
            return "trained here on the protocol's training images" if self.trained_here else ""
        return f"{loaded}; fine-tuned here" if self.trained_here else loaded

    @property
    def user_given(self) -> list[WeightsSource]:
        """The sources the user named (not shipped with the toolkit)."""
        return [s for s in self.sources if s.given is not None]


def _sha256(path: Path) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def _fingerprint(path: Path, names: tuple[str, ...] = _FOLDER_FILES) -> dict[str, str]:
    """SHA-256 of a weights file, or of the files ``names`` a folder holds."""
    if path.is_file():
        return {path.name: _sha256(path)}
    return {n: _sha256(path / n) for n in names if (path / n).is_file()}


def _resolved(setting: str, given: str) -> Path:
    """What a method reads for a path it is given: the export behind a ``checkpoint_dir``
    (as ``sem restore --checkpoint`` resolves it), else the path itself."""
    from sem_models.checkpoint import CheckpointError

    from ..restoration.methods import CheckpointMismatchError, model_export_dir

    path = Path(given)
    if setting != "checkpoint_dir":
        return path
    try:
        return model_export_dir(path, what=setting)
    except (CheckpointMismatchError, CheckpointError):
        return path  # read as it is: the method's own error names what is wrong


def _given(setting: str, given: str) -> WeightsSource:
    """The weights a path given in ``setting`` stands for, fingerprinted."""
    path = _resolved(setting, given)
    files = _fingerprint(path) if path.exists() else {}
    missing = None if files else f"no weights file at {path}"
    return WeightsSource(setting=setting, given=given, path=str(path), files=files, missing=missing)


def _shipped(name: str, role: Literal["weights", "head"] = "weights") -> WeightsSource:
    """Shipped model ``name`` (only its ``config.json`` for a ``head``), fingerprinted."""
    from importlib.metadata import PackageNotFoundError, version

    from sem_models.pretrained import ShippedModelMissingError, shipped_model_dir

    try:
        ver: str | None = version("sem-models")
    except PackageNotFoundError:
        ver = None
    try:
        folder = shipped_model_dir(name)
    except ShippedModelMissingError as err:
        return WeightsSource(role=role, shipped=name, version=ver, path="", missing=str(err))
    names = ("config.json",) if role == "head" else _EXPORT_FILES
    files = _fingerprint(folder, names)
    return WeightsSource(role=role, shipped=name, version=ver, path=str(folder), files=files)


def method_weights(name: str, settings: Mapping[str, Any]) -> MethodWeights:
    """The weights registered method ``name`` with ``settings`` will read, fingerprinted (no
    source and not trained here for a method without weights: a deconvolution, the input)."""
    from sem_baselines import registry_entry, restorer_config
    from sem_baselines.checkpoint_kinds import shipped_default

    from .methods import trains_here

    entry = registry_entry(name)
    config = restorer_config(name, **settings)
    fine_tunes = entry.fine_tunes(config)
    field = entry.checkpoint_field
    given = getattr(config, field) if field else None
    sources: list[WeightsSource] = []
    if field is not None and given is not None:
        sources.append(_given(field, str(given)))
    elif (
        field is not None and (shipped := shipped_default(name, fine_tunes=fine_tunes)) is not None
    ):
        sources.append(_shipped(shipped))
    if fine_tunes and getattr(config, "head", None) == "shipped":  # sem-foundation's head
        sources.append(_shipped("sem-foundation", role="head"))
    # a method that loads weights and is not trained from nothing without them (mae-sem is)
    unset = field if field is not None and not sources and entry.fitting != "pretrained" else None
    return MethodWeights(sources=sources, trained_here=trains_here(name, settings), unset=unset)


def checkpoint_kind_problem(name: str, settings: Mapping[str, Any]) -> str | None:
    """Why the sem-models export ``settings`` give method ``name`` is of the wrong kind for it
    (read from its ``config.json``: :func:`sem_baselines.checkpoint_kinds.export_kind_problem`),
    or None.

    Only what a ``config.json`` shows: weights that do not match it show at run time.
    """
    given = settings.get("checkpoint_dir")
    if given is None:  # nothing given: no method module to import (torch stays unloaded)
        return None
    from sem_baselines import registry_entry, restorer_config
    from sem_baselines.checkpoint_kinds import export_kind_problem
    from sem_models.checkpoint import CheckpointError

    entry = registry_entry(name)
    if entry.checkpoint_field != "checkpoint_dir":
        return None
    fine_tunes = entry.fine_tunes(restorer_config(name, **settings))
    folder = _resolved("checkpoint_dir", str(given))
    try:
        return export_kind_problem(name, folder, fine_tunes=fine_tunes)
    except CheckpointError as err:  # names the file and what is wrong with it
        return str(err)


#: What to do instead, per method whose checkpoint kind is refused (an evaluation's options).
_KIND_HINTS = {
    "sem-foundation": "fine-tune it first (`sem train finetune --init-from {given}`), set "
    "sem-foundation.finetune_here=true to fine-tune it on this evaluation's training images, "
    "or evaluate it as sem-foundation-zero-shot",
    "sem-foundation-zero-shot": "evaluate it as sem-foundation, or give the pretrained "
    "(Stage-3) run it was fine-tuned from",
    "mae-sem": "give a dense run (Stage 1, or `sem train recipe --dense`), or evaluate it as "
    "sem-foundation",
}


def check_checkpoint_kind(name: str, settings: Mapping[str, Any], where: str) -> None:
    """ValueError, naming ``where`` (``method_config.sem-foundation``), the path and what to do,
    when the checkpoint ``settings`` give method ``name`` is of a kind it does not take."""
    problem = checkpoint_kind_problem(name, settings)
    if problem is None:
        return
    given = settings["checkpoint_dir"]
    hint = _KIND_HINTS.get(name, "").format(given=given)
    raise ValueError(f"{where}.checkpoint_dir={given}: {problem}" + (f"; {hint}" if hint else ""))

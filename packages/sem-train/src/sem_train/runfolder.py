"""What a run folder holds, checked from its paths alone (no torch): the one place that
decides whether a run may start in a folder, whether ``--resume`` has a run to continue, and
which exported model a run folder given as a model (``init_from``) stands for.

:class:`sem_train.checkpoint.Checkpointer` is a :class:`RunFolder` that also writes and reads
the checkpoints; the ``sem train`` commands use :class:`RunFolder` itself, so that a folder
is refused before seconds of imports.
"""

from __future__ import annotations

import errno
import json
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any

from sem_models.checkpoint import CONFIG_NAME, WEIGHTS_NAME, best_export

__all__ = [
    "RUN_INFO_NAME",
    "CheckpointError",
    "RunExistsError",
    "RunFolder",
    "read_json",
    "read_pointer",
    "resolve_model_dir",
]

#: Written into the run folder when a run starts (:func:`sem_train.runinfo.write_run_info`),
#: before anything else of the run: its presence says the folder holds a run of this toolkit.
RUN_INFO_NAME = "run_info.json"


#: The run folders whose start this context has checked: ``(folder, resume)`` -> the
#: resumable settings a resume changes (see :meth:`RunFolder.checked`).
_CHECKED: ContextVar[Mapping[tuple[str, bool], dict[str, list[Any]]] | None] = ContextVar(
    "sem_train_checked_runs", default=None
)


class RunExistsError(ValueError):
    """A fresh run was asked to write into the folder of an existing run."""


class CheckpointError(ValueError):
    """A file given as a checkpoint (weights, state, pointer) is missing parts or unreadable."""


def _load_object(path: Path) -> dict[str, Any]:
    """The JSON object in ``path``; OSError or ValueError (saying why) otherwise."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise ValueError("it does not hold a JSON object")
    return data


def read_json(path: str | Path) -> dict[str, Any] | None:
    """The JSON object in ``path``; None when it is missing, unreadable or not an object."""
    try:
        return _load_object(Path(path))
    except (OSError, ValueError):
        return None


def read_pointer(path: str | Path) -> dict[str, Any] | None:
    """A checkpoint pointer (``latest.json``, ``best.json``), or None if it does not exist;
    :class:`CheckpointError` when it exists and holds no JSON object."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        return _load_object(path)
    except (OSError, ValueError) as err:
        raise CheckpointError(f"checkpoint pointer {path} is unreadable: {err}") from None


class RunFolder:
    """The folder of one run (``run_dir``) and its ``checkpoints/`` (``dir``)."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = Path(run_dir)
        self.dir = self.run_dir / "checkpoints"

    @property
    def has_checkpoint(self) -> bool:
        """Whether ``latest.json`` exists (a resume continues from it)."""
        return (self.dir / "latest.json").exists()

    @property
    def has_started_run(self) -> bool:
        """Whether the folder holds a run of this toolkit (its ``run_info.json``), with or
        without a checkpoint yet."""
        return (self.run_dir / RUN_INFO_NAME).is_file()

    @property
    def latest_progress(self) -> dict[str, Any] | None:
        """``global_step``, ``epoch``, ... of the newest checkpoint (None without a readable one)."""
        try:
            record = read_pointer(self.dir / "latest.json")
        except CheckpointError:
            return None
        return record if record is not None and "global_step" in record else None

    def _key(self, resume: bool) -> tuple[str, bool]:
        return os.path.abspath(self.run_dir), bool(resume)

    def checked_changes(self, resume: bool) -> dict[str, list[Any]] | None:
        """The resumable settings a run with ``resume`` changes, when this context checked the
        folder for it already (:meth:`checked`); None when it has not."""
        return (_CHECKED.get() or {}).get(self._key(resume))

    @contextmanager
    def checked(self, resume: bool, changes: dict[str, list[Any]]) -> Iterator[None]:
        """Within, this folder counts as checked for a run with ``resume``
        (:meth:`check_start`, :meth:`check_resume` found ``changes``): the training code the
        ``sem train`` commands call then does not check it again."""
        token = _CHECKED.set({**(_CHECKED.get() or {}), self._key(resume): changes})
        try:
            yield
        finally:
            _CHECKED.reset(token)

    def check_resume(self, config: dict[str, Any], hint: str | None = None) -> dict[str, list[Any]]:
        """Refuse to continue this folder's checkpoint with settings other than those the run
        started with (:func:`sem_train.runinfo.check_resume_config`, its refusal ending with
        ``hint`` when given); return the resumable ones that changed. Without a checkpoint
        the run starts again from step 0 and takes ``config`` as it is: nothing to compare."""
        if not self.has_checkpoint:
            return {}
        from .runinfo import check_resume_config

        return check_resume_config(self.run_dir, config, hint)

    def check_output(self, resume: bool) -> None:
        """The run folder is usable: not a file, and holding no run unless ``resume``."""
        if self.run_dir.exists() and not self.run_dir.is_dir():
            raise NotADirectoryError(
                errno.ENOTDIR, "run.output_dir exists and is not a folder", str(self.run_dir)
            )
        if not resume:
            self.check_fresh()

    def check_start(self, resume: bool) -> None:
        """:meth:`check_output`, and with ``resume`` :meth:`check_resumable`: what a run checks
        before it writes anything into the folder."""
        self.check_output(resume)
        if resume:
            self.check_resumable()

    def check_fresh(self) -> None:
        """Refuse a fresh run over a folder that already holds one (``--resume`` continues),
        or over a ``config.json`` no run wrote (a run writes its own there)."""
        marks = [
            p
            for p in (
                self.dir / "latest.json",
                self.dir / "best.json",
                self.run_dir / "metrics.jsonl",
                self.run_dir / RUN_INFO_NAME,
            )
            if p.exists()
        ]
        if not marks:
            if (self.run_dir / "config.json").exists():
                raise RunExistsError(
                    f"run.output_dir {self.run_dir} holds a config.json that no run wrote (no "
                    f"{RUN_INFO_NAME} beside it), which a run would overwrite; choose another "
                    "output folder"
                )
            return
        if self.has_checkpoint:
            how = "pass --resume to continue it"
        else:
            how = "it has no checkpoint yet: pass --resume to start it again from step 0"
        raise RunExistsError(
            f"run.output_dir {self.run_dir} already holds a run ({marks[0].name} exists); "
            f"{how}, or choose another output folder"
        )

    def check_resumable(self) -> None:
        """Refuse ``--resume`` in a folder that holds neither a checkpoint nor a started run
        (a missing folder, an empty one, or other files: a mistyped path, not a run)."""
        if self.has_checkpoint or self.has_started_run:
            return
        raise FileNotFoundError(
            f"--resume: no checkpoint in {self.dir} (expected latest.json) and no run "
            f"started in {self.run_dir} (expected {RUN_INFO_NAME}); start without --resume "
            f"in an empty output folder"
        )


def resolve_model_dir(path: str | Path, what: str = "init_from") -> Path:
    """A run directory (its best export) or an export directory (``config.json`` + weights).

    ``what`` names the setting in error messages (``init_from``, ``--checkpoint``, ...).
    Only paths are looked at: whether the export loads is :func:`sem_models.load_model`'s.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(
            f"{what}={path} does not exist (run the previous stage first, or fix the path)"
        )
    if (path / CONFIG_NAME).is_file() and (path / WEIGHTS_NAME).is_file():
        return path
    found = best_export(path)  # a run folder: its checkpoints/best.json names the export
    if found != path:
        return found
    raise FileNotFoundError(
        f"{what}={path}: no exported model found (expected checkpoints/best.json of a "
        f"finished run, or a folder with config.json and model.safetensors)"
    )

"""Provenance written beside every run, and the rules of ``--resume`` against it.

A run folder holds ``config.json`` (the settings the run was started with, paths made
absolute) and ``run_info.json`` (who started it: argv, time, host, working folder, package
versions, git commit; then one entry per resume under ``resumes``). A resumed run continues
the optimizer and schedule it started with, so it refuses a changed setting unless the
setting is one of :data:`RESUMABLE_FIELDS` (where it computes, where it stops, how it logs
and checkpoints); ``config.json`` is never rewritten by a resume. No torch is imported here:
the ``sem train`` commands make these checks before the training code is loaded.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
import typing
from pathlib import Path
from typing import Any

from sem_physics.atomic import atomic_write_text

from .runfolder import RUN_INFO_NAME, read_json

__all__ = [
    "PATH_FIELDS",
    "RESUMABLE_FIELDS",
    "ResumeConfigError",
    "check_resume_config",
    "check_resume_world_size",
    "config_changes",
    "git_commit",
    "package_versions",
    "read_run_config",
    "record_resume",
    "recorded_config",
    "run_kind",
    "runtime_provenance",
    "write_run_info",
]

_PACKAGES = (
    "sem-physics",
    "sem-metrology",
    "sem-models",
    "sem-baselines",
    "sem-train",
    "torch",
    "timm",
    "numpy",
    "scipy",
    "pydantic",
    "safetensors",
)

#: Settings a resumed run may change: they move the run (device, folder name), say where it
#: stops (``max_steps``) or how it reports and checkpoints, or how data is loaded (the batches
#: do not depend on them). Everything else shapes what is trained and is refused.
RESUMABLE_FIELDS = (
    "run.device",
    "run.output_dir",
    "run.max_steps",
    "run.checkpoint_every_steps",
    "run.keep_last",
    "run.log_every_steps",
    "run.progress",
    "run.tensorboard",
    "run.find_unused_parameters",
    "data.num_workers",
    "data.cache_in_memory",
    "data.cache_dir",
    "data.refresh_index",
)

#: Config fields holding paths: recorded absolute, so a record never depends on the folder a
#: later command runs in.
PATH_FIELDS = ("data.root", "data.cache_dir", "run.output_dir", "init_from", "teacher_from")

#: Config fields naming a model the run starts from. ``run_info.json`` records the SHA-256 of
#: each one's weights (``model_sha256``), so a resume may name the same model at a new path
#: (its run folder moved or renamed): the weights, not the path, are what the run depends on.
MODEL_FIELDS = ("init_from", "teacher_from")

#: The start models a resumed run of each kind loads again: the frozen distillation teachers
#: (Stage 2's ``init_from``, Stage 3's ``teacher_from``); the checkpoint holds the rest.
RELOADED_MODELS: dict[str, tuple[str, ...]] = {
    "stage2": ("init_from",),
    "stage3": ("teacher_from",),
}


class ResumeConfigError(ValueError):
    """``--resume`` with settings the run was not started with."""


def package_versions() -> dict[str, str | None]:
    """Installed versions of the toolkit's packages and main dependencies (None if absent;
    :func:`sem_physics.protocol.package_versions`, which ``sem-measure`` records too)."""
    from sem_physics.protocol import package_versions as versions_of

    return versions_of(_PACKAGES)


def runtime_provenance() -> dict[str, Any]:
    """The torch threads of this process (None when torch is not loaded: it is not imported
    for this), the cores and the package versions: what a result's last digits depend on
    besides its inputs. The provenance of ``sem restore`` and of an evaluation builds on it
    (:func:`sem_train.restoration.batch.run_provenance`,
    :func:`sem_train.evaluation.workers.thread_provenance`)."""
    torch = sys.modules.get("torch")
    return {
        "torch_threads": None if torch is None else int(torch.get_num_threads()),
        "cpu_count": os.cpu_count(),
        "versions": package_versions(),
    }


def git_commit(start: Path | None = None) -> dict[str, Any]:
    """The commit of the source tree (and whether it has local changes), or None outside git.

    None also when the folder lies in a repository that does not track it: an installed copy
    (a virtual environment inside someone's checkout) is not that checkout's commit.
    """
    here = Path(start or Path(__file__).resolve().parent)

    def git(*args: str, timeout: float = 10) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["git", *args],
            cwd=here,
            capture_output=True,
            text=True,
            encoding="utf-8",
            timeout=timeout,
        )

    try:
        tracked = git("ls-files", "--", ".")
        if tracked.returncode != 0 or not tracked.stdout.strip():
            return {"commit": None}
        sha = git("rev-parse", "HEAD")
        if sha.returncode != 0:
            return {"commit": None}
        dirty = git("status", "--porcelain", "--untracked-files=no", timeout=20)
        return {"commit": sha.stdout.strip(), "dirty": bool(dirty.stdout.strip())}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None}


# ------------------------------------------------------------------------------ the record


def _get(config: dict[str, Any], dotted: str) -> tuple[bool, Any]:
    """(present, value) of a dotted key in nested dicts."""
    node: Any = config
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return False, None
        node = node[part]
    return True, node


def _with_paths(config: dict[str, Any], base: Path) -> dict[str, Any]:
    """A copy of ``config`` whose :data:`PATH_FIELDS` are absolute (relative ones from ``base``)."""
    out = json.loads(json.dumps(config, default=str))  # a deep copy of plain JSON values
    for dotted in PATH_FIELDS:
        present, value = _get(out, dotted)
        if not present or value is None:
            continue
        *parents, leaf = dotted.split(".")
        node = out
        for part in parents:
            node = node[part]
        node[leaf] = os.path.abspath(base / Path(str(value)))
    return out


def recorded_config(config: dict[str, Any]) -> dict[str, Any]:
    """``config`` as a run records it: plain JSON with absolute paths (from the current folder)."""
    return _with_paths(config, Path.cwd())


def run_kind(config: dict[str, Any]) -> str:
    """``stage1``..``stage3``, ``finetune``, ``baseline`` or ``run``, from a run's config."""
    if "stage" in config:
        return f"stage{config['stage']}"
    if "loss" in config and "init_from" in config:
        return "finetune"
    if "method" in config:
        return "baseline"
    return "run"


def _start_folder(run_dir: Path, config: dict[str, Any]) -> Path:
    """The folder a run was started in, which its relative paths were typed against: the
    ``cwd`` its ``run_info.json`` records, else the one its relative ``run.output_dir`` implies
    (``/proj/runs/s2`` typed as ``runs/s2``: ``/proj``), else the run folder itself."""
    info = read_json(run_dir / RUN_INFO_NAME) or {}
    if isinstance(info.get("cwd"), str):
        return Path(info["cwd"])
    here = Path(os.path.abspath(run_dir))
    _, typed = _get(config, "run.output_dir")
    if isinstance(typed, str) and not Path(typed).is_absolute():
        parts = Path(os.path.normpath(typed)).parts
        if parts and here.parts[-len(parts) :] == parts:
            return Path(*here.parts[: -len(parts)])
    return here


def read_run_config(run_dir: str | Path) -> dict[str, Any] | None:
    """The ``config.json`` of a run folder with absolute paths (relative ones, written by older
    versions, taken from the folder that run started in, never the current one); None when
    the folder holds no readable run config."""
    run_dir = Path(run_dir)
    config = read_json(run_dir / "config.json")
    if config is None:
        return None
    return _with_paths(config, _start_folder(run_dir, config))


# ---------------------------------------------------------------------------- the comparison


def _flatten(config: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a.b": leaf}`` of nested dicts (an empty mapping has no leaf: its keys are compared)."""
    if not isinstance(config, dict):
        return {prefix: config}
    out: dict[str, Any] = {}
    for key, value in config.items():
        out.update(_flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return out


def _root(kind: str) -> Any:
    """The config class of a run of ``kind``; ``{section: class}`` for a bare :func:`fit`."""
    from .config import OptimConfig, RunConfig, config_class

    if kind == "run":
        return {"run": RunConfig, "optim": OptimConfig}
    try:
        return config_class(kind)
    except ValueError:
        return None


def _section(node: Any, part: str) -> Any:
    """The config class of field ``part`` of ``node`` (a class, or ``{name: class}``)."""
    if isinstance(node, dict):
        return node.get(part)
    field = node.model_fields.get(part) if _is_model(node) else None
    if field is None:
        return None
    for cls in (field.annotation, *typing.get_args(field.annotation)):
        if _is_model(cls):
            return cls
    return None


def _is_model(node: Any) -> bool:
    from pydantic import BaseModel

    return isinstance(node, type) and issubclass(node, BaseModel)


def _field_default(kind: str, dotted: str) -> tuple[bool, Any]:
    """(known, JSON value) of the default a run of ``kind`` (:func:`run_kind`) gives the
    dotted field: what a run started before the field existed trained with."""
    *parents, leaf = dotted.split(".")
    node = _root(kind)
    for part in parents:
        node = _section(node, part)
    field = node.model_fields.get(leaf) if _is_model(node) else None
    if field is None or field.is_required():
        return False, None
    value = field.get_default(call_default_factory=True)
    if hasattr(value, "model_dump"):
        value = value.model_dump(mode="json")
    return True, json.loads(json.dumps(value, default=str))


def config_changes(
    old: dict[str, Any], new: dict[str, Any], kind: str | None = None
) -> dict[str, tuple[Any, Any]]:
    """``{dotted field: (old, new)}`` for every leaf that differs.

    A field the old record lacks was added to the config since the run started: it counts as
    its default then (of a run of ``kind``, :func:`run_kind` of ``old`` unless given), or as
    unchanged when the new value is None. ``teacher_from`` recorded as None counts as unchanged
    too (older runs resolved it silently).
    """
    kind = kind or run_kind(old)
    a, b = _flatten(old), _flatten(new)
    out: dict[str, tuple[Any, Any]] = {}
    for key in sorted(set(a) | set(b)):
        if key not in a:
            known, default = _field_default(kind, key)
            if known:
                a[key] = default
            elif b.get(key) is None:
                continue
        if key == "teacher_from" and a.get(key) is None:
            continue
        if a.get(key, "<not recorded>") != b.get(key, "<not set>"):
            out[key] = (a.get(key, "<not recorded>"), b.get(key, "<not set>"))
    return out


def _shown(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def _longer_hint(kind: str, run_dir: Path, old: dict[str, Any]) -> str:
    """How to train a run longer than it was planned for: a new run from its model."""
    new_run = f"--init-from {run_dir} --output-dir NEW_FOLDER"
    if kind in ("stage1", "stage3", "finetune"):
        return f"to train longer, start a new run from its model: {new_run}"
    if kind == "stage2":
        return (
            f"a Stage-2 run cannot start Stage 2 again; rerun Stage 2 from its Stage-1 model "
            f"with more epochs (--init-from {old.get('init_from')} --epochs N --output-dir "
            f"NEW_FOLDER), or go on to Stage 3 ({new_run.replace(' --output-dir NEW_FOLDER', '')})"
        )
    return "to train longer, start a new run with more epochs in another --output-dir"


def check_resume_config(
    run_dir: str | Path, config: dict[str, Any], hint: str | None = None
) -> dict[str, list[Any]]:
    """Refuse to resume the run in ``run_dir`` with ``config`` (a :func:`recorded_config`) when
    a setting other than :data:`RESUMABLE_FIELDS` differs from the one it started with (its
    ``config.json``); return the resumable changes as ``{field: [old, new]}``. A start model
    (:data:`MODEL_FIELDS`) at a new path holding the weights the run started from (a run
    folder moved or renamed) is such a change, and so is a data folder at a new path when the
    run's ``data_split.json`` lets the resume compare its files (:func:`_moved_data`); a
    distillation teacher the run loads again whose weights changed at the same path is refused. The refusal ends with ``hint`` when given (what a command other than a single-stage run can do, e.g.
    a recipe, which has no ``--init-from``), else with how a single-stage run goes on.

    Nothing is compared when the folder holds no readable ``config.json`` (the checkpoint
    loader reports such a folder) or an empty one (older versions recorded ``{}`` for
    ``fit(config=None)``; the resume says so in ``run_info.json``, :func:`record_resume`).
    """
    run_dir = Path(run_dir)
    old = read_run_config(run_dir)
    if not old:  # none, or ``{}`` of an older fit(config=None): nothing to compare with
        return {}
    was, now = run_kind(old), run_kind(config)
    if was != now and "run" not in (was, now):
        raise ResumeConfigError(
            f"--resume: {run_dir} holds a {was} run (its config.json), not a {now} run; "
            f"resume it with the command that started it"
        )
    changes = config_changes(old, config)
    moved = _moved_models(run_dir, changes) | _moved_data(run_dir, changes)
    refused = {k: v for k, v in changes.items() if k not in RESUMABLE_FIELDS and k not in moved}
    refused.update(_replaced_models(run_dir, config, changes))
    if refused:
        listed = ", ".join(f"{k} {_shown(a)} → {_shown(b)}" for k, (a, b) in refused.items())
        if hint is None and "run.epochs" in refused:
            hint = _longer_hint(was, run_dir, old)
        elif hint is None:
            hint = "resume with the settings it started with, or start a new run elsewhere"
        raise ResumeConfigError(
            f"--resume: {run_dir} was started with other settings ({run_dir / 'config.json'}): "
            f"{listed}; a resumed run keeps the optimizer and schedule it started with (only "
            f"the device, max_steps, logging, checkpointing and data loading may change); {hint}"
        )
    return {k: list(v) for k, v in changes.items() if k != "run.output_dir"}


def model_digest(path: str | Path) -> str | None:
    """SHA-256 of the weights of the model ``path`` names (a run folder: its best export, or
    an export folder); None when it names none."""
    from sem_models.checkpoint import WEIGHTS_NAME
    from sem_physics.protocol import file_sha256

    from .runfolder import resolve_model_dir

    try:
        return file_sha256(resolve_model_dir(path) / WEIGHTS_NAME)
    except (OSError, ValueError):  # FileNotFoundError, a CheckpointError: no model there
        return None


def _moved_models(run_dir: Path, changes: dict[str, tuple[Any, Any]]) -> set[str]:
    """The :data:`MODEL_FIELDS` among ``changes`` whose new path holds the very weights the run
    started from (``model_sha256`` of its ``run_info.json``): the same model, moved."""
    started = (read_json(run_dir / RUN_INFO_NAME) or {}).get("model_sha256")
    if not isinstance(started, dict):
        return set()
    return {
        key
        for key in MODEL_FIELDS
        if key in changes
        and isinstance(changes[key][1], str)
        and isinstance(started.get(key), str)
        and model_digest(changes[key][1]) == started[key]
    }


def _moved_data(run_dir: Path, changes: dict[str, tuple[Any, Any]]) -> set[str]:
    """``{"data.root"}`` when the data folder is named at a new path and the run's
    ``data_split.json`` records its files with their sizes under the old one: the data check
    of the resume (:func:`sem_train.datasplit.check_resume_split`) then compares the files by
    their place in the folder (a data folder moved or renamed), and refuses other data."""
    old, new = changes.get("data.root", (None, None))
    if not (isinstance(old, str) and isinstance(new, str)):
        return set()
    from .datasplit import SPLIT_FILE

    saved = read_json(run_dir / SPLIT_FILE) or {}
    if saved.get("data_root") != old or not isinstance(saved.get("fingerprints"), dict):
        return set()
    return {"data.root"}


def _replaced_models(
    run_dir: Path, config: dict[str, Any], changes: dict[str, tuple[Any, Any]]
) -> dict[str, tuple[str, str]]:
    """The teachers a resumed run loads again (:data:`RELOADED_MODELS`; its checkpoint holds
    everything else) whose path is the one the run started from but whose weights are no
    longer those (``model_sha256``; e.g. the Stage-1 run continued since and exported another
    best model): ``{field: (old, new)}`` for the refusal."""
    started = (read_json(run_dir / RUN_INFO_NAME) or {}).get("model_sha256")
    if not isinstance(started, dict):
        return {}
    out: dict[str, tuple[str, str]] = {}
    for key in RELOADED_MODELS.get(run_kind(config), ()):
        path, digest = config.get(key), started.get(key)
        if key in changes or not isinstance(path, str) or not isinstance(digest, str):
            continue
        now = model_digest(path)
        if now is not None and now != digest:
            out[key] = (f"weights SHA-256 {digest[:12]}", f"{now[:12]} at {path}")
    return out


def check_resume_world_size(run_dir: str | Path, world_size: int) -> None:
    """Refuse to resume with another number of processes than the run started with: the
    global batch, the data shards and the schedule's length depend on it."""
    info = read_json(Path(run_dir) / RUN_INFO_NAME) or {}
    started = info.get("world_size")
    if isinstance(started, int) and started != world_size:
        raise ResumeConfigError(
            f"--resume: {run_dir} was started with {started} process(es) and this run has "
            f"{world_size}; resume it with {started} (torchrun --nproc_per_node {started}), or "
            f"start a new run elsewhere"
        )


# ----------------------------------------------------------------------------- writing


def _invocation() -> dict[str, Any]:
    """This process: when, what command, where, which host and pid."""
    return {
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "argv": sys.argv,
        "cwd": os.getcwd(),
        "host": platform.node(),
        "pid": os.getpid(),
    }


def _dump(path: Path, record: dict[str, Any]) -> None:
    atomic_write_text(path, json.dumps(record, indent=2, default=str) + "\n")


def write_run_info(
    out_dir: Path, config: dict[str, Any], extra: dict[str, Any] | None = None
) -> None:
    """Write ``run_info.json`` and ``config.json`` (the resolved config) of a run starting at
    step 0 into ``out_dir``, in this order: a ``config.json`` without ``run_info.json`` beside
    it is no run's (a fresh run refuses to overwrite it, see
    :meth:`sem_train.runfolder.RunFolder.check_fresh`). A run started again from step 0
    (interrupted before its first checkpoint) keeps the earlier invocations under
    ``earlier_starts``."""
    earlier = read_json(out_dir / RUN_INFO_NAME)
    info = {
        **_invocation(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "packages": package_versions(),
        "git": git_commit(),
        **(extra or {}),
    }
    if earlier:
        before = earlier.get("earlier_starts", [])
        keep = ("time", "argv", "cwd", "pid", "resumes")
        info["earlier_starts"] = [*before, {k: earlier[k] for k in keep if k in earlier}]
    _dump(out_dir / RUN_INFO_NAME, info)
    _dump(out_dir / "config.json", config)


def record_resume(
    out_dir: Path, changed: dict[str, list[Any]], extra: dict[str, Any] | None = None
) -> None:
    """Append this resume (argv, time, folder, host, package versions, git commit, ``extra``
    and the resumable settings it ``changed``) to ``run_info.json``'s ``resumes``; the run's start record and its
    ``config.json`` stay as they are. A run whose ``config.json`` is ``{}`` gets
    ``"compared": false``: its settings were not checked."""
    path = out_dir / RUN_INFO_NAME
    info = read_json(path) or {}
    entry = {
        **_invocation(),
        "packages": package_versions(),
        "git": git_commit(),  # the code may have changed since the start: recorded each time
        **(extra or {}),
        "changed": changed,
    }
    if read_json(out_dir / "config.json") == {}:
        entry["compared"] = False
        entry["note"] = "config.json records no settings (an older version): nothing compared"
    info["resumes"] = [*info.get("resumes", []), entry]
    _dump(path, info)

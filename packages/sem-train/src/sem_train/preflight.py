"""The checks of a training run's inputs that need no torch: the model it starts from (and
whether it is the kind the stage expects), Stage 3's teacher, the baseline method, the data,
and a resume's settings against the run's own record. The ``sem train`` commands make them as
soon as they hold the run folder, so bad input is refused in about a second instead of after
the imports of the training code; that code calls the same functions (one implementation of
each rule), and checks the folder and a resume's settings only when no command did before
(:meth:`sem_train.runfolder.RunFolder.checked`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from sem_models.checkpoint import (
    CONFIG_NAME,
    WEIGHTS_NAME,
    CheckpointError,
    export_model_kind,
    read_export_meta,
)

from .config import Stage1Config, Stage2Config, Stage3Config, warn_moe_size
from .data.index import indexed_paths
from .datasplit import min_side_px
from .runfolder import RunFolder, resolve_model_dir
from .runinfo import read_run_config, recorded_config, run_kind

__all__ = [
    "check_baseline_method",
    "check_inputs",
    "check_run_start",
    "run_record",
    "stage3_teacher_dir",
    "stage3_teacher_setting",
    "stage3_teacher_source",
    "start_model_dir",
    "with_teacher",
]

#: What each kind of run starts from: the model kinds it accepts and how that reads.
_ACCEPTS: dict[str, tuple[frozenset[str], str, str]] = {
    "stage1": (frozenset({"dense"}), "stage 1", "a Stage-1 run (a dense masked autoencoder)"),
    "stage2": (frozenset({"dense"}), "stage 2", "a Stage-1 run (a dense masked autoencoder)"),
    "stage3": (
        frozenset({"dense", "moe"}),
        "stage 3",
        "a Stage-2 run (a masked autoencoder; a Stage-1 run for the dense ablation)",
    ),
    "teacher": (
        frozenset({"dense", "moe"}),
        "stage 3's distillation teacher",
        "a Stage-1 run (a masked autoencoder)",
    ),
    "finetune": (
        frozenset({"dense", "moe", "restoration"}),
        "fine-tuning",
        "a pretrained or fine-tuned run",
    ),
}
_MODEL_WORDS = {
    "dense": "a dense masked autoencoder",
    "moe": "a Mixture-of-Experts masked autoencoder",
    "restoration": "a restoration model",
}
_RUN_WORDS = {
    "stage1": "a Stage-1 run",
    "stage2": "a Stage-2 run",
    "stage3": "a Stage-3 run",
    "finetune": "a fine-tune run",
    "baseline": "a baseline run",
}


def _model_kind(export: Path) -> tuple[str, dict[str, Any]] | None:
    """(``dense``, ``moe`` or ``restoration``, the MAE settings) of an export; None when its
    ``config.json`` does not say (the loader reports what is wrong with it)."""
    try:
        meta = read_export_meta(export)
    except CheckpointError:
        return None
    return export_model_kind(meta), meta["mae"]


def _holds(path: Path, export: Path, model: str) -> str:
    """What ``path`` holds, in words: the run kind from its ``config.json`` and the model."""
    if export != path and not (path / WEIGHTS_NAME).is_file():
        record = read_run_config(path)
        if record is not None:
            run = _RUN_WORDS.get(run_kind(record), "a run")
            return f"{run} ({_MODEL_WORDS[model]}, {path / 'config.json'})"
    return f"{_MODEL_WORDS[model]} ({export / CONFIG_NAME})"


def _normalised(mae: dict[str, Any]) -> dict[str, Any]:
    """An export's MAE settings with the defaults of fields added since it was saved (as
    itself when they do not validate: the loader reports that)."""
    from pydantic import ValidationError
    from sem_models.config import MAEConfig

    try:
        return MAEConfig(**mae).model_dump(mode="json")
    except (ValidationError, TypeError):
        return mae


def _check_architecture(cfg: Stage1Config, path: Path, mae: dict[str, Any]) -> None:
    """A Stage-1 run started from a model trains that model: it must be the one its
    ``model`` and ``data`` settings describe (which its config.json then records)."""
    from sem_models.config import mae_config

    spec = cfg.model
    want = mae_config(
        spec.preset, in_chans=cfg.data.channels, img_size=cfg.data.image_size_px, **spec.overrides
    ).model_dump(mode="json")
    have = _normalised(mae)
    differ = [
        f"{k} {have.get(k)!r} (model) vs {v!r} (config)"
        for k, v in want.items()
        if k != "mask_ratio" and have.get(k) != v
    ]
    if differ:
        raise ValueError(
            f"init_from={path}: its model differs from this config's model and data settings "
            f"({', '.join(differ)}); give the model and data settings it was trained with"
        )


def start_model_dir(kind: str, path: str | Path, cfg: Any = None, what: str = "init_from") -> Path:
    """The export a run of ``kind`` (``stage1``..``stage3``, ``finetune``, ``teacher``) starts
    from, given as ``path`` (a run or an export folder); a ValueError naming the folder, what it
    holds and what ``kind`` expects when it is another kind of model (a fine-tuned model given
    to Stage 3, a Stage-2 model to Stage 2, ...)."""
    path = Path(path)
    export = resolve_model_dir(path, what)
    found = _model_kind(export)
    if found is None:
        return export
    model, mae = found
    accepted, who, expected = _ACCEPTS[kind]
    if model not in accepted:
        raise ValueError(
            f"{what}={path} holds {_holds(path, export, model)}; {who} expects {expected}"
        )
    if kind == "stage1" and isinstance(cfg, Stage1Config):
        _check_architecture(cfg, path, mae)
    if kind == "stage2" and isinstance(cfg, Stage2Config):
        warn_moe_size(cfg.moe, tokens_per_batch(cfg, mae))
    return export


def tokens_per_batch(cfg: Stage2Config, mae: dict[str, Any]) -> int | None:
    """Tokens one process routes through a MoE layer per step in Stage 2 (``mae``: the
    Stage-1 model's settings): the visible patches plus CLS of each image in the encoder, every
    patch plus CLS in the decoder (the fewer, where both hold experts); None when unknown."""
    patch = mae.get("patch_size")
    if not isinstance(patch, int) or patch <= 0:
        return None
    patches = (cfg.data.image_size_px // patch) ** 2
    visible = int(patches * (1 - cfg.mask_ratio)) + 1
    per_image = patches + 1 if cfg.moe.placement == "decoder" else visible
    return cfg.run.batch_size_per_process * per_image


def _moved_along(folder: Path, record: dict[str, Any], path: Path) -> Path:
    """``path`` as the run in ``folder`` recorded it; when it no longer exists and the run
    folder was moved since (its recorded ``run.output_dir`` lies elsewhere), the same place
    relative to the moved folder, where that exists (the two were moved together)."""
    started = (record.get("run") or {}).get("output_dir")
    if path.exists() or not isinstance(started, str):
        return path
    try:
        beside = os.path.relpath(path, started)
    except ValueError:  # another drive (Windows): no relative place
        return path
    moved = Path(os.path.normpath(Path(os.path.abspath(folder)) / beside))
    return moved if moved.exists() else path


def _teacher_behind(folder: Path, depth: int = 0) -> Path | None:
    """The Stage-1 model behind the run in ``folder``: a Stage-1 run itself, a Stage-3 run's
    recorded teacher, a Stage-2 run's ``init_from`` (paths as that run recorded them; a
    Stage-2 run's moved along with it is found beside it, and Stage 3 checks it is the model
    that run started from: :func:`sem_train.stages.stage3.check_derived_teacher`)."""
    record = read_run_config(folder)
    if record is None or depth > 4:
        return None
    if record.get("teacher_from"):
        return Path(record["teacher_from"])
    stage = record.get("stage")
    if stage == 1:
        return Path(os.path.abspath(folder))
    if stage == 3 and record.get("init_from"):
        return _teacher_behind(Path(record["init_from"]), depth + 1)
    if stage == 2 and record.get("init_from"):
        return _moved_along(folder, record, Path(record["init_from"]))
    return Path(record["init_from"]) if record.get("init_from") else None


def stage3_teacher_source(cfg: Stage3Config) -> Path:
    """The Stage-1 model to distil from, absolute: ``teacher_from``, else the one behind the
    ``init_from`` run (a Stage-2 run's own ``init_from``, read relative to where that run
    started when it was recorded relative, never to the current folder)."""
    if cfg.teacher_from is not None:
        return Path(os.path.abspath(cfg.teacher_from))
    assert cfg.init_from is not None  # Stage3Config requires it
    teacher = _teacher_behind(Path(cfg.init_from))
    if teacher is None:
        raise ValueError(
            f"stage 3 with kd_weight={cfg.kd_weight} needs the Stage-1 teacher: set "
            f"teacher_from (none recorded in {Path(cfg.init_from) / 'config.json'}), or "
            f"kd_weight: 0"
        )
    return teacher


def stage3_teacher_setting(cfg: Stage3Config) -> str:
    """How errors name Stage 3's teacher: ``teacher_from`` when given, else the model it was
    derived from (call it before :func:`with_teacher` sets ``teacher_from``)."""
    if cfg.teacher_from is None:
        return f"teacher_from (the Stage-1 model behind {cfg.init_from})"
    return "teacher_from"


def stage3_teacher_dir(cfg: Stage3Config, what: str | None = None) -> Path:
    """The export of Stage 3's teacher (:func:`stage3_teacher_source`), checked to be an MAE;
    ``what`` names it in errors (default :func:`stage3_teacher_setting`)."""
    what = what or stage3_teacher_setting(cfg)
    return start_model_dir("teacher", stage3_teacher_source(cfg), what=what)


def with_teacher(cfg: Stage3Config) -> Stage3Config:
    """``cfg`` with the teacher it distils from set (absolute), so the run records the model
    it used; unchanged without distillation."""
    if cfg.kd_weight <= 0:
        return cfg
    return cfg.model_copy(update={"teacher_from": stage3_teacher_source(cfg)})


def run_record(kind: str, cfg: Any, method: str | None = None) -> dict[str, Any]:
    """The config a run of ``kind`` records in its ``config.json`` (and a resume is compared
    with): the resolved settings, paths absolute, Stage 3's teacher and a baseline's method."""
    if isinstance(cfg, Stage3Config):
        cfg = with_teacher(cfg)
    config = cfg.model_dump(mode="json")
    if kind == "baseline":
        config["method"] = method or cfg.method
    return recorded_config(config)


def check_run_start(kind: str, cfg: Any, resume: bool, method: str | None = None) -> dict:
    """The run folder may take this run (:meth:`RunFolder.check_start`) and, resuming a
    checkpoint, the settings are those it started with (:meth:`RunFolder.check_resume`);
    returns the record the run writes (:func:`run_record`). Checked once: inside the
    ``sem train`` commands, which checked before the imports (:meth:`RunFolder.checked`),
    only the record is made."""
    folder = RunFolder(cfg.run.output_dir)
    if folder.checked_changes(resume) is not None:
        return run_record(kind, cfg, method)
    folder.check_start(resume)
    record = run_record(kind, cfg, method)
    if resume:
        folder.check_resume(record)
    return record


def check_baseline_method(name: str | None, trainable: list[str]) -> str:
    """``name`` when it is one of the ``trainable`` methods, else a ValueError naming them."""
    if name not in trainable:
        raise ValueError(f"baseline must be one of {', '.join(trainable)}, got {name!r}")
    return name


def check_inputs(kind: str, cfg: Any, *, method: str | None = None) -> None:
    """Refuse what a run of ``kind`` (``stage1``..``stage3``, ``finetune``, ``baseline``) with
    ``cfg`` would refuse after seconds of imports, in the order the training code meets it: the
    model it starts from (``init_from``, of the kind the stage expects; Stage 3's teacher), the
    baseline ``method`` (default ``cfg.method``) as far as it is known without importing the
    methods, then the data (none set, or no image to read).

    Only paths, small JSON files and the image headers are read (the folder index, cached for
    the run itself); what needs a model loaded (a file that is no checkpoint) or the images
    decoded stays with the training code, and so does a fine-tune's count of images (reported
    after a model that does not load, as before).
    """
    init_from = getattr(cfg, "init_from", None)
    if init_from is not None:
        start_model_dir(kind, init_from, cfg)
    if isinstance(cfg, Stage3Config) and cfg.kd_weight > 0:
        stage3_teacher_dir(cfg)
    if kind == "baseline":
        from sem_baselines.restorer import declared_trainable

        check_baseline_method(method or cfg.method, declared_trainable())
    indexed_paths(cfg.data, min_side_px(kind, cfg))

"""Running registered restoration methods on a protocol's cases.

Methods come from the ``sem_baselines`` registry, which also says how each one is fitted
(:func:`sem_baselines.registry_entry`): ``"none"`` (fixed parameters, or a model used as
loaded), ``"fit"`` (trained here on the protocol's focused training images with synthetic
defocus, validated on its validation images: best-validation weights), ``"pretrained"`` (a
model from a checkpoint; when none is configured, the caller's ``pretrain`` callable trains
one) or ``"finetune"`` (built from its checkpoint or weights, then the caller's ``finetune``
callable fine-tunes its network on the protocol's training images: in a benchmark protocol,
"few-shot" means fine-tuned here on those images). A method that cannot be built, trained or
run is recorded as failed with the reason and keeps its row in every table; what a restorer
says about its model (``restorer.notes``: :func:`model_notes`) goes into its row's
``model_notes``, which the benchmark warns and the report lists.

The control row (the input with only the true gain and offset inverted) is built here too.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import ValidationError
from sem_baselines import (
    FitOptions,
    get_restorer,
    list_restorers,
    load_restorer,
    registry_entry,
    restorer_config,
    unknown_restorers,
)
from sem_physics.atomic import atomic_write_text
from sem_physics.cli_support import validation_message

from .protocols import Case
from .results import CONTROL_NAME, INPUT_NAME, MethodRun

__all__ = [
    "FIT_RECORD",
    "IDENTITY",
    "FinetuneFn",
    "PretrainFn",
    "Pretrained",
    "check_method_config",
    "control_run",
    "list_methods",
    "merge_runs",
    "model_notes",
    "row_name",
    "run_method",
    "select_methods",
    "trained_weights_kept",
    "trains_here",
]

log = logging.getLogger(__name__)

#: Registry name of the pass-through method, reported as the defocused input.
IDENTITY = "input"


@dataclass(frozen=True)
class Pretrained:
    """A model trained here for a "pretrained" or "finetune" method: its checkpoint folder,
    further restorer config (e.g. the window it was trained for), a note for the report."""

    checkpoint: Path
    config: dict[str, Any] = field(default_factory=dict)
    note: str = "pretrained here"


#: ``pretrain(train_images, val_images, work_dir) -> Pretrained`` for a "pretrained" method whose
#: checkpoint field is empty (sem-train's foundation trainer).
PretrainFn = Callable[[list[np.ndarray], list[np.ndarray], Path], Pretrained]

#: ``finetune(network, train_images, val_images, work_dir) -> Pretrained`` for a "finetune"
#: method: fine-tunes its ``network`` (a ``sem_models.RestorationModel``; sem-train's
#: :func:`~sem_train.evaluation.foundation.finetune_network`).
FinetuneFn = Callable[[Any, list[np.ndarray], list[np.ndarray], Path], Pretrained]


def list_methods() -> list[str]:
    """Names of every registered restorer (the identity first)."""
    return list_restorers()


def row_name(name: str) -> str:
    """The table row of registry method ``name``."""
    return INPUT_NAME if name == IDENTITY else name


def _unknown(names: Sequence[str], what: str) -> None:
    problem = unknown_restorers(names, noun="method", where=what)
    if problem:
        raise ValueError(problem)


def select_methods(methods: Sequence[str] | None, exclude: Sequence[str] = ()) -> list[str]:
    """The methods to run: ``methods`` (None: all registered) minus ``exclude``.

    The identity (the defocused input, every table's starting point) is always included unless
    excluded by name. Unknown names raise ValueError listing the registered ones.
    """
    _unknown([*(methods or []), *exclude], "the method list")
    names = list(dict.fromkeys(methods)) if methods is not None else list_methods()
    if IDENTITY not in names:
        names.insert(0, IDENTITY)
    return [n for n in names if n not in exclude]


def check_method_config(method_config: Mapping[str, Mapping[str, Any]]) -> None:
    """Every key a registered method and every setting valid for it (before any work)."""
    _unknown(list(method_config), "method_config / --set")
    for name, conf in method_config.items():
        config_cls = registry_entry(name).config_cls
        try:
            config_cls(**dict(conf))
        except ValidationError as err:  # "setting wiener.balance must be in (0, 1e6], got -1"
            message = validation_message(err, config_cls)
            raise ValueError(f"setting {name}.{message}") from None


def _first_line(err: BaseException) -> str:
    text = str(err).splitlines()[0] if str(err) else ""
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def _restore_all(
    run: MethodRun, restore: Callable[[Any], np.ndarray], cases, *, per_case: bool = False
) -> MethodRun:
    """Restore every case: ``restore(case.input)``, or ``restore(case)`` with ``per_case``."""
    t0 = time.perf_counter()
    for c in cases:
        try:
            out = np.asarray(restore(c if per_case else c.input), dtype=np.float32)
        except Exception as err:  # one case fails, the others are still restored
            run.case_errors[c.case_id] = _first_line(err)
            continue
        if out.shape != c.input.shape:
            run.case_errors[c.case_id] = f"output shape {out.shape} != input shape {c.input.shape}"
        elif not np.all(np.isfinite(out)):
            run.case_errors[c.case_id] = "output contains NaN or inf"
        else:
            run.outputs[c.case_id] = out
    run.restore_seconds = time.perf_counter() - t0
    return _mark_all_failed(run, cases)


def _mark_all_failed(run: MethodRun, cases: Sequence[Case]) -> MethodRun:
    """A run without any output is failed, with the first case's reason."""
    if cases and not run.outputs:
        first = next(c.case_id for c in cases if c.case_id in run.case_errors)
        run.failed = "every case failed: " + run.case_errors[first]
    return run


def merge_runs(parts: Sequence[MethodRun], cases: Sequence[Case]) -> MethodRun:
    """One run of a method from runs of it on disjoint subsets of ``cases`` (each restorer
    built and run in its own process), equal to one run on all of them: outputs and case
    errors united, notes once each, the longest build time, the restore times summed. A part
    that could not be built (failed without restoring anything) fails the whole method."""
    if not parts:
        raise ValueError("merge_runs needs at least one run")
    for p in parts:
        if p.failed and not p.outputs and not p.case_errors:
            return p
    run = MethodRun(name=parts[0].name)
    outputs = {k: v for p in parts for k, v in p.outputs.items()}
    errors = {k: v for p in parts for k, v in p.case_errors.items()}
    ids = [c.case_id for c in cases]  # in case order, whatever order the parts came back in
    run.outputs = {i: outputs[i] for i in ids if i in outputs}
    run.case_errors = {i: errors[i] for i in ids if i in errors}
    for p in parts:
        run.notes.extend(n for n in p.notes if n not in run.notes)
        run.model_notes.extend(n for n in p.model_notes if n not in run.model_notes)
    run.fit_seconds = max(p.fit_seconds for p in parts)
    run.restore_seconds = sum(p.restore_seconds for p in parts)
    return _mark_all_failed(run, cases)


def control_run(cases: Sequence[Case]) -> MethodRun:
    """The control: each input with only its true gain and offset inverted, ``(y − b)/a``.

    A method that does not beat it has not restored anything beyond brightness. Real inputs
    (S→R) have no true gain and offset: their cases are marked failed with that reason.
    """
    run = MethodRun(name=CONTROL_NAME)
    for c in cases:
        if c.params is None:
            run.case_errors[c.case_id] = "real input: the true gain and offset are unknown"
        else:
            run.outputs[c.case_id] = ((c.input - c.params.offset) / c.params.gain).astype(
                np.float32
            )
    if cases and not run.outputs:
        run.failed = "real inputs: the true gain and offset are unknown"
    return run


def _fresh(folder: Path) -> Path:
    """``folder`` without an earlier training run of this method (it is being redone)."""
    if folder.is_dir():
        shutil.rmtree(folder)
    return folder


def trains_here(name: str, config: Mapping[str, Any]) -> bool:
    """Whether ``run_method`` trains, pretrains or fine-tunes method ``name`` with settings
    ``config`` on the protocol's images (else it only builds the restorer and restores)."""
    entry = registry_entry(name)
    if entry.fitting == "fit":
        return True
    if entry.fitting == "pretrained" and entry.checkpoint_field is not None:
        return config.get(entry.checkpoint_field) is None
    return entry.fine_tunes(restorer_config(name, **config))


#: The end of the note that only names the shipped model a method loads when given no weights:
#: a plain note (the weights column names the model), as ``restore()`` leaves it out.
_SHIPPED_NOTE_END = "model shipped with sem-models"


def model_notes(restorer: Any) -> tuple[list[str], list[str]]:
    """(plain notes, model notes) of ``restorer.notes``: what the loaded model says of itself
    (e.g. that a checkpoint is dense), each once; the shipped-model note is a plain note."""
    said = list(dict.fromkeys(str(n) for n in getattr(restorer, "notes", None) or []))
    plain = [n for n in said if n.endswith(_SHIPPED_NOTE_END)]
    return plain, [n for n in said if n not in plain]


def _fit(
    name: str,
    config: dict[str, Any],
    train: list[np.ndarray],
    val: list[np.ndarray],
    options: FitOptions,
    pretrain: PretrainFn | None,
    finetune: FinetuneFn | None,
    work_dir: Path | None,
) -> tuple[Any, list[str]]:
    """Build and fit ``name`` the way its registry entry says; returns (restorer, notes); the
    model's own notes stay on the restorer (:func:`model_notes`)."""
    entry = registry_entry(name)
    notes: list[str] = []

    def work() -> Path:
        return work_dir or Path(tempfile.mkdtemp(prefix=f"sem-eval-{name}-"))

    if entry.fitting == "pretrained" and entry.checkpoint_field is not None:
        if config.get(entry.checkpoint_field) is None:
            if pretrain is None:
                raise ValueError(f"set {name}.{entry.checkpoint_field} (no trainer given)")
            if not train:
                raise ValueError("needs focused training images to be pretrained here")
            done = pretrain(train, val, _fresh(work() / "pretrained"))
            config = {**config, entry.checkpoint_field: str(done.checkpoint), **done.config}
            notes.append(done.note)
    restorer = get_restorer(name, **config)
    notes.extend(model_notes(restorer)[0])
    if entry.fitting == "fit":
        if not train:
            raise ValueError("learned method, but the protocol has no training images")
        restorer.fit(train, val_images=val or None, options=options)
        if not val:
            notes.append("no validation images: weights of the lowest training loss kept")
    elif entry.fine_tunes(restorer.config):
        if finetune is None:
            raise ValueError(f"{name} is fine-tuned on the protocol's images; no trainer given")
        if not train:
            raise ValueError("needs focused training images to be fine-tuned here")
        done = finetune(restorer.network, train, val, _fresh(work() / "finetuned"))
        restorer.load_network(done.checkpoint, **done.config)
        notes.append(done.note)
    return restorer, notes


#: File beside a restorer that ``run_method`` trained and saved: the key of what it was trained
#: on and with (:func:`~sem_train.evaluation.runner.method_hash` without the scoring), its notes
#: and training time. Written after the weights, removed before they are trained again.
FIT_RECORD = "fit.json"


def trained_weights_kept(save_dir: str | Path, fit_key: str) -> bool:
    """Whether ``save_dir`` holds a restorer this module trained and saved under ``fit_key``
    (the same method, settings, budget and training images), so that it can be reloaded
    instead of trained again, e.g. when only the metrics or the metrology convention changed."""
    try:
        record = json.loads((Path(save_dir) / FIT_RECORD).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(record, dict) and record.get("key") == fit_key


def _reload(
    name: str, config: Mapping[str, Any], save_dir: Path
) -> tuple[Any, list[str], float, list[str]]:
    """The restorer saved in ``save_dir`` with its training notes, time and model notes (see
    FIT_RECORD)."""
    record = json.loads((save_dir / FIT_RECORD).read_text(encoding="utf-8"))
    restorer = load_restorer(save_dir, device=config.get("device"))
    if getattr(restorer, "name", name) != name:
        raise ValueError(f"{save_dir} holds {restorer.name!r}, not {name!r}")
    notes = [str(n) for n in record.get("notes", [])]
    notes.append(
        f"trained weights of the earlier run reused from {save_dir} (same settings, budget and "
        "training images; only the scoring changed)"
    )
    said = [str(n) for n in record.get("model_notes", [])]  # as the model said when built
    return restorer, notes, float(record.get("fit_seconds", 0.0)), said


def run_method(
    name: str,
    cases: Sequence[Case],
    train_images: Sequence[np.ndarray],
    *,
    val_images: Sequence[np.ndarray] = (),
    config: Mapping[str, Any] | None = None,
    options: FitOptions | None = None,
    pretrain: PretrainFn | None = None,
    finetune: FinetuneFn | None = None,
    save_dir: str | Path | None = None,
    fit_key: str | None = None,
    reuse_fit: bool = False,
) -> MethodRun:
    """Build (and fit, as its registry entry says) method ``name``, then restore every input.

    ``pretrain`` trains a "pretrained" method without a checkpoint, ``finetune`` fine-tunes a
    "finetune" method (sem-train's :mod:`~sem_train.evaluation.foundation` trainers with the
    benchmark's budget). Exceptions while building or fitting mark the whole method failed; an
    exception on one case marks only that case. A fitted restorer is saved under ``save_dir``
    when given (its training runs go there too), with ``fit_key`` in :data:`FIT_RECORD`;
    ``reuse_fit`` reloads the restorer saved there instead of fitting it again (the caller
    checked :func:`trained_weights_kept`; a restorer that no longer loads is trained again).
    """
    run = MethodRun(name=row_name(name))
    t0 = time.perf_counter()
    folder = Path(save_dir) if save_dir is not None else None
    reloaded = None
    if reuse_fit and folder is not None:
        try:
            reloaded = _reload(name, dict(config or {}), folder)
        except Exception as err:
            log.warning("%s: the kept weights did not load (%s); trained again", name, err)
            run.notes.append(f"kept weights did not load ({_first_line(err)}): trained again")
    if reloaded is not None:
        restorer, run.notes, run.fit_seconds, said = reloaded
        run = _restore(name, run, restorer, config, cases)
        run.model_notes = said
        return run
    if folder is not None:
        (folder / FIT_RECORD).unlink(missing_ok=True)  # the weights there are being replaced
    try:
        restorer, fit_notes = _fit(
            name,
            dict(config or {}),
            list(train_images),
            list(val_images),
            options or FitOptions(),
            pretrain,
            finetune,
            folder,
        )
        run.notes += fit_notes
    except Exception as err:
        entry = registry_entry(name)
        run.failed = f"could not be built or trained: {_first_line(err)}"
        field = entry.checkpoint_field
        if field and field in str(err):
            run.notes.append(f"give the file with: --set {name}.{field}=PATH")
        log.warning("%s: %s", name, run.failed)
        return run
    run.fit_seconds = time.perf_counter() - t0
    entry = registry_entry(name)
    trained = entry.fitting in ("fit", "pretrained") or entry.fine_tunes(restorer.config)
    if folder is not None and trained:
        try:
            restorer.save(folder)
            if fit_key is not None:
                said = model_notes(restorer)[1]
                record: dict[str, Any] = {"key": fit_key, "notes": run.notes, "model_notes": said}
                record["fit_seconds"] = run.fit_seconds
                atomic_write_text(folder / FIT_RECORD, json.dumps(record, indent=2))
        except Exception as err:  # a save failure loses the weights, not the results
            run.notes.append(f"could not save the trained weights: {_first_line(err)}")
    return _restore(name, run, restorer, config, cases)


def _restore(
    name: str,
    run: MethodRun,
    restorer: Any,
    config: Mapping[str, Any] | None,
    cases: Sequence[Case],
) -> MethodRun:
    """Restore every case with ``restorer`` (or, for a method given each case's true PSF, a
    restorer built per case) into ``run``, with what the model says of itself."""
    run.model_notes = model_notes(restorer)[1]
    entry = registry_entry(name)
    if entry.psf_from_case:
        settings = dict(config or {})

        def with_true_psf(c: Case) -> np.ndarray:
            if c.params is None:
                raise ValueError("real input: the true PSF is unknown")
            return get_restorer(name, **{**settings, "psf": c.params.psf}).restore(c.input)

        return _restore_all(run, with_true_psf, cases, per_case=True)
    return _restore_all(run, restorer.restore, cases)

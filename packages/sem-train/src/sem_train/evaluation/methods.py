"""Running every registered restoration method on the same protocol cases.

Methods come from the ``sem_baselines`` registry (``list_restorers`` / ``get_restorer``).
A learned method (one with ``fit``) is trained on the protocol's focused training images with
synthetic defocus drawn from the same parameter ranges; a method that cannot be built, trained
or run (e.g. external weights that are not installed) is recorded as failed with the reason and
keeps its row in every table.
"""

from __future__ import annotations

import inspect
import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from sem_physics import ParameterRanges

from .protocols import Case
from .results import INPUT_NAME, MethodRun

__all__ = [
    "IDENTITY",
    "IDENTITY_NAMES",
    "fit_kwargs_for",
    "list_methods",
    "make_restorer",
    "run_method",
    "select_methods",
]

log = logging.getLogger(__name__)

#: Registry names of the pass-through method, reported as the defocused input.
IDENTITY_NAMES: tuple[str, ...] = ("input", "identity")
IDENTITY = IDENTITY_NAMES[0]


class _Identity:
    """Pass-through used only when sem_baselines provides no registry."""

    name = IDENTITY

    def restore(self, image: np.ndarray) -> np.ndarray:
        return np.asarray(image, dtype=np.float32).copy()


def list_methods() -> list[str]:
    """Names of every registered restorer (identity first)."""
    try:
        from sem_baselines import list_restorers
    except ImportError:
        return [IDENTITY]
    names = list(list_restorers())
    return names if any(n in IDENTITY_NAMES for n in names) else [IDENTITY, *names]


def select_methods(methods: Sequence[str] | None, exclude: Sequence[str] = ()) -> list[str]:
    """The methods to run: ``methods`` (None: all registered) minus ``exclude``.

    The pass-through (the defocused input, every table's reference row) is always included
    unless it is excluded by name. Unknown names raise ValueError listing the registered ones,
    before anything runs.
    """
    registered = list_methods()
    unknown = [n for n in [*(methods or []), *exclude] if n not in registered]
    if unknown:
        raise ValueError(
            f"unknown method(s) {', '.join(map(repr, unknown))}; registered: "
            + ", ".join(registered)
        )
    names = list(dict.fromkeys(methods)) if methods is not None else registered
    identity = next(n for n in registered if n in IDENTITY_NAMES)
    if not any(n in IDENTITY_NAMES for n in names):
        names.insert(0, identity)
    return [n for n in names if n not in exclude]


def make_restorer(name: str, config: Mapping[str, Any] | None = None) -> Any:
    """Build restorer ``name`` from the registry with keyword ``config``."""
    try:
        from sem_baselines import get_restorer
    except ImportError:
        if name in IDENTITY_NAMES:
            return _Identity()
        raise ValueError(f"restorer {name!r} needs sem_baselines, which is not installed") from None
    try:
        return get_restorer(name, **dict(config or {}))
    except ValueError:
        if name in IDENTITY_NAMES:
            return _Identity()
        raise


def fit_kwargs_for(restorer: Any, wanted: Mapping[str, Any]) -> dict[str, Any]:
    """The subset of ``wanted`` keyword arguments that ``restorer.fit`` accepts."""
    params = inspect.signature(restorer.fit).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return dict(wanted)
    return {k: v for k, v in wanted.items() if k in params}


def _first_line(err: BaseException) -> str:
    text = str(err).splitlines()[0] if str(err) else ""
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def run_method(
    name: str,
    cases: Sequence[Case],
    train_images: Sequence[np.ndarray],
    *,
    config: Mapping[str, Any] | None = None,
    fit: Mapping[str, Any] | None = None,
    ranges: ParameterRanges | None = None,
    val_images: Sequence[np.ndarray] | None = None,
    seed: int = 0,
    save_dir: str | Path | None = None,
) -> MethodRun:
    """Build (and train, when learned) method ``name``, then restore every case input.

    ``fit`` holds the training keywords (epochs, batch_size, ...) passed to ``restorer.fit``
    when it accepts them. Exceptions while building or training mark the whole method failed;
    an exception on one case marks only that case. The trained restorer is saved under
    ``save_dir`` when given.
    """
    run = MethodRun(name=INPUT_NAME if name in IDENTITY_NAMES else name)
    try:
        restorer = make_restorer(name, config)
    except Exception as err:
        run.failed = f"could not be built: {_first_line(err)}"
        log.warning("%s: %s", name, run.failed)
        return run
    if hasattr(restorer, "fit"):
        if not train_images:
            run.failed = "learned method, but the protocol has no training images"
            return run
        wanted = {
            "val_images": list(val_images) if val_images else None,
            "seed": seed,
            "ranges": ranges or ParameterRanges(),
            **dict(fit or {}),
        }
        t0 = time.perf_counter()
        try:
            restorer.fit(list(train_images), **fit_kwargs_for(restorer, wanted))
        except Exception as err:
            run.failed = f"training failed: {_first_line(err)}"
            log.warning("%s: %s", name, run.failed)
            return run
        run.fit_seconds = time.perf_counter() - t0
        if save_dir is not None and hasattr(restorer, "save"):
            try:
                restorer.save(Path(save_dir))
            except Exception as err:  # a save failure loses the weights, not the results
                run.notes.append(f"could not save the trained weights: {_first_line(err)}")
    t0 = time.perf_counter()
    for c in cases:
        try:
            out = np.asarray(restorer.restore(c.input), dtype=np.float32)
        except Exception as err:
            run.case_errors[c.case_id] = _first_line(err)
            continue
        if out.shape != c.input.shape:
            run.case_errors[c.case_id] = f"output shape {out.shape} != input shape {c.input.shape}"
        elif not np.all(np.isfinite(out)):
            run.case_errors[c.case_id] = "output contains NaN or inf"
        else:
            run.outputs[c.case_id] = out
    run.restore_seconds = time.perf_counter() - t0
    if cases and not run.outputs:
        run.failed = "every case failed: " + next(iter(run.case_errors.values()))
    return run

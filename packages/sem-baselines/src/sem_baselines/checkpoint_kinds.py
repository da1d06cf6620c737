"""Which sem-models export each MAE restorer takes, and which shipped model it loads when unset.

Read from an export's ``config.json`` alone (:func:`sem_models.checkpoint.read_export_meta`),
without torch: the restorers apply these rules before loading a checkpoint, and an evaluation
(sem-train) applies the same ones to refuse a wrong checkpoint before any work. The problems
read ``FOLDER holds ...``; each caller adds what to do instead.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from sem_models.checkpoint import best_export, export_has_moe, read_export_meta
from sem_models.pretrained import SHIPPED_MODELS

__all__ = ["export_kind_problem", "shipped_default"]


def shipped_default(name: str, *, fine_tunes: bool = False) -> str | None:
    """The shipped model method ``name`` loads when its ``checkpoint_dir`` is unset (None: it
    has none): ``sem-foundation`` fine-tuned here starts from the pretrained MAE."""
    if name == "sem-foundation" and fine_tunes:
        return "sem-foundation-zero-shot"
    return name if name in SHIPPED_MODELS else None


def _fine_tuned(meta: dict[str, Any], fine_tunes: bool) -> str | None:
    """sem-foundation: a fine-tuned restoration model, or an MAE to fine-tune here."""
    if meta["kind"] == "mae" and not fine_tunes:
        return "holds a pretrained MAE, not a fine-tuned restoration model"
    return None


def _pretrained(meta: dict[str, Any], fine_tunes: bool) -> str | None:
    """sem-foundation-zero-shot: an MAE, or a non-residual (its own) restoration model."""
    if meta["kind"] == "restoration" and meta.get("residual", False):
        return (
            "holds a fine-tuned (residual) restoration model; the zero-shot form takes the "
            "pretrained MAE"
        )
    return None


def _dense(meta: dict[str, Any], fine_tunes: bool) -> str | None:
    """mae-sem: the dense MAE (or a restoration model of it)."""
    if export_has_moe(meta):
        return "has Mixture-of-Experts layers; mae-sem is the SEM-pretrained MAE without MoE"
    return None


_RULES: dict[str, Callable[[dict[str, Any], bool], str | None]] = {
    "sem-foundation": _fine_tuned,
    "sem-foundation-zero-shot": _pretrained,
    "mae-sem": _dense,
}


def export_kind_problem(name: str, folder: str | Path, *, fine_tunes: bool = False) -> str | None:
    """Why the export in ``folder`` (or a run folder's best export) is of a kind method ``name``
    does not take (``"FOLDER holds ..."``), or None; fine-tuned here (``fine_tunes``),
    sem-foundation takes a pretrained MAE. CheckpointError when ``config.json`` is no export's."""
    rule = _RULES.get(name)
    if rule is None:
        return None
    problem = rule(read_export_meta(best_export(folder)), fine_tunes)
    return None if problem is None else f"{folder} {problem}"

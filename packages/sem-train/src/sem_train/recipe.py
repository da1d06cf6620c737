"""The whole training recipe of a preset in one call: Stage 1 -> 2 -> 3 -> low-shot fine-tune.

Each step writes into ``<output_dir>/<kind>`` and starts from the previous step's best model.
A finished step leaves ``recipe_done.json`` and is skipped when the recipe runs again; an
interrupted one continues from its latest checkpoint with ``resume=True``, or starts again
from step 0 when it was interrupted before its first checkpoint. The data each step
trained and validated on is written to ``<output_dir>/<kind>/data_split.json``, so a model's
evaluation images can be checked to be unseen.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sem_physics.atomic import atomic_write_text

from .datasplit import SPLIT_FILE

__all__ = ["DENSE_KINDS", "RECIPE_KINDS", "SPLIT_FILE", "run_recipe"]

#: The steps of a recipe, in order.
RECIPE_KINDS = ("stage1", "stage2", "stage3", "finetune")
#: The dense ablation (no Mixture-of-Experts): Stage 2 left out, Stage 3 from Stage 1.
DENSE_KINDS = ("stage1", "stage3", "finetune")
DONE_FILE = "recipe_done.json"


def _runner(kind: str) -> Callable[..., Any]:
    if kind == "finetune":
        from .finetune import run_finetune

        return run_finetune
    from .stages import run_pretrain_stage

    stage = int(kind[-1])
    return lambda cfg, resume: run_pretrain_stage(stage, cfg, resume=resume)


def run_recipe(
    preset_name: str,
    *,
    data_root: Path | None,
    output_dir: Path,
    resume: bool = False,
    device: str | None = None,
    kinds: tuple[str, ...] = RECIPE_KINDS,
    overrides: dict[str, dict[str, Any]] | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Run ``kinds`` of preset ``preset_name`` in order; returns {kind: summary}.

    ``data_root`` replaces every step's ``data.root`` (the generated images of the preset are
    added to it); ``overrides`` maps a kind to fields merged into its config (e.g. a smaller
    budget). Without ``resume`` the output folder must not hold a recipe yet.
    """
    from .config import _deep_merge, load_config
    from .preflight import check_inputs
    from .runfolder import RunFolder

    output_dir = Path(output_dir)
    if not resume and any((output_dir / k).exists() for k in kinds):
        raise FileExistsError(
            f"{output_dir} already holds a recipe run; pass --resume to continue it, or choose "
            "another --output-dir"
        )
    summary: dict[str, Any] = {}
    previous: Path | None = None
    for kind in kinds:
        out = output_dir / kind
        data = _deep_merge(
            load_config(preset_name, kind).model_dump(), (overrides or {}).get(kind, {})
        )
        if data_root is not None:
            data["data"]["root"] = data_root
        data["run"]["output_dir"] = out
        if device is not None:
            data["run"]["device"] = device
        if "init_from" in data and previous is not None:
            data["init_from"] = previous
        if kind == "stage3":
            data["teacher_from"] = output_dir / "stage1"
        cfg = load_config(data, kind)
        previous = out
        done = out / DONE_FILE
        if done.is_file():
            summary[kind] = json.loads(done.read_text(encoding="utf-8"))
            log(f"{kind}: already finished ({summary[kind]['seconds']:.0f} s), skipped")
            continue
        folder = RunFolder(out)
        again = resume and (folder.has_checkpoint or folder.has_started_run)
        check_inputs(kind, cfg)  # bad data is refused before the training code is imported
        if again and not folder.has_checkpoint:
            log(f"{kind}: no checkpoint yet, starting again from step 0 into {out}")
        else:
            log(f"{kind}: {'resuming' if again else 'training'} into {out}")
        t0 = time.perf_counter()
        result = _runner(kind)(cfg, resume=again)
        record = {
            "kind": kind,
            "seconds": time.perf_counter() - t0,
            "global_step": result.global_step,
            "stopped_at_max_steps": result.stopped_early,
            "best_val_loss": result.best_loss,
            "first_train_loss": result.first_train_loss,
            "last_train_loss": result.last_train_loss,
            "best_dir": None if result.best_dir is None else str(result.best_dir),
        }
        atomic_write_text(done, json.dumps(record, indent=2))
        summary[kind] = record
        log(f"{kind}: finished in {record['seconds']:.0f} s, best val loss {result.best_loss}")
    return summary

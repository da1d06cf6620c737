"""The checks of a training run's inputs that need no torch: the model it starts from, the
baseline method and the data. The ``sem train`` commands make them as soon as they hold the
run folder, so bad input is refused in about a second instead of after the imports of the
training code; that code calls the same functions again (one implementation of each rule).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .config import Stage3Config
from .data.index import indexed_paths
from .runfolder import resolve_model_dir

__all__ = ["check_baseline_method", "check_inputs", "stage3_teacher_dir"]


def stage3_teacher_dir(cfg: Stage3Config) -> Path:
    """The Stage-1 model to distil from: ``teacher_from``, else the Stage-2 run's ``init_from``."""
    if cfg.teacher_from is not None:
        return resolve_model_dir(cfg.teacher_from, what="teacher_from")
    run_cfg = Path(cfg.init_from) / "config.json"
    teacher = None
    if run_cfg.is_file():
        try:
            teacher = json.loads(run_cfg.read_text()).get("init_from")
        except (ValueError, AttributeError):
            teacher = None
    if not teacher:
        raise ValueError(
            f"stage 3 with kd_weight={cfg.kd_weight} needs the Stage-1 teacher: set "
            f"teacher_from (none recorded in {run_cfg}), or kd_weight: 0"
        )
    return resolve_model_dir(teacher, what=f"teacher_from (from {run_cfg})")


def check_baseline_method(name: str | None, trainable: list[str]) -> str:
    """``name`` when it is one of the ``trainable`` methods, else a ValueError naming them."""
    if name not in trainable:
        raise ValueError(f"baseline must be one of {', '.join(trainable)}, got {name!r}")
    return name


def check_inputs(kind: str, cfg: Any, *, method: str | None = None) -> None:
    """Refuse what a run of ``kind`` (``stage1``..``stage3``, ``finetune``, ``baseline``) with
    ``cfg`` would refuse after seconds of imports, in the order the training code meets it: the
    model it starts from (``init_from``, Stage 3's teacher), the baseline ``method`` (default
    ``cfg.method``) as far as it is known without importing the methods, then the data (none
    set, or no image to read).

    Only paths and the image headers are read (the folder index, cached for the run itself);
    what needs a model loaded (a file that is no checkpoint) or the images decoded stays with
    the training code, and so does a fine-tune's count of images (reported after a model that
    does not load, as before).
    """
    init_from = getattr(cfg, "init_from", None)
    if init_from is not None:
        resolve_model_dir(init_from)
    if isinstance(cfg, Stage3Config) and cfg.kd_weight > 0:
        stage3_teacher_dir(cfg)
    if kind == "baseline":
        from sem_baselines.restorer import declared_trainable

        check_baseline_method(method or cfg.method, declared_trainable())
    indexed_paths(cfg.data)

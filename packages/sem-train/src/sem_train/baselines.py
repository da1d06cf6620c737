"""Training of sem-baselines' learned restorers (Noise2Void, Noise2Noise, MRN).

The restorer is looked up by name in ``sem_baselines``' registry, given the training and
validation focused images (grayscale, information bar removed, 0..255 float32 arrays) and the
degradation ranges, trained by its own ``fit`` (seeded synthetic degradations, best epoch by
validation loss) and saved under the run folder beside the resolved config and provenance.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from .config import BaselineTrainConfig
from .data import indexed_paths, split_index
from .data.io import crop_bottom, read_gray
from .runinfo import write_run_info

__all__ = ["LEARNED_BASELINES", "run_baseline"]

LEARNED_BASELINES = ("n2v", "n2n", "mrn")


def _images(paths: list[Path], fraction: float) -> list[np.ndarray]:
    out = []
    for p in paths:
        data, rows = read_gray(p)
        out.append(crop_bottom(data, fraction, rows))
    return out


def run_baseline(cfg: BaselineTrainConfig, method: str | None = None) -> Path:
    """Fit and save baseline ``method`` (n2v, n2n, mrn); returns the run folder.

    The run folder holds ``config.json`` and ``run_info.json`` (provenance), ``metrics.jsonl``
    (one line per epoch from the restorer's training history) and ``model/`` (the restorer,
    reloadable with ``sem_baselines.load_restorer``). Training patches are
    ``data.image_size_px`` wide unless ``fit.patch_size`` says otherwise.
    """
    import sem_baselines

    name = method or cfg.method
    if name not in LEARNED_BASELINES:
        raise ValueError(f"baseline must be one of {LEARNED_BASELINES}, got {name!r}")
    paths, _index = indexed_paths(cfg.data)
    tr, va = split_index(len(paths), cfg.data.val_fraction, cfg.data.split_seed)
    train = _images([paths[i] for i in tr[: cfg.n_train_images]], cfg.data.info_bar_fraction)
    val = _images([paths[i] for i in va], cfg.data.info_bar_fraction)
    out = Path(cfg.run.output_dir)
    write_run_info(out, cfg.model_dump(mode="json"), {"baseline": name})
    restorer = sem_baselines.get_restorer(name, **cfg.params)
    fit_kwargs: dict[str, Any] = {
        "epochs": cfg.run.epochs,
        "batch_size": cfg.run.batch_size_per_process,
        "seed": cfg.run.seed,
        "ranges": cfg.ranges,
        "patch_size": cfg.data.image_size_px,
        "progress": cfg.run.progress,
        **({} if cfg.run.device == "auto" else {"device": cfg.run.device}),
        **cfg.fit,
    }
    result = restorer.fit(train, val_images=val or None, **fit_kwargs)
    restorer.save(out / "model")
    history = getattr(result, "history", None) or []
    with open(out / "metrics.jsonl", "w") as fh:
        for epoch, rec in enumerate(history):
            fh.write(json.dumps({"split": "epoch", **rec, "epoch": epoch}) + "\n")
    return out

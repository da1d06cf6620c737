"""``sem benchmark``: the full S→S or S→R protocol at any scale, resumable per method.

Each method's results go to ``<out>/methods/<name>/result.json`` as soon as it finishes; a
rerun with the same config skips the methods whose results exist (``--force`` reruns them)
and refuses an output folder whose manifest belongs to different inputs.

Example config (YAML; every key is a :class:`BenchmarkConfig` field)::

    protocol: s2s                 # or s2r (with defocused: and focused: folders)
    images: /data/sem_focused     # pool: 10 training + up to 100 evaluation images
    out: runs/bench-s2s
    n_train: 10
    n_eval: 100
    seed: 0
    pixel_size_nm: 0.827          # metrology; else read from each file
    epochs: 400
    methods: [input, richardson-lucy, wiener, bm3d, n2v, n2n, mrn, mae-imagenet, mae-sem]
    method_config:
      mae-imagenet: {weights_path: /weights/mae_pretrain_vit_large.pth}
      mae-sem: {checkpoint_dir: runs/ft/checkpoints/best-00001000}

then ``sem benchmark --config bench.yaml`` (rerun the same command to resume).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sem_physics import ParameterRanges
from tqdm.auto import tqdm

from .images import CROP_FRACTION, list_images, load_image
from .methods import run_method, select_methods
from .pipeline import Evaluation, MethodResult
from .protocols import SETTINGS, ProtocolManifest, build_s2r, build_s2s
from .quality import QUALITY_METRICS, QualityScorer
from .report import safe_name

__all__ = ["BenchmarkConfig", "load_benchmark_config", "run_benchmark"]

log = logging.getLogger(__name__)


class BenchmarkConfig(BaseModel):
    """A benchmark run: protocol, data, methods and their training budget.

    S→S uses ``images`` (a folder of focused images: ``n_train`` for training, up to
    ``n_eval`` for evaluation). S→R evaluates real ``defocused`` images against ``focused``
    ones (paired by sorted order) and trains learned methods on ``train_images`` (focused).
    """

    model_config = ConfigDict(extra="forbid")

    protocol: Literal["s2s", "s2r"] = "s2s"
    out: Path = Path("sem-benchmark")
    images: Path | None = None
    defocused: Path | None = None
    focused: Path | None = None
    train_images: Path | None = None
    n_train: int = Field(10, ge=0)
    n_eval: int = Field(100, ge=1)
    seed: int = 0
    settings: tuple[str, ...] = SETTINGS
    ranges: ParameterRanges = Field(default_factory=ParameterRanges)
    crop_fraction: float = Field(CROP_FRACTION, ge=0, lt=1)
    pixel_size_nm: float | None = Field(None, gt=0, description="override for metrology")
    methods: list[str] | None = Field(None, description="None: every registered method")
    method_config: dict[str, dict[str, Any]] = Field(default_factory=dict)
    epochs: int = Field(400, ge=1)
    batch_size: int = Field(4, ge=1)
    steps_per_epoch: int | None = Field(None, ge=1, description="None: one pass over the pixels")
    fit_options: dict[str, Any] = Field(
        default_factory=dict, description="further keywords for every learned method's fit"
    )
    quality_metrics: tuple[str, ...] = QUALITY_METRICS
    figure_cases: int = Field(3, ge=0, description="cases that get panels and edge overlays")


def load_benchmark_config(path: str | Path, **overrides: Any) -> BenchmarkConfig:
    """Read a YAML or JSON benchmark config; ``overrides`` (not None) replace its keys."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"benchmark config {str(p)!r} does not exist")
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as err:
        raise ValueError(f"{p}: not valid YAML/JSON: {err}") from err
    if not isinstance(data, dict):
        raise ValueError(f"{p}: expected a mapping of settings, got {type(data).__name__}")
    data.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return BenchmarkConfig(**data)
    except ValidationError as err:
        first = err.errors()[0]
        loc = ".".join(str(x) for x in first["loc"])
        raise ValueError(f"{p}: {loc}: {first['msg']}") from None


def _protocol(cfg: BenchmarkConfig):
    if cfg.protocol == "s2s":
        if cfg.images is None:
            raise ValueError("protocol s2s needs 'images': a folder of focused images")
        pool = [load_image(p, crop_fraction=cfg.crop_fraction) for p in list_images(cfg.images)]
        for im in pool:
            im.pixel_size_nm = cfg.pixel_size_nm or im.pixel_size_nm
        manifest, train, cases = build_s2s(
            pool,
            n_train=cfg.n_train,
            n_eval=cfg.n_eval,
            seed=cfg.seed,
            ranges=cfg.ranges,
            settings=cfg.settings,
            crop_fraction=cfg.crop_fraction,
        )
        return manifest, [im.data for im in train], cases
    if cfg.defocused is None or cfg.focused is None:
        raise ValueError("protocol s2r needs 'defocused' and 'focused' image folders")
    manifest, cases = build_s2r(
        cfg.defocused, cfg.focused, crop_fraction=cfg.crop_fraction, pixel_size_nm=cfg.pixel_size_nm
    )
    train = []
    if cfg.train_images is not None:
        paths = list_images(cfg.train_images)[: cfg.n_train]
        train = [load_image(p, crop_fraction=cfg.crop_fraction).data for p in paths]
    return manifest, train, cases


def _check_manifest(path: Path, manifest: ProtocolManifest) -> None:
    if not path.is_file():
        return
    old = json.loads(path.read_text())
    new = json.loads(manifest.model_dump_json())
    if old != new:
        raise ValueError(
            f"{path.parent} holds results of different protocol inputs; use another --out "
            "or delete that folder"
        )


def run_benchmark(cfg: BenchmarkConfig, *, force: bool = False, progress: bool = True) -> Path:
    """Run (or resume) the benchmark; returns the path of ``report.md``."""
    names = select_methods(cfg.methods)  # a typo fails before any work
    out = Path(cfg.out)
    manifest, train, cases = _protocol(cfg)
    _check_manifest(out / "manifest.json", manifest)
    out.mkdir(parents=True, exist_ok=True)
    (out / "manifest.json").write_text(manifest.model_dump_json(indent=2))
    (out / "config.json").write_text(cfg.model_dump_json(indent=2))
    figure_ids = [c.case_id for c in cases[: cfg.figure_cases]]
    evaluation = Evaluation(
        cases,
        scorer=QualityScorer(cfg.quality_metrics),
        figure_cases=figure_ids,
        progress=progress,
    )
    results: list[MethodResult] = []
    bar = tqdm(names, desc="methods", unit="method", disable=not progress)
    for name in bar:
        bar.set_postfix_str(name)
        folder = out / "methods" / safe_name(name)
        if (folder / "result.json").is_file() and not force:
            log.info("%s: results exist in %s, skipped", name, folder)
            results.append(MethodResult.load(folder))
            continue
        run = run_method(
            name,
            cases,
            train,
            config=cfg.method_config.get(name, {}),
            fit={
                "epochs": cfg.epochs,
                "batch_size": cfg.batch_size,
                **({"steps_per_epoch": cfg.steps_per_epoch} if cfg.steps_per_epoch else {}),
                **cfg.fit_options,
            },
            ranges=cfg.ranges,
            seed=cfg.seed,
            save_dir=folder / "model",
        )
        result = evaluation.evaluate(run)
        result.save(folder)
        results.append(result)
    title = "S→S benchmark" if cfg.protocol == "s2s" else "S→R benchmark"
    intro = [
        f"{len(cases)} cases, {len(train)} training images, seed {cfg.seed}; config in "
        "`config.json`, exact inputs in `manifest.json`."
    ]
    return evaluation.write_report(
        out,
        results,
        title=title,
        intro=intro,
        manifest=manifest,
        extra={"config": cfg.model_dump(mode="json")},
    )

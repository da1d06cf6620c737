"""``sem demo``: the toolkit's main job in one command.

Generated sample images (line/space, contact holes, textures) — or the user's own folder —
are defocused with seeded settings (SPEC ranges and the midpoint), restored by every
registered method (learned ones trained on the spot at small size), scored (PSNR, SSIM,
LPIPS, NIQE), measured (CD, LWR, LER, PSD), and written to a report folder.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from tqdm.auto import tqdm

from .foundation import FoundationDemoConfig, train_foundation
from .images import CROP_FRACTION, list_images, load_image, sample_images
from .methods import run_method, select_methods
from .pipeline import Evaluation
from .protocols import SETTINGS, build_s2s
from .quality import QUALITY_METRICS, QualityScorer
from .results import MethodRun

__all__ = ["DemoConfig", "run_demo"]

log = logging.getLogger(__name__)


class DemoConfig(BaseModel):
    """Settings of ``sem demo`` (``quick`` shrinks everything for a test-sized run)."""

    model_config = ConfigDict(extra="forbid")

    out: Path = Field(Path("sem-demo-report"), description="report folder")
    images: Path | None = Field(None, description="folder of the user's focused images")
    quick: bool = False
    methods: list[str] | None = Field(None, description="None: every registered method")
    exclude: list[str] = Field(default_factory=list)
    seed: int = 0
    n_per_kind: int = Field(1, ge=1, le=50, description="generated evaluation images per kind")
    n_train: int = Field(10, ge=0, le=1000, description="focused training images")
    n_eval: int = Field(100, ge=1, le=100_000)
    shape: tuple[int, int] = Field((480, 640), description="generated image size (rows, cols)")
    settings: tuple[str, ...] = SETTINGS
    quality_metrics: tuple[str, ...] = QUALITY_METRICS
    pixel_size_nm: float | None = Field(None, gt=0, le=1e4, description="override for metrology")
    crop_fraction: float = Field(CROP_FRACTION, ge=0, lt=1)
    epochs: int = Field(4, ge=1, description="training epochs of learned methods")
    steps_per_epoch: int = Field(15, ge=1, description="optimiser steps per epoch")
    batch_size: int = Field(4, ge=1)
    method_config: dict[str, dict[str, Any]] = Field(default_factory=dict)
    foundation: FoundationDemoConfig = Field(
        default_factory=lambda: FoundationDemoConfig(
            image_size_px=128, pretrain_epochs=100, finetune_epochs=60
        ),
        description="the SEM-pretrained MAE ('mae-sem') trained on the spot",
    )

    @classmethod
    def quick_preset(cls, **overrides: Any) -> DemoConfig:
        """The reduced mode of the tests: one small image per kind, one setting, short training."""
        base = {
            "quick": True,
            "n_per_kind": 1,
            "n_train": 2,
            "shape": (128, 160),
            "settings": ("midpoint",),
            "epochs": 1,
            "steps_per_epoch": 2,
            "batch_size": 4,
            "foundation": FoundationDemoConfig(
                pretrain_epochs=1, finetune_epochs=1, pairs_per_image=2, batch_size=4
            ),
        }
        base.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**base)


#: Small architectures for on-the-spot training (keys unknown to a method's config are dropped).
SMALL_CONFIGS: dict[str, dict[str, Any]] = {}


def _method_config(name: str, cfg: DemoConfig) -> dict[str, Any]:
    conf = dict(SMALL_CONFIGS.get(name, {}))
    conf.update(cfg.method_config.get(name, {}))
    return conf


def _load_user_images(cfg: DemoConfig):
    assert cfg.images is not None
    paths = list_images(cfg.images)
    images = [load_image(p, crop_fraction=cfg.crop_fraction, kind="image") for p in paths]
    if cfg.pixel_size_nm:
        for im in images:
            im.pixel_size_nm = cfg.pixel_size_nm
    names = [im.name for im in images]
    for i, im in enumerate(images):  # same stem in two subfolders: keep rows apart
        if names.count(im.name) > 1:
            im.name = f"{im.name}_{i:03d}"
    return images


#: The registry entry that is the paper's SEM-pretrained MAE (trained on the spot if no
#: ``checkpoint_dir`` is configured).
FOUNDATION = "mae-sem"


def _failed(name: str, err: BaseException) -> MethodRun:
    text = str(err).splitlines()[0] if str(err) else ""
    return MethodRun(name=name, failed=f"training failed: {type(err).__name__}: {text}")


def run_demo(cfg: DemoConfig, *, progress: bool = True) -> Path:
    """Run the demo described by ``cfg``; returns the path of ``report.md``."""
    t_start = time.perf_counter()
    names = select_methods(cfg.methods, cfg.exclude)  # a typo fails before any work
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    notes: list[str] = []
    if cfg.images is None:
        pool = sample_images(cfg.n_per_kind, cfg.shape, cfg.seed)
        train_pool = sample_images(max(1, -(-cfg.n_train // 3)), cfg.shape, cfg.seed + 1)[
            : cfg.n_train
        ]
        for im in train_pool:
            im.name = f"train_{im.name}"
        manifest, train, cases = build_s2s(
            pool,
            n_train=cfg.n_train,
            n_eval=cfg.n_eval,
            seed=cfg.seed,
            settings=cfg.settings,
            train_images=train_pool,
            crop_fraction=cfg.crop_fraction,
        )
        source = f"{len(pool)} generated sample images ({cfg.shape[0]}×{cfg.shape[1]} px)"
    else:
        images = _load_user_images(cfg)
        if len(images) == 1 and cfg.n_train > 0:
            n_train = 0
            notes.append(
                "Only one image was given: learned methods are trained on that same image "
                "(self-supervised on synthetic defocus of it)."
            )
        else:
            n_train = min(cfg.n_train, len(images) // 2)
        manifest, train, cases = build_s2s(
            images,
            n_train=n_train,
            n_eval=cfg.n_eval,
            seed=cfg.seed,
            settings=cfg.settings,
            crop_fraction=cfg.crop_fraction,
        )
        if len(images) == 1 and cfg.n_train > 0:
            train = [images[0]]
        source = f"{len(images)} images from {cfg.images}"
    log.info("sem demo: %d cases, %d methods -> %s", len(cases), len(names), out)
    evaluation = Evaluation(cases, scorer=QualityScorer(cfg.quality_metrics), progress=progress)
    results = []
    bar = tqdm(names, desc="methods", unit="method", disable=not progress)
    for name in bar:
        bar.set_postfix_str(name)
        conf = _method_config(name, cfg)
        pre_seconds, pre_note = 0.0, None
        if name == FOUNDATION and "checkpoint_dir" not in conf:
            t0 = time.perf_counter()
            try:
                best = train_foundation(
                    [im.data for im in train],
                    out / "models" / name,
                    cfg.foundation,
                    seed=cfg.seed,
                    progress=progress,
                )
            except Exception as err:  # reported in the tables, the demo goes on
                results.append(evaluation.evaluate(_failed(name, err)))
                continue
            conf.update(checkpoint_dir=str(best), window_px=cfg.foundation.image_size_px)
            pre_seconds = time.perf_counter() - t0
            pre_note = (
                f"ViT-{cfg.foundation.preset} MAE pretrained (Stage 1) and fine-tuned here on "
                f"{len(train)} image(s), {cfg.foundation.image_size_px}-px windows"
            )
        run = run_method(
            name,
            cases,
            [im.data for im in train],
            config=conf,
            fit={
                "epochs": cfg.epochs,
                "steps_per_epoch": cfg.steps_per_epoch,
                "batch_size": cfg.batch_size,
                "progress": progress,
            },
            seed=cfg.seed,
            save_dir=out / "models" / name,
        )
        if run.failed and "weights_path" in run.failed:
            run.notes.append(f"give the file with: sem demo --set {name}.weights_path=FILE")
        run.fit_seconds += pre_seconds
        if pre_note:
            run.notes.insert(0, pre_note)
        results.append(evaluation.evaluate(run))
    elapsed = time.perf_counter() - t_start
    intro = [
        f"Inputs: {source}; {len(cases)} cases (settings: {', '.join(cfg.settings)}); "
        f"{len(train)} focused training image(s) for the learned methods "
        f"({cfg.epochs} epochs × {cfg.steps_per_epoch} steps"
        f"{', quick mode' if cfg.quick else ''}).",
        f"Seed {cfg.seed}: the same inputs on every run (`manifest.json` holds their hashes).",
        f"Wall time {elapsed:.0f} s.",
        *notes,
    ]
    report = evaluation.write_report(
        out,
        results,
        title="SEM restoration demo",
        intro=intro,
        manifest=manifest,
        extra={"config": cfg.model_dump(mode="json"), "wall_seconds": elapsed},
    )
    return report

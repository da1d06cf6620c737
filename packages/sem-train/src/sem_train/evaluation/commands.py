"""``sem demo`` and ``sem benchmark``: registered into the ``sem`` command line."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import yaml

from .benchmark import load_benchmark_config, run_benchmark
from .demo import DemoConfig, run_demo

__all__ = ["register"]


def _positive_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not v > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return v


def _method_options(items: list[str] | None) -> dict[str, dict[str, Any]]:
    """``["mae-imagenet.weights_path=/w.pth", ...]`` -> ``{"mae-imagenet": {"weights_path": ...}}``.

    Values are parsed as YAML scalars (numbers, booleans), otherwise kept as text.
    """
    out: dict[str, dict[str, Any]] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        method, dot, field = key.partition(".")
        if not (sep and dot and method and field):
            raise ValueError(f"--set {item!r}: expected METHOD.FIELD=VALUE")
        out.setdefault(method, {})[field] = yaml.safe_load(value) if value else value
    return out


def _demo(args: argparse.Namespace) -> int:
    if args.images is not None and not Path(args.images).is_dir():
        raise NotADirectoryError(f"--images {args.images!r} is not a folder")
    common = {
        "out": Path(args.out),
        "images": None if args.images is None else Path(args.images),
        "methods": args.methods.split(",") if args.methods else None,
        "exclude": args.exclude.split(",") if args.exclude else [],
        "seed": args.seed,
        "pixel_size_nm": args.pixel_size_nm,
        "method_config": _method_options(args.set),
    }
    if args.epochs is not None:
        common["epochs"] = args.epochs
    if args.n_train is not None:
        common["n_train"] = args.n_train
    if args.metrics:
        common["quality_metrics"] = tuple(args.metrics.split(","))
    if args.settings:
        common["settings"] = tuple(args.settings.split(","))
    cfg = DemoConfig.quick_preset(**common) if args.quick else DemoConfig(**common)
    report = run_demo(cfg, progress=not args.no_progress)
    print(f"report: {report.resolve()}")
    return 0


def _benchmark(args: argparse.Namespace) -> int:
    overrides = {"out": args.out, "methods": args.methods.split(",") if args.methods else None}
    cfg = load_benchmark_config(args.config, **overrides)
    report = run_benchmark(cfg, force=args.force, progress=not args.no_progress)
    print(f"report: {report.resolve()}")
    return 0


def _cluster(args: argparse.Namespace) -> int:
    from .clustering import cluster_embeddings, clustering_markdown, embed_folder
    from .report import write_json

    results = {}
    for ckpt in args.checkpoint:
        emb, _names = embed_folder(
            ckpt, args.images, pool=args.pool, crop_fraction=args.crop_fraction
        )
        results[Path(ckpt).name] = cluster_embeddings(
            emb, k=args.k, seed=args.seed, silhouette_sample_size=args.silhouette_sample_size
        )
    table = clustering_markdown(results)
    print(table, end="")
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "clustering.md").write_text(
            "# Clustering of encoder embeddings (Table 1)\n\n" + table
        )
        write_json(
            out / "clustering.json",
            {k: r.model_dump(exclude={"labels"}) for k, r in results.items()},
        )
        print(f"report: {(out / 'clustering.md').resolve()}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``demo`` and ``benchmark`` to the ``sem`` command line."""
    p = subparsers.add_parser(
        "demo",
        help="defocus, restore with every method, score and measure; write a report",
        description=(
            "Runs on generated sample images (or --images DIR): seeded defocus, restoration by "
            "every registered method, image quality and metrology, a report folder."
        ),
    )
    p.add_argument("--images", help="folder of your focused SEM images (default: generated)")
    p.add_argument("--out", default="sem-demo-report", help="report folder")
    p.add_argument(
        "--quick", action="store_true", help="reduced mode (small images, short training)"
    )
    p.add_argument("--methods", help="comma-separated method names (default: all registered)")
    p.add_argument("--exclude", help="comma-separated method names to leave out")
    p.add_argument("--epochs", type=int, help="training epochs of the learned methods")
    p.add_argument(
        "--n-train",
        type=int,
        help="focused images kept for training the learned methods (0: evaluate all images)",
    )
    p.add_argument("--metrics", help="quality metrics (default: psnr,ssim,lpips,niqe)")
    p.add_argument("--settings", help="defocus settings (default: random,midpoint)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--pixel-size-nm", type=_positive_float, help="pixel size for metrology (nm)")
    p.add_argument(
        "--set",
        action="append",
        metavar="METHOD.FIELD=VALUE",
        help="a method's setting, e.g. mae-imagenet.weights_path=mae_pretrain_vit_large.pth",
    )
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.set_defaults(handler=_demo)

    b = subparsers.add_parser(
        "benchmark",
        help="run the S→S or S→R protocol from a config, resumable per method",
        description="Full evaluation protocols at any scale; methods with results are skipped.",
    )
    b.add_argument("--config", required=True, help="YAML/JSON benchmark config")
    b.add_argument("--out", help="output folder (overrides the config)")
    b.add_argument("--methods", help="comma-separated method names (overrides the config)")
    b.add_argument("--force", action="store_true", help="rerun methods whose results exist")
    b.add_argument("--no-progress", action="store_true", help="hide progress bars")
    b.set_defaults(handler=_benchmark)

    c = subparsers.add_parser(
        "cluster",
        help="k-means on encoder embeddings of a folder: silhouette, Davies-Bouldin, CH",
        description="Table 1: cluster the embeddings of --images from each --checkpoint.",
    )
    c.add_argument(
        "--checkpoint",
        action="append",
        required=True,
        help="exported sem-models folder or a training run folder (repeat to compare models)",
    )
    c.add_argument("--images", required=True, help="folder of images")
    c.add_argument("--k", type=int, default=10, help="number of clusters (default 10)")
    c.add_argument("--pool", choices=("mean", "cls"), default="mean")
    c.add_argument("--seed", type=int, default=0)
    c.add_argument(
        "--crop-fraction", type=float, default=0.0667, help="bottom fraction removed (info bar)"
    )
    c.add_argument("--silhouette-sample-size", type=int, default=10_000)
    c.add_argument("--out", help="folder for clustering.md / clustering.json")
    c.set_defaults(handler=_cluster)

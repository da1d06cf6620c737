"""``sem demo`` and ``sem benchmark``: registered into the ``sem`` command line."""

from __future__ import annotations

import argparse
from pathlib import Path

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
    }
    if args.epochs is not None:
        common["epochs"] = args.epochs
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
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--pixel-size-nm", type=_positive_float, help="pixel size for metrology (nm)")
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

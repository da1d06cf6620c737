"""``sem benchmark``: the S→S or S→R protocol from a config file, resumable per method."""

from __future__ import annotations

import argparse
from typing import Any

from sem_physics.cli_support import number

__all__ = ["add_run_options", "register", "split_names"]


def split_names(text: str | None) -> list[str] | None:
    """``"wiener, bm3d"`` -> ``["wiener", "bm3d"]`` (None when not given)."""
    return [t.strip() for t in text.split(",") if t.strip()] if text else None


def add_run_options(p: argparse.ArgumentParser) -> None:
    """The options ``sem demo`` and ``sem benchmark`` share."""
    p.add_argument(
        "--set",
        action="append",
        metavar="METHOD.FIELD=VALUE",
        help="a method's setting (repeatable), e.g. "
        "mae-imagenet.weights_path=mae_pretrain_vit_large.pth; checked, with the file or "
        "folder it names, before any work",
    )
    p.add_argument("--strict", action="store_true", help="an unreadable input file is an error")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.add_argument(
        "--workers",
        type=number(int, low=1, high=64),
        help="methods run at once, each in its own process (default: the config's)",
    )


def _benchmark(args: argparse.Namespace) -> int:
    from ..evaluation.config import (  # no torch yet: option errors come at once
        check_method_names,
        check_method_settings,
        load_benchmark_config,
        parse_method_settings,
    )

    methods = split_names(args.methods)
    check_method_names("--methods", methods)  # the options first, each named in its error
    settings = parse_method_settings(args.set)
    check_method_settings(settings)
    overrides: dict[str, Any] = {
        "out": args.out,
        "methods": methods,
        "strict": args.strict or None,
        "workers": args.workers,
    }
    cfg = load_benchmark_config(args.config, settings, **overrides)
    from ..evaluation.runner import run_benchmark

    report = run_benchmark(cfg, force=args.force, progress=not args.no_progress)
    print(f"report: {report.resolve()}")
    return 0


def register(subparsers: Any) -> None:
    """Add ``benchmark`` to the ``sem`` command line."""
    b = subparsers.add_parser(
        "benchmark",
        help="run the S→S or S→R protocol from a config, resumable per method",
        description=(
            "Full evaluation protocols at any scale; a method whose results exist for the same "
            "configuration is not rerun."
        ),
    )
    b.add_argument("--config", required=True, help="YAML/JSON benchmark config")
    b.add_argument("--out", help="output folder (overrides the config)")
    b.add_argument("--methods", help="comma-separated method names (overrides the config)")
    b.add_argument("--force", action="store_true", help="rerun every method")
    add_run_options(b)
    b.set_defaults(handler=_benchmark)

"""``sem benchmark``: the S→S or S→R protocol from a config file, resumable per method."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from sem_physics.cli_support import number

__all__ = [
    "add_run_options",
    "announce_report",
    "check_input_folders",
    "check_setting_paths",
    "checked_settings",
    "register",
    "split_names",
]


def split_names(text: str | None) -> list[str] | None:
    """``"wiener, bm3d"`` -> ``["wiener", "bm3d"]`` (None when not given)."""
    return [t.strip() for t in text.split(",") if t.strip()] if text else None


#: The settings that name a method's weights (``check_weights`` of the evaluation config).
_WEIGHT_SETTINGS = ("checkpoint_dir", "weights_path")


def check_setting_paths(settings: dict[str, dict[str, Any]], option: str = "--set") -> None:
    """A weights file or folder named by ``--set METHOD.checkpoint_dir|weights_path=PATH`` of a
    registered method is there: the evaluation config's own check finds the method's setting by
    importing its model code (seconds of torch), this one refuses a mistyped path at once,
    with the same message."""
    from sem_baselines import unknown_restorers

    from ..restoration.methods import check_checkpoint_exists

    for name, conf in settings.items():
        if unknown_restorers([name]):
            continue  # the full check names the unknown method
        for field in _WEIGHT_SETTINGS:
            given = conf.get(field)
            if isinstance(given, str) and given:
                check_checkpoint_exists(given, setting=f"{option} {name}.{field}")


def checked_settings(items: list[str] | None) -> dict[str, dict[str, Any]]:
    """The ``--set`` options as ``{method: {field: value}}``, checked before any work: the
    weights paths they name first (:func:`check_setting_paths`, no model code imported), then
    every method and setting (:func:`sem_train.evaluation.config.check_method_settings`)."""
    from ..evaluation.config import check_method_settings, parse_method_settings

    settings = parse_method_settings(items)
    check_setting_paths(settings)
    check_method_settings(settings)
    return settings


def check_input_folders(cfg: Any) -> None:
    """Each image folder the protocol of ``cfg`` reads holds images (the runner's own check,
    :func:`sem_train.evaluation.sources.list_images`, made before the runner's imports)."""
    from ..evaluation.sources import list_images

    if cfg.protocol == "s2r":
        both = cfg.defocused is not None and cfg.focused is not None  # else the runner says so
        folders = [cfg.defocused, cfg.focused, cfg.train_images] if both else []
    else:
        folders = [cfg.images, cfg.train_images] if cfg.images is not None else []
    for folder in folders:
        if folder is not None:
            list_images(folder)


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
    p.add_argument(
        "--strict",
        action="store_true",
        help="exit 1 if any input file is unusable (default: skip it and list it in the report)",
    )
    p.add_argument(
        "--no-progress",
        action="store_true",
        help="hide progress bars (default: shown when stderr is a terminal)",
    )
    p.add_argument(
        "--json",
        action="store_true",
        help="print the report's results.json to stdout (the report's path then goes to stderr)",
    )
    p.add_argument(
        "--workers",
        type=number(int, low=1, high=64),
        help="methods run at once, each in its own process (default: the config's)",
    )


def _benchmark(args: argparse.Namespace) -> int:
    from ..evaluation.config import (  # no torch yet: option errors come at once
        check_method_names,
        load_benchmark_config,
    )

    methods = split_names(args.methods)
    if args.methods is not None and not methods:  # '' would fall back to the config's silently
        raise ValueError("--methods: no method name given; leave the option out for the config's")
    check_method_names("--methods", methods)  # the options first, each named in its error
    settings = checked_settings(args.set)
    overrides: dict[str, Any] = {
        "out": args.out,
        "methods": methods,
        "strict": args.strict or None,
        "workers": args.workers,
        "seed": args.seed,
    }
    cfg = load_benchmark_config(args.config, settings, **overrides)
    from sem_physics.locking import output_lock

    with output_lock(cfg.out):  # held (re-entrantly) by the runner too; taken before its imports
        check_input_folders(cfg)
        from ..evaluation.protocols import SplitError
        from ..evaluation.runner import run_benchmark

        try:
            report = run_benchmark(
                cfg, force=args.force, progress=False if args.no_progress else None
            )
        except SplitError as err:  # the split is the config's: name the file to edit
            raise SplitError(f"{args.config}: {err}") from None
    return announce_report(report, args.json)


def announce_report(report: Path, as_json: bool) -> int:
    """Say where the report is; with ``as_json`` print its ``results.json`` to stdout instead
    (scripts read the tables from it) and the path to stderr. Returns the exit status 0."""
    if as_json:
        print((report.parent / "results.json").read_text(encoding="utf-8"), end="", flush=True)
        print(f"sem: note: report: {report.resolve()}", file=sys.stderr)
    else:
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
    b.add_argument("-o", "--out", help="output folder (overrides the config)")
    b.add_argument(
        "--methods",
        help="comma-separated method names, built-in or from installed plugins (overrides the "
        "config's; a config without methods runs every registered one)",
    )
    b.add_argument("--force", action="store_true", help="rerun every method")
    b.add_argument(
        "--seed",
        type=number(int, low=0),
        help="the protocol's seed (overrides the config): other degradations, other splits",
    )
    add_run_options(b)
    b.set_defaults(handler=_benchmark)

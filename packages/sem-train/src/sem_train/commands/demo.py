"""``sem demo``: the toolkit's main job in one command, a preset of ``sem benchmark``.

Generated sample images (line/space, contact holes, textures), or the user's own folder, are
defocused with seeded settings (the paper's ranges and the midpoint), restored by every
registered method, scored and measured, and written to a report folder. The foundation model
rows use the model shipped with the toolkit (``sem-foundation``, ``sem-foundation-zero-shot``);
the small learned baselines are trained on the spot. The dense SEM MAE (``mae-sem``) has no
shipped model: without ``--set mae-sem.checkpoint_dir=...`` it is pretrained and fine-tuned
on the demo's own training images (slower), so the default method list leaves it out unless
``--train-here`` is given or ``--methods`` names it. ``--train-here`` also fine-tunes the
shipped pretrained MAE + MoE, with the shipped model's restoration head (residual, refiner,
physics guides), on those images, as the paper's few-shot protocol does. The run is the
evaluation runner on the preset :func:`sem_train.evaluation.demo_config`; its
``config.json`` reruns it with ``sem benchmark``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from sem_physics.cli_support import number

from .benchmark import add_run_options, announce_report, split_names

__all__ = ["register"]


_positive_float = number(float, low=0, low_open=True)


def _demo(args: argparse.Namespace) -> int:
    from sem_physics.locking import output_lock

    with output_lock(args.out):  # at once: a second demo into the folder stops before any work
        checked = _demo_config(args)  # every option checked before the worker server starts
        if args.quick or args.workers == 1:  # the preset runs two workers (quick mode: one)
            return _run_demo(_final_config(args, *checked), args)
        from ..worker_server import start_worker_server, stop_worker_server

        start_worker_server()  # it imports on the idle core while this process imports
        try:
            return _run_demo(_final_config(args, *checked), args)
        except BaseException:
            stop_worker_server()  # interrupted while it still imports: it would finish alone
            raise


#: The demo's options by the config key they set (errors name the option).
_OPTIONS = {
    "out": "--out",
    "images": "--images",
    "seed": "--seed",
    "pixel_size_nm": "--pixel-size-nm",
    "epochs": "--epochs",
    "n_train": "--n-train",
    "quality_metrics": "--metrics",
    "settings": "--settings",
    "workers": "--workers",
}


def _demo_config(args: argparse.Namespace) -> tuple[Any, dict[str, Any]]:
    """The run's config and the overrides it is made of. Every option is checked, and named
    in its error, before torch or a method's model code is imported: the input folder, the
    method names, ``--set`` (with the weights files it names), then the preset's fields."""
    from ..evaluation.config import check_method_names, demo_config  # no torch yet
    from ..evaluation.sources import check_output_folder, list_images
    from .benchmark import checked_settings

    if args.images is not None:
        if not Path(args.images).is_dir():
            raise NotADirectoryError(f"--images {args.images!r} is not a folder")
        check_output_folder(Path(args.out), [Path(args.images)])  # the config's own check
        list_images(args.images)  # it holds images: the runner's check, before its imports
    methods, exclude = split_names(args.methods), split_names(args.exclude) or []
    check_method_names("--methods", methods)  # the options first, each named in its error
    check_method_names("--exclude", exclude)
    settings = checked_settings(args.set)
    if args.train_here:
        settings.setdefault("sem-foundation", {}).setdefault("finetune_here", True)
    overrides: dict[str, Any] = {
        "out": args.out,
        "images": args.images,
        "methods": methods,
        "exclude": list(dict.fromkeys(exclude)) or None,
        "seed": args.seed,
        "pixel_size_nm": args.pixel_size_nm,
        "method_config": settings or None,
        "epochs": args.epochs,
        "n_train": args.n_train,
        "quality_metrics": split_names(args.metrics),
        "settings": split_names(args.settings),
        "strict": args.strict or None,
        "workers": args.workers,
    }
    return demo_config(quick=args.quick, option_names=_OPTIONS, **overrides), overrides


def _final_config(args: argparse.Namespace, cfg: Any, overrides: dict[str, Any]) -> Any:
    """``cfg`` without ``mae-sem`` when the default method list would pretrain it here (asked
    for only by ``--train-here``, ``--methods`` or its checkpoint); finding that out imports
    the method's code (seconds of torch), so it comes after every option is checked."""
    from ..evaluation.config import demo_config
    from ..evaluation.methods import trains_here

    if args.train_here or overrides["methods"]:
        return cfg
    if not trains_here("mae-sem", (overrides["method_config"] or {}).get("mae-sem", {})):
        return cfg
    exclude = [*(overrides["exclude"] or []), "mae-sem"]  # it would be pretrained here
    overrides = {**overrides, "exclude": list(dict.fromkeys(exclude))}
    return demo_config(quick=args.quick, option_names=_OPTIONS, **overrides)


def _run_demo(cfg: Any, args: argparse.Namespace) -> int:
    from ..evaluation.runner import run_benchmark

    report = run_benchmark(cfg, force=True, progress=False if args.no_progress else None)
    return announce_report(report, args.json)


def register(subparsers: Any) -> None:
    """Add ``demo`` to the ``sem`` command line."""
    p = subparsers.add_parser(
        "demo",
        help="defocus, restore with every method, score and measure; write a report",
        description=(
            "Runs on generated sample images (or --images DIR): seeded defocus, restoration by "
            "every registered method, image quality and metrology, a report folder. The same "
            "runner as 'sem benchmark', on a preset config (written to the report's config.json)."
        ),
    )
    p.add_argument("--images", help="folder of your focused SEM images (default: generated)")
    p.add_argument(
        "-o",
        "--out",
        default="sem-demo-report",
        help="report folder (default: sem-demo-report); a report an earlier demo wrote there "
        "is replaced, a folder holding other files is refused",
    )
    p.add_argument(
        "--quick", action="store_true", help="reduced mode (small images, short training)"
    )
    p.add_argument(
        "--methods",
        help="comma-separated method names (default: every registered one, mae-sem only with "
        "--train-here or --set mae-sem.checkpoint_dir=DIR: without a checkpoint it pretrains "
        "and fine-tunes a small MAE here, minutes more; named here, it always runs)",
    )
    p.add_argument("--exclude", help="comma-separated method names to leave out")
    p.add_argument("--epochs", type=int, help="training epochs of the learned methods")
    p.add_argument(
        "--train-here",
        action="store_true",
        help="also pretrain the dense SEM MAE (mae-sem) and fine-tune the shipped model "
        "(sem-foundation) on the demo's training images (the paper's protocol; minutes more)",
    )
    p.add_argument("--n-train", type=int, help="focused images kept for training learned methods")
    p.add_argument(
        "--metrics",
        help="quality metrics (default: psnr,psnr_affine,ssim,lpips,niqe; psnr adds psnr_affine)",
    )
    p.add_argument("--settings", help="defocus settings (default: random,midpoint)")
    p.add_argument(
        "--seed", type=int, default=0, help="seed of the images and degradations (default 0)"
    )
    p.add_argument("--pixel-size-nm", type=_positive_float, help="pixel size for metrology (nm)")
    add_run_options(p)
    p.set_defaults(handler=_demo)

"""``sem train pretrain|finetune|baseline|recipe``: the training commands.

Each command holds its run folder for the whole run (:func:`sem_physics.locking.output_lock`),
so a second run into the same ``--output-dir`` stops at once instead of interleaving with it.
A folder given on the command line is taken before the config and torch are loaded (a second
run stops within a second); one that comes from the config is taken right after loading it.

Bad input is refused before the training code (and torch) is imported: the run folder
(:class:`sem_train.runfolder.RunFolder`: a fresh run over a run, ``--resume`` where there is
none), then the model the run starts from, the baseline method and the data
(:func:`sem_train.preflight.check_inputs`): the checks the training code makes again.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

__all__ = ["register"]


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--config",
        required=True,
        help="preset name (paper, cpu-base, cpu-small) or a YAML/JSON file",
    )
    p.add_argument("--data", type=Path, help="override data.root (folder of SEM images)")
    p.add_argument("--output-dir", type=Path, help="override run.output_dir")
    p.add_argument("--epochs", type=int, help="override run.epochs")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], help="override run.device")
    p.add_argument("--max-steps", type=int, help="stop (with a checkpoint) after N steps")
    p.add_argument("--resume", action="store_true", help="continue from the latest checkpoint")


def register(subparsers: Any) -> None:
    """Add ``train`` with its sub-commands."""
    train = subparsers.add_parser("train", help="pretraining stages, fine-tuning, baselines")
    tsub = train.add_subparsers(dest="train_command", metavar="<what>")
    tsub.required = True

    pre = tsub.add_parser("pretrain", help="Stage 1 (MAE), 2 (MoE + KD) or 3 (frequency)")
    pre.add_argument("--stage", type=int, choices=[1, 2, 3], required=True)
    pre.add_argument("--init-from", type=Path, help="override init_from (stages 2 and 3)")
    _common(pre)
    pre.set_defaults(handler=_pretrain)

    ft = tsub.add_parser("finetune", help="low-shot defocus-to-focus fine-tuning")
    ft.add_argument("--init-from", type=Path, help="override init_from (pretrained run)")
    _common(ft)
    ft.set_defaults(handler=_finetune)

    rc = tsub.add_parser(
        "recipe", help="a preset's whole recipe: Stage 1, 2, 3, then the low-shot fine-tune"
    )
    rc.add_argument("--config", required=True, help="preset name (e.g. cpu-base)")
    rc.add_argument("--data", type=Path, help="folder of SEM images (data.root of every step)")
    rc.add_argument(
        "--output-dir", type=Path, help="run folder (default: runs/<preset>); one sub-folder a step"
    )
    rc.add_argument("--device", choices=["auto", "cpu", "cuda"], help="override run.device")
    rc.add_argument(
        "--resume", action="store_true", help="skip finished steps, continue the interrupted one"
    )
    rc.add_argument(
        "--dense",
        action="store_true",
        help="the no-MoE ablation with the same budget: Stage 2 left out",
    )
    rc.set_defaults(handler=_recipe)

    bl = tsub.add_parser("baseline", help="train a learned baseline (sem-baselines)")
    bl.add_argument(
        "method",
        help="a method of the sem-baselines registry that trains (an unknown name lists them)",
    )
    _common(bl)
    bl.set_defaults(handler=_baseline)


def _overrides(args: argparse.Namespace, kind: str):
    if args.data is not None and not args.data.is_dir():  # before seconds of imports
        raise FileNotFoundError(f"--data {args.data} is not a directory")
    from ..config import config_class, load_config
    from ..runfolder import RunFolder

    over: dict[str, Any] = {}
    if args.data is not None:
        over["data"] = {"root": args.data}
    run = {
        key: val
        for key, val in (
            ("output_dir", args.output_dir),
            ("epochs", args.epochs),
            ("device", args.device),
            ("max_steps", args.max_steps),
        )
        if val is not None
    }
    if run:
        over["run"] = run
    if getattr(args, "init_from", None) is not None:
        if "init_from" not in config_class(kind).model_fields:
            raise ValueError("--init-from applies to stages 2 and 3 and to finetune, not stage 1")
        over["init_from"] = args.init_from
    cfg = load_config(args.config, kind, overrides=over)  # the options before validation
    RunFolder(cfg.run.output_dir).check_output(resume=True)  # not a file: before the lock
    return cfg


@contextmanager
def _holding(output_dir: Path, resume: bool | None = None) -> Iterator[None]:
    """Hold the run folder for this run (another run into it stops at once), then check it
    holds no run unless ``resume``, and one to continue with ``resume`` (under the lock, so
    two fresh runs cannot both pass).

    Under ``torchrun`` only rank 0 takes the lock: every rank of one run writes there.
    """
    from sem_physics.locking import output_lock

    from ..ranks import is_rank_zero

    with output_lock(output_dir) if is_rank_zero() else nullcontext():
        if resume is not None:
            from ..runfolder import RunFolder

            # before any slow work: a fresh run over a run, or --resume where none is
            RunFolder(output_dir).check_start(resume)
        yield


@contextmanager
def _starting(kind: str, cfg: Any, resume: bool, method: str | None = None) -> Iterator[None]:
    """:func:`_holding` the run's folder, then the checks of its inputs that need no torch
    (the model it starts from, the baseline method, the data): all before the heavy imports."""
    with _holding(cfg.run.output_dir, resume):
        from ..preflight import check_inputs

        check_inputs(kind, cfg, method=method)
        yield


@contextmanager
def _given_folder(output_dir: Path | None) -> Iterator[None]:
    """Hold ``--output-dir``, when given, before the config is loaded (seconds of imports);
    the lock is re-entrant, so :func:`_holding` takes it again once the config is read."""
    with nullcontext() if output_dir is None else _holding(output_dir):
        yield


def _report(result) -> int:
    best = "n/a" if result.best_loss is None else f"{result.best_loss:.5g}"
    state = "stopped early" if result.stopped_early else "finished"
    print(
        f"{state} at step {result.global_step} (epoch {result.epoch}); best val loss {best}; "
        f"outputs in {result.output_dir}"
    )
    return 0


def _pretrain(args: argparse.Namespace) -> int:
    with _given_folder(args.output_dir):
        kind = f"stage{args.stage}"
        cfg = _overrides(args, kind)
        with _starting(kind, cfg, args.resume):  # before the heavy imports
            from ..stages import run_pretrain_stage

            return _report(run_pretrain_stage(args.stage, cfg, resume=args.resume))


def _finetune(args: argparse.Namespace) -> int:
    with _given_folder(args.output_dir):
        cfg = _overrides(args, "finetune")
        with _starting("finetune", cfg, args.resume):  # before the heavy imports
            from ..finetune import run_finetune

            return _report(run_finetune(cfg, resume=args.resume))


def _recipe(args: argparse.Namespace) -> int:
    if args.data is not None and not args.data.is_dir():
        raise FileNotFoundError(f"--data {args.data} is not a directory")
    out = args.output_dir or Path("runs") / args.config
    with _holding(out):  # one folder per step below it; run_recipe checks them under the lock
        from ..config import PRESETS

        if args.config not in PRESETS:
            raise ValueError(f"--config {args.config!r}: choose a preset, one of {sorted(PRESETS)}")
        from ..recipe import DENSE_KINDS, RECIPE_KINDS, run_recipe

        summary = run_recipe(
            args.config,
            data_root=args.data,
            output_dir=out,
            resume=args.resume,
            device=args.device,
            kinds=DENSE_KINDS if args.dense else RECIPE_KINDS,
        )
    total = sum(s["seconds"] for s in summary.values())
    print(f"recipe {args.config!r} finished in {total / 60:.1f} min; model in {out / 'finetune'}")
    return 0


def _baseline(args: argparse.Namespace) -> int:
    with _given_folder(args.output_dir):
        cfg = _overrides(args, "baseline")
        with _starting("baseline", cfg, args.resume, args.method):  # before the heavy imports
            from ..baselines import run_baseline

            return _report(run_baseline(cfg, args.method, resume=args.resume))

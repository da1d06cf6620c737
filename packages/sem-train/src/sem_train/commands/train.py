"""``sem train pretrain|finetune|baseline|recipe``: the training commands.

Each command holds its run folder for the whole run (:func:`sem_physics.locking.output_lock`),
so a second run into the same ``--output-dir`` stops at once instead of interleaving with it.
A folder given on the command line is taken before the config and torch are loaded (a second
run stops within a second); one that comes from the config is taken right after loading it.

Bad input is refused before the training code (and torch) is imported: the run folder
(:class:`sem_train.runfolder.RunFolder`: a fresh run over a run, ``--resume`` where there is
none), then the model the run starts from (of the kind the stage expects), the baseline
method and the data (:func:`sem_train.preflight.check_inputs`), then a resume's settings
against those the run started with (:meth:`sem_train.runfolder.RunFolder.check_resume`): the
folder checks are not made again by the training code (:meth:`RunFolder.checked`). A resume says where it continues; Ctrl-C says which step is
saved and the command that continues from it.
"""

from __future__ import annotations

import argparse
import os
import shlex
import signal
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

from ..device_names import DEVICES  # no torch
from ..interrupt import TrainingInterrupted  # no torch
from ..ranks import is_rank_zero  # no torch

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
    p.add_argument("--device", choices=DEVICES, help="override run.device")
    p.add_argument("--max-steps", type=int, help="stop (with a checkpoint) after N steps")
    p.add_argument("--resume", action="store_true", help="continue from the latest checkpoint")


def register(subparsers: Any) -> None:
    """Add ``train`` with its sub-commands."""
    train = subparsers.add_parser("train", help="pretraining stages, fine-tuning, baselines")
    tsub = train.add_subparsers(dest="train_command", metavar="<what>")
    tsub.required = True

    pre = tsub.add_parser("pretrain", help="Stage 1 (MAE), 2 (MoE + KD) or 3 (frequency)")
    pre.add_argument(
        "--stage",
        type=int,
        choices=[1, 2, 3],
        required=True,
        help="the stage to run: 1 MAE, 2 MoE + knowledge distillation (from a Stage-1 run), "
        "3 frequency (from a Stage-2 run)",
    )
    pre.add_argument(
        "--init-from",
        type=Path,
        help="override init_from: the run to start from (stage 2: a Stage-1 run, stage 3: a "
        "Stage-2 run, stage 1: a Stage-1 run to train further as a new run)",
    )
    _common(pre)
    pre.set_defaults(handler=_pretrain)

    ft = tsub.add_parser("finetune", help="low-shot defocus-to-focus fine-tuning")
    ft.add_argument("--init-from", type=Path, help="override init_from (pretrained run)")
    _common(ft)
    ft.set_defaults(handler=_finetune)

    rc = tsub.add_parser(
        "recipe", help="a preset's whole recipe: Stage 1, 2, 3, then the low-shot fine-tune"
    )
    rc.add_argument(
        "--config",
        required=True,
        help="preset name (paper, cpu-base, cpu-small) or a YAML/JSON file: its keys apply to "
        "every step, those under stage1:/stage2:/stage3:/finetune: to that step only",
    )
    rc.add_argument("--data", type=Path, help="folder of SEM images (data.root of every step)")
    rc.add_argument(
        "--output-dir",
        type=Path,
        help="run folder (default: runs/<preset or file name>, with --dense "
        "runs/<...>-dense); one "
        "sub-folder a step",
    )
    rc.add_argument("--device", choices=DEVICES, help="override run.device")
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


# the options that set the run section's field of the same name
_RUN_OPTIONS = ("output_dir", "epochs", "device", "max_steps")


def _overrides(args: argparse.Namespace, kind: str):
    if args.data is not None and not args.data.is_dir():  # before seconds of imports
        raise FileNotFoundError(f"--data {args.data} is not a directory")
    from ..config import load_config
    from ..runfolder import RunFolder

    over: dict[str, Any] = {}
    # the option of each field, to name it in an error about its value
    options: dict[tuple[str, ...], str] = {
        ("data", "root"): "--data",
        ("init_from",): "--init-from",
        **{("run", k): "--" + k.replace("_", "-") for k in _RUN_OPTIONS},
    }
    if args.data is not None:
        over["data"] = {"root": args.data}
    run = {key: getattr(args, key) for key in _RUN_OPTIONS if getattr(args, key) is not None}
    if run:
        over["run"] = run
    if getattr(args, "init_from", None) is not None:  # every command with the option takes it
        over["init_from"] = args.init_from
    # the options before validation
    cfg: Any = load_config(args.config, kind, overrides=over, options=options)
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
    (a resume's settings and number of processes first, before the data is indexed; a GPU
    asked for; the model it starts from, the baseline method, the data; a resume's data
    against its ``data_split.json``): all before the heavy imports, and not made again by the
    training code (the folder counts as :meth:`~sem_train.runfolder.RunFolder.checked`). A
    resume that passes them says where it continues."""
    with _holding(cfg.run.output_dir, resume):
        from ..preflight import check_inputs, run_record
        from ..runfolder import RunFolder

        folder = RunFolder(cfg.run.output_dir)
        # a resume's changed settings before the data is indexed, then the device asked for
        changes = folder.check_resume(run_record(kind, cfg, method)) if resume else {}
        if resume and folder.has_checkpoint:  # the processes it started with (run_info.json)
            from ..ranks import world_size
            from ..runinfo import check_resume_world_size

            check_resume_world_size(folder.run_dir, world_size())
        _check_device(cfg.run.device)
        check_inputs(kind, cfg, method=method)
        if resume and folder.has_checkpoint:  # the data it started with (data_split.json)
            from ..datasplit import check_resume_split, split_record

            check_resume_split(folder.run_dir, split_record(kind, cfg))
        if resume:
            _announce_resume(folder.run_dir, cfg.run.epochs)
        with folder.checked(resume, changes):
            yield


def _check_device(device: str) -> None:
    """Refuse ``--device cuda`` or ``mps`` without that GPU before anything is indexed or written
    (torch is imported only for this request: the training imports it next anyway)."""
    if device in ("cuda", "mps"):
        from ..distributed import check_device

        check_device(device)


def _epoch_text(progress: dict[str, Any], epochs: int | None) -> str:
    """Where a checkpoint stands in the run: ``epoch 2 of 4, after 3 of its steps`` (without
    ``of 4`` when the run's length is unknown, ``epochs`` None)."""
    epoch, into = int(progress.get("epoch", 0)), int(progress.get("step_in_epoch", 0))
    if epochs is None:
        return f"epoch {epoch + 1}" + (f", after {into} of its steps" if into else "")
    if epoch >= epochs:
        return f"all {epochs} epochs done"
    if into:
        return f"epoch {epoch + 1} of {epochs}, after {into} of its steps"
    return f"the start of epoch {epoch + 1} of {epochs}"


def _announce_resume(output_dir: Path, epochs: int) -> None:
    """One line: the step and epoch a resumed run continues from (rank 0 only)."""
    from ..ranks import is_rank_zero
    from ..runfolder import RunFolder

    progress = RunFolder(output_dir).latest_progress
    if progress is None or not is_rank_zero():
        return  # no checkpoint: the engine says the run starts again from step 0
    print(
        f"resuming {output_dir} from step {progress['global_step']} "
        f"({_epoch_text(progress, epochs)})",
        flush=True,
    )


def _resume_command(argv: list[str] | None) -> str:
    """The command that continues this run: its own arguments with ``--resume``."""
    if argv is None:
        return "the same command with --resume"
    words = [a for a in argv if a != "--resume"] + ["--resume"]
    procs = os.environ.get("LOCAL_WORLD_SIZE", "1")
    head = (
        ["sem"] if procs == "1" else ["torchrun", "--nproc_per_node", procs, "-m", "sem_train.cli"]
    )
    return shlex.join(head + words)


def interrupt_message(
    output_dir: Path, epochs: int | None, argv: list[str] | None, saved: bool = False
) -> str:
    """What a Ctrl-C left: the newest checkpoint (its step and epoch) and how to continue.

    ``saved``: the loop saved that checkpoint at the interrupt (nothing is lost).
    """
    from ..runfolder import RunFolder

    folder, again = RunFolder(output_dir), _resume_command(argv)
    progress = folder.latest_progress
    if progress is not None and saved:
        return (
            f"interrupted; saved a checkpoint at step {progress['global_step']} "
            f"({_epoch_text(progress, epochs)}) in {folder.dir}; continue with: {again}"
        )
    if progress is not None:
        return (
            f"interrupted; the newest checkpoint is step {progress['global_step']} "
            f"({_epoch_text(progress, epochs)}) in {folder.dir}, later steps are not saved; "
            f"continue with: {again}"
        )
    if folder.has_started_run:
        return f"interrupted before the run's first checkpoint; start it again with: {again}"
    return f"interrupted before the run started; nothing was written to {output_dir}"


def recipe_interrupt_message(
    output_dir: Path, kinds: tuple[str, ...], argv: list[str] | None, saved: bool = False
) -> str:
    """What a Ctrl-C left of a recipe: the step it stopped in, that step's newest checkpoint
    (:func:`interrupt_message`) and the recipe command that continues."""
    from ..recipe import DONE_FILE
    from ..runfolder import read_json

    step = next((k for k in kinds if not (output_dir / k / DONE_FILE).is_file()), None)
    if step is None:
        return f"interrupted after the recipe's last step; continue with: {_resume_command(argv)}"
    run = (read_json(output_dir / step / "config.json") or {}).get("run")
    epochs = run.get("epochs") if isinstance(run, dict) else None
    epochs = epochs if isinstance(epochs, int) else None  # unknown: left out of the text
    return f"{step}: {interrupt_message(output_dir / step, epochs, argv, saved)}"


def _train(
    args: argparse.Namespace, kind: str, run: Callable[[Any], Any], method: str | None = None
) -> int:
    """Load the config, check, run ``run(cfg)`` and report; Ctrl-C reports what is saved."""
    with _given_folder(args.output_dir):
        cfg = _overrides(args, kind)
        try:
            with _starting(kind, cfg, args.resume, method):  # before the heavy imports
                result = run(cfg)
        except KeyboardInterrupt as stop:
            if getattr(args, "debug", False):
                raise  # the traceback
            return _interrupted(args, cfg, stop)
    return _report(result)


def _stop_status(stop: BaseException) -> int:
    """Exit status of a run stopped by ``stop``: 143 after SIGTERM, else Ctrl-C's 130."""
    from sem_physics.pipes import EXIT_INTERRUPTED, EXIT_TERMINATED, Terminated

    # TrainingInterrupted records its signal; Terminated is SIGTERM outside the loop
    by_term = getattr(stop, "signum", None) == signal.SIGTERM or isinstance(stop, Terminated)
    return EXIT_TERMINATED if by_term else EXIT_INTERRUPTED


def _interrupted(args: argparse.Namespace, cfg: Any, stop: KeyboardInterrupt) -> int:
    """Print :func:`interrupt_message` (rank 0) and return the exit status (130 after
    Ctrl-C, 143 after SIGTERM)."""
    from ..ranks import is_rank_zero

    if is_rank_zero():
        out, argv = Path(cfg.run.output_dir), getattr(args, "argv", None)
        text = interrupt_message(out, cfg.run.epochs, argv, isinstance(stop, TrainingInterrupted))
        print(f"sem: {text}", file=sys.stderr)
    return _stop_status(stop)


@contextmanager
def _given_folder(output_dir: Path | None) -> Iterator[None]:
    """Hold ``--output-dir``, when given, before the config is loaded (seconds of imports);
    the lock is re-entrant, so :func:`_holding` takes it again once the config is read."""
    with nullcontext() if output_dir is None else _holding(output_dir):
        yield


def _report(result) -> int:
    best = "n/a" if result.best_loss is None else f"{result.best_loss:.5g}"
    # result.epoch counts the epochs completed (the 0-based ``epoch`` of the files next)
    if result.stopped_early:
        where = f"stopped early at step {result.global_step} ({result.epoch} epoch(s) complete)"
    else:
        where = f"finished at step {result.global_step} (epoch {result.epoch})"
    if is_rank_zero():  # once per launch, not once per process
        print(f"{where}; best val loss {best}; outputs in {result.output_dir}")
    return 0


def _pretrain(args: argparse.Namespace) -> int:
    def run(cfg: Any) -> Any:
        from ..stages import run_pretrain_stage

        return run_pretrain_stage(args.stage, cfg, resume=args.resume)

    return _train(args, f"stage{args.stage}", run)


def _finetune(args: argparse.Namespace) -> int:
    def run(cfg: Any) -> Any:
        from ..finetune import run_finetune

        return run_finetune(cfg, resume=args.resume)

    return _train(args, "finetune", run)


def recipe_dir(preset: str, dense: bool, given: Path | None) -> Path:
    """The recipe's run folder: ``given``, else ``runs/<preset>`` (``runs/<preset>-dense`` for
    the dense ablation, beside the MoE run and never into its folder); a config file is named
    by its file name without the extension."""
    from ..recipe import recipe_name

    return given or Path("runs") / (recipe_name(preset) + ("-dense" if dense else ""))


def _recipe(args: argparse.Namespace) -> int:
    if args.data is not None and not args.data.is_dir():
        raise FileNotFoundError(f"--data {args.data} is not a directory")
    from ..recipe import DENSE_KINDS, RECIPE_KINDS, recipe_configs

    out = recipe_dir(args.config, args.dense, args.output_dir)
    kinds = DENSE_KINDS if args.dense else RECIPE_KINDS
    with _holding(out):  # one folder per step below it; run_recipe checks them under the lock
        # every step's config (a preset or a file) checked before any step writes (a busy
        # folder is said first, as by the other commands)
        recipe_configs(
            args.config, data_root=args.data, output_dir=out, device=args.device, kinds=kinds
        )
        from ..recipe import run_recipe

        try:
            summary = run_recipe(
                args.config,
                data_root=args.data,
                output_dir=out,
                resume=args.resume,
                device=args.device,
                kinds=kinds,
            )
        except KeyboardInterrupt as stop:
            if args.debug:
                raise
            saved = isinstance(stop, TrainingInterrupted)
            text = recipe_interrupt_message(out, kinds, getattr(args, "argv", None), saved)
            print(f"sem: {text}", file=sys.stderr)
            return _stop_status(stop)
    total = sum(s["seconds"] for s in summary.values())
    print(f"recipe {args.config!r} finished in {total / 60:.1f} min; model in {out / 'finetune'}")
    return 0


def _baseline(args: argparse.Namespace) -> int:
    def run(cfg: Any) -> Any:
        from ..baselines import run_baseline

        return run_baseline(cfg, args.method, resume=args.resume)

    return _train(args, "baseline", run, args.method)

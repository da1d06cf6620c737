"""The ``sem`` command line: ``sem <command> ...``.

Each command lives in a module exposing ``register(subparsers)``, which adds its sub-parser
and sets ``handler=callable(args) -> int``. :data:`COMMAND_MODULES` maps a command name to
that module and a one-line help; adding a command is one line there. Only the module of the
command being run is imported, so ``sem --help`` starts in a fraction of a second whatever
the commands import (keep heavy imports inside handlers all the same).

Every error ends as one line ``sem: error: ...`` naming the file or field: status 2 for bad
input (a missing or malformed file, an invalid value, an existing run without
``--resume``, a non-checkpoint given as a checkpoint, a read-only output folder), status 1
for a failure of the run itself (non-finite loss, disk full, out of memory) and for a
partial failure with ``--strict`` (some input files unusable), as every console script of the
toolkit decides it (:func:`sem_physics.cli_support.describe_error`). ``--debug`` also prints
the full traceback, before that line; the status is the same. Warnings and log records are one
line each, ``sem: warning: ...`` (``sem: note: ...`` for a run's progress).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from sem_physics.cli_support import OneLineParser, add_version, describe_error
from sem_physics.pipes import console_main

__all__ = ["COMMAND_MODULES", "build_parser", "main"]

#: command -> (module with ``register(subparsers)``, help shown by ``sem --help``)
COMMAND_MODULES: dict[str, tuple[str, str]] = {
    "train": ("sem_train.commands.train", "pretraining stages, fine-tuning, baselines"),
    "demo": ("sem_train.commands.demo", "defocus, restore, score and measure; a report"),
    "benchmark": ("sem_train.commands.benchmark", "the S→S or S→R protocol from a config"),
    "cluster": ("sem_train.commands.cluster", "cluster images by their embeddings"),
    "restore": ("sem_train.commands.restore", "refocus your own micrographs (files and folders)"),
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The top-level parser; ``command``'s module registers its full sub-parser, the other
    commands are listed (by name and help) without importing their modules."""
    parser = OneLineParser(
        prog="sem",
        description="SEM foundation toolkit: training, evaluation and demos.",
        epilog="Exit status: 0 done; 1 the run failed, or --strict and some inputs were "
        "unusable; 2 bad input (one line 'sem: error: ...'; --debug adds the traceback); "
        "130 interrupted; 143 stopped by SIGTERM (sem train: after saving a checkpoint).",
    )
    parser.add_argument("--debug", action="store_true", help="show full tracebacks and debug logs")
    add_version(parser, "sem-train")
    sub = parser.add_subparsers(dest="command", metavar="<command>")
    sub.required = True
    if command in COMMAND_MODULES:
        importlib.import_module(COMMAND_MODULES[command][0]).register(sub)
    for name, (_module, help_text) in COMMAND_MODULES.items():
        if name not in sub.choices:
            sub.add_parser(name, help=help_text, add_help=False)
    return parser


def _command_of(argv: Sequence[str]) -> str | None:
    """The command word: the first argument that is not a global option."""
    return next((a for a in argv if not a.startswith("-")), None)


#: options whose value may start with a minus sign (argparse would read "-3,2" as an option)
_SIGNED_VALUE_OPTIONS = ("--psf",)


def _join_negative_values(argv: list[str]) -> list[str]:
    """``--psf -3,2`` as ``--psf=-3,2``, so that the value reaches its own range check."""
    out: list[str] = []
    i = 0
    while i < len(argv):
        a = argv[i]
        nxt = argv[i + 1] if i + 1 < len(argv) else ""
        if (
            a in _SIGNED_VALUE_OPTIONS
            and len(nxt) > 1
            and nxt[0] == "-"
            and nxt[1] in "0123456789."
        ):
            out.append(f"{a}={nxt}")
            i += 2
        else:
            out.append(a)
            i += 1
    return out


@console_main("sem")
def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``sem``; returns the process exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--debug" in argv[1:] and "--" not in argv[: argv.index("--debug")]:
        argv.remove("--debug")  # a global flag, accepted after the command too
        argv.insert(0, "--debug")
    argv = _join_negative_values(argv)
    parser = build_parser(_command_of(argv))
    args = parser.parse_args(argv)
    # log records are lines "sem: note: ..." (console_main's handler), from INFO on
    logging.getLogger().setLevel(logging.DEBUG if args.debug else logging.INFO)
    # torch's own INFO lines (FakeTensor cache stats at exit, compile notes) are not the run's
    logging.getLogger("torch").setLevel(logging.WARNING)
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.print_usage(sys.stderr)
        return 2
    args.argv = argv  # the command as given (e.g. for the command that resumes a run)
    try:  # a library's warning or log record: one line "sem: warning: ..." (console_main)
        return int(handler(args) or 0)  # SIGTERM: console_main unwinds it (143)
    except BrokenPipeError:
        raise
    except Exception as err:  # every error becomes one line; --debug adds the traceback
        if args.debug:
            import traceback

            traceback.print_exc()
        code, msg = describe_error(err)
        print(f"sem: error: {msg}", file=sys.stderr)
        return code


if __name__ == "__main__":
    sys.exit(main())

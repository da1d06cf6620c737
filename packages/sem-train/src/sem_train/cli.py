"""The ``sem`` command line: ``sem <command> ...``.

Commands live in their own modules, each exposing ``register(subparsers)`` that adds one
sub-parser and sets ``handler=callable(args) -> int`` on it. To add a command, list its module
in :data:`COMMAND_MODULES`; optional modules that are not installed are skipped.

Bad input (a missing file, an invalid config value) prints one line ``sem: error: ...`` and
exits with status 2; a training failure (non-finite loss, disk full) exits with status 1.
``--debug`` shows the full traceback instead.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

__all__ = ["COMMAND_MODULES", "build_parser", "main"]

#: (module, optional): each module has ``register(subparsers)``.
COMMAND_MODULES: tuple[tuple[str, bool], ...] = (
    ("sem_train.commands.train", False),
    ("sem_train.commands.demo", True),
    ("sem_train.commands.benchmark", True),
    ("sem_train.commands.cluster", True),
)


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every available command registered."""
    parser = argparse.ArgumentParser(
        prog="sem", description="SEM foundation toolkit: training, evaluation and demos."
    )
    parser.add_argument("--debug", action="store_true", help="show full tracebacks and debug logs")
    sub = parser.add_subparsers(dest="command", metavar="<command>")
    sub.required = True
    for name, optional in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as err:
            if optional and err.name is not None and name.startswith(err.name):
                continue
            raise
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``sem``; returns the process exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.print_usage(sys.stderr)
        return 2
    from .checkpoint import CheckpointWriteError
    from .engine import NonFiniteLossError

    try:
        return int(handler(args) or 0)
    except (NonFiniteLossError, CheckpointWriteError) as err:
        if args.debug:
            raise
        print(f"sem: error: {err}", file=sys.stderr)
        return 1
    except (ValueError, FileNotFoundError, NotADirectoryError, KeyError) as err:
        if args.debug:
            raise
        msg = str(err).splitlines()[0] if str(err) else type(err).__name__
        print(f"sem: error: {msg}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("sem: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

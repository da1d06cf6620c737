"""What every console script of the toolkit shares: one-line usage errors and one-line
validation messages (a user sees one line naming the option or field, never a usage block or a
pydantic dump)."""

from __future__ import annotations

import argparse
from typing import Any, NoReturn

__all__ = ["EXIT_USAGE", "OneLineParser", "validation_message"]

EXIT_USAGE = 2  # argparse's status for a usage error


class OneLineParser(argparse.ArgumentParser):
    """argparse whose usage errors are one line, ``PROG: error: MESSAGE (see PROG --help)``.

    Sub-parsers made with ``add_subparsers().add_parser`` are of the same class.
    """

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def validation_message(err: Any) -> str:
    """A pydantic ``ValidationError`` as one line: ``field: message (got value)`` per error."""
    parts = []
    for e in err.errors():
        loc = ".".join(str(x) for x in e.get("loc", ())) or "value"
        given = e.get("input")
        shown = isinstance(given, str | int | float) and len(repr(given)) <= 60
        parts.append(f"{loc}: {e['msg']}" + (f" (got {given!r})" if shown else ""))
    return "; ".join(parts)

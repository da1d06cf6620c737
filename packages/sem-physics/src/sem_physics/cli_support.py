"""What every console script of the toolkit shares: one-line usage errors, argument types checked
against their range, and one-line validation messages (a user sees one line naming the option
or field, never a usage block or a pydantic dump)."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from typing import Any, NoReturn

__all__ = ["EXIT_USAGE", "OneLineParser", "is_validation_error", "number", "validation_message"]

EXIT_USAGE = 2  # argparse's status for a usage error


class OneLineParser(argparse.ArgumentParser):
    """argparse whose usage errors are one line, ``PROG: error: MESSAGE (see PROG --help)``.

    Sub-parsers made with ``add_subparsers().add_parser`` are of the same class.
    """

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def is_validation_error(err: BaseException) -> bool:
    """Whether ``err`` is a pydantic ``ValidationError`` (told by duck type: no pydantic import
    on the CLIs' error path)."""
    return type(err).__name__ == "ValidationError" and hasattr(err, "errors")


def validation_message(err: Any) -> str:
    """A pydantic ``ValidationError`` as one line: ``field: message (got value)`` per error."""
    parts = []
    for e in err.errors():
        loc = ".".join(str(x) for x in e.get("loc", ())) or "value"
        given = e.get("input")
        shown = isinstance(given, str | int | float) and len(repr(given)) <= 60
        parts.append(f"{loc}: {e['msg']}" + (f" (got {given!r})" if shown else ""))
    return "; ".join(parts)


def number(
    kind: type[int] | type[float],
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
    finite: bool = False,
) -> Callable[[str], int | float]:
    """An argparse ``type`` reading ``kind`` within ``low .. high`` (open ends when asked).

    NaN is outside every range; ``finite`` also refuses inf and NaN where no range is given.
    ``number(float, low=0, high=1, high_open=True)`` reads a fraction in ``[0, 1)``. A bad value
    gives argparse's one-line usage error naming the option, the value and the range.
    """
    what = "an integer" if kind is int else "a number"
    if low is not None and high is not None:
        span = f"in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    elif low is not None:
        span = f"{'>' if low_open else '>='} {low:g}"
    elif high is not None:
        span = f"{'<' if high_open else '<='} {high:g}"
    else:
        span = ""  # no range: only ``finite`` refuses a number

    def parse(text: str) -> int | float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if finite and not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
        above = low is None or (value > low if low_open else value >= low)
        below = high is None or (value < high if high_open else value <= high)
        if not (above and below):
            raise argparse.ArgumentTypeError(f"must be {span}, got {text}")
        return value

    return parse

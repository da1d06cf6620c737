"""Argument types of the ``sem`` commands: numbers checked against their range by argparse.

A bad value gives argparse's one-line usage error naming the option, the value and the range.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

__all__ = ["number"]


def number(
    kind: type[int] | type[float],
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
) -> Callable[[str], int | float]:
    """An argparse ``type`` reading ``kind`` within ``low .. high`` (open ends when asked).

    NaN is outside every range. ``number(float, low=0, high=1, high_open=True)`` reads a
    fraction in ``[0, 1)``.
    """
    what = "an integer" if kind is int else "a number"
    if low is not None and high is not None:
        span = f"in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    elif low is not None:
        span = f"{'>' if low_open else '>='} {low:g}"
    else:
        span = f"{'<' if high_open else '<='} {high:g}"

    def parse(text: str) -> int | float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        above = low is None or (value > low if low_open else value >= low)
        below = high is None or (value < high if high_open else value <= high)
        if not (above and below):
            raise argparse.ArgumentTypeError(f"must be {span}, got {text}")
        return value

    return parse

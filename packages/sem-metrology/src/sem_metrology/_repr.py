"""Readable reprs of measurement results: long per-row or per-hole lists are shown by length.

A result shown at the end of a notebook cell printed every edge position (1.4 million
characters for the real line image); the values stay in the model and in ``to_json``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

#: Lists longer than this are shown as ``<N items>``.
MAX_LISTED = 8


class _Count:
    """Stands in for a long list in a repr."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __repr__(self) -> str:
        return f"<{self.n} items>"


class ShortListRepr:
    """Mixin for pydantic models: ``repr`` shows lists of more than :data:`MAX_LISTED` items
    by their length."""

    def __repr_args__(self) -> Iterator[tuple[str | None, Any]]:
        for name, value in super().__repr_args__():  # type: ignore[misc]
            if isinstance(value, list) and len(value) > MAX_LISTED:
                yield name, _Count(len(value))
            else:
                yield name, value

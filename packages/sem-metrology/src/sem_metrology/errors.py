"""The package's error type: every refused input raises it (or a subclass)."""

from __future__ import annotations

__all__ = ["MetrologyInputError"]


class MetrologyInputError(ValueError):
    """An image, pixel size or option that cannot be measured; the message names the field."""

"""CSV text that spreadsheets read as written.

Excel opens a CSV file without a byte-order mark in the system's ANSI code page, so UTF-8
symbols in the warnings and reasons come out garbled (``°`` as ``Â°``, the minus sign U+2212
as ``âˆ’``). The values of every CSV written here are therefore ASCII: the symbols the results'
texts use are spelled out (:func:`ascii_text`). What stays non-ASCII comes from outside (a file
name, metadata text); ``sem-measure --output`` then writes the file with a UTF-8 byte-order
mark (:func:`file_text`), which Excel, pandas and ``encoding="utf-8-sig"`` read as UTF-8.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Any

from sem_physics.records import csv_text

__all__ = ["BOM", "ascii_text", "file_text", "spreadsheet_csv", "spreadsheet_csv_file"]

#: The UTF-8 byte-order mark, as text.
BOM = "\ufeff"

_SPELLED = {
    "\u00b0": " deg",  # degree sign
    "\u00b1": "+/-",
    "\u00d7": "x",
    "\u2212": "-",  # minus sign
    "\u2013": "-",  # en dash
    "\u2014": "-",  # em dash
    "\u2010": "-",
    "\u2011": "-",
    "\u00b7": "*",
    "\u2264": "<=",
    "\u2265": ">=",
    "\u2248": "~",
    "\u2260": "!=",
    "\u2192": "->",
    "\u2190": "<-",
    "\u2026": "...",
    "\u221a": "sqrt",
    "\u03c3": "sigma",
    "\u03be": "xi",
    "\u03b1": "alpha",
    "\u03b2": "beta",
    "\u03b8": "theta",
    "\u03c0": "pi",
    "\u03c6": "phi",
    "\u03a6": "Phi",
    "\u00b2": "^2",
    "\u00b3": "^3",
    "\u00b9": "^1",
    "\u207b": "^-",  # superscript minus: nm⁻¹ -> nm^-1 (with the next entry)
    "\u2018": "'",
    "\u2019": "'",
    "\u201c": '"',
    "\u201d": '"',
    "\u00a0": " ",  # no-break space
    "\u2009": " ",  # thin space
    "\u202f": " ",  # narrow no-break space
}
_TABLE = str.maketrans(_SPELLED)


def ascii_text(text: str) -> str:
    """``text`` with the symbols of the results' texts spelled in ASCII (``°`` -> `` deg``,
    ``±`` -> ``+/-``, ``×`` -> ``x``, ``σ`` -> ``sigma``, U+2212 -> ``-``, ``nm⁻¹`` ->
    ``nm^-1``, ...); letters (``µ``, ``Ä``: a file name's, a unit from metadata) are kept."""
    if text.isascii():
        return text
    return text.replace("\u207b\u00b9", "^-1").translate(_TABLE)


def spreadsheet_csv(
    rows: Iterable[Mapping[str, Any]],
    columns: Sequence[str] | None = None,
    *,
    verbatim: Collection[str] = (),
) -> str:
    """:func:`sem_physics.records.csv_text` of ``rows`` with every text value passed through
    :func:`ascii_text`, except in the ``verbatim`` columns (a file's path names it exactly)."""
    clean = [
        {k: ascii_text(v) if isinstance(v, str) and k not in verbatim else v for k, v in r.items()}
        for r in rows
    ]
    return csv_text(clean, columns)


def file_text(text: str) -> str:
    """CSV ``text`` as a file holds it: with :data:`BOM` in front when it is not all ASCII, so
    that a spreadsheet reads it as UTF-8 (ASCII text is the same in every code page)."""
    return text if text.isascii() else BOM + text


def spreadsheet_csv_file(
    rows: Iterable[Mapping[str, Any]],
    columns: Sequence[str] | None = None,
    *,
    verbatim: Collection[str] = (),
) -> str:
    """The text of a CSV file of ``rows`` that a spreadsheet opens as written: the rule of
    every CSV file the toolkit writes (sem-measure's, ``sem benchmark``'s tables). Values
    are ASCII (:func:`spreadsheet_csv`; the ``verbatim`` columns, a file's name, as they
    are), with :data:`BOM` in front when a name's other letters remain (:func:`file_text`).
    """
    return file_text(spreadsheet_csv(rows, columns, verbatim=verbatim))

"""Result rows as CSV text: one column per key, in the order the keys first appear.

Shared by the metrology results and command line (``sem_metrology``) and the evaluation
report (``sem_train``), so every CSV the toolkit writes has the same layout rules.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

__all__ = ["csv_text"]


def csv_text(rows: Iterable[Mapping[str, Any]], columns: Sequence[str] | None = None) -> str:
    """CSV of ``rows`` with a header: ``columns``, or every key in first-seen order.

    A key a row lacks and a value of None are empty cells; lines end in CRLF (RFC 4180, the
    ``csv`` module's default).

    >>> csv_text([{"a": 1}, {"b": None, "a": 2}]).splitlines()
    ['a,b', '1,', '2,']
    """
    rows = list(rows)
    if columns is None:
        columns = list(dict.fromkeys(k for row in rows for k in row))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(columns), restval="")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()

"""CSV for spreadsheets: a cell a spreadsheet would run as a formula is written as text."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from typing import Any

# A spreadsheet runs a cell starting with one of these as a formula (CSV injection): such a
# cell is written after a single quote, which shows as text.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def safe_cell(value: Any) -> Any:
    """Text that may end up in a spreadsheet, with a leading `'` on a would-be formula; any
    other value as it is (the csv module writes None as an empty cell)."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def csv_rows(rows: Iterable[Iterable[Any]]) -> bytes:
    """The rows as CSV lines (CRLF, as RFC 4180 has them), every cell made safe."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerows([safe_cell(v) for v in row] for row in rows)
    return out.getvalue().encode()

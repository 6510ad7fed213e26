"""Reading the past card transactions of a campaign's dry run (quanyi/campaigns/simulate.py)
from CSV: `customer_id,amount,mcc,occurred_at[,event_id,reversal_of]` a line, with an optional
header line starting `customer_id`; amount in fen, occurred_at RFC 3339 with an offset.

Every line is checked; a bad one is named by its number and the rule it breaks, never by its
value (it may be a card number). A plain file goes through pyarrow's reader; any other through
`parse`, line by line, which is also what names the bad lines.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from quanyi.core.pan import has_pan, id_has_pan
from quanyi.core.schemas import (
    IDENT_PATTERN,
    IDENT_RULE,
    MAX_AMOUNT,
    PAN_IN_ID,
    TIME_RULE,
    is_ident,
)

HEADER = "customer_id"
MAX_ERRORS = 100
FIELDS = "6 fields at most: customer_id,amount,mcc,occurred_at[,event_id,reversal_of]"
AMOUNT = f"amount: a whole number of fen from 1 to {MAX_AMOUNT}"
MCC = "mcc: 4 digits"
NOT_UTF8 = "not UTF-8 text"


@dataclass(frozen=True)
class Rows:
    """The file's transactions as columns, in file order."""

    customers: list[str]
    amounts: list[int]
    mccs: list[str]
    moments: list[int]  # unix ms
    event_ids: list[str]  # "" when none
    reversal_ofs: list[str]  # "" when none
    customer_count: int  # distinct customers


@dataclass
class Rejected:
    count: int = 0
    errors: list[dict[str, Any]] = field(default_factory=list)

    def add(self, line: int, reason: str) -> None:
        self.count += 1
        if len(self.errors) < MAX_ERRORS:
            self.errors.append({"line": line, "reason": reason})


def _id_problem(value: str, name: str) -> str | None:
    """Why a value is not an id; a card number is named as such, and never repeated."""
    if is_ident(value):
        return None
    return f"{name}: {PAN_IN_ID if has_pan(value) or id_has_pan(value) else IDENT_RULE}"


# RFC 3339 date-time: date, time, optional fraction, and an offset (Z or +HH:MM).
_MOMENT = re.compile(
    r"([0-9]{4}-[0-9]{2}-[0-9]{2})[Tt ]([0-9]{2}):([0-9]{2}):([0-9]{2})(?:\.([0-9]{1,9}))?"
    r"([Zz]|[+-][0-9]{2}:[0-9]{2})\Z"
)


class Moments:
    """RFC 3339 times as unix ms, about three times as fast as datetime.fromisoformat and
    timestamp(): the start of each (date, offset) is worked out once, the time of day added."""

    def __init__(self) -> None:
        self._days: dict[tuple[str, str], int | None] = {}

    def ms(self, text: str) -> int | None:
        """None for anything but RFC 3339 with an offset, from the year 2000."""
        m = _MOMENT.match(text)
        if m is None:
            return None
        day, hours, minutes, seconds, fraction, offset = m.groups()
        start = self._days.get((day, offset), -1)
        if start == -1:
            start = self._days[(day, offset)] = self._day_start(day, offset)
        h, mi, sec = int(hours), int(minutes), int(seconds)
        if start is None or h > 23 or mi > 59 or sec > 59:
            return None
        ms = start + ((h * 60 + mi) * 60 + sec) * 1000
        return ms + int(fraction[:3].ljust(3, "0")) if fraction else ms

    @staticmethod
    def _day_start(day: str, offset: str) -> int | None:
        try:
            moment = datetime.fromisoformat(
                f"{day}T00:00:00{'+00:00' if offset in 'Zz' else offset}"
            )
        except ValueError:
            return None
        return round(moment.timestamp() * 1000) if moment.year >= 2000 else None


def _lines(body: bytes, rejected: Rejected) -> list[str]:
    """The body's lines as text; a line that is not UTF-8 is rejected (and left empty)."""
    try:
        return body.decode("utf-8").split("\n")
    except UnicodeDecodeError:
        pass
    lines = []
    for number, raw in enumerate(body.split(b"\n"), 1):
        try:
            lines.append(raw.decode("utf-8"))
        except UnicodeDecodeError:
            rejected.add(number, NOT_UTF8)
            lines.append("")
    return lines


def parse(body: bytes, audience: frozenset[str] | None, rejected: Rejected) -> Rows:
    """Every line checked; the transactions of `audience`'s members (everyone's when None)."""
    lines = _lines(body, rejected)
    if lines and lines[0].startswith("\ufeff"):  # spreadsheet exports start with a BOM
        lines[0] = lines[0][1:]
    first = 1 if lines and lines[0].split(",", 1)[0].strip() == HEADER else 0
    customers: list[str] = []
    amounts: list[int] = []
    mccs: list[str] = []
    moments: list[int] = []
    event_ids: list[str] = []
    reversal_ofs: list[str] = []
    # Customer ids and codes repeat a lot: each is checked once.
    checked: dict[str, str | None] = {}
    good_mccs: set[str] = set()
    moments_of = Moments()
    for index in range(first, len(lines)):
        line = lines[index]
        if line.endswith("\r"):
            line = line[:-1]
        if not line or line.isspace():
            continue  # a blank line holds nothing
        f = line.split(",")
        n = len(f)
        if not 4 <= n <= 6:
            rejected.add(index + 1, FIELDS)
            continue
        customer, amount_text, mcc, when = f[0], f[1], f[2], f[3]
        problem = checked.get(customer, "")
        if problem == "":
            problem = checked[customer] = _id_problem(customer, "customer_id")
        if problem is None and not (
            amount_text.isascii() and amount_text.isdigit() and 0 < int(amount_text) <= MAX_AMOUNT
        ):
            problem = AMOUNT
        if problem is None and mcc not in good_mccs:
            if len(mcc) == 4 and mcc.isascii() and mcc.isdigit():
                good_mccs.add(mcc)
            else:
                problem = MCC
        moment = moments_of.ms(when) if problem is None else None
        if problem is None and moment is None:
            problem = f"occurred_at: {TIME_RULE}"
        event_id = f[4] if n > 4 else ""
        reversal_of = f[5] if n > 5 else ""
        if problem is None and event_id:
            problem = _id_problem(event_id, "event_id")
        if problem is None and reversal_of:
            problem = _id_problem(reversal_of, "reversal_of")
        if problem is not None or moment is None:
            rejected.add(index + 1, problem or TIME_RULE)
            continue
        if audience is not None and customer not in audience:
            continue
        customers.append(customer)
        amounts.append(int(amount_text))
        mccs.append(mcc)
        moments.append(moment)
        event_ids.append(event_id)
        reversal_ofs.append(reversal_of)
    return Rows(customers, amounts, mccs, moments, event_ids, reversal_ofs, len(set(customers)))


# The fast path: a file whose every line has the same fields, read by pyarrow's CSV reader (in
# C++, on every core) and checked column by column; the first doubt sends the file to `parse`,
# which reads it line by line and names each bad line.
_COLUMNS = ("customer_id", "amount", "mcc", "occurred_at", "event_id", "reversal_of")
_ARROW_CHECKS = {
    "customer_id": IDENT_PATTERN,
    "amount": r"^[0-9]{1,13}$",
    "mcc": r"^[0-9]{4}$",
    "occurred_at": "^" + _MOMENT.pattern.removesuffix("\\Z") + "$",
    "event_id": f"^$|{IDENT_PATTERN}",
    "reversal_of": f"^$|{IDENT_PATTERN}",
}
_Y2000_MS = 946_684_800_000
# An id shorter than this holds no card number (quanyi/core/pan.py id_has_pan).
_PAN_MIN = 13


def arrow_rows(body: bytes, audience: frozenset[str] | None) -> Rows | None:
    """The rows of a plain file, in time order (file order among equal times); None for any
    file `parse` must read instead."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.csv as pcsv

    body = body.removeprefix(b"\xef\xbb\xbf")
    first = body[: body.find(b"\n")] if b"\n" in body else body
    header = first.split(b",", 1)[0].strip() == HEADER.encode()
    if header:
        after = body.split(b"\n", 2)
        if len(after) < 2:
            return None  # the header alone, without a line break: `parse` answers no rows
        line = after[1]
    else:
        line = first
    fields = line.rstrip(b"\r").count(b",") + 1
    if not 4 <= fields <= 6 or b'"' in body or b"\r" in body:
        return None
    names = list(_COLUMNS[:fields])
    try:
        table = pcsv.read_csv(
            pa.py_buffer(body),
            read_options=pcsv.ReadOptions(column_names=names, skip_rows=1 if header else 0),
            parse_options=pcsv.ParseOptions(quote_char=False),
            convert_options=pcsv.ConvertOptions(
                column_types={name: pa.string() for name in names},
                strings_can_be_null=False,
                quoted_strings_can_be_null=False,
            ),
        )
        if table.num_rows == 0:
            return None
        for name in names:
            if not pc.all(pc.match_substring_regex(table[name], _ARROW_CHECKS[name])).as_py():
                return None
        for name in ("customer_id", "event_id", "reversal_of")[: fields - 3]:
            column = table[name]
            long = pc.unique(pc.filter(column, pc.greater_equal(pc.utf8_length(column), _PAN_MIN)))
            if any(id_has_pan(value) for value in long.to_pylist()):
                return None
        amounts = pc.cast(table["amount"], pa.int64())
        moments = pc.cast(pc.cast(table["occurred_at"], pa.timestamp("ms", tz="UTC")), pa.int64())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None
    if pc.min(amounts).as_py() < 1 or pc.max(amounts).as_py() > MAX_AMOUNT:
        return None
    if pc.min(moments).as_py() < _Y2000_MS:
        return None
    table = table.set_column(names.index("amount"), "amount", amounts)
    table = table.set_column(names.index("occurred_at"), "occurred_at", moments)
    if audience is not None:
        table = table.filter(
            pc.is_in(table["customer_id"], pa.array(sorted(audience), pa.string()))
        )
    table = table.take(pc.sort_indices(table, [("occurred_at", "ascending")]))
    blank = [""] * table.num_rows
    customers = table["customer_id"].to_pylist()
    return Rows(
        customers,
        table["amount"].to_pylist(),
        table["mcc"].to_pylist(),
        table["occurred_at"].to_pylist(),
        table["event_id"].to_pylist() if fields > 4 else blank,
        table["reversal_of"].to_pylist() if fields > 5 else blank,
        len(set(customers)),
    )


def customers_of(body: bytes) -> list[str]:
    """The distinct customer ids of a file (valid ids only), whose audience membership the
    forecast needs: read before the file is checked line by line."""
    text = body.decode("utf-8", "replace").removeprefix("\ufeff")
    seen = {line.split(",", 1)[0] for line in text.split("\n")}
    return sorted(c for c in seen if c != HEADER and is_ident(c))

"""Card numbers (PANs): finding them in ids and text, masking them to first six and last four.

A PAN here is a run of 13-19 digits (leading zeros not counted) that passes the Luhn check and
does not start with 1. Inside a run, digits may be separated by up to three of ` - . _ : /`,
so `4111.1111.1111.1111`, `4111_1111_1111_1111` and `000004111111111111111` are all one PAN.

Three exemptions keep the service's own numbers readable and random ids usable: runs starting
with 1 (Unix times in seconds, milliseconds or microseconds all do until 2033, and no bank card
does; only airline UATP cards), ISO date-times such as `2026-12-01 08:32:03.123456`, and UUIDs
in their 8-4-4-4-12 form (their digit groups would join into a Luhn-valid run for about one
random UUID in 400).
"""

from __future__ import annotations

import re
from typing import Any

import orjson

MASK = "*"
_ID_SEPARATORS = b"_.:-/ "
# Date-times and UUIDs are matched first so that their digits never count as a run.
_DATETIME = r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(?::\d{2}(?:[.,]\d+)?)?"
_UUID_TEXT = r"(?<![0-9A-Za-z])[0-9a-fA-F]{8}(?:-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}(?![0-9A-Za-z])"
_UUID = re.compile(_UUID_TEXT)
_RUN = r"\d(?:[ ._:/-]{0,3}\d){12,}"
_TOKENS = re.compile(rf"(?P<datetime>{_DATETIME})|(?P<uuid>{_UUID_TEXT})|(?P<run>{_RUN})")
# The cheap pre-checks: thirteen digits in a row once separators are gone (ids), thirteen
# digits with few separators between (text). Most ids and most text have none, and then no
# Luhn work is done at all.
_THIRTEEN = re.compile(rb"\d{13}")
_DIGITS = re.compile(rb"\d+")
_CANDIDATE = re.compile(r"\d(?:[ ._:/-]{0,3}\d){12}")
_GROUP = re.compile(r"\d+")


_DOUBLED = {str(d): (2 * d - 9 if d > 4 else 2 * d) for d in range(10)}
_SINGLE = {str(d): d for d in range(10)}


def luhn_valid(digits: str) -> bool:
    """The Luhn check digit test: every second digit from the right doubled."""
    total = sum(map(_SINGLE.__getitem__, digits[-1::-2]))
    total += sum(map(_DOUBLED.__getitem__, digits[-2::-2]))
    return total % 10 == 0


def _significant(run: str) -> str:
    """The run's digits without separators and leading zeros."""
    return "".join(c for c in run if c.isdigit()).lstrip("0")


def is_pan_digits(digits: str) -> bool:
    """Separator-free digits (leading zeros allowed): is this a card number?"""
    digits = digits.lstrip("0")
    return 13 <= len(digits) <= 19 and digits[0] != "1" and luhn_valid(digits)


def _pan_spans(text: str) -> list[tuple[int, int]]:
    """Where the card numbers in `text` are. A run that is not one as a whole (a PAN next to
    another number: `qty 2 4111 1111 1111 1111`) is tried group by group."""
    spans = []
    for m in _TOKENS.finditer(text):
        run = m["run"]
        if not run:
            continue
        if is_pan_digits(_significant(run)):
            spans.append(m.span())
            continue
        groups = [(g.start(), g.end()) for g in _GROUP.finditer(run)]
        i = 0
        while i < len(groups):
            found = None
            for j in range(len(groups) - 1, i - 1, -1):
                piece = run[groups[i][0] : groups[j][1]]
                if is_pan_digits(_significant(piece)):
                    found = j
                    break
            if found is None:
                i += 1
                continue
            spans.append((m.start() + groups[i][0], m.start() + groups[found][1]))
            i = found + 1
    return spans


def id_has_pan(value: str) -> bool:
    """Whether an id holds a card number anywhere, whatever separators are put in between. On
    the claim path: one C-speed regex scan decides for nearly every id."""
    if len(value) < 13:
        return False
    if len(value) >= 36 and "-" in value:
        value = _UUID.sub("u", value)
    digits = value.encode().translate(None, _ID_SEPARATORS)
    if _THIRTEEN.search(digits) is None:
        return False
    if any(is_pan_digits(run.decode()) for run in _DIGITS.findall(digits)):
        return True
    # Separated groups may hold a PAN next to another number: `2-4111-1111-1111-1111`.
    return len(digits) != len(value) and bool(_pan_spans(value))


def has_pan(text: str) -> bool:
    """Whether free text holds a card number (digits separated by spaces, dashes, ...)."""
    return _CANDIDATE.search(text) is not None and bool(_pan_spans(text))


def _masked(run: str) -> str:
    digits = _significant(run)
    return digits[:6] + MASK * (len(digits) - 10) + digits[-4:]


def mask_pans(text: str) -> str:
    """Every card number in `text` replaced by its first six and last four digits."""
    if _CANDIDATE.search(text) is None:
        return text
    spans = _pan_spans(text)
    if not spans:
        return text
    out, last = [], 0
    for start, end in spans:
        out.append(text[last:start])
        out.append(_masked(text[start:end]))
        last = end
    out.append(text[last:])
    return "".join(out)


def mask_json(value: Any) -> Any:
    """A JSON-like value with every card number masked: in strings, in keys, and numbers that
    are card numbers (which become masked strings)."""
    if isinstance(value, str):
        return mask_pans(value)
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        # Bounded first: str() of a huge integer is slow (and refused past 4,300 digits).
        if 10**12 <= abs(value) < 10**19 and is_pan_digits(str(abs(value))):
            return _masked(str(abs(value)))
        return value
    if isinstance(value, dict):
        return {mask_pans(str(k)): mask_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [mask_json(v) for v in value]
    return value


def masked_json_text(body: bytes) -> str:
    """A JSON document as text with its card numbers masked; unchanged (byte for byte) when it
    holds none."""
    text = body.decode()
    if _CANDIDATE.search(text) is None:
        return text
    try:
        return orjson.dumps(mask_json(orjson.loads(body))).decode()
    except orjson.JSONDecodeError:
        return mask_pans(text)

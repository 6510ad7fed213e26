"""Card numbers (PANs): finding them in ids and text, masking them to first six and last four.

A PAN here is a run of 13-19 digits (leading zeros not counted) that passes the Luhn check.
Any Unicode digit counts as the ASCII digit it stands for (`４１１１` is `4111`, and so are
Arabic-Indic and superscript digits): text is read through `ascii_digits` first, which keeps
every character in its place, so a span found in the normalised text is the same span of the
text as written. Inside a run, digits may be separated by up to three of ` - . _ : / , | +`,
tabs and the Unicode spaces (NBSP, thin and ideographic spaces, zero-width joiners), so
`4111.1111.1111.1111`, `4111,1111,1111,1111` and `000004111111111111111` are all one PAN.

Four exemptions keep the service's own numbers readable and random ids usable:
- Unix times in seconds, milliseconds or microseconds from 2023 to 2036 (10, 13 or 16 digits
  starting 17-20; no bank card starts so). Such a group of digits also ends a run:
  `1795606932123-0` (a stream id) is a time and a 0, not a 14-digit number.
- ISO date-times such as `2026-12-01 08:32:03.123456`, and dates such as `2026-12-01`.
- UUIDs in their 8-4-4-4-12 form (their digit groups would join into a Luhn-valid run for about
  one random UUID in 400).

Finding them is linear in the text: a run that is not a PAN as a whole is tried group by group,
each group extended only while the piece has at most 19 significant digits, each piece's Luhn
sum read off prefix sums.
"""

from __future__ import annotations

import re
import sys
import unicodedata
from itertools import accumulate
from typing import Any

import orjson

MASK = "*"

# Every character that is a digit (str.isdigit: decimal digits of every script, full-width,
# superscripts, circled digits) mapped to its ASCII digit; one character for one, so that
# positions do not move. Built once: about 40 ms.
_TO_ASCII = {
    c: str(unicodedata.digit(chr(c)))
    for c in range(128, sys.maxunicode + 1)
    if chr(c).isdigit() and unicodedata.digit(chr(c), None) is not None
}


def ascii_digits(text: str) -> str:
    """`text` with every Unicode digit replaced by its ASCII digit, same length."""
    return text if text.isascii() else text.translate(_TO_ASCII)


# What may stand between the digits of one card number in free text. Ids allow only the first
# six of these (quanyi/core/schemas.py IDENT); the rest are how people and spreadsheets write.
_SEP = r"[ \t._:/,|+\u00a0\u1680\u2000-\u200d\u202f\u205f\u2060\u3000\ufeff-]"
_ID_SEPARATORS = b"_.:-/ "
# Date-times, dates and UUIDs are matched first so that their digits never count as a run.
_DATETIME = r"[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9]{2}:[0-9]{2}(?::[0-9]{2}(?:[.,][0-9]+)?)?"
_DATE = r"(?<![0-9])(?:19|20)[0-9]{2}-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12][0-9]|3[01])(?![0-9])"
_UUID_TEXT = r"(?<![0-9A-Za-z])[0-9a-fA-F]{8}(?:-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}(?![0-9A-Za-z])"
_UUID = re.compile(_UUID_TEXT)
_RUN = rf"[0-9](?:{_SEP}{{0,3}}[0-9]){{12,}}"
_TOKENS = re.compile(
    rf"(?P<datetime>{_DATETIME})|(?P<date>{_DATE})|(?P<uuid>{_UUID_TEXT})|(?P<run>{_RUN})"
)
# The cheap pre-checks: thirteen digits in a row once separators are gone (ids), thirteen
# digits with few separators between (text). Most ids and most text have none, and then no
# Luhn work is done at all.
_THIRTEEN = re.compile(rb"[0-9]{13}")
_DIGITS = re.compile(rb"[0-9]+")
_CANDIDATE = re.compile(rf"[0-9](?:{_SEP}{{0,3}}[0-9]){{12}}")
_GROUP = re.compile(r"[0-9]+")
# A group of 10, 13 or 16 digits standing alone: a Unix time in s, ms or µs.
_TIME_GROUP = re.compile(
    r"(?<![0-9])(?:1[7-9]|20)(?:[0-9]{14}|[0-9]{11}|[0-9]{8})(?![0-9])", re.ASCII
)
_TIME_PREFIXES = ("17", "18", "19", "20")

# Luhn weights of a digit byte: as it is, and doubled (digits summed).
_SINGLE = bytes.maketrans(b"0123456789", bytes(range(10)))
_DOUBLED = bytes.maketrans(b"0123456789", bytes(2 * d - 9 if d > 4 else 2 * d for d in range(10)))


def _is_time(digits: str) -> bool:
    return len(digits) in (10, 13, 16) and digits.startswith(_TIME_PREFIXES)


def luhn_valid(digits: str) -> bool:
    """The Luhn check digit test: every second digit from the right doubled. False for
    anything that is not digits."""
    raw = ascii_digits(digits).encode("utf-8", "surrogatepass")
    if not raw.isdigit():
        return False
    total = sum(raw[-1::-2].translate(_SINGLE)) + sum(raw[-2::-2].translate(_DOUBLED))
    return total % 10 == 0


def is_pan_digits(digits: str) -> bool:
    """Separator-free digits (leading zeros allowed): is this a card number?"""
    digits = ascii_digits(digits).lstrip("0")
    return 13 <= len(digits) <= 19 and not _is_time(digits) and luhn_valid(digits)


def _segment_spans(run: str, groups: list[tuple[int, int]], offset: int, spans: list) -> None:
    """The card numbers among consecutive digit groups of a run: from each group, the longest
    piece that is one; the next search starts after it."""
    if not groups:
        return
    digits = "".join(run[a:b] for a, b in groups)
    if len(digits) < 13:
        return
    if is_pan_digits(digits):
        spans.append((offset + groups[0][0], offset + groups[-1][1]))
        return
    n = len(groups)
    if n == 1:  # its one piece, the whole group, was just tried
        return
    pos = [0]
    for a, b in groups:
        pos.append(pos[-1] + b - a)
    # nonzero[k]: where the piece starting at group k has its first significant digit.
    nonzero = [len(digits)] * (n + 1)
    for k in range(n - 1, -1, -1):
        zeros = len(digits[pos[k] : pos[k + 1]]) - len(digits[pos[k] : pos[k + 1]].lstrip("0"))
        nonzero[k] = pos[k] + zeros if pos[k] + zeros < pos[k + 1] else nonzero[k + 1]
    # Luhn sums of any piece [s, e): its digits at positions of e's parity are the doubled ones.
    raw = digits.encode()
    single, doubled = raw.translate(_SINGLE), raw.translate(_DOUBLED)
    even, odd = bytearray(single), bytearray(single)
    even[0::2], odd[1::2] = doubled[0::2], doubled[1::2]
    sums = (list(accumulate(even, initial=0)), list(accumulate(odd, initial=0)))
    i = top = 0
    while i < n:
        start = nonzero[i]
        if start >= pos[i + 1]:  # a group of zeros only: the next group starts the same number
            i += 1
            continue
        # top: the last group a piece from group i may end with (at most 19 significant digits).
        top = max(top, i)
        while top + 1 < n and pos[top + 2] - start <= 19:
            top += 1
        found = None
        for j in range(top, i - 1, -1):
            end = pos[j + 1]
            if end - start < 13:
                break
            if end - start > 19:
                continue
            prefix = sums[end % 2]
            if (prefix[end] - prefix[start]) % 10 == 0 and not _is_time(digits[start:end]):
                found = j
                break
        if found is None:
            i += 1
            continue
        spans.append((offset + groups[i][0], offset + groups[found][1]))
        i = found + 1


def _pan_spans(text: str, whole_runs: bool = False) -> list[tuple[int, int]]:
    """Where the card numbers in `text` (ASCII digits already) are; with `whole_runs`, the
    runs of digits that hold them. A run that is not one as a whole (a PAN next to another
    number: `qty 2 4111 1111 1111 1111`) is tried group by group; a Unix time among the groups
    ends the run there. Every piece of a run in which none is found was tried."""
    spans: list[tuple[int, int]] = []
    runs: list[tuple[int, int]] = []
    for m in _TOKENS.finditer(text):
        run = m["run"]
        if not run:
            continue
        found = len(spans)
        groups: list[tuple[int, int]] = []
        for g in _GROUP.finditer(run):
            if _is_time(g[0]):
                _segment_spans(run, groups, m.start(), spans)
                groups = []
            else:
                groups.append(g.span())
        _segment_spans(run, groups, m.start(), spans)
        if len(spans) > found:
            runs.append(m.span())
    return runs if whole_runs else spans


def id_has_pan(value: str) -> bool:
    """Whether an id holds a card number anywhere, whatever separators are put in between. On
    the claim path: one C-speed regex scan decides for nearly every id."""
    if len(value) < 13:
        return False
    value = ascii_digits(value)
    if len(value) >= 36 and "-" in value:
        value = _UUID.sub("u", value)
    digits = value.encode("utf-8", "surrogatepass").translate(None, _ID_SEPARATORS)
    if _THIRTEEN.search(digits) is None:
        return False
    # Unix times stand apart (`cust-1795606932123-7`); everything else joins across separators.
    value = _TIME_GROUP.sub("t", value)
    digits = value.encode("utf-8", "surrogatepass").translate(None, _ID_SEPARATORS)
    if any(is_pan_digits(run.decode()) for run in _DIGITS.findall(digits)):
        return True
    # Separated groups may hold a PAN next to another number: `2-4111-1111-1111-1111`.
    return len(digits) != len(value) and bool(_pan_spans(value))


def has_pan(text: str) -> bool:
    """Whether free text holds a card number (digits separated by spaces, dashes, ...)."""
    text = ascii_digits(text)
    return _CANDIDATE.search(text) is not None and bool(_pan_spans(text))


def _masked(run: str) -> str:
    digits = "".join(_GROUP.findall(run)).lstrip("0")
    return digits[:6] + MASK * (len(digits) - 10) + digits[-4:]


def _hidden(run: str) -> str:
    return _GROUP.sub(lambda m: MASK * len(m[0]), run)


def _replaced(text: str, plain: str, spans: list[tuple[int, int]], how: Any) -> str:
    out, last = [], 0
    for start, end in spans:
        out.append(text[last:start])
        out.append(how(plain[start:end]))
        last = end
    out.append(text[last:])
    return "".join(out)


def mask_pans(text: str) -> str:
    """Every card number in `text` replaced by its first six and last four (ASCII) digits."""
    plain = ascii_digits(text)
    if _CANDIDATE.search(plain) is None:
        return text
    spans = _pan_spans(plain)
    if not spans:
        return text
    text = _replaced(text, plain, spans, _masked)
    # The digits a mask keeps may join the digits next to them into another number that
    # passes Luhn (`5555 5555 411111******1111`, about one time in ten): such a number loses
    # all its digits, and a run that still holds one after that loses all of its own.
    for whole_runs in (False, True):
        plain = ascii_digits(text)
        if _CANDIDATE.search(plain) is None:
            break
        spans = _pan_spans(plain, whole_runs)
        if not spans:
            break
        text = _replaced(text, plain, spans, _hidden)
    return text


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
    if _CANDIDATE.search(ascii_digits(text)) is None:
        return text
    try:
        return orjson.dumps(mask_json(orjson.loads(body))).decode()
    except orjson.JSONDecodeError:
        return mask_pans(text)

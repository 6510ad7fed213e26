"""Grant ids: ULIDs (48-bit millisecond time + 80 random bits, Crockford base32), sortable by time."""

from __future__ import annotations

import os

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_INDEX = {c: i for i, c in enumerate(_ALPHABET)}
GRANT_ID_LENGTH = 26


def new_grant_id(now_ms: int) -> str:
    value = (now_ms << 80) | int.from_bytes(os.urandom(10), "big")
    chars = []
    for _ in range(GRANT_ID_LENGTH):
        chars.append(_ALPHABET[value & 31])
        value >>= 5
    return "".join(reversed(chars))


def grant_id_ms(grant_id: str) -> int:
    """The millisecond at which the grant was made."""
    value = 0
    for c in grant_id[:10]:
        value = (value << 5) | _INDEX[c]
    return value


def is_grant_id(text: str) -> bool:
    return len(text) == GRANT_ID_LENGTH and all(c in _INDEX for c in text) and text[0] <= "7"


def new_ulid(now_ms: int) -> str:
    """A ULID of `now_ms` for any record whose ids sort by when it was made (notifications...):
    grant ids are ULIDs of the same shape."""
    return new_grant_id(now_ms)

"""Checking request bodies: every bad field is named in one `invalid_request` error."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

import orjson

from quanyi.errors import InvalidRequest
from quanyi.pan import id_has_pan, mask_pans

IDENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}\Z")
CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# Lua numbers are doubles: every integer that reaches a script stays well inside 2^53.
MAX_AMOUNT = 10**12


def parse_json(body: bytes) -> Any:
    if not body:
        raise InvalidRequest("a JSON body is required", {"body": "required"})
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"body is not valid JSON: {exc}", {"body": "not valid JSON"}) from None


def is_digits(text: str) -> bool:
    """ASCII digits only: str.isdigit() also accepts "²" and other digits int() refuses."""
    return text.isascii() and text.isdigit()


def looks_like_card_number(text: str) -> bool:
    """Holds a card number in any separator form (see quanyi/pan.py): never stored."""
    return id_has_pan(text)


PAN_IN_ID = "looks like a card number: card numbers are never sent or stored"


def _plausible(moment: datetime) -> bool:
    """Within what PostgreSQL and the hot path's millisecond arithmetic take comfortably."""
    try:
        return 2000 <= moment.astimezone(UTC).year <= 9999
    except (OverflowError, ValueError):
        return False


class Fields:
    """Reads typed fields out of a JSON object, collecting an error per bad field."""

    def __init__(self, body: Any, prefix: str = "", errors: dict[str, str] | None = None) -> None:
        self.errors: dict[str, str] = {} if errors is None else errors
        self.prefix = prefix
        if not isinstance(body, dict):
            self.errors[prefix.rstrip(".") or "body"] = "must be a JSON object"
            body = {}
        self.body: dict[str, Any] = body

    def _fail(self, name: str, message: str) -> None:
        self.errors[self.prefix + name] = message

    def _get(self, name: str, required: bool) -> Any:
        value = self.body.get(name)
        if value is None and required:
            self._fail(name, "required")
        return value

    def ident(self, name: str, required: bool = True) -> Any:
        value = self._get(name, required)
        if value is not None and not (isinstance(value, str) and IDENT.match(value)):
            self._fail(
                name, "1-64 characters: letters, digits, _ . : - (not starting with a symbol)"
            )
            return None
        if value is not None and id_has_pan(value):
            self._fail(name, PAN_IN_ID)
            return None
        return value

    def text(
        self, name: str, max_length: int = 200, required: bool = True, *, mask: bool = True
    ) -> Any:
        """A string; with `mask`, its card numbers masked. `mask=False` is for a value that is
        looked up (a vendor's code) and masked by the caller where it is stored."""
        value = self._get(name, required)
        if value is not None and not (
            isinstance(value, str)
            and 0 < len(value.strip()) <= max_length
            and not CONTROL.search(value)
        ):
            self._fail(
                name,
                f"a non-empty string of at most {max_length} characters, no control characters",
            )
            return None
        # Free text is kept (a reason, a name), a card number in it never is.
        return mask_pans(value) if mask and value is not None else value

    def integer(
        self, name: str, minimum: int = 0, maximum: int = MAX_AMOUNT, required: bool = True
    ) -> Any:
        value = self._get(name, required)
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= maximum
        ):
            self._fail(name, f"an integer from {minimum} to {maximum}")
            return None
        return value

    def boolean(self, name: str, default: bool) -> bool:
        value = self.body.get(name)
        if value is None:
            return default
        if not isinstance(value, bool):
            self._fail(name, "true or false")
            return default
        return value

    def time(self, name: str, required: bool = True) -> Any:
        value = self._get(name, required)
        if value is None:
            return None
        try:
            parsed = datetime.fromisoformat(value) if isinstance(value, str) else None
        except ValueError:
            parsed = None
        if parsed is None or parsed.tzinfo is None or not _plausible(parsed):
            self._fail(
                name,
                "an RFC 3339 time with an offset between 2000 and 9999, like 2026-12-01T00:00:00+08:00",
            )
            return None
        return parsed

    def ident_list(self, name: str) -> Any:
        value = self._get(name, True)
        if value is not None and not (
            isinstance(value, list)
            and value
            and all(isinstance(v, str) and IDENT.match(v) for v in value)
        ):
            self._fail(name, "a non-empty list of ids")
            return None
        if value is not None and any(id_has_pan(v) for v in value):
            self._fail(name, PAN_IN_ID)
            return None
        return value

    def objects(self, name: str) -> list[Fields]:
        value = self._get(name, True)
        if value is None:
            return []
        if not isinstance(value, list) or not value:
            self._fail(name, "a non-empty list of objects")
            return []
        return [
            Fields(item, f"{self.prefix}{name}[{i}].", self.errors) for i, item in enumerate(value)
        ]

    def fail(self, name: str, message: str) -> None:
        self._fail(name, message)

    def check(self, message: str = "some fields are invalid") -> None:
        if self.errors:
            raise InvalidRequest(message, self.errors)

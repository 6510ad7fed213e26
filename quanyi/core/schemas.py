"""Request and response bodies, declared once as pydantic models: they check what comes in and
make the API document (`/openapi.json`).

Pydantic, not msgspec: on the claim body both cost the same (~3.5 us, measured with the card
number checks), and pydantic reports every bad field of a body at once, which this API promises.

- `Body` is the base of request bodies; `Reply` of response bodies (documentation and tests:
  handlers still answer plain dicts, so the hot path pays nothing for it).
- `Ident`, `Text`, `Amount`, `Moment`, `Annotated[str, TextRule(500)]`,
  `Annotated[int, Range(0, 800)]` are the field types, each with the message a client
  reads in `error.fields` when a value is wrong.
- `decode(Model, body)` checks raw JSON bytes and raises one `InvalidRequest` naming every bad
  field (`rewards[0].stock`), with `body` for a body that is not a JSON object.
- `@endpoint(...)` declares what a handler takes and answers; the API document is built from it
  (`quanyi/web/openapi.py`) and a test fails for a route without it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, TypeVar

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    GetCoreSchemaHandler,
    GetJsonSchemaHandler,
    PlainValidator,
    StrictBool,
    ValidationError,
    WithJsonSchema,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import PydanticCustomError, core_schema

from quanyi.core.errors import InvalidRequest, QuanyiError
from quanyi.core.pan import id_has_pan, mask_pans

IDENT_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$"
IDENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}\Z")
CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# Lua numbers are doubles: every integer that reaches a script stays well inside 2^53.
MAX_AMOUNT = 10**12

IDENT_RULE = "1-64 characters: letters, digits, _ . : - (not starting with a symbol)"
PAN_IN_ID = "looks like a card number: card numbers are never sent or stored"
TIME_RULE = "an RFC 3339 time with an offset between 2000 and 9999, like 2026-12-01T00:00:00+08:00"


class Body(BaseModel):
    """A request body. Unknown fields are ignored (clients may send more than we read); types
    are strict: `"5"` is not a number and `1` is not `true`."""

    model_config = ConfigDict(extra="ignore", strict=True, frozen=True)


class Reply(BaseModel):
    """A response body, as the API document describes it."""

    model_config = ConfigDict(extra="forbid")


# field types


def is_digits(text: str) -> bool:
    """ASCII digits only: str.isdigit() also accepts "²" and other digits int() refuses."""
    return text.isascii() and text.isdigit()


def is_ident(value: str) -> bool:
    """An id a record can have: the IDENT form, and no card number in any form."""
    return bool(IDENT.match(value)) and not id_has_pan(value)


def _ident(value: Any) -> str:
    if not isinstance(value, str) or not IDENT.match(value):
        raise PydanticCustomError("ident", IDENT_RULE)
    if id_has_pan(value):
        raise PydanticCustomError("card_number", PAN_IN_ID)
    return value


Ident = Annotated[
    str,
    PlainValidator(_ident),  # any value: a number gets the rule, not a type error
    WithJsonSchema({"type": "string", "pattern": IDENT_PATTERN, "maxLength": 64}),
]
"""An id: 1-64 letters, digits and `_ . : -`, never a card number in any form."""


@dataclass(frozen=True)
class TextRule:
    """`Annotated[str, TextRule(500)]`: a non-empty string of at most `max_length` characters
    without control characters; with `mask`, card numbers in it are masked (free text is kept,
    a card number in it never is). `mask=False` is for a value that is looked up (a vendor's
    code) and masked by the caller where it is stored."""

    max_length: int = 200
    mask: bool = True

    def check(self, value: Any) -> str:
        if (
            not isinstance(value, str)
            or not 0 < len(value.strip()) <= self.max_length
            or CONTROL.search(value)
        ):
            raise PydanticCustomError(
                "text",
                f"a non-empty string of at most {self.max_length} characters, "
                "no control characters",
            )
        return mask_pans(value) if self.mask else value

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        # Any value reaches `check`, so a number gets the same message as an empty string.
        return core_schema.no_info_plain_validator_function(self.check)

    def __get_pydantic_json_schema__(
        self, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        return {"type": "string", "minLength": 1, "maxLength": self.max_length}


@dataclass(frozen=True)
class Range:
    """`Annotated[int, Range(0, 800)]`: an integer from `minimum` to `maximum`, never a boolean
    and never a string."""

    minimum: int = 0
    maximum: int = MAX_AMOUNT

    def check(self, value: Any) -> int:
        if (
            isinstance(value, bool)
            or not isinstance(value, int)
            or not self.minimum <= value <= self.maximum
        ):
            raise PydanticCustomError(
                "integer", f"an integer from {self.minimum} to {self.maximum}"
            )
        return value

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        # Any value reaches `check`: "5", 5.0 and true get the rule, not a type error.
        return core_schema.no_info_plain_validator_function(self.check)

    def __get_pydantic_json_schema__(
        self, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        return {"type": "integer", "minimum": self.minimum, "maximum": self.maximum}


Text = Annotated[str, TextRule()]
"""Free text of at most 200 characters, card numbers masked."""


Amount = Annotated[int, Range()]
"""Fen (or units): 0 to 10^12."""


def _plausible(moment: datetime) -> datetime:
    """Within what PostgreSQL and the hot path's millisecond arithmetic take comfortably."""
    try:
        if 2000 <= moment.astimezone(UTC).year <= 9999:
            return moment
    except (OverflowError, ValueError):
        pass
    raise PydanticCustomError("time", TIME_RULE)


Moment = Annotated[
    AwareDatetime,
    AfterValidator(_plausible),
    WithJsonSchema({"type": "string", "format": "date-time"}),
]
"""An RFC 3339 time with an offset, between the years 2000 and 9999."""

Flag = StrictBool


# decoding

M = TypeVar("M", bound=BaseModel)

_TYPE_RULES = {
    "missing": "required",
    "bool_type": "true or false",
    "int_type": "an integer",
    "string_type": "a string",
    "list_type": "a non-empty list",
    "too_short": "a non-empty list",
    "dict_type": "must be a JSON object",
    "model_type": "must be a JSON object",
    "model_attributes_type": "must be a JSON object",
}


def field_name(loc: tuple[int | str, ...]) -> str:
    """('rewards', 0, 'stock') -> 'rewards[0].stock'."""
    name = ""
    for part in loc:
        if isinstance(part, int):
            name += f"[{part}]"
        else:
            name += f".{part}" if name else str(part)
    return name or "body"


def fields_of(exc: ValidationError) -> dict[str, str]:
    """Every bad field of a body and what it must be; the first complaint about a field wins."""
    fields: dict[str, str] = {}
    for error in exc.errors(include_url=False):
        kind = error["type"]
        if kind == "json_invalid":
            fields.setdefault("body", "not valid JSON")
            continue
        loc = tuple(p for p in error["loc"] if not _is_union_tag(p))
        message = _TYPE_RULES.get(kind) or error["msg"]
        if error.get("input", "") is None:
            message = "required"  # null where a value is required (an optional field takes it)
        elif kind.startswith(("datetime", "timezone")):
            message = TIME_RULE
        elif kind == "literal_error":
            message = "one of " + _choices(error.get("ctx", {}).get("expected", ""))
        fields.setdefault(field_name(loc), message)
    return fields


def _choices(expected: str) -> str:
    """pydantic's "'a', 'b' or 'c'" as "a, b, c"."""
    return expected.replace("'", "").replace(" or ", ", ")


def _is_union_tag(part: int | str) -> bool:
    # pydantic names the member of a union or the step of a chain it tried ("function-after[...]")
    return isinstance(part, str) and ("[" in part or part.startswith("function-"))


def decode(model: type[M], body: bytes, message: str = "some fields are invalid") -> M:
    """`body` (raw JSON bytes) checked against `model`; one InvalidRequest names every bad field."""
    if not body:
        raise InvalidRequest("a JSON body is required", fields={"body": "required"})
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        fields = fields_of(exc)
        if set(fields) == {"body"} and fields["body"] == "not valid JSON":
            raise InvalidRequest("body is not valid JSON", fields=fields) from None
        raise InvalidRequest(message, fields=fields) from None


def check(model: type[M], data: Mapping[str, Any], message: str = "some fields are invalid") -> M:
    """Like `decode`, for values already parsed (a query string, path parameters, a form)."""
    try:
        # A query string is a multidict: its first value of each name, as `.get` reads it.
        return model.model_validate(dict(data), strict=False)
    except ValidationError as exc:
        raise InvalidRequest(message, fields=fields_of(exc)) from None


# what a handler declares

# customer: the bearer token of a customer H5 page session (quanyi/issuance/h5.py).
Auth = Literal["channel", "staff", "vendor", "customer", "none"]


@dataclass(frozen=True)
class Endpoint:
    """What a route takes and answers, for the API document."""

    summary: str
    auth: Auth
    body: type[BaseModel] | None = None
    query: type[BaseModel] | None = None
    # status -> response model (None: no body, e.g. a CSV or a redirect described in `media`)
    responses: Mapping[int, type[BaseModel] | None] = field(default_factory=dict)
    errors: tuple[type[QuanyiError], ...] = ()
    # a body that is not JSON: media type of the request (a CSV upload) or of the response
    body_media: str | None = None
    response_media: str | None = None
    tags: tuple[str, ...] = ()
    # the path parameters, for the document (handlers check their own: a bad id may be a 400
    # on one route and a 404 on another)
    path: type[BaseModel] | None = None
    # False for the pages that serve the document itself (/docs, /openapi.json)
    documented: bool = True


H = TypeVar("H", bound=Callable[..., Any])


def endpoint(
    summary: str,
    *,
    auth: Auth,
    body: type[BaseModel] | None = None,
    query: type[BaseModel] | None = None,
    responses: Mapping[int, type[BaseModel] | None],
    errors: tuple[type[QuanyiError], ...] = (),
    body_media: str | None = None,
    response_media: str | None = None,
    tags: tuple[str, ...] = (),
    path: type[BaseModel] | None = None,
    documented: bool = True,
) -> Callable[[H], H]:
    """Declares a handler's bodies and answers; put it under the route decorator:

    @routes.post("/v1/claims")
    @endpoint("Claim a reward", auth="channel", body=ClaimBody, responses={201: GrantReply})
    async def post_claim(request): ...
    """
    declared = Endpoint(
        summary,
        auth,
        body,
        query,
        dict(responses),
        errors,
        body_media,
        response_media,
        tags,
        path,
        documented,
    )

    def attach(handler: H) -> H:
        handler.__endpoint__ = declared  # type: ignore[attr-defined]
        return handler

    return attach


def endpoint_of(handler: Any) -> Endpoint | None:
    return getattr(handler, "__endpoint__", None)

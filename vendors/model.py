"""What the vendor APIs take and answer, declared once: the registry's bodies (staff), a
redemption callback (vendors), and the statement report (both)."""

from __future__ import annotations

import os
from datetime import date, datetime
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BeforeValidator,
    Field,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
)
from pydantic_core import PydanticCustomError

from quanyi.core.schemas import Body, Ident, Moment, Range, Reply, Text, TextRule
from quanyi.vendors.rsa import RsaKey, load_key

Adapter = Literal["http", "points", "codepool", "simulated"]
# Adapters that call the vendor over HTTP: they need its base URL.
REACHED_OVER_HTTP = ("http", "points", "simulated")


BaseUrl = Annotated[str, TextRule(500)]
TimeoutMs = Annotated[int, Range(1, 120_000)]
MaxInFlight = Annotated[int, Range(1, 10_000)]
MaxAttempts = Annotated[int, Range(1, 100)]
BackoffBaseMs = Annotated[int, Range(1, 3_600_000)]
BackoffMaxMs = Annotated[int, Range(1, 86_400_000)]


def null_is_default(model: type[Body], value: Any, info: ValidationInfo) -> Any:
    """A null for a field with a default reads as the default (a client that sends every field
    writes "not set" so)."""
    return model.model_fields[info.field_name or ""].default if value is None else value


# the registry


def _pem_public_key(pem: str) -> str:
    try:
        key = load_key(pem)
    except (ValueError, IndexError, TypeError):
        raise PydanticCustomError("public_key", "not a PEM RSA public key") from None
    if key.has_private():
        raise PydanticCustomError("public_key", "a private key: send only the public part")
    return pem


def _at_most_two_texts(keys: Any) -> Any:
    # Checked before the items, so a list holding a number is named as a whole.
    if not isinstance(keys, list) or len(keys) > 2 or not all(isinstance(k, str) for k in keys):
        raise PydanticCustomError(
            "public_keys", "a list of at most two PEM public keys (two while rotating)"
        )
    return keys


PublicKeys: Any = Annotated[
    list[Annotated[str, AfterValidator(_pem_public_key)]],
    BeforeValidator(_at_most_two_texts),
    WithJsonSchema({"type": "array", "items": {"type": "string"}, "maxItems": 2}),
]


def load_private_key(reference: str) -> RsaKey:
    """`file:PATH` or `env:VARIABLE` holding a PEM private key."""
    kind, _, where = reference.partition(":")
    if kind == "file":
        return load_key(Path(where).read_text())
    if kind == "env":
        return load_key(os.environ[where])
    raise ValueError(f"signing key reference must be file:PATH or env:VARIABLE, not {reference!r}")


def _signing_key(reference: str) -> str:
    try:
        if not load_private_key(reference).has_private():
            raise PydanticCustomError(
                "signing_key", "it holds a public key; ours must be a private key"
            )
    except (OSError, KeyError, ValueError, IndexError, TypeError) as exc:
        raise PydanticCustomError(
            "signing_key", "cannot load a private key from it: {problem}", {"problem": str(exc)}
        ) from None
    return reference


SigningKey = Annotated[str, TextRule(500), AfterValidator(_signing_key)]
"""Where our private key for this vendor is: `file:PATH` or `env:VARIABLE`, never the key."""


class RetryBody(Body):
    max_attempts: MaxAttempts | None = 8
    backoff_base_ms: BackoffBaseMs | None = 200
    backoff_max_ms: BackoffMaxMs | None = 60_000

    @field_validator("max_attempts", "backoff_base_ms", "backoff_max_ms")
    @classmethod
    def _defaults(cls, value: Any, info: ValidationInfo) -> Any:
        return null_is_default(cls, value, info)


class VendorPatch(Body):
    """A partial update: the fields it names change, the rest stay (retry settings too)."""

    name: Text | None = None
    adapter: Adapter | None = None
    base_url: BaseUrl | None = None
    timeout_ms: TimeoutMs | None = None
    max_in_flight: MaxInFlight | None = None
    retry: RetryBody | None = None
    public_keys: PublicKeys = Field(default_factory=list)
    signing_key: SigningKey | None = None


class VendorBody(Body):
    """A new vendor; also what a patched vendor must be as a whole."""

    id: Ident
    name: Text
    adapter: Adapter
    base_url: BaseUrl | None = Field(default=None, validate_default=True)
    timeout_ms: TimeoutMs | None = 2000
    max_in_flight: MaxInFlight | None = 64
    retry: RetryBody | None = RetryBody()
    public_keys: PublicKeys = Field(default_factory=list)
    signing_key: SigningKey | None = None

    @field_validator("timeout_ms", "max_in_flight", "retry")
    @classmethod
    def _defaults(cls, value: Any, info: ValidationInfo) -> Any:
        return null_is_default(cls, value, info)

    @field_validator("base_url")
    @classmethod
    def _reachable(cls, base_url: str | None, info: ValidationInfo) -> str | None:
        adapter = info.data.get("adapter")  # absent when it was invalid itself
        if adapter in REACHED_OVER_HTTP and not base_url:
            raise PydanticCustomError(
                "required", "required for the {adapter} adapter", {"adapter": adapter}
            )
        return base_url


class RetryReply(Reply):
    max_attempts: int
    backoff_base_ms: int
    backoff_max_ms: int


VendorState = Literal["proposed", "active", "suspended", "offboarded"]


class VendorReply(Reply):
    id: str
    name: str
    adapter: Adapter
    base_url: str | None
    timeout_ms: int
    max_in_flight: int
    retry: RetryReply
    public_keys: list[str]
    signing_key: str | None
    # Onboarding (quanyi/vendors/lifecycle.py): who last moved it into each state, and when.
    state: VendorState
    proposed_by: str | None
    proposed_at: datetime | None
    activated_by: str | None
    activated_at: datetime | None
    suspended_by: str | None
    suspended_at: datetime | None
    offboarded_by: str | None
    offboarded_at: datetime | None


class VendorsReply(Reply):
    vendors: list[VendorReply]


# redemption callbacks


VendorCode = Annotated[str, TextRule(128, mask=False)]  # looked up as sent, stored masked
GrantRef = Annotated[
    str, TextRule(64)
]  # any text: one that is no grant id of ours is an unknown grant


class RedemptionBody(Body):
    """A vendor's report that a customer used a right: the grant by its id or by its code.
    Other fields are kept with the redemption (card numbers masked), for reconciliation."""

    redemption_id: Ident
    code: VendorCode | None = None
    grant_id: GrantRef | None = Field(default=None, validate_default=True)
    redeemed_at: Moment

    @field_validator("grant_id")
    @classmethod
    def _grant_named(cls, grant_id: str | None, info: ValidationInfo) -> str | None:
        if not grant_id and not info.data.get("code"):
            raise PydanticCustomError("required", "grant_id or code is required")
        return grant_id


class RedemptionReply(Reply):
    redemption_id: str
    grant_id: str | None
    status: Literal["redeemed"]
    replayed: bool


# statements


def _statement_day(day: str) -> str:
    try:
        if not day.isascii():
            raise ValueError(day)
        # The day after, in UTC, must stay a datetime.
        if not 2000 <= datetime.strptime(day, "%Y-%m-%d").year <= 9998:
            raise ValueError(day)
    except ValueError:
        raise PydanticCustomError("day", "YYYY-MM-DD, from 2000-01-01 to 9998-12-31") from None
    return day


StatementDay: Any = Annotated[
    str,
    AfterValidator(_statement_day),
    WithJsonSchema({"type": "string", "format": "date"}),
]


class StatementQuery(Body):
    day: StatementDay

    def start(self) -> date:
        return datetime.strptime(self.day, "%Y-%m-%d").date()


class StatementSummary(Reply):
    matched: int
    mismatched: int
    missing_ours: int
    missing_theirs: int


class StatementMatch(Reply):
    """A grant both sides have: `ours` is our status, `theirs` the statement's."""

    grant_id: str
    code: str | None
    ours: str
    theirs: str


class StatementMissing(Reply):
    """A grant of ours at the vendor that the statement does not list."""

    grant_id: str
    code: str | None
    ours: str


class StatementReport(Reply):
    statement_id: int
    vendor_id: str
    day: str
    rows: int
    summary: StatementSummary
    matched: list[StatementMatch]
    mismatched: list[StatementMatch]
    # their rows as sent: whatever columns the statement has
    missing_ours: list[dict[str, str]]
    missing_theirs: list[StatementMissing]

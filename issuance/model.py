"""What the channel API and the staff revoke take and answer: claims and grants, as checked on
the way in and as the API document shows them."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, ConfigDict, Field, PlainValidator, WithJsonSchema
from pydantic_core import PydanticCustomError

from quanyi.core.schemas import (
    IDENT_PATTERN,
    Body,
    Ident,
    Range,
    Reply,
    TextRule,
    is_digits,
    is_ident,
)

MAX_WAIT_MS = 800
GRANT_ID_PATTERN = r"^[0-7][0-9A-HJKMNP-TV-Z]{25}$"

GrantStatus = Literal["granted", "fulfilled", "failed", "redeemed", "expired", "revoked"]
GrantEvent = Literal["granted", "fulfilled", "failed", "redriven", "redeemed", "expired", "revoked"]

# requests


class ClaimBody(Body):
    """`POST /v1/claims`: one reward of a campaign for one customer, once per request id."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"request_id": "q-20261201-0001", "campaign_id": "c1", "customer_id": "cust-1"}
            ]
        }
    )

    request_id: Ident = Field(
        description="The channel's id of this request: the same id with the same body is a replay"
    )
    campaign_id: Ident
    customer_id: Ident = Field(
        description="The bank's customer number; a card number is refused, never stored"
    )
    reward_id: Ident | None = Field(
        None, description="May be left out when the campaign has one reward"
    )
    wait_ms: Annotated[int, Range(0, MAX_WAIT_MS)] | None = Field(
        None, description="Wait up to this long for the vendor's fulfilment (not on a replay)"
    )


class RevokeBody(Body):
    """A revoke's reason; the body may be left out altogether."""

    reason: Annotated[str, TextRule(500)] | None = Field(
        None, description="Kept with card numbers masked"
    )


def _limit(value: Any) -> int:
    # As sent in the query: ASCII digits only, length first (int() of thousands of digits is
    # slow), so "²", "+5" and "1_0" are refused.
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not (isinstance(value, str) and is_digits(value) and len(value) <= 3):
        raise PydanticCustomError("limit", "an integer from 1 to 500")
    number = int(value)
    if not 1 <= number <= 500:
        raise PydanticCustomError("limit", "an integer from 1 to 500")
    return number


Limit = Annotated[
    int,
    BeforeValidator(_limit),
    WithJsonSchema({"type": "integer", "minimum": 1, "maximum": 500, "default": 100}),
]


class CustomerGrantsQuery(Body):
    limit: Limit = Field(100, description="How many grants, newest first")


class GrantPath(Body):
    grant_id: Annotated[str, WithJsonSchema({"type": "string", "pattern": GRANT_ID_PATTERN})] = (
        Field(description="26 characters, Crockford base32 (a ULID)")
    )


def _customer_number(value: Any) -> str:
    if not (isinstance(value, str) and is_ident(value)):
        raise PydanticCustomError("customer_id", "a customer number, 1-64 characters")
    return value


class CustomerPath(Body):
    customer_id: Annotated[
        str,
        PlainValidator(_customer_number),
        WithJsonSchema({"type": "string", "pattern": IDENT_PATTERN, "maxLength": 64}),
    ] = Field(description="The bank's customer number, never a card number")


# replies


class ClaimReply(Reply):
    """The grant a claim made (201) or, replayed (200), the grant it made before with its
    status now. With `wait_ms`, the fulfilment when the vendor answered in time."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "grant_id": "01KBC3W4Y8N0F5D6G7H8J9KMNP",
                    "campaign_id": "c1",
                    "reward_id": "r1",
                    "right_id": "coffee",
                    "customer_id": "cust-1",
                    "channel_id": "app",
                    "status": "granted",
                    "granted_at": "2026-12-01T08:00:00.000Z",
                    "replayed": False,
                }
            ]
        }
    )

    grant_id: str
    campaign_id: str
    reward_id: str
    right_id: str
    customer_id: str
    channel_id: str
    status: GrantStatus
    granted_at: datetime
    replayed: bool
    code: str | None = None
    reference: str | None = None
    expires_at: str | None = None


class TimelineEntry(Reply):
    event: GrantEvent
    at: datetime
    actor: str = Field(description="channel:ID, staff:USERNAME, vendor:ID or a worker")
    detail: dict[str, Any] | None = None


class GrantSummary(Reply):
    """A grant as a customer's list shows it."""

    grant_id: str
    campaign_id: str
    reward_id: str
    right_id: str
    customer_id: str
    channel_id: str
    request_id: str
    status: GrantStatus
    granted_at: datetime
    persisted: bool = Field(description="false while the ledger has not stored it yet")


class GrantReply(GrantSummary):
    """A grant with its fulfilment (once fulfilled) and its timeline, oldest first."""

    vendor_id: str | None
    code: str | None
    reference: str | None
    expires_at: str | None
    timeline: list[TimelineEntry]


class CustomerGrantsReply(Reply):
    customer_id: str
    grants: list[GrantSummary]

"""Card events as the card system sends them (`POST /v1/events`) and the answer it gets."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, StringConstraints, model_validator
from pydantic_core import PydanticCustomError

from quanyi.core.schemas import Body, Ident, Moment, Range, Reply

MAX_EVENTS = 1000

Mcc = Annotated[str, StringConstraints(pattern=r"^[0-9]{4}$")]


class CardEvent(Body):
    """One card transaction, or the reversal (a refund, a cancelled purchase) of one."""

    event_id: Ident = Field(description="The card system's id of the event, unique per channel")
    type: Literal["card_transaction"]
    customer_id: Ident = Field(description="The bank's customer number; never a card number")
    amount: Annotated[int, Range(1)] = Field(description="fen; a reversal repeats the original's")
    mcc: Mcc = Field(description="The merchant category code, 4 digits")
    occurred_at: Moment
    reversal_of: Ident | None = Field(
        None, description="The event id this one reverses (same customer and amount)"
    )

    @model_validator(mode="after")
    def _not_itself(self) -> CardEvent:
        if self.reversal_of == self.event_id:
            raise PydanticCustomError("reversal", "an event cannot reverse itself")
        return self


class EventsBody(Body):
    """Up to 1,000 events; each is judged on its own."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "events": [
                        {
                            "event_id": "tx-0001",
                            "type": "card_transaction",
                            "customer_id": "cust-1",
                            "amount": 12000,
                            "mcc": "5812",
                            "occurred_at": "2026-12-01T12:30:00+08:00",
                        }
                    ]
                }
            ]
        }
    )

    events: Annotated[list[CardEvent], Field(min_length=1, max_length=MAX_EVENTS)]


class RawEventsBody(Body):
    """The envelope alone: when some events are bad, each is checked on its own."""

    events: Annotated[list[Any], Field(min_length=1, max_length=MAX_EVENTS)]


class EventError(Reply):
    code: str
    message: str
    fields: dict[str, str] | None = None


class EventResult(Reply):
    event_id: str | None = Field(description="null when the event's id itself was unusable")
    status: Literal["accepted", "duplicate", "rejected"]
    error: EventError | None = None
    held: bool | None = Field(None, description="A reversal kept until its original comes")
    granted: list[str] | None = Field(None, description="Grants this event's goals made")
    revoked: list[str] | None = Field(None, description="Grants this reversal clawed back")


class EventsReply(Reply):
    results: list[EventResult]


def occurred_ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)

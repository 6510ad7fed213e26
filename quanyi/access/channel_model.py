"""What the channel admin API takes and answers: the channel list, a rotation, a rate limit."""

from __future__ import annotations

import math
from datetime import datetime
from typing import Annotated, Any

from pydantic import ConfigDict, Field, PlainValidator, WithJsonSchema, model_validator
from pydantic_core import PydanticCustomError

from quanyi.access.channels import MAX_GRACE_S
from quanyi.access.rate_limits import MAX_BURST, MAX_PER_SECOND, MIN_PER_SECOND
from quanyi.core.schemas import Body, Range, Reply

PER_SECOND_RULE = f"a number from {MIN_PER_SECOND} to {MAX_PER_SECOND:g}"


def _per_second(value: Any) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or not MIN_PER_SECOND <= value <= MAX_PER_SECOND
    ):
        raise PydanticCustomError("per_second", PER_SECOND_RULE)
    return float(value)


PerSecond = Annotated[
    float,
    PlainValidator(_per_second),
    WithJsonSchema({"type": "number", "minimum": MIN_PER_SECOND, "maximum": MAX_PER_SECOND}),
]
Burst = Annotated[int, Range(1, MAX_BURST)]


class RateLimitBody(Body):
    """Both numbers, or both null: the channel then has the settings' default (no limit unless
    QUANYI_CHANNEL_RATE_PER_S is set)."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"per_second": 200, "burst": 400}]})

    per_second: PerSecond | None = Field(description="Requests per second, on average")
    burst: Burst | None = Field(description="Requests allowed at once, the bucket's size")

    @model_validator(mode="after")
    def _both_or_neither(self) -> RateLimitBody:
        if (self.per_second is None) != (self.burst is None):
            raise PydanticCustomError(
                "rate_limit", "per_second and burst are set together, or both null (the default)"
            )
        return self


class RotateBody(Body):
    grace_s: Annotated[int, Range(0, int(MAX_GRACE_S))] | None = Field(
        default=None,
        description="Seconds the replaced secret keeps signing (default: the settings', 24 h)",
    )


class RateLimitView(Reply):
    per_second: float
    burst: int


class ChannelReply(Reply):
    id: str
    name: str
    scopes: list[str]
    disabled: bool
    rate_limit: RateLimitView | None = Field(description="null: the settings' default")
    rotated_at: datetime | None
    previous_secret_until: datetime | None = Field(
        description="While a rotated-out secret still signs: until when"
    )


class ChannelsReply(Reply):
    channels: list[ChannelReply]
    default_rate_limit: RateLimitView | None = Field(
        description="The limit of channels without their own; null: none"
    )


class RotateReply(Reply):
    channel_id: str
    secret: str = Field(description="The new secret: shown once, never stored in clear")
    previous_secret_until: datetime
    active_within_s: float = Field(
        description="Every API process signs with the new secret at most this long from now"
    )


class RateLimitReply(Reply):
    channel_id: str
    rate_limit: RateLimitView | None
    active_within_s: float

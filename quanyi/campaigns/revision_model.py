"""The body of a revision of an approved campaign, and what it makes of the campaign.

A revision names only what it changes; a field left out stays as it is. `null` takes a daily
stock, a daily limit or the budget away; it is refused for the rest. Unlike other bodies, an
unknown field is refused: a misspelt `stok` silently changing nothing would be approved as a
change it is not.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

import orjson
from pydantic import ConfigDict, Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from quanyi.campaigns.model import (
    Campaign,
    ChannelQuota,
    Channels,
    CustomerLimit,
    Positive,
    Reward,
)
from quanyi.core.errors import InvalidRequest
from quanyi.core.schemas import TIME_RULE, Amount, Body, Ident, Moment, decode
from quanyi.inventory.channel_quota import quota_errors, quota_not_kept

REVISABLE = (
    "ends_at, budget, channels,"
    " rewards[].stock|daily_stock|per_customer_limit|per_customer_daily_limit|channel_quota"
)
UNKNOWN_FIELD = f"not a field a revision changes; it changes {REVISABLE}"
# Fields that take no null: leaving them out leaves them as they are.
_NOT_NULL = "required: leave the field out to keep it as it is"


def _not_null(value: Any) -> Any:
    if value is None:
        raise PydanticCustomError("not_null", _NOT_NULL)
    return value


class RewardRevision(Body):
    """The new figures of one reward, named by its id."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    id: Ident
    stock: Amount | None = None
    daily_stock: Positive | None = None
    per_customer_limit: CustomerLimit | None = None
    per_customer_daily_limit: CustomerLimit | None = None
    # The reward's whole new map (README "Channel quotas"): quota moves between channels, each
    # checked against what its channel granted when the revision applies. Only a reward
    # approved with quotas has them moved (Revised.problems), and keeps some: no null.
    channel_quota: ChannelQuota = None

    _stock_not_null = field_validator(
        "stock", "per_customer_limit", "channel_quota", mode="before"
    )(_not_null)

    @model_validator(mode="after")
    def _changes_something(self) -> RewardRevision:
        if self.model_fields_set == {"id"}:
            raise PydanticCustomError("nothing", "a reward revision changes at least one figure")
        return self


class RevisionBody(Body):
    """What a revision changes; at least one field."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    # Lax only to let a string through the optional union; _a_time keeps it a string.
    ends_at: Moment | None = Field(default=None, strict=False)
    budget: Amount | None = None
    channels: Channels | None = None
    rewards: list[RewardRevision] | None = Field(default=None, min_length=1)

    _not_null = field_validator("channels", "rewards", mode="before")(_not_null)

    @field_validator("ends_at", mode="before")
    @classmethod
    def _a_time(cls, value: Any) -> Any:
        if not isinstance(_not_null(value), str):
            raise PydanticCustomError("time", TIME_RULE)
        return value

    @field_validator("rewards")
    @classmethod
    def _unique(cls, rewards: list[RewardRevision] | None) -> list[RewardRevision] | None:
        ids = [r.id for r in rewards or ()]
        if len(set(ids)) != len(ids):
            raise PydanticCustomError("unique", "each reward at most once")
        return rewards

    @model_validator(mode="after")
    def _changes_something(self) -> RevisionBody:
        if not self.model_fields_set:
            raise PydanticCustomError("nothing", f"a revision changes at least one of {REVISABLE}")
        return self

    def changes(self) -> dict[str, Any]:
        """Only what it changes, as JSON values (what is stored and shown)."""
        out: dict[str, Any] = {}
        for name in ("ends_at", "budget", "channels"):
            if name in self.model_fields_set:
                value = getattr(self, name)
                out[name] = value.isoformat() if isinstance(value, datetime) else value
        if self.rewards is not None:
            out["rewards"] = [
                {"id": r.id, **{k: getattr(r, k) for k in sorted(r.model_fields_set - {"id"})}}
                for r in self.rewards
            ]
        return out


def read_revision(body: bytes | Mapping[str, Any]) -> RevisionBody:
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    try:
        return decode(RevisionBody, raw)
    except InvalidRequest as exc:
        fields = exc.details.get("fields", {})
        for name, message in fields.items():
            if message == "Extra inputs are not permitted":
                fields[name] = UNKNOWN_FIELD
        raise


@dataclass(frozen=True)
class Revised:
    """The campaign's figures a revision sets: the campaign as it is, with the changes."""

    ends_at: datetime
    budget: int | None
    channels: tuple[str, ...]
    rewards: tuple[Reward, ...]

    def problems(self, campaign: Campaign) -> dict[str, str]:
        """What makes these figures impossible for this campaign (field -> why). The channel
        quotas, moved or not, must fit the new stock and name only the new channels (so a
        channels revision cannot drop a channel a quota names); what each channel granted is
        checked when the revision applies (lua/revise.lua). Named by reward id,
        rewards.<id>.channel_quota: a revision names a few rewards in any order, so a position
        in the campaign's list would point at another element of the body."""
        problems = {}
        if self.ends_at <= campaign.starts_at:
            problems["ends_at"] = "must be after the campaign's starts_at"
        before = {r.id: r for r in campaign.rewards}
        for r in self.rewards:
            field = f"rewards.{r.id}.channel_quota"
            if before[r.id].channel_quota is None and r.channel_quota is not None:
                problems[field] = quota_not_kept()
                continue
            problems.update(quota_errors(field, r.channel_quota, self.channels, r.stock))
        return problems


def revised(campaign: Campaign, changes: Mapping[str, Any]) -> Revised:
    """`campaign` with `changes` (RevisionBody.changes(), as stored) applied. InvalidRequest
    for a reward the campaign does not have."""
    ends_at = campaign.ends_at
    if "ends_at" in changes:
        ends_at = datetime.fromisoformat(changes["ends_at"])
    budget = changes["budget"] if "budget" in changes else campaign.budget
    channels = tuple(changes.get("channels", campaign.channels))
    by_id = {r.id: r for r in campaign.rewards}
    unknown = {
        f"rewards[{i}].id": "the campaign has no such reward"
        for i, r in enumerate(changes.get("rewards", ()))
        if r["id"] not in by_id
    }
    if unknown:
        raise InvalidRequest("unknown rewards", unknown)
    for r in changes.get("rewards", ()):
        by_id[r["id"]] = replace(by_id[r["id"]], **{k: v for k, v in r.items() if k != "id"})
    return Revised(ends_at, budget, channels, tuple(by_id[r.id] for r in campaign.rewards))


def before_of(campaign: Campaign) -> dict[str, Any]:
    """The figures a revision may change, as they are now (kept with the revision)."""
    return {
        "version": campaign.version,
        "ends_at": campaign.ends_at.isoformat(),
        "budget": campaign.budget,
        "channels": list(campaign.channels),
        "rewards": [
            {
                "id": r.id,
                "stock": r.stock,
                "daily_stock": r.daily_stock,
                "per_customer_limit": r.per_customer_limit,
                "per_customer_daily_limit": r.per_customer_daily_limit,
                "channel_quota": r.channel_quota,
            }
            for r in campaign.rewards
        ],
    }

"""Campaigns and rights: the bodies staff send (checked by pydantic) and the records kept."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Literal, TypeVar

import asyncpg
import orjson
from pydantic import (
    AfterValidator,
    BaseModel,
    Field,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from quanyi.core.pan import id_has_pan
from quanyi.core.schemas import (
    IDENT,
    IDENT_PATTERN,
    MAX_AMOUNT,
    PAN_IN_ID,
    Amount,
    Body,
    Flag,
    Ident,
    Moment,
    Range,
    Text,
    decode,
)
from quanyi.inventory.channel_quota import rewards_quota_errors
from quanyi.inventory.hot_campaigns import HotCampaign, HotGoal, HotReward
from quanyi.stores.keys import MAX_STOCK_PARTS, buckets_for

RightKind = Literal["voucher", "points", "lounge_pass", "cashback", "coupon", "physical", "other"]
MAX_LIMIT = 10_000

EDITABLE = frozenset({"draft", "rejected"})
# States in which a campaign's rewards may still be claimed or approved: the rights they use
# are frozen. Drafts and rejected campaigns copy the catalog again when edited; ended ones pay
# out their own frozen copy.
LIVE = ("pending", "approved", "paused")

# action: (states it may start from, state it leads to, roles that may do it)
TRANSITIONS: dict[str, tuple[frozenset[str], str, tuple[str, ...]]] = {
    "submit": (frozenset({"draft", "rejected"}), "pending", ("marketer",)),
    "approve": (frozenset({"pending"}), "approved", ("approver",)),
    "reject": (frozenset({"pending"}), "rejected", ("approver",)),
    "pause": (frozenset({"approved"}), "paused", ("marketer", "approver")),
    "resume": (frozenset({"paused"}), "approved", ("marketer", "approver")),
    "end": (frozenset({"approved", "paused"}), "ended", ("marketer", "approver")),
}

# A right's lifecycle (准入 / 退出), each move a head-office approver's: action: (states it may
# start from, state it leads to). Created (or edited) rights are proposed; only admitted ones
# may be named by a campaign; a suspended right's live rewards refuse claims until resumed.
RIGHT_STATES = ("proposed", "admitted", "suspended", "retired")
RIGHT_ACTIONS: dict[str, tuple[frozenset[str], str]] = {
    "admit": (frozenset({"proposed"}), "admitted"),
    "suspend": (frozenset({"admitted"}), "suspended"),
    "resume": (frozenset({"suspended"}), "admitted"),
    "retire": (frozenset({"proposed", "admitted", "suspended"}), "retired"),
}
# The states in which a right may be edited (which proposes it again).
RIGHT_EDITABLE = frozenset({"proposed", "admitted"})


# request bodies


class RightChange(Body):
    """A right as staff edit it (PUT names it in the path)."""

    name: Text
    kind: RightKind
    face_value: Amount
    unit_cost: Amount
    vendor_id: Ident | None = None

    def with_id(self, right_id: str) -> RightBody:
        # Not checked again: the path's id was (core/http.py path_id, which also refuses a card
        # number), and an edit finds the right by it or answers not found.
        return RightBody.model_construct(id=right_id, **dict(self))


class RightBody(RightChange):
    """A new right of the catalog."""

    id: Ident


Positive = Annotated[int, Range(1)]
CustomerLimit = Annotated[int, Range(1, MAX_LIMIT)]


def _channel_quota(quota: dict[str, int] | None) -> dict[str, int] | None:
    if quota is not None and not quota:
        raise PydanticCustomError(
            "channel_quota", "name at least one channel, or leave channel_quota out"
        )
    return quota


ChannelQuota = Annotated[
    dict[Ident, Positive] | None,
    AfterValidator(_channel_quota),
    WithJsonSchema(
        {
            "type": "object",
            "propertyNames": {"pattern": IDENT_PATTERN, "maxLength": 64},
            "additionalProperties": {"type": "integer", "minimum": 1, "maximum": MAX_AMOUNT},
            "minProperties": 1,
            "description": "channel -> the stock reserved for it",
        }
    ),
]


def _mccs(mccs: list[Any] | None) -> list[str] | None:
    # Named as a whole: "goal.mcc_in".
    if mccs is None:
        return None
    if not mccs or not all(isinstance(m, str) and len(m) == 4 and m.isdigit() for m in mccs):
        raise PydanticCustomError("mccs", "a non-empty list of 4-digit merchant category codes")
    return sorted(set(mccs))


Mccs: Any = Annotated[
    list[Any] | None,
    AfterValidator(_mccs),
    WithJsonSchema(
        {
            "type": "array",
            "items": {"type": "string", "pattern": "^[0-9]{4}$"},
            "minItems": 1,
        }
    ),
]


class GoalBody(Body):
    """A spending goal (达标): `count` qualifying card transactions and/or `amount` fen of them,
    within the campaign or each calendar month or week (QUANYI_TZ)."""

    window: Literal["campaign", "month", "week"]
    count: Annotated[int, Range(1, 10_000)] | None = None
    amount: Annotated[int, Range(1)] | None = None
    min_amount: Annotated[int, Range(1)] | None = None
    mcc_in: Mccs = None
    mcc_not_in: Mccs = None

    @model_validator(mode="after")
    def _something_to_reach(self) -> GoalBody:
        if self.count is None and self.amount is None:
            raise PydanticCustomError("goal", "a goal needs a count, an amount or both")
        return self

    def hot(self) -> HotGoal:
        return HotGoal.from_json(self.model_dump(exclude_none=True))


class RewardBody(Body):
    id: Ident
    right_id: Ident
    stock: Amount
    daily_stock: Positive | None = None
    per_customer_limit: CustomerLimit
    per_customer_daily_limit: CustomerLimit | None = None
    # Only members of this audience (客群) may have it.
    audience_id: Ident | None = None
    goal: GoalBody | None = None
    # auto (the default with a goal): granted the moment the goal is reached; claim: a channel
    # claims it once the goal is reached (or at any time, without a goal).
    grant: Literal["auto", "claim"] | None = None
    # Revoke an automatic grant, not redeemed yet, when a reversal takes the goal back.
    claw_back: Flag = False
    # Stock reserved per channel, {"app": 600, "wechat": 400} (README "Channel quotas"); the
    # campaign's channels and the stock are checked by CampaignChange.quota_errors.
    channel_quota: ChannelQuota = None

    @model_validator(mode="after")
    def _grant_mode(self) -> RewardBody:
        if self.grant == "auto" and self.goal is None:
            raise PydanticCustomError("grant", "grant auto needs a goal")
        if self.claw_back and self.grant_mode != "auto":
            raise PydanticCustomError("claw_back", "claw_back is for rewards granted on a goal")
        return self

    @property
    def grant_mode(self) -> str:
        return self.grant or ("auto" if self.goal is not None else "claim")


def _unique_reward_ids(rewards: list[RewardBody]) -> list[RewardBody]:
    ids = [r.id for r in rewards]
    if len(set(ids)) != len(ids):
        raise PydanticCustomError("unique", "reward ids must be unique within the campaign")
    return rewards


def _channels(channels: list[Any]) -> list[str]:
    # Named as a whole, never by item: "channels".
    if not channels or not all(isinstance(c, str) and IDENT.match(c) for c in channels):
        raise PydanticCustomError("ids", "a non-empty list of ids")
    if any(id_has_pan(c) for c in channels):
        raise PydanticCustomError("card_number", PAN_IN_ID)
    if len(set(channels)) != len(channels):
        raise PydanticCustomError("unique", "must not repeat")
    return channels


Channels: Any = Annotated[
    list[Any],
    AfterValidator(_channels),
    WithJsonSchema(
        {
            "type": "array",
            "items": {"type": "string", "pattern": IDENT_PATTERN, "maxLength": 64},
            "minItems": 1,
            "uniqueItems": True,
        }
    ),
]


Rewards = Annotated[list[RewardBody], Field(min_length=1), AfterValidator(_unique_reward_ids)]


class CampaignChange(Body):
    """A campaign's definition as staff edit it (PUT names it in the path)."""

    name: Text
    branch: Ident
    starts_at: Moment
    ends_at: Moment
    channels: Channels
    budget: Amount | None = None
    return_stock_on_failure: Flag | None = True
    # A hot campaign's stock and budget split over this many Redis shards (README "Splitting
    # a hot campaign"); fixed once approved.
    stock_parts: Annotated[int, Field(ge=1, le=MAX_STOCK_PARTS, strict=True)] = 1
    rewards: Rewards

    @model_validator(mode="after")
    def _parts_fit(self) -> CampaignChange:
        # What a part cannot count alone: a daily stock and channel quotas are one counter for
        # the whole campaign; goals count card events in the campaign's own slot.
        if self.stock_parts > 1:
            for r in self.rewards:
                if r.goal is not None or r.daily_stock is not None or r.channel_quota:
                    raise PydanticCustomError(
                        "stock_parts",
                        "a campaign split into stock parts has no goals, daily stock or"
                        " channel quotas",
                    )
        return self

    @field_validator("return_stock_on_failure")
    @classmethod
    def _null_is_true(cls, value: bool | None) -> bool:
        return True if value is None else value  # a null reads as the default

    @field_validator("ends_at")
    @classmethod
    def _after_start(cls, ends_at: datetime, info: ValidationInfo) -> datetime:
        starts_at = info.data.get("starts_at")  # absent when it was invalid itself
        if starts_at is not None and ends_at <= starts_at:
            raise PydanticCustomError("order", "must be after starts_at")
        return ends_at

    def quota_errors(self) -> dict[str, str]:
        """Channel quotas that name a channel the campaign lacks, or add up to more than their
        reward's stock (the fields the model cannot see together)."""
        return rewards_quota_errors(self.rewards, self.channels)

    def with_id(self, campaign_id: str) -> CampaignBody:
        # As RightChange.with_id: the id is the path's, of a campaign an edit must find.
        return CampaignBody.model_construct(id=campaign_id, **dict(self))


class CampaignBody(CampaignChange):
    """A new campaign, a draft until it is submitted."""

    id: Ident


class CloneBody(Body):
    """A copy of a campaign as a new draft: its id and window."""

    id: Ident
    starts_at: Moment
    ends_at: Moment

    @field_validator("ends_at")
    @classmethod
    def _after_start(cls, ends_at: datetime, info: ValidationInfo) -> datetime:
        starts_at = info.data.get("starts_at")
        if starts_at is not None and ends_at <= starts_at:
            raise PydanticCustomError("order", "must be after starts_at")
        return ends_at


M = TypeVar("M", bound=BaseModel)


def read_body(model: type[M], body: bytes | Mapping[str, Any]) -> M:
    """A body as it came (JSON bytes) or as built in process (a mapping: the demo, the bench,
    the CLI), checked the same way: one InvalidRequest naming every bad field."""
    return decode(model, body if isinstance(body, bytes) else orjson.dumps(body))


def _json_object(value: Any) -> Any:
    return orjson.loads(value) if isinstance(value, str) else value


@dataclass(frozen=True)
class Reward:
    """A reward with what it pays out (face value, unit cost, vendor) copied from its right when
    the campaign was drafted or last edited: approval approves these figures, not the catalog's."""

    id: str
    right_id: str
    face_value: int
    unit_cost: int
    vendor_id: str | None
    stock: int
    daily_stock: int | None
    per_customer_limit: int
    per_customer_daily_limit: int | None
    audience_id: str | None = None
    goal: dict[str, Any] | None = None
    grant: str = "claim"
    claw_back: bool = False
    # The state of its right now (not a frozen figure): a suspended right pauses the reward.
    right_state: str = "admitted"
    channel_quota: dict[str, int] | None = None

    @classmethod
    def from_row(cls, row: asyncpg.Record) -> Reward:
        goal = row["goal"]
        return cls(
            id=row["id"],
            right_id=row["right_id"],
            face_value=row["face_value"],
            unit_cost=row["unit_cost"],
            vendor_id=row["vendor_id"],
            stock=row["stock"],
            daily_stock=row["daily_stock"],
            per_customer_limit=row["per_customer_limit"],
            per_customer_daily_limit=row["per_customer_daily_limit"],
            audience_id=row["audience_id"],
            goal=orjson.loads(goal) if isinstance(goal, str) else goal,
            grant=row["grant_mode"],
            claw_back=row["claw_back"],
            right_state=row.get("right_state") or "admitted",
            channel_quota=_json_object(row.get("channel_quota")),
        )


@dataclass(frozen=True)
class Campaign:
    id: str
    name: str
    branch: str
    starts_at: datetime
    ends_at: datetime
    channels: tuple[str, ...]
    budget: int | None
    return_stock_on_failure: bool
    status: str
    version: int
    created_by: str
    submitted_by: str | None
    approved_by: str | None
    approved_at: datetime | None
    # Whoever created, edited or submitted any version: none of them may approve it.
    makers: tuple[str, ...]
    rewards: tuple[Reward, ...]
    # Fixed once a revision changed the stock (campaign_revisions): each customer's counters
    # stay in the bucket they were counted in. None: as many as the stock asks for.
    customer_buckets: int | None = None
    stock_parts: int = 1

    @classmethod
    def from_rows(cls, row: asyncpg.Record, rewards: list[asyncpg.Record]) -> Campaign:
        return cls(
            id=row["id"],
            name=row["name"],
            branch=row["branch"],
            starts_at=row["starts_at"],
            ends_at=row["ends_at"],
            channels=tuple(row["channels"]),
            budget=row["budget"],
            return_stock_on_failure=row["return_stock_on_failure"],
            status=row["status"],
            version=row["version"],
            created_by=row["created_by"],
            submitted_by=row["submitted_by"],
            approved_by=row["approved_by"],
            approved_at=row["approved_at"],
            makers=tuple(row["makers"]),
            rewards=tuple(Reward.from_row(r) for r in rewards),
            customer_buckets=row.get("customer_buckets"),
            stock_parts=row.get("stock_parts") or 1,
        )

    def hot(self) -> HotCampaign:
        return HotCampaign(
            id=self.id,
            name=self.name,
            version=self.version,
            state="active" if self.status == "approved" else self.status,
            starts_ms=int(self.starts_at.timestamp() * 1000),
            ends_ms=int(self.ends_at.timestamp() * 1000),
            channels=self.channels,
            budget=self.budget,
            return_stock_on_failure=self.return_stock_on_failure,
            buckets=self.customer_buckets or buckets_for(sum(r.stock for r in self.rewards)),
            parts=self.stock_parts,
            rewards=tuple(
                HotReward(
                    id=r.id,
                    right_id=r.right_id,
                    stock=r.stock,
                    daily_stock=r.daily_stock,
                    limit=r.per_customer_limit,
                    daily_limit=r.per_customer_daily_limit,
                    cost=r.unit_cost,
                    vendor_id=r.vendor_id,
                    audience_id=r.audience_id,
                    goal=HotGoal.from_json(r.goal) if r.goal else None,
                    grant=r.grant,
                    claw_back=r.claw_back,
                    suspended=r.right_state == "suspended",
                    channel_quota=r.channel_quota,
                )
                for r in self.rewards
            ),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "branch": self.branch,
            "starts_at": self.starts_at.isoformat(),
            "ends_at": self.ends_at.isoformat(),
            "channels": list(self.channels),
            "budget": self.budget,
            "return_stock_on_failure": self.return_stock_on_failure,
            "stock_parts": self.stock_parts,
            "status": self.status,
            "version": self.version,
            "created_by": self.created_by,
            "submitted_by": self.submitted_by,
            "approved_by": self.approved_by,
            "approved_at": self.approved_at.isoformat() if self.approved_at else None,
            "makers": list(self.makers),
        }

"""Campaigns and rights as the admin API sees them, and how their bodies are checked."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from inventory.keys import buckets_for
from inventory.stock import HotCampaign, HotReward
from quanyi.validation import MAX_AMOUNT, Fields

RIGHT_KINDS = ("voucher", "points", "lounge_pass", "cashback", "coupon", "physical", "other")
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


@dataclass(frozen=True)
class RightDraft:
    id: str
    name: str
    kind: str
    face_value: int
    unit_cost: int
    vendor_id: str | None

    @classmethod
    def parse(cls, body: Any) -> RightDraft:
        f = Fields(body)
        draft = cls(
            id=f.ident("id"),
            name=f.text("name"),
            kind=f.text("kind", 32),
            face_value=f.integer("face_value"),
            unit_cost=f.integer("unit_cost"),
            vendor_id=f.ident("vendor_id", required=False),
        )
        if draft.kind is not None and draft.kind not in RIGHT_KINDS:
            f.fail("kind", f"one of {', '.join(RIGHT_KINDS)}")
        f.check()
        return draft


@dataclass(frozen=True)
class RewardDraft:
    id: str
    right_id: str
    stock: int
    daily_stock: int | None
    per_customer_limit: int
    per_customer_daily_limit: int | None


@dataclass(frozen=True)
class CampaignDraft:
    id: str
    name: str
    branch: str
    starts_at: datetime
    ends_at: datetime
    channels: list[str]
    budget: int | None
    return_stock_on_failure: bool
    rewards: list[RewardDraft]

    @classmethod
    def parse(cls, body: Any) -> CampaignDraft:
        f = Fields(body)
        rewards = []
        for r in f.objects("rewards"):
            rewards.append(
                RewardDraft(
                    id=r.ident("id"),
                    right_id=r.ident("right_id"),
                    stock=r.integer("stock"),
                    daily_stock=r.integer("daily_stock", 1, required=False),
                    per_customer_limit=r.integer("per_customer_limit", 1, MAX_LIMIT),
                    per_customer_daily_limit=r.integer(
                        "per_customer_daily_limit", 1, MAX_LIMIT, required=False
                    ),
                )
            )
        draft = cls(
            id=f.ident("id"),
            name=f.text("name"),
            branch=f.ident("branch"),
            starts_at=f.time("starts_at"),
            ends_at=f.time("ends_at"),
            channels=f.ident_list("channels"),
            budget=f.integer("budget", 0, MAX_AMOUNT, required=False),
            return_stock_on_failure=f.boolean("return_stock_on_failure", default=True),
            rewards=rewards,
        )
        if draft.starts_at and draft.ends_at and draft.ends_at <= draft.starts_at:
            f.fail("ends_at", "must be after starts_at")
        ids = [r.id for r in rewards if r.id]
        if len(set(ids)) != len(ids):
            f.fail("rewards", "reward ids must be unique within the campaign")
        if draft.channels and len(set(draft.channels)) != len(draft.channels):
            f.fail("channels", "must not repeat")
        f.check()
        return draft


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

    @classmethod
    def from_row(cls, row: asyncpg.Record) -> Reward:
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
        )

    def hot(self) -> HotCampaign:
        return HotCampaign(
            id=self.id,
            version=self.version,
            state="active" if self.status == "approved" else self.status,
            starts_ms=int(self.starts_at.timestamp() * 1000),
            ends_ms=int(self.ends_at.timestamp() * 1000),
            channels=self.channels,
            budget=self.budget,
            return_stock_on_failure=self.return_stock_on_failure,
            buckets=buckets_for(sum(r.stock for r in self.rewards)),
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
            "status": self.status,
            "version": self.version,
            "created_by": self.created_by,
            "submitted_by": self.submitted_by,
            "approved_by": self.approved_by,
            "approved_at": self.approved_at.isoformat() if self.approved_at else None,
            "makers": list(self.makers),
        }

"""Budgets carved down the branch tree, per calendar year in QUANYI_TZ, in fen.

Head office's admins set head office's budget for a year; a branch gives part of what it has
left to a child and takes unreserved budget back from it; approving a campaign reserves its
budget from its branch's budget for the year of its start, and its end gives back what it did
not spend (budget_reservations.py).

Every balance (branch, year) is one row of branch_budgets, changed only under its row lock and
only by the statement that also writes the movement explaining it (budgets.sql `move`): two
approvals racing for the last of a budget queue on that lock, and the second sees what the
first took. A movement between two balances (an allocation, a reclaim) locks the parent's
before the child's, and a campaign's lock is always taken before its branch's balance, so two
movements never wait for each other.

What a live campaign has spent is read from Redis, its `spent` counter: grant.lua raises it in
the step that checks the campaign's own budget, so it is current and never above the budget,
while the ledger trails it by the outbox's lag. Hence a balance's reserved + spent is always
what it committed, and ending a campaign (once Redis has it ended, so no grant can follow) reads
the final figure: summed over the parts of a campaign split into stock parts (each part
counts its own `spent`, inventory/stock_parts.py).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any
from zoneinfo import ZoneInfo

import asyncpg
from pydantic import Field, PlainValidator, WithJsonSchema
from pydantic_core import PydanticCustomError
from redis.asyncio import Redis

from quanyi.access.staff import HEAD_OFFICE, Staff, audit
from quanyi.campaigns.parts import stock_parts_of
from quanyi.core.errors import BudgetExceeded, Forbidden, InvalidRequest, NotFound
from quanyi.core.schemas import Body, Ident, Range, decode
from quanyi.core.settings import Settings
from quanyi.inventory.hot_campaigns import HotCampaigns
from quanyi.stores.db import load_queries
from quanyi.stores.keys import Keys

queries = load_queries("quanyi.campaigns", "budgets.sql")

# The columns of a balance a movement changes (budget_movements.account).
ALLOCATED, GIVEN, COMMITTED = "allocated", "given", "committed"
DEFAULT_ZONE = ZoneInfo(Settings.tz)
PERIOD_RULE = "a calendar year, 4 digits from 2000 to 9999, like 2027"


def _period(value: Any) -> str:
    if not (isinstance(value, str) and len(value) == 4 and value.isascii() and value.isdigit()):
        raise PydanticCustomError("period", PERIOD_RULE)
    if not 2000 <= int(value) <= 9999:
        raise PydanticCustomError("period", PERIOD_RULE)
    return value


Period = Annotated[
    str,
    PlainValidator(_period),
    WithJsonSchema({"type": "string", "pattern": "^[0-9]{4}$", "examples": ["2027"]}),
]
"""A budget's period: a calendar year in QUANYI_TZ, "YYYY"."""


class AllocationBody(Body):
    """Budget given to the branch of the path by its parent (`from`); head office's own budget
    for a year names no `from`."""

    period: Period
    amount: Annotated[int, Range(1)]
    from_: Ident | None = Field(default=None, alias="from")


class ReclaimBody(Body):
    """Unreserved budget taken back from the branch of the path by its parent (head office's
    own budget: lowered)."""

    period: Period
    amount: Annotated[int, Range(1)]


class BudgetQuery(Body):
    period: Period


@dataclass(frozen=True)
class BudgetRules:
    """The zone whose calendar years are the periods, and whether a campaign needs a budget to
    be approved once budgets are in force for its year (QUANYI_BUDGET_REQUIRED)."""

    zone: ZoneInfo = DEFAULT_ZONE
    required: bool = True

    @classmethod
    def of(cls, settings: Settings) -> BudgetRules:
        return cls(settings.zone, settings.budget_required)

    def period_of(self, moment: datetime) -> str:
        return f"{moment.astimezone(self.zone).year:04d}"


# For services built without settings (commands, the demo): Settings' defaults.
DEFAULT_RULES = BudgetRules()


@dataclass(frozen=True)
class Balance:
    branch: str
    period: str
    allocated: int = 0
    given: int = 0
    committed: int = 0

    @property
    def available(self) -> int:
        """What is left to give to children or reserve for campaigns."""
        return self.allocated - self.given - self.committed

    @classmethod
    def of(cls, row: asyncpg.Record) -> Balance:
        return cls(
            row["branch_id"], row["period"], row["allocated"], row["given"], row["committed"]
        )

    def ensure(self, needed: int, what: str) -> None:
        if needed > self.available:
            raise BudgetExceeded(
                f"{what}: {self.branch} has {self.available} fen left of its {self.period}"
                f" budget, {needed} needed",
                self.branch,
                self.period,
                self.available,
                needed,
            )


async def lock_balance(conn: asyncpg.Connection, branch: str, period: str) -> Balance:
    """The balance, locked for this transaction (a balance of zeros when it had none)."""
    await conn.execute(queries.open_balance, branch, period)
    return Balance.of(await conn.fetchrow(queries.lock_balance, branch, period))


async def move_balance(
    conn: asyncpg.Connection,
    branch: str,
    period: str,
    account: str,
    kind: str,
    amount: int,
    by: str,
    *,
    counterpart: str | None = None,
    campaign_id: str | None = None,
) -> None:
    """`amount` added to one column of a balance, with its movement row naming `by`."""
    if amount:
        await conn.fetchval(
            queries.move,
            branch,
            period,
            account,
            kind,
            amount,
            counterpart,
            campaign_id,
            by,
        )


async def _transfer(
    conn: asyncpg.Connection, parent: str, child: str, period: str, amount: int, kind: str, by: str
) -> None:
    """`amount` from `parent` down to `child` (negative: back up): the parent's `given` and the
    child's `allocated` move together, each with its movement row."""
    await move_balance(conn, parent, period, GIVEN, kind, amount, by, counterpart=child)
    await move_balance(conn, child, period, ALLOCATED, kind, amount, by, counterpart=parent)


# the branches' budgets through the admin API


class BudgetService:
    """Allocations, reclaims and the reading of a branch's budget. Only approvers and admins
    move money, and only from a parent in their scope (their branch or one below it) to its
    child; head office's own budget is its admins' to set."""

    def __init__(self, pool: asyncpg.Pool, redis: Redis, keys: Keys, rules: BudgetRules) -> None:
        self._pool = pool
        self._stock = HotCampaigns(redis, keys)
        self.rules = rules

    async def allocate(self, staff: Staff, branch_id: str, body: bytes) -> dict[str, Any]:
        staff.require_role("approver")
        move = decode(AllocationBody, body)
        period, amount = move.period, move.amount
        async with self._pool.acquire() as conn, conn.transaction():
            parent = await self._parent(conn, staff, branch_id)
            if parent is None:
                if move.from_ is not None:
                    raise InvalidRequest(
                        "head office's own budget comes from no branch",
                        {"from": "leave it out for head office"},
                    )
                _require_head_office_admin(staff)
                await lock_balance(conn, branch_id, period)
                await move_balance(
                    conn, branch_id, period, ALLOCATED, "fund", amount, staff.username
                )
            else:
                if move.from_ != parent:
                    raise InvalidRequest(
                        f"budget comes to {branch_id} from its parent, {parent}",
                        {"from": f"required: {parent}, the parent of {branch_id}"},
                    )
                staff.require_branch(parent)
                giver = await lock_balance(conn, parent, period)  # a parent before its child
                await lock_balance(conn, branch_id, period)
                giver.ensure(amount, f"{parent} cannot give {branch_id} {amount}")
                await _transfer(
                    conn, parent, branch_id, period, amount, "allocation", staff.username
                )
            detail = {"period": period, "amount": amount, "from": parent}
            await audit(conn, staff, "budget.allocate", f"branch:{branch_id}", detail)
            return await self._view(conn, branch_id, period)

    async def reclaim(self, staff: Staff, branch_id: str, body: bytes) -> dict[str, Any]:
        staff.require_role("approver")
        move = decode(ReclaimBody, body)
        period, amount = move.period, move.amount
        async with self._pool.acquire() as conn, conn.transaction():
            parent = await self._parent(conn, staff, branch_id)
            if parent is None:
                _require_head_office_admin(staff)
                own = await lock_balance(conn, branch_id, period)
                own.ensure(amount, f"{branch_id}'s budget cannot be lowered by {amount}")
                await move_balance(
                    conn, branch_id, period, ALLOCATED, "reclaim", -amount, staff.username
                )
            else:
                staff.require_branch(parent)
                await lock_balance(conn, parent, period)  # a parent before its child
                child = await lock_balance(conn, branch_id, period)
                child.ensure(amount, f"{parent} cannot take {amount} back from {branch_id}")
                await _transfer(conn, parent, branch_id, period, -amount, "reclaim", staff.username)
            detail = {"period": period, "amount": amount, "to": parent}
            await audit(conn, staff, "budget.reclaim", f"branch:{branch_id}", detail)
            return await self._view(conn, branch_id, period)

    async def read(self, staff: Staff, branch_id: str, period: str) -> dict[str, Any]:
        staff.require_reader("marketer", "approver")
        staff.require_branch(branch_id)
        async with self._pool.acquire() as conn:
            if await conn.fetchrow(queries.branch, branch_id) is None:
                raise NotFound(f"no branch {branch_id}")
            return await self._view(conn, branch_id, period)

    @staticmethod
    async def _parent(conn: asyncpg.Connection, staff: Staff, branch_id: str) -> str | None:
        """The parent of a branch the staff member acts on (None for head office)."""
        staff.require_branch(branch_id)
        row = await conn.fetchrow(queries.branch, branch_id)
        if row is None:
            raise NotFound(f"no branch {branch_id}")
        parent: str | None = row["parent_id"]
        return parent

    async def _view(self, conn: asyncpg.Connection, branch_id: str, period: str) -> dict[str, Any]:
        """allocated: received (net); given: to children (net); reserved: what live campaigns
        reserved and have not spent yet; spent: what its campaigns granted at cost (live ones
        so far, ended ones in all); available = allocated - given - reserved - spent."""
        row = await conn.fetchrow(queries.balance, branch_id, period)
        balance = Balance.of(row) if row else Balance(branch_id, period)
        charged = await conn.fetch(queries.reservations_of_balance, branch_id, period)
        live = [r for r in charged if r["charged"] is None]
        parts = await stock_parts_of(conn, [r["campaign_id"] for r in live])
        counters = await asyncio.gather(
            *(
                self._stock.counters(r["campaign_id"], [], parts=parts.get(r["campaign_id"], 1))
                for r in live
            )
        )
        spent_live = sum(min(c.spent, r["amount"]) for c, r in zip(counters, live, strict=True))
        return {
            "branch": branch_id,
            "period": period,
            "allocated": balance.allocated,
            "given": balance.given,
            "reserved": sum(r["amount"] for r in live) - spent_live,
            "spent": spent_live + sum(r["charged"] for r in charged if r["charged"] is not None),
            "available": balance.available,
        }


def _require_head_office_admin(staff: Staff) -> None:
    if staff.branch != HEAD_OFFICE or staff.role != "admin":
        raise Forbidden("only head-office admins set head office's own budget")

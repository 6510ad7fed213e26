"""Revisions of approved campaigns: more stock, a later end, another budget, other channels,
quota moved between channels, made by a marketer and checked like a campaign (maker-checker, dual control above the
threshold: quanyi/campaigns/approvals.py), then applied to the running campaign.

    draft --submit--> pending --approve (the last approval needed)--> applied
                              --reject--> rejected

Applying it changes the campaign's rows in PostgreSQL and its definition in Redis in one
transaction, under the campaign's row lock: lua/revise.lua writes the new figures, the new
version and the cached definition together, after checking against the live counters that no
reward's stock drops below what it granted, the budget not below what is spent, and each
reward's channel quotas (moved or not) not below what their channels granted and within the
stock left (campaigns/revise_hot.py). A refusal there rolls the PostgreSQL side back: nothing
changes. Counters are never reset.

A campaign split into stock parts (inventory/stock_parts.py) has its stock and budget moved by
the difference in every part (campaigns/revise_parts.py: cuts before the commit, raises after
it); the rest of a revision is written to every part, each keeping the stock and budget it
holds, part 0 (the definition) last.
"""

from __future__ import annotations

import builtins
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import asyncpg
import orjson
from redis.asyncio import Redis
from redis.exceptions import RedisError

from quanyi.access.staff import Staff, audit
from quanyi.campaigns import approvals
from quanyi.campaigns import queries as campaign_queries
from quanyi.campaigns.approvals import money_of
from quanyi.campaigns.budget_reservations import rereserve
from quanyi.campaigns.budgets import BudgetRules
from quanyi.campaigns.model import Campaign
from quanyi.campaigns.revise_hot import keep_counters, revise_hot
from quanyi.campaigns.revise_parts import (
    Cuts,
    cut_parts,
    give_after_commit,
    give_pending,
    given_back_on_failure,
    part_changes,
    to_give,
    transaction_keeping_cuts,
)
from quanyi.campaigns.revise_refusals import split_daily_refusal
from quanyi.campaigns.revision_model import Revised, before_of, read_revision, revised
from quanyi.core.errors import (
    Conflict,
    InvalidRequest,
    InvalidTransition,
    NotFound,
)
from quanyi.inventory.stock_parts import StockParts
from quanyi.stores.keys import Keys
from quanyi.stores.scripts import Scripts

log = logging.getLogger(__name__)
queries = approvals.queries
# The campaign states a revision may be made of, approved in and applied to.
REVISABLE_STATES = ("approved", "paused")

Loader = Callable[..., Awaitable[Campaign]]


class RevisionNotFound(NotFound):
    code = "revision_not_found"


class RevisionOpen(Conflict):
    """A campaign has at most one revision in draft or pending at a time."""

    code = "revision_open"


def _when(value: Any) -> Any:
    return value.isoformat() if value is not None else None


def _json(value: Any) -> Any:
    return orjson.loads(value) if isinstance(value, str) else value


class Revisions:
    def __init__(
        self,
        pool: asyncpg.Pool,
        redis: Redis,
        keys: Keys,
        scripts: Scripts,
        load: Loader,
        dual_above: int,
        retention_s: int,
        budget_rules: BudgetRules | None = None,
    ) -> None:
        self._pool = pool
        self._redis = redis
        self._keys = keys
        self._scripts = scripts
        self._load = load
        self._dual_above = dual_above
        self._retention_s = retention_s
        # The periods and rules of branch budgets a revised budget is reserved under.
        self.budget_rules = budget_rules or BudgetRules()
        self._parts = StockParts(redis, keys, scripts)

    async def create(
        self, staff: Staff, campaign_id: str, body: bytes | Mapping[str, Any]
    ) -> dict[str, Any]:
        """A draft revision of an approved or paused campaign (`body`: a RevisionBody)."""
        staff.require_role("marketer")
        async with self._pool.acquire() as conn, conn.transaction():
            campaign = await self._load(conn, campaign_id, lock=True)
            staff.require_branch(campaign.branch)
            change = read_revision(body)
            self._revisable(campaign)
            changes = change.changes()
            figures = revised(campaign, changes)
            self._fits_parts(campaign, figures)
            problems = figures.problems(campaign)
            if problems:
                raise InvalidRequest("the revision does not fit the campaign", problems)
            try:
                row = await conn.fetchrow(
                    queries.insert_revision,
                    campaign_id,
                    orjson.dumps(changes).decode(),
                    orjson.dumps(before_of(campaign)).decode(),
                    staff.username,
                )
            except asyncpg.UniqueViolationError:
                raise RevisionOpen(
                    f"campaign {campaign_id} has a revision in draft or pending already; submit,"
                    " approve or reject it first"
                ) from None
            await audit(
                conn,
                staff,
                "campaign.revision.create",
                f"campaign:{campaign_id}",
                {"revision": row["id"], "changes": changes},
            )
        return await self._view(row, campaign)

    async def submit(self, staff: Staff, campaign_id: str, revision_id: int) -> dict[str, Any]:
        staff.require_role("marketer")
        async with self._pool.acquire() as conn, conn.transaction():
            campaign, revision = await self._locked(conn, staff, campaign_id, revision_id)
            self._in_state(revision, "draft", "submit")
            self._revisable(campaign)
            row = await conn.fetchrow(
                queries.submit_revision, campaign_id, revision_id, staff.username
            )
            await approvals.new_round(conn, campaign_id, revision_id)
            await self._audit(conn, staff, "submit", campaign_id, revision_id)
        return await self._view(row, campaign)

    async def reject(self, staff: Staff, campaign_id: str, revision_id: int) -> dict[str, Any]:
        staff.require_role("approver")
        async with self._pool.acquire() as conn, conn.transaction():
            campaign, revision = await self._locked(conn, staff, campaign_id, revision_id)
            self._in_state(revision, "pending", "reject")
            row = await conn.fetchrow(
                queries.reject_revision, campaign_id, revision_id, staff.username
            )
            await self._audit(conn, staff, "reject", campaign_id, revision_id)
        return await self._view(row, campaign)

    async def approve(self, staff: Staff, campaign_id: str, revision_id: int) -> dict[str, Any]:
        """Records the approval; the last one needed applies the revision at once."""
        staff.require_role("approver")
        async with given_back_on_failure(self._parts, campaign_id) as taken:
            return await self._approve(staff, campaign_id, revision_id, taken)

    async def _approve(
        self, staff: Staff, campaign_id: str, revision_id: int, taken: Cuts
    ) -> dict[str, Any]:
        async with (
            self._pool.acquire() as conn,
            transaction_keeping_cuts(conn, self._parts, taken),
        ):
            campaign, revision = await self._locked(conn, staff, campaign_id, revision_id)
            self._in_state(revision, "pending", "approve")
            self._revisable(campaign)
            figures = revised(campaign, _json(revision["changes"]))
            self._fits_parts(campaign, figures)
            complete, given, needed = await approvals.approve(
                conn,
                staff,
                campaign_id=campaign_id,
                revision_id=revision_id,
                makers=(revision["created_by"], revision["submitted_by"]),
                money=money_of(figures.budget, ((r.stock, r.unit_cost) for r in figures.rewards)),
                dual_above=self._dual_above,
            )
            detail = {"revision": revision_id, "approvals": len(given), "needed": needed}
            await self._audit(conn, staff, "approve", campaign_id, revision_id, detail)
            row = revision
            raises: builtins.list[tuple[str | None, int]] = []
            if complete:
                after = await self._apply(conn, staff, campaign, figures, revision_id, taken)
                raises = part_changes(campaign, figures).raises if campaign.stock_parts > 1 else []
                row = await conn.fetchrow(queries.applied_revision, campaign_id, revision_id)
                await audit(
                    conn,
                    staff,
                    "campaign.revision.apply",
                    f"campaign:{campaign_id}",
                    {
                        "revision": revision_id,
                        "changes": _json(revision["changes"]),
                        "version": after.version,
                    },
                )
        if raises:
            await give_after_commit(self._pool, self._parts, after, revision_id, raises)
        if complete:
            try:
                await keep_counters(self._redis, self._keys, campaign, after, self._retention_s)
            except RedisError as exc:
                # Applied already; a claim refreshes its customer's bucket anyway, so only a
                # bucket untouched until its old expiry is at risk: said, not failed.
                log.warning("campaign %s: counters not kept until its new end: %s", after.id, exc)
            campaign = after
        return await self._view(row, campaign)

    async def give_pending(self) -> builtins.list[str]:
        """The raises of split campaigns' revisions that their parts do not hold yet, given
        (the scheduler's step): the campaigns whose parts now hold them all."""
        return await give_pending(self._pool, self._parts)

    async def list(self, staff: Staff, campaign_id: str) -> list[dict[str, Any]]:
        """Every revision of the campaign, oldest first, with who did what and when."""
        staff.require_reader("marketer", "approver")
        async with self._pool.acquire() as conn:
            campaign = await self._load(conn, campaign_id)
            staff.require_branch(campaign.branch)
            rows = await conn.fetch(queries.list_revisions, campaign_id)
            given = await conn.fetch(queries.revision_approvals, campaign_id)
        by_revision: dict[int, list[dict[str, Any]]] = {}
        for a in given:
            by_revision.setdefault(a["revision_id"], []).append(
                approvals.Approval.from_row(a).to_json()
            )
        return [self._shown(r, campaign, by_revision.get(r["id"], [])) for r in rows]

    # applying

    async def _apply(
        self,
        conn: asyncpg.Connection,
        staff: Staff,
        campaign: Campaign,
        figures: Revised,
        revision_id: int,
        taken: Cuts,
    ) -> Campaign:
        # The buckets each customer's counters live in stay as they are, whatever the stock.
        buckets = campaign.hot().buckets
        await conn.execute(
            queries.revise_campaign,
            campaign.id,
            figures.ends_at,
            figures.budget,
            list(figures.channels),
            buckets,
        )
        quotas_before = {r.id: r.channel_quota for r in campaign.rewards}
        for r in figures.rewards:
            await conn.execute(
                queries.revise_reward,
                campaign.id,
                r.id,
                r.stock,
                r.daily_stock,
                r.per_customer_limit,
                r.per_customer_daily_limit,
            )
            if r.channel_quota is not None and r.channel_quota != quotas_before[r.id]:
                await conn.execute(
                    campaign_queries.set_channel_quota,
                    campaign.id,
                    r.id,
                    orjson.dumps(r.channel_quota).decode(),
                )
        if figures.budget != campaign.budget:
            # The branch budget's reservation follows (campaigns/budget_reservations.py); a refusal
            # there (the branch lacks the difference) rolls the revision back.
            await rereserve(conn, self.budget_rules, staff, campaign, figures.budget)
        after = await self._load(conn, campaign.id)
        if campaign.stock_parts > 1:
            changes = part_changes(campaign, figures)
            await cut_parts(self._parts, campaign, changes.cuts, revision_id, taken)
            await conn.execute(
                queries.set_parts_to_give, campaign.id, revision_id, to_give(changes.raises)
            )
        await revise_hot(self._keys, self._scripts, after)
        return after

    # helpers

    @staticmethod
    def _revisable(campaign: Campaign) -> None:
        if campaign.status not in REVISABLE_STATES:
            raise InvalidTransition(
                f"only an approved or paused campaign is revised; this one is {campaign.status}",
                state=campaign.status,
            )

    @staticmethod
    def _fits_parts(campaign: Campaign, figures: Revised) -> None:
        """A split campaign has no daily stock (one counter for the whole campaign), nor gets
        one; nor a budget when it was approved without one, or loses it (the parts' shares of
        the budget are made when the campaign is published)."""
        if campaign.stock_parts <= 1:
            return
        if any(r.daily_stock is not None for r in figures.rewards) or (
            (figures.budget is None) != (campaign.budget is None)
        ):
            raise split_daily_refusal(campaign.id, campaign.stock_parts)

    @staticmethod
    def _in_state(revision: asyncpg.Record, state: str, action: str) -> None:
        if revision["status"] != state:
            raise InvalidTransition(
                f"cannot {action} a revision that is {revision['status']}",
                state=revision["status"],
            )

    async def _locked(
        self, conn: asyncpg.Connection, staff: Staff, campaign_id: str, revision_id: int
    ) -> tuple[Campaign, asyncpg.Record]:
        # The campaign's lock first, as every change of a campaign takes it.
        campaign = await self._load(conn, campaign_id, lock=True)
        staff.require_branch(campaign.branch)
        revision = await conn.fetchrow(queries.lock_revision, campaign_id, revision_id)
        if revision is None:
            raise RevisionNotFound(f"campaign {campaign_id} has no revision {revision_id}")
        return campaign, revision

    @staticmethod
    async def _audit(
        conn: asyncpg.Connection,
        staff: Staff,
        action: str,
        campaign_id: str,
        revision_id: int,
        detail: dict[str, Any] | None = None,
    ) -> None:
        await audit(
            conn,
            staff,
            f"campaign.revision.{action}",
            f"campaign:{campaign_id}",
            detail or {"revision": revision_id},
        )

    async def _view(self, row: asyncpg.Record, campaign: Campaign) -> dict[str, Any]:
        given = await approvals.approvals_of(self._pool, campaign.id, row["id"])
        return self._shown(row, campaign, [a.to_json() for a in given])

    def _shown(
        self, row: asyncpg.Record, campaign: Campaign, given: builtins.list[dict[str, Any]]
    ) -> dict[str, Any]:
        changes = _json(row["changes"])
        try:
            figures = revised(campaign, changes)
            money = money_of(figures.budget, ((r.stock, r.unit_cost) for r in figures.rewards))
        except InvalidRequest:  # a reward gone since (never: rewards of a live campaign stay)
            money = 0
        return {
            "id": row["id"],
            "campaign_id": row["campaign_id"],
            "status": row["status"],
            "changes": changes,
            "before": _json(row["before"]),
            "created_by": row["created_by"],
            "created_at": _when(row["created_at"]),
            "submitted_by": row["submitted_by"],
            "submitted_at": _when(row["submitted_at"]),
            "rejected_by": row["rejected_by"],
            "decided_at": _when(row["decided_at"]),
            "applied_at": _when(row["applied_at"]),
            "approvals": given,
            "approvals_needed": approvals.required_approvals(money, self._dual_above),
        }

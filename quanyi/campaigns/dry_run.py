"""The dry run of a campaign (POST /admin/v1/campaigns/{id}/simulate): who may ask, how many
run at once, and the worker processes the forecast (quanyi/campaigns/simulate.py) runs in.

A forecast tells who is in the audiences it counts, so it is answered only to staff of a
branch that holds every one of them: the one the query names and those the rewards name.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import asyncpg
from redis.asyncio import Redis

from quanyi.access.staff import Staff, audit
from quanyi.audiences.service import members_among
from quanyi.campaigns import queries, simulate, transactions
from quanyi.campaigns.model import Campaign
from quanyi.core.errors import InvalidLines, InvalidRequest, InvalidTransition, TooManyRequests
from quanyi.stores.keys import Keys

# States whose campaigns may be simulated: not yet live, so a forecast still informs the decision.
SIMULATED = frozenset({"draft", "pending"})
# Dry runs at once per process: each holds its file (up to simulate_max_bytes) and a core.
SIMULATIONS = 2
_simulators: ProcessPoolExecutor | None = None

Loader = Callable[[asyncpg.Connection, str], Awaitable[Campaign]]


def simulators() -> ProcessPoolExecutor:
    """The worker processes of dry runs, started on the first one: a forecast over a million
    transactions is seconds of CPU that must not stall the event loop. Spawned, not forked:
    a fork of a process with a running loop and threads inherits their locks."""
    global _simulators
    if _simulators is None:
        _simulators = ProcessPoolExecutor(
            SIMULATIONS, mp_context=multiprocessing.get_context("spawn")
        )
    return _simulators


async def audience_branches(
    conn: asyncpg.Connection | asyncpg.Pool, audience_ids: Iterable[str]
) -> dict[str, str]:
    """audience id -> its branch, for those of `audience_ids` that exist."""
    rows = await conn.fetch(queries.audiences_by_ids, sorted(set(audience_ids)))
    return {r["id"]: r["branch"] for r in rows}


class DryRuns:
    def __init__(self, pool: asyncpg.Pool, redis: Redis, keys: Keys, load: Loader) -> None:
        self._pool = pool
        self._redis = redis
        self._keys = keys
        self._load = load
        self._simulating = 0

    async def may_simulate(
        self, staff: Staff, campaign_id: str, audience_id: str | None = None
    ) -> Campaign:
        """The campaign, if `staff` may simulate it (counting `audience_id`'s members only, when
        given): asked before a byte of the file is read."""
        # A dry run changes nothing: a read, open to auditors too.
        staff.require_reader("marketer", "approver")
        async with self._pool.acquire() as conn:
            campaign = await self._load(conn, campaign_id)
        staff.require_branch(campaign.branch)
        named = {r.audience_id for r in campaign.rewards if r.audience_id}
        branches = await audience_branches(self._pool, [*named, *filter(None, [audience_id])])
        if audience_id is not None and audience_id not in branches:
            raise InvalidRequest("unknown audience", {"audience_id": "no such audience"})
        # A reward's audience may have gone since the campaign was edited: nothing to tell.
        for branch in sorted(set(branches.values())):
            staff.require_branch(branch)
        if campaign.status not in SIMULATED:
            raise InvalidTransition(
                f"only a draft or pending campaign is simulated; this one is {campaign.status}",
                state=campaign.status,
            )
        return campaign

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """One of SIMULATIONS places, or 429: each dry run holds its whole file in memory."""
        if self._simulating >= SIMULATIONS:
            raise TooManyRequests("dry runs are under way; retry shortly", retry_after_s=5)
        self._simulating += 1
        try:
            yield
        finally:
            self._simulating -= 1

    async def simulate(
        self, staff: Staff, campaign_id: str, body: bytes, zone: str, audience_id: str | None
    ) -> dict[str, Any]:
        """The dry run of a draft or pending campaign over past transactions (CSV bytes, see
        quanyi/campaigns/simulate.py): what it would have granted and cost. Reads Redis and
        PostgreSQL only; the audit log records who asked."""
        campaign = await self.may_simulate(staff, campaign_id, audience_id)
        hot = campaign.hot()
        audiences = {r.audience_id for r in hot.rewards if r.audience_id}
        audiences.update([audience_id] if audience_id else [])
        loop = asyncio.get_running_loop()
        members: dict[str, frozenset[str]] = {}
        if audiences:
            customers = await loop.run_in_executor(simulators(), transactions.customers_of, body)
            for a in sorted(audiences):
                members[a] = frozenset(await members_among(self._redis, self._keys, a, customers))
        result = await loop.run_in_executor(
            simulators(),
            simulate.forecast,
            body,
            hot,
            zone,
            members[audience_id] if audience_id else None,
            members,
        )
        if "errors" in result:
            raise InvalidLines(
                f"{result['rejected']} lines of the file are not transactions; nothing was"
                " simulated",
                result["errors"],
                result["rejected"],
            )
        await audit(
            self._pool,
            staff,
            "campaign.simulate",
            f"campaign:{campaign_id}",
            {
                "audience_id": audience_id,
                "bytes": len(body),
                "customers": result["customers"],
                "grants": result["grants"],
                "cost": result["cost"],
            },
        )
        return result

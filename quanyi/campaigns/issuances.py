"""Bulk issuance (批量发放): one reward of a campaign issued to every member of an audience.

A marketer of the campaign's branch creates a job (`pending_approval`); it issues money, so an
approver who did not create it approves it (two distinct approvers, one of head office, above
QUANYI_DUAL_APPROVAL_ABOVE: campaigns/approvals.py). The last approval freezes the member list
and sets the job `running`; issuance workers (issuance_worker.py) then claim the reward for each
member through the claim path (claim.lua, hundreds of members a call), channel "bulk", request
id "<job>/<customer>", its buckets split into lanes that run side by side.

States: pending_approval -> running <-> paused -> done | cancelled (cancel from any live state).

The member list is frozen by copying the audience's live version's member hashes (Redis COPY,
a memcpy of each small hash) to keys of the job's own: an import during the job flips the
pointer and unlinks the old version, and the job still covers exactly whom it was approved for.
The copies go when the job is done or cancelled.

A campaign split into stock parts (inventory/stock_parts.py) is issued part by part: each
member's claim in the member's part, a dry part refilled from the others as a live claim's would
be (issuance/bulk_claims.py), so a job issues the whole stock.
"""

from __future__ import annotations

from typing import Any

import asyncpg
import orjson
from redis.asyncio import Redis

from quanyi.access.staff import Staff, audit
from quanyi.audiences.service import parse_pointer
from quanyi.campaigns.approvals import (
    Approval,
    check_approver,
    money_of,
    required_approvals,
)
from quanyi.campaigns.parts import stock_parts_of
from quanyi.core.errors import (
    AlreadyExists,
    InvalidTransition,
    NotFound,
    RewardNotFound,
    Unavailable,
)
from quanyi.core.schemas import Body, Ident, Reply
from quanyi.stores.db import load_queries
from quanyi.stores.keys import Keys, part_ids

queries = load_queries("quanyi.campaigns", "issuances.sql")

BULK_CHANNEL = "bulk"
STATES = ("pending_approval", "running", "paused", "done", "cancelled")
# action -> (states it may start from, state it reaches)
MOVES = {
    "pause": (("running",), "paused"),
    "resume": (("paused",), "running"),
    "cancel": (("pending_approval", "running", "paused"), "cancelled"),
}
# The advisory-lock class of job locks (a worker holds its job's for as long as it runs it), so
# they never meet other advisory locks.
LOCK_CLASS = 7301
# The class of lane locks (issuance_worker.py): a worker runs a lane of a job while it holds
# the lane's, and holds the job's LOCK_CLASS lock shared meanwhile.
LANE_LOCK_CLASS = 7302
# Member hashes copied per round trip when a job's member list is frozen.
COPY_BATCH = 512


class IssuanceBody(Body):
    id: Ident
    reward_id: Ident
    audience_id: Ident


class ApprovalReply(Reply):
    approver: str
    branch: str
    at: str


class IssuanceReply(Reply):
    id: str
    campaign_id: str
    reward_id: str
    audience_id: str
    branch: str
    state: str
    # Members of the frozen list (0 until approved), and what became of those done so far.
    total: int
    issued: int
    # reason -> members: out_of_stock, limit_reached, budget_exhausted, not_eligible, ...
    skipped: dict[str, int]
    failed: int
    money: int
    approvals_needed: int
    approvals: list[ApprovalReply]
    created_by: str
    created_at: str
    started_at: str | None
    finished_at: str | None


def member_key(keys: Keys, audience_id: str, job_id: str, bucket: int) -> str:
    """A bucket of a job's frozen member list, beside (and in the hash slot of) the audience."""
    return f"{keys.audience(audience_id)}:job:{job_id}:{bucket}"


def _iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None


def job_json(row: asyncpg.Record, approvals: list[Approval]) -> dict[str, Any]:
    skipped = row["skipped"]
    if isinstance(skipped, str):
        skipped = orjson.loads(skipped)
    return {
        "id": row["id"],
        "campaign_id": row["campaign_id"],
        "reward_id": row["reward_id"],
        "audience_id": row["audience_id"],
        "branch": row["branch"],
        "state": row["state"],
        "total": row["total"],
        "issued": row["issued"],
        "skipped": {k: int(v) for k, v in skipped.items()},
        "failed": row["failed"],
        "money": row["money"],
        "approvals_needed": row["approvals_needed"],
        "approvals": [a.to_json() for a in approvals],
        "created_by": row["created_by"],
        "created_at": row["created_at"].isoformat(),
        "started_at": _iso(row["started_at"]),
        "finished_at": _iso(row["finished_at"]),
    }


async def freeze_members(
    redis: Redis, keys: Keys, audience_id: str, job_id: str
) -> tuple[int, int]:
    """Copies the audience's live version to the job's keys; (buckets, members). An import
    that flips the pointer meanwhile (and may unlink what was being copied) is seen in the
    pointer read after, and the copy is made again from the new version."""
    for _ in range(3):
        pointer = parse_pointer(await redis.get(keys.audience(audience_id)))
        if pointer is None:
            return 0, 0  # never imported: nobody to issue to
        version, buckets = pointer
        for start in range(0, buckets, COPY_BATCH):
            async with redis.pipeline(transaction=False) as pipe:
                for b in range(start, min(start + COPY_BATCH, buckets)):
                    source = keys.audience_bucket(audience_id, version, b)
                    target = member_key(keys, audience_id, job_id, b)
                    # An empty bucket has no key: the target must not keep an older copy.
                    pipe.delete(target)
                    pipe.copy(source, target)
                await pipe.execute()
        if parse_pointer(await redis.get(keys.audience(audience_id))) != pointer:
            continue
        total = 0
        for start in range(0, buckets, COPY_BATCH):
            async with redis.pipeline(transaction=False) as pipe:
                for b in range(start, min(start + COPY_BATCH, buckets)):
                    pipe.hlen(member_key(keys, audience_id, job_id, b))
                total += sum(await pipe.execute())
        return buckets, total
    raise Unavailable(f"audience {audience_id} is being imported again; retry")


async def drop_members(redis: Redis, keys: Keys, row: asyncpg.Record) -> None:
    """The job's frozen member list, once it is done or cancelled."""
    names = [member_key(keys, row["audience_id"], row["id"], b) for b in range(row["buckets"] or 0)]
    for start in range(0, len(names), COPY_BATCH):
        await redis.unlink(*names[start : start + COPY_BATCH])


async def release_channel(
    conn: asyncpg.Connection | asyncpg.Pool, redis: Redis, keys: Keys, row: asyncpg.Record
) -> None:
    """Channel "bulk" may claim in the campaign only while one of its jobs runs: the worker
    sets `ch:bulk` in the campaign hash before each batch, and the last job to stop takes it
    away (unless the campaign itself names the channel)."""
    if await conn.fetchval(queries.other_running_jobs, row["campaign_id"], row["id"]):
        return
    channels = await conn.fetchval(
        "SELECT channels FROM campaigns WHERE id = $1", row["campaign_id"]
    )
    if BULK_CHANNEL not in (channels or []):
        for name in await bulk_channel_hashes(conn, keys, row["campaign_id"]):
            await redis.hdel(name, f"ch:{BULK_CHANNEL}")


async def bulk_channel_hashes(
    conn: asyncpg.Connection | asyncpg.Pool, keys: Keys, campaign_id: str
) -> list[str]:
    """The hashes `ch:bulk` is set in: the campaign's, and each part's of a campaign split
    into stock parts (its members' claims are in their parts)."""
    parts = (await stock_parts_of(conn, [campaign_id])).get(campaign_id, 1)
    return [keys.campaign(pid) for pid in part_ids(campaign_id, parts)]


class IssuanceService:
    def __init__(
        self, pool: asyncpg.Pool, redis: Redis, keys: Keys, *, dual_approval_above: int
    ) -> None:
        self._pool, self._redis, self._keys = pool, redis, keys
        self._dual_above = dual_approval_above

    async def create(self, staff: Staff, campaign_id: str, body: IssuanceBody) -> dict[str, Any]:
        staff.require_role("marketer")
        async with self._pool.acquire() as conn, conn.transaction():
            campaign = await conn.fetchrow(queries.campaign_of_job, campaign_id)
            if campaign is None:
                raise NotFound(f"no campaign {campaign_id!r}")
            staff.require_branch(campaign["branch"])
            reward = await conn.fetchrow(queries.reward_of_campaign, campaign_id, body.reward_id)
            if reward is None:
                raise RewardNotFound(f"campaign {campaign_id} has no reward {body.reward_id}")
            if reward["grant_mode"] != "claim":
                raise InvalidTransition(
                    f"reward {body.reward_id} is granted when its goal is reached, not issued"
                )
            audience = await conn.fetchrow(queries.audience_of_job, body.audience_id)
            if audience is None:
                raise NotFound(f"no audience {body.audience_id!r}")
            staff.require_branch(audience["branch"])
            if campaign["status"] not in ("approved", "paused"):
                raise InvalidTransition(
                    f"campaign {campaign_id} is {campaign['status']}; only an approved campaign"
                    " issues"
                )
            # What it can pay out: a unit for each member the stock can serve, within the budget.
            units = min(audience["members"], reward["stock"])
            money = money_of(None, [(units, reward["unit_cost"])])
            if campaign["budget"] is not None:
                money = min(money, campaign["budget"])
            needed = required_approvals(money, self._dual_above)
            try:
                row = await conn.fetchrow(
                    queries.insert_job,
                    body.id,
                    campaign_id,
                    body.reward_id,
                    body.audience_id,
                    campaign["branch"],
                    money,
                    needed,
                    staff.username,
                )
            except asyncpg.UniqueViolationError:
                raise AlreadyExists(f"issuance {body.id} exists") from None
            await audit(
                conn,
                staff,
                "issuance.create",
                f"issuance:{body.id}",
                {"campaign": campaign_id, "reward": body.reward_id, "audience": body.audience_id},
            )
        return job_json(row, [])

    async def get(self, staff: Staff, job_id: str) -> dict[str, Any]:
        staff.require_reader("marketer", "approver")
        row = await self._pool.fetchrow(queries.get_job, job_id)
        if row is None:
            raise NotFound(f"no issuance {job_id!r}")
        staff.require_branch(row["branch"])
        return job_json(row, await self._approvals(self._pool, job_id))

    async def approve(self, staff: Staff, job_id: str) -> dict[str, Any]:
        staff.require_role("approver")
        async with self._pool.acquire() as conn, conn.transaction():
            row = await self._locked(conn, staff, job_id)
            if row["state"] != "pending_approval":
                raise InvalidTransition(
                    f"issuance {job_id} is {row['state']}, not pending approval"
                )
            needed = max(
                row["approvals_needed"], required_approvals(row["money"], self._dual_above)
            )
            given = await self._approvals(conn, job_id)
            check_approver(staff, [row["created_by"]], given, needed)
            approval = await conn.fetchrow(
                queries.insert_approval, job_id, staff.username, staff.branch
            )
            given = [*given, Approval.from_row(approval)]
            if len(given) >= needed:
                buckets, total = await freeze_members(
                    self._redis, self._keys, row["audience_id"], job_id
                )
                row = await conn.fetchrow(queries.start_job, job_id, staff.username, buckets, total)
            await audit(
                conn,
                staff,
                "issuance.approve",
                f"issuance:{job_id}",
                {"approvals": len(given), "needed": needed, "state": row["state"]},
            )
        return job_json(row, given)

    async def move(self, staff: Staff, job_id: str, action: str) -> dict[str, Any]:
        """pause, resume or cancel."""
        staff.require_role("marketer", "approver")
        starts, reached = MOVES[action]
        async with self._pool.acquire() as conn, conn.transaction():
            row = await self._locked(conn, staff, job_id)
            if row["state"] not in starts:
                raise InvalidTransition(f"issuance {job_id} is {row['state']}; it cannot {action}")
            row = await conn.fetchrow(queries.set_state, job_id, reached)
            await audit(conn, staff, f"issuance.{action}", f"issuance:{job_id}", {})
            # A worker running the job releases the channel itself once its batch in flight is
            # done: taken away now, that batch's remaining claims would be refused.
            idle = await conn.fetchval(
                "SELECT pg_try_advisory_xact_lock($1, hashtext($2))", LOCK_CLASS, job_id
            )
            if reached != "running" and idle:
                await release_channel(conn, self._redis, self._keys, row)
            if reached == "cancelled" and idle:
                await drop_members(self._redis, self._keys, row)
            given = await self._approvals(conn, job_id)
        return job_json(row, given)

    @staticmethod
    async def _locked(conn: asyncpg.Connection, staff: Staff, job_id: str) -> asyncpg.Record:
        row = await conn.fetchrow(queries.lock_job, job_id)
        if row is None:
            raise NotFound(f"no issuance {job_id!r}")
        staff.require_branch(row["branch"])
        return row

    @staticmethod
    async def _approvals(conn: asyncpg.Connection | asyncpg.Pool, job_id: str) -> list[Approval]:
        return [Approval.from_row(r) for r in await conn.fetch(queries.job_approvals, job_id)]

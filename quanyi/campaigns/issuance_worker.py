"""The issuance worker: runs approved bulk issuances (issuances.py) to the end.

Each tick it takes the running jobs one at a time under a PostgreSQL advisory lock held by a
connection of its own for the whole job, so two workers never run one job at once, and a worker
killed with `kill -9` lets the job go the moment its connection drops. A job goes through its
frozen member list a batch of buckets at a time: every member of the batch is claimed at once
(the claim service packs them into claim.lua calls), then one UPDATE writes the checkpoint
(the next bucket and the batch's counts) if the job is still running, and a pause or a cancel
given meanwhile stops it there.

A worker killed mid-batch leaves the checkpoint of the batch before: the next one sends that
batch again, and each member already granted answers `replayed` (same request id
"<job>/<customer>", claim.lua's idempotency), so nobody is issued twice and each member is
counted once. A store away ends the tick; the job is taken up again after a growing pause.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

import asyncpg
import orjson
from prometheus_client import Counter, Gauge
from redis.asyncio import Redis

from quanyi.campaigns.issuances import (
    BULK_CHANNEL,
    LOCK_CLASS,
    STATES,
    drop_members,
    member_key,
    queries,
    release_channel,
)
from quanyi.core.errors import IdempotencyConflict, QuanyiError, Unavailable
from quanyi.core.side_tasks import SideTask, SideTasks
from quanyi.stores.db import POSTGRES_AWAY
from quanyi.stores.keys import Keys
from quanyi.stores.outbox import REDIS_AWAY

log = logging.getLogger(__name__)

# Claims one member: (request id, campaign, customer, reward); raises the claim's typed error.
Issue = Callable[[str, str, str, str], Awaitable[object]]

MEMBERS = Counter(
    "quanyi_issuance_members_total",
    "Members of bulk issuances dealt with, by outcome: issued, skipped (a refusal: out of stock,"
    " limit reached, ...) or failed",
    ["outcome"],
)
JOBS = Gauge(
    "quanyi_issuance_jobs", "Bulk issuance jobs by state, as the worker last saw", ["state"]
)
# Refusals that are a member's, not the job's: counted under their code and the job goes on.
SKIPPED = (
    "out_of_stock",
    "limit_reached",
    "budget_exhausted",
    "not_eligible",
    "campaign_not_active",
    "channel_not_allowed",
    "campaign_not_found",
    "reward_not_found",
)
JOBS_PER_TICK = 20
# Claims of a batch in flight at once: enough to keep the claim service's batchers full (4 x
# 64 a call), few enough that a batch sent again (each member a replay, one HGET each) stays
# within the Redis pool.
IN_FLIGHT = 512


def store_away(exc: BaseException) -> bool:
    return isinstance(exc, (*REDIS_AWAY, *POSTGRES_AWAY, Unavailable, OSError))


class IssuanceWorker:
    """A worker (run/stop, under a Supervisor)."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        redis: Redis,
        keys: Keys,
        issue: Issue,
        *,
        start: Callable[[], Awaitable[None]] | None = None,
        close: Callable[[], Awaitable[None]] | None = None,
        every_s: float = 0.5,
        buckets_per_batch: int = 8,
        in_flight: int = IN_FLIGHT,
    ) -> None:
        self._pool, self._redis, self._keys = pool, redis, keys
        self._issue = issue
        self._start, self._close = start, close
        self._every_s = every_s
        self._buckets_per_batch = buckets_per_batch
        self._in_flight = in_flight
        self._stopping = asyncio.Event()

    def stop(self) -> None:
        self._stopping.set()

    async def run(self) -> None:
        if self._start:
            await self._start()
        log.info("issuance worker started")
        tasks = SideTasks(store_away)
        tasks.start([SideTask("issuance", self._every_s, self.tick)])
        try:
            await self._stopping.wait()
        finally:
            await tasks.stop(grace_s=5.0)
            if self._close:
                await self._close()
        log.info("issuance worker stopped")

    async def tick(self) -> list[str]:
        """Runs each running job this worker can lock to its end (or a pause); the ids run."""
        counts = await self._pool.fetch(
            "SELECT state, count(*) AS n FROM issuance_jobs GROUP BY state"
        )
        seen = {r["state"]: r["n"] for r in counts}
        for state in STATES:
            JOBS.labels(state).set(seen.get(state, 0))
        ran = []
        for row in await self._pool.fetch(queries.running_jobs, JOBS_PER_TICK):
            if self._stopping.is_set():
                break
            if await self.run_job(row["id"]):
                ran.append(row["id"])
        return ran

    async def run_job(self, job_id: str) -> bool:
        """False when another worker holds the job."""
        async with self._pool.acquire() as lock:
            if not await lock.fetchval(
                "SELECT pg_try_advisory_lock($1, hashtext($2))", LOCK_CLASS, job_id
            ):
                return False
            try:
                await self._go(job_id)
            finally:
                # Released with the connection too (asyncpg resets it), or when it drops.
                await lock.execute(
                    "SELECT pg_advisory_unlock($1, hashtext($2))", LOCK_CLASS, job_id
                )
        return True

    async def _go(self, job_id: str) -> None:
        row = await self._pool.fetchrow(queries.get_job, job_id)
        while row is not None and row["state"] == "running" and not self._stopping.is_set():
            start = row["next_bucket"]
            if start >= (row["buckets"] or 0):
                done = await self._pool.fetchrow(queries.finish_job, job_id)
                if done is not None:
                    await release_channel(self._pool, self._redis, self._keys, done)
                    await drop_members(self._redis, self._keys, done)
                    log.info("issuance %s done: %d issued", job_id, done["issued"])
                return
            end = min(start + self._buckets_per_batch, row["buckets"])
            issued, failed, skipped = await self._batch(row, start, end)
            state = await self._pool.fetchval(
                queries.checkpoint,
                job_id,
                end,
                issued,
                failed,
                orjson.dumps(skipped).decode(),
                start,
            )
            row = await self._pool.fetchrow(queries.get_job, job_id)
            if state != "running" and row is not None and row["state"] != "running":
                await release_channel(self._pool, self._redis, self._keys, row)
                if row["state"] == "cancelled":
                    await drop_members(self._redis, self._keys, row)

    async def _batch(
        self, row: asyncpg.Record, start: int, end: int
    ) -> tuple[int, int, dict[str, int]]:
        campaign_id, reward_id, job_id = row["campaign_id"], row["reward_id"], row["id"]
        # Set before every batch: a publication of the campaign or a restored Redis may have
        # taken it away; release_channel takes it away when no job of the campaign runs.
        await self._redis.hset(self._keys.campaign(campaign_id), f"ch:{BULK_CHANNEL}", 1)
        async with self._redis.pipeline(transaction=False) as pipe:
            for b in range(start, end):
                pipe.hkeys(member_key(self._keys, row["audience_id"], job_id, b))
            buckets = await pipe.execute()
        members = [m for bucket in buckets for m in bucket]
        outcomes: list[str] = []

        async def lane(first: int) -> None:
            # `in_flight` lanes, each claiming every in_flight-th member: as many claims in
            # flight as lanes, without a task or a semaphore per member.
            for customer in members[first :: self._in_flight]:
                outcomes.append(await self._one(job_id, campaign_id, customer, reward_id))

        lanes = [lane(i) for i in range(min(self._in_flight, len(members)))]
        for failure in await asyncio.gather(*lanes, return_exceptions=True):
            if isinstance(failure, BaseException):
                # Redis or the claim path away: the whole batch again later (idempotent).
                raise failure
        issued = failed = 0
        skipped: dict[str, int] = {}
        for outcome in outcomes:
            if outcome == "issued":
                issued += 1
            elif outcome == "failed":
                failed += 1
            else:
                skipped[outcome] = skipped.get(outcome, 0) + 1
        MEMBERS.labels("issued").inc(issued)
        MEMBERS.labels("failed").inc(failed)
        MEMBERS.labels("skipped").inc(sum(skipped.values()))
        return issued, failed, skipped

    async def _one(self, job_id: str, campaign_id: str, customer: str, reward_id: str) -> str:
        try:
            await self._issue(f"{job_id}/{customer}", campaign_id, customer, reward_id)
        except Unavailable:
            raise
        except IdempotencyConflict:
            log.error("issuance %s: request of %s used with another body", job_id, customer)
            return "failed"
        except QuanyiError as exc:
            if exc.code in SKIPPED:
                return exc.code
            log.error("issuance %s: %s refused: %s", job_id, customer, exc)
            return "failed"
        return "issued"

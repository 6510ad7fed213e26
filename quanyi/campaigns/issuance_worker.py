"""The issuance worker: runs approved bulk issuances (issuances.py) to the end.

A job's frozen member buckets are split into lanes (issuance_lanes, made by the first worker to
take the job up: a few for a big job, one for a small one), each with a checkpoint of its own.
A worker takes a job under a PostgreSQL advisory lock held *shared* by a connection of its own
(so several workers may run one job, while the API's pause or cancel can tell whether anyone
does), and each lane it can get under a lane lock on the same connection: two workers never
run one lane at once, and a worker killed with `kill -9` lets its lanes go the moment its
connection drops. The lanes it holds run side by side, each a batch of buckets at a time:
every member of the batch is claimed at once (`issue`, claim.lua with hundreds of members a
call, several calls a round trip), then one statement moves the lane's checkpoint on and adds
the batch's counts to the job if the lane is still where the batch started, returning the
job's state, so a pause or a cancel stops the lane there.

A worker killed mid-batch leaves each lane at the checkpoint of its batch before: the next one
sends that batch again, and each member already granted answers `replayed` (same request id
"<job>/<customer>", claim.lua's idempotency), so nobody is issued twice and each member is
counted once. When a worker's lanes stop it tries the job's lock exclusively: the last worker
of the job gets it and finishes the job (every lane done) or, paused or cancelled, takes the
channel away. A store away ends the tick; the job is taken up again after a growing pause.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence

import asyncpg
import orjson
from prometheus_client import Counter, Gauge
from redis.asyncio import Redis

from quanyi.campaigns.issuances import (
    BULK_CHANNEL,
    LANE_LOCK_CLASS,
    LOCK_CLASS,
    STATES,
    bulk_channel_hashes,
    drop_members,
    member_key,
    queries,
    release_channel,
)
from quanyi.core.errors import StoreNotReady, Unavailable
from quanyi.core.side_tasks import SideTask, SideTasks
from quanyi.stores.db import POSTGRES_AWAY
from quanyi.stores.keys import Keys
from quanyi.stores.outbox import REDIS_AWAY

log = logging.getLogger(__name__)

# Claims members of one reward: (campaign, reward, [(request id, customer)]) -> claim.lua's
# outcome for each, in order (granted, replayed, out_of_stock, ...: issuance/bulk_claims.py).
IssueMany = Callable[[str, str, Sequence[tuple[str, str]]], Awaitable[list[str]]]

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
SKIPPED = frozenset(
    {
        "out_of_stock",
        "limit_reached",
        "budget_exhausted",
        "not_eligible",
        "campaign_not_active",
        "channel_not_allowed",
        "campaign_not_found",
        "reward_not_found",
    }
)
ISSUED = frozenset({"granted", "replayed"})
JOBS_PER_TICK = 20
# Lanes a job is split into at most, and the fewest buckets (~256 members each) a lane gets: a
# million members (4,096 buckets) make 8 lanes, an audience under 128 buckets one.
LANES = 8
LANE_BUCKETS = 64


def store_away(exc: BaseException) -> bool:
    return isinstance(exc, (*REDIS_AWAY, *POSTGRES_AWAY, Unavailable, OSError))


def lanes_for(buckets_left: int, most: int = LANES, fewest_buckets: int = LANE_BUCKETS) -> int:
    """How many lanes a job with `buckets_left` buckets to do is split into."""
    return max(1, min(most, buckets_left // max(1, fewest_buckets)))


class IssuanceWorker:
    """A worker (run/stop, under a Supervisor)."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        redis: Redis,
        keys: Keys,
        issue: IssueMany,
        *,
        start: Callable[[], Awaitable[None]] | None = None,
        close: Callable[[], Awaitable[None]] | None = None,
        every_s: float = 0.5,
        buckets_per_batch: int = 8,
        lanes: int = LANES,
        lane_buckets: int = LANE_BUCKETS,
    ) -> None:
        self._pool, self._redis, self._keys = pool, redis, keys
        self._issue = issue
        self._start, self._close = start, close
        self._every_s = every_s
        self._buckets_per_batch = buckets_per_batch
        self._lanes, self._lane_buckets = lanes, lane_buckets
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
        """Runs the lanes it can lock of each running job to their end (or a pause); the ids
        of the jobs it took part in."""
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
        """False when it ran no lane of the job and did not finish it (other workers hold its
        lanes, or the API held the job for a moment)."""
        async with self._pool.acquire() as lock:
            if not await lock.fetchval(
                "SELECT pg_try_advisory_lock_shared($1, hashtext($2))", LOCK_CLASS, job_id
            ):
                return False
            mine: list[asyncpg.Record] = []  # the lanes it holds the lock of
            live: list[asyncpg.Record] = []  # ... with buckets left, as read under the lock
            try:
                for lane in await self._lanes_left(job_id):
                    if await lock.fetchval(
                        "SELECT pg_try_advisory_lock($1, hashtext($2))",
                        LANE_LOCK_CLASS,
                        f"{job_id}/{lane['lane']}",
                    ):
                        mine.append(lane)
                        # Read again now that it is ours: another worker may have moved it on,
                        # or finished it, since lanes_left read it.
                        now = await lock.fetchrow(queries.get_lane, job_id, lane["lane"])
                        if now is not None and now["next_bucket"] < now["end_bucket"]:
                            live.append(now)
                runs = [self._lane(job_id, lane) for lane in live]
                failures = [
                    f for f in await asyncio.gather(*runs, return_exceptions=True) if f is not None
                ]
                if failures:
                    # Redis or PostgreSQL away: every lane again later from its checkpoint.
                    raise failures[0]
            finally:
                # Released with the connection too (asyncpg resets it), or when it drops.
                for lane in mine:
                    await lock.execute(
                        "SELECT pg_advisory_unlock($1, hashtext($2))",
                        LANE_LOCK_CLASS,
                        f"{job_id}/{lane['lane']}",
                    )
                await lock.execute(
                    "SELECT pg_advisory_unlock_shared($1, hashtext($2))", LOCK_CLASS, job_id
                )
            settled = await self._settle(lock, job_id)
        return bool(live) or settled

    async def _lanes_left(self, job_id: str) -> list[asyncpg.Record]:
        async with self._pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(queries.lock_job, job_id)
            if row is None or row["state"] != "running":
                return []
            buckets_left = (row["buckets"] or 0) - row["next_bucket"]
            lanes = lanes_for(buckets_left, self._lanes, self._lane_buckets)
            await conn.execute(queries.make_lanes, job_id, lanes)
            return list(await conn.fetch(queries.lanes_left, job_id))

    async def _settle(self, lock: asyncpg.Connection, job_id: str) -> bool:
        """The last worker of the job (the one that gets its lock exclusively) finishes it once
        every lane is done, or takes the channel away from a job paused or cancelled. True when
        it finished the job."""
        if not await lock.fetchval(
            "SELECT pg_try_advisory_lock($1, hashtext($2))", LOCK_CLASS, job_id
        ):
            return False  # another worker still runs lanes of it: it settles the job
        try:
            done = await self._pool.fetchrow(queries.finish_job, job_id)
            if done is not None:
                await release_channel(self._pool, self._redis, self._keys, done)
                await drop_members(self._redis, self._keys, done)
                log.info("issuance %s done: %d issued", job_id, done["issued"])
                return True
            row = await self._pool.fetchrow(queries.get_job, job_id)
            if row is not None and row["state"] in ("paused", "cancelled"):
                await release_channel(self._pool, self._redis, self._keys, row)
                if row["state"] == "cancelled":
                    await drop_members(self._redis, self._keys, row)
            return False
        finally:
            await lock.execute("SELECT pg_advisory_unlock($1, hashtext($2))", LOCK_CLASS, job_id)

    async def _lane(self, job_id: str, lane: asyncpg.Record) -> None:
        row = await self._pool.fetchrow(queries.get_job, job_id)
        if row is None:
            return
        start, end = lane["next_bucket"], lane["end_bucket"]
        state = row["state"]
        while state == "running" and start < end and not self._stopping.is_set():
            stop = min(start + self._buckets_per_batch, end)
            issued, failed, skipped = await self._batch(row, start, stop)
            state = await self._pool.fetchval(
                queries.checkpoint,
                job_id,
                lane["lane"],
                stop,
                issued,
                failed,
                orjson.dumps(skipped).decode(),
                start,
            )
            start = stop

    async def _batch(
        self, row: asyncpg.Record, start: int, end: int
    ) -> tuple[int, int, dict[str, int]]:
        campaign_id, reward_id, job_id = row["campaign_id"], row["reward_id"], row["id"]
        # Set before every batch: a publication of the campaign or a restored Redis may have
        # taken it away; release_channel takes it away when no job of the campaign runs.
        for name in await bulk_channel_hashes(self._pool, self._keys, campaign_id):
            await self._redis.hset(name, f"ch:{BULK_CHANNEL}", 1)
        async with self._redis.pipeline(transaction=False) as pipe:
            for b in range(start, end):
                pipe.hkeys(member_key(self._keys, row["audience_id"], job_id, b))
            buckets = await pipe.execute()
        members = [m for bucket in buckets for m in bucket]
        if not members:
            return 0, 0, {}
        outcomes = await self._issue(
            campaign_id, reward_id, [(f"{job_id}/{m}", m) for m in members]
        )
        issued = failed = 0
        skipped: dict[str, int] = {}
        for customer, outcome in zip(members, outcomes, strict=True):
            if outcome in ISSUED:
                issued += 1
            elif outcome in SKIPPED:
                skipped[outcome] = skipped.get(outcome, 0) + 1
            elif outcome == "store_not_ready":
                # Redis lost its data: nothing was decided; the batch again once it is restored.
                raise StoreNotReady()
            else:
                failed += 1
                if outcome == "idempotency_conflict":
                    log.error("issuance %s: request of %s used with another body", job_id, customer)
                else:
                    log.error("issuance %s: %s refused: %s", job_id, customer, outcome)
        MEMBERS.labels("issued").inc(issued)
        MEMBERS.labels("failed").inc(failed)
        MEMBERS.labels("skipped").inc(sum(skipped.values()))
        return issued, failed, skipped

"""The ledger worker: drains the Redis outbox into PostgreSQL, in batches, exactly once: grants,
their transitions, and the card events recorded for goals.

An outbox entry is acknowledged only after the transaction holding its grant committed, and the
outbox is trimmed only below what every consumer group acknowledged. A worker killed mid-batch
leaves its entries pending; any worker re-claims them once they are idle long enough, and the
insert ignores what was already written.

Beside the read loop run two side tasks, each named and on its own timer: `ledger-reclaim`
(those pending entries) and `ledger-trim` (trimming the outbox, and its lag on the metrics).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from typing import Any

import asyncpg
import orjson
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from quanyi.core import metrics
from quanyi.core.clock import system_clock
from quanyi.core.settings import Settings
from quanyi.core.side_tasks import SideTask, SideTasks
from quanyi.issuance.definitions import CampaignCache
from quanyi.issuance.grants import GrantReader
from quanyi.issuance.lifecycle import GrantLifecycle
from quanyi.ledger import queries
from quanyi.ledger.batch import write_batch
from quanyi.ledger.duplicates import refuse_born_fulfilled
from quanyi.ledger.entries import (
    Entry,
    EventEntry,
    GrantEntry,
    entry_fields,
    parse_entries,
    parse_entry,
)
from quanyi.stores.db import POSTGRES_AWAY
from quanyi.stores.keys import Keys, ShardKeys
from quanyi.stores.outbox import (
    LEDGER_GROUP,
    REDIS_AWAY,
    default_consumer_name,
    ensure_group,
    outbox_lag,
    read_group,
    read_until_stopped,
    trim_outbox,
    worth_retrying,
)
from quanyi.stores.outbox_reader import OutboxReader

log = logging.getLogger(__name__)

# What PostgreSQL refuses for a row's content: only these send an entry to the dead letters.
# Anything else (a failover's read-only primary, a timeout, a deadlock) is retried.
CONTENT_ERRORS = (asyncpg.DataError, asyncpg.IntegrityConstraintViolationError)
# The reports' calendar when a caller names none.
DEFAULT_TZ = Settings.tz
# How often the side tasks run.
RECLAIM_EVERY_S = 1.0
TRIM_EVERY_S = 1.0


class LedgerStopping(Exception):
    """Asked to stop while PostgreSQL was away: the batch stays pending for the next worker."""


class LedgerWorker:
    def __init__(
        self,
        redis: Redis,
        pool: asyncpg.Pool,
        keys: Keys,
        *,
        consumer: str | None = None,
        batch_size: int = 2000,
        block_ms: int = 100,
        reclaim_idle_ms: int = 30_000,
        linger_ms: int = 0,
        tz: str = DEFAULT_TZ,
        lifecycle: GrantLifecycle | None = None,
    ) -> None:
        """`lifecycle` fails the duplicates born fulfilled (duplicates.py): the service passes
        its own (quanyi/runtime.py); by default, one on these stores with default settings."""
        self._redis = redis
        self._pool = pool
        self._keys = keys
        self.consumer = consumer or default_consumer_name()
        self._batch_size = batch_size
        self._block_ms = block_ms
        self._reclaim_idle_ms = reclaim_idle_ms
        self._linger_s = linger_ms / 1000
        # The calendar whose days the report rollups count in (QUANYI_TZ).
        self._tz = tz
        self._lifecycle = lifecycle or GrantLifecycle(
            redis,
            keys,
            GrantReader(redis, pool, keys),
            CampaignCache.of_store(redis, keys),
            Settings(tz=tz),
            system_clock,
        )
        self._stopping = asyncio.Event()
        # One batch written at a time, whether read new or re-claimed: a grant and its events
        # in two transactions at once could each miss the other and leave the status stale
        # (across processes, queries.lock_ledger does the same for batches with transitions).
        self._writing = asyncio.Lock()
        self._side_tasks = SideTasks(worth_retrying)
        self._reader = OutboxReader(redis, keys, LEDGER_GROUP, self.consumer)

    @property
    def side_tasks(self) -> list[str]:
        """The names of the side tasks running now."""
        return self._side_tasks.running

    def stop(self) -> None:
        """Finish the batch in hand, then return from run()."""
        self._stopping.set()

    async def run(self) -> None:
        """Work until stop(). Whatever can be retried (a store away, the consumer group gone) is
        retried here; anything else escapes to the supervisor, which restarts the worker."""
        log.info("ledger worker %s started", self.consumer)
        self._side_tasks.start(
            [
                # Not at once: the consumer group may still be being made.
                SideTask("ledger-reclaim", RECLAIM_EVERY_S, self._reclaim, RECLAIM_EVERY_S),
                SideTask("ledger-trim", TRIM_EVERY_S, self._housekeeping),
            ]
        )
        try:
            await self._read_until_stopped()
        finally:
            await self._reader.close()
            # A re-claimed batch in hand is written (or left pending) before the worker ends.
            await self._side_tasks.stop(grace_s=5.0)
        try:
            await trim_outbox(self._redis, self._keys)
        except (*REDIS_AWAY, ResponseError):
            pass
        log.info("ledger worker %s stopped", self.consumer)

    async def _read_until_stopped(self) -> None:
        # A bug is raised: the supervisor restarts the worker, and the batch stays pending.
        await read_until_stopped(
            "ledger", self.step, self._redis, self._keys, self._stopping, retry_bugs=False
        )

    async def step(self) -> int:
        """One batch of new entries. Returns grants written."""
        written = 0
        reply = await self._reader.read(self._batch_size, self._block_ms)
        for shard, messages in reply:
            written += await self._persist(messages, shard)
            if self._linger_s and len(messages) < self._batch_size // 4:
                # A thin stream: let it gather, so the next transaction carries more grants.
                await self._pause(self._linger_s)
        return written

    async def drain(self) -> int:
        """Persist everything already in the outbox (tests); returns grants written. Every
        shard must answer: a shard away is an error here, not a shard to come back to."""
        await ensure_group(self._redis, self._keys)
        total = 0
        while True:
            reply = await read_group(
                self._redis, self._keys, LEDGER_GROUP, self.consumer, self._batch_size
            )
            if not reply:
                break
            for shard, messages in reply:
                total += await self._persist(messages, shard)
        await trim_outbox(self._redis, self._keys)
        return total

    async def _reclaim(self) -> int:
        """Take over entries another (dead) consumer left pending for too long, in every
        shard's outbox."""
        written = 0
        for shard in self._keys.shards:
            written += await self._reclaim_shard(shard)
            if self._stopping.is_set():
                break
        return written

    async def _reclaim_shard(self, shard: ShardKeys) -> int:
        written = 0
        start = "0-0"
        while True:
            reply = await self._redis.xautoclaim(
                shard.outbox,
                LEDGER_GROUP,
                self.consumer,
                self._reclaim_idle_ms,
                start_id=start,
                count=self._batch_size,
            )
            start, messages = reply[0], reply[1]
            if len(reply) > 2 and reply[2]:
                log.warning("ledger: %d outbox entries were deleted while pending", len(reply[2]))
                await self._redis.xack(shard.outbox, LEDGER_GROUP, *reply[2])
            if messages:
                log.info("ledger: re-claimed %d pending entries", len(messages))
                written += await self._persist(messages, shard)
            if start == "0-0" or self._stopping.is_set():
                return written

    async def _housekeeping(self) -> None:
        await trim_outbox(self._redis, self._keys)
        lag = await outbox_lag(self._redis, self._keys)
        metrics.OUTBOX_LAG_ENTRIES.set(lag.entries)
        metrics.OUTBOX_LAG_SECONDS.set(lag.seconds)

    async def _persist(self, messages: list, shard: ShardKeys | None = None) -> int:
        """Persist entries of `shard`'s outbox (with one shard, it may go unsaid)."""
        async with self._writing:
            return await self._persist_batch(messages, shard or self._keys.single())

    async def _persist_batch(self, messages: list, shard: ShardKeys) -> int:
        entries: list[Entry] = []
        dead: list[tuple[str, dict, str]] = []
        for outbox_id, fields in messages:
            if not fields:  # trimmed under us: nothing left to write
                dead.append((outbox_id, {}, "empty entry"))
                continue
            try:
                # A grant born fulfilled is also its `fulfilled` event (entries.py).
                entries.extend(parse_entries(outbox_id, fields))
            except (KeyError, TypeError, ValueError, orjson.JSONDecodeError) as exc:
                dead.append((outbox_id, fields, f"unreadable event: {exc!r}"))

        try:
            written = await self._write(entries, dead) if entries else 0
        except LedgerStopping:
            return 0  # unacknowledged: re-claimed by the next worker
        if dead:
            await self._dead_letter(dead, shard)
        await self._acknowledge(entries, shard)
        return written

    async def _write(self, entries: list[Entry], dead: list[tuple[str, dict, str]]) -> int:
        """Insert the batch, waiting while PostgreSQL is away. Rows PostgreSQL refuses for
        their content go to the dead-letter stream so they never block the rest."""
        try:
            inserted = await self._insert_waiting(entries)
        except CONTENT_ERRORS as exc:
            log.error("ledger: batch refused (%s); writing row by row", exc)
            inserted = set()
            refused = set()
            # Entry by entry: a grant born fulfilled goes with its `fulfilled` event (batch.py
            # writes that event with its grant only), both parsed from one outbox entry. A batch
            # is one shard's entries (_persist_batch), so an outbox id names one entry here:
            # it is unique within its own shard's stream only. Each entry waits out an outage
            # of its own, so PostgreSQL dropping midway does not leave the batch to the reclaim.
            for outbox_id, group in itertools.groupby(entries, lambda e: e.outbox_id):
                one = list(group)
                try:
                    inserted |= await self._insert_waiting(one)
                except CONTENT_ERRORS as row_exc:
                    dead.append(
                        (outbox_id, entry_fields(one[0]), f"refused by postgresql: {row_exc}")
                    )
                    refused.add(outbox_id)
            entries[:] = [e for e in entries if e.outbox_id not in refused]
        await self._check_unwritten(
            [e for e in entries if isinstance(e, GrantEntry)], inserted, dead
        )
        metrics.LEDGER_BATCH_SIZE.observe(len(inserted))
        metrics.LEDGER_PERSISTED.inc(len(inserted))
        return len(inserted)

    async def _insert_waiting(self, entries: list[Entry]) -> set[str]:
        """`_insert`, tried again (0.5 s, doubling up to 5 s) while PostgreSQL is away or fails
        for a reason not the rows' own; a content error is raised for `_write` to sort out.
        Asked to stop meanwhile: LedgerStopping, the entries left pending."""
        backoff = 0.5
        while True:
            try:
                return await self._insert(entries)
            except CONTENT_ERRORS:
                raise
            except (*POSTGRES_AWAY, asyncpg.PostgresError) as exc:
                metrics.LEDGER_RETRIES.inc()
                log.warning(
                    "ledger: postgresql unavailable (%s); retrying batch of %d in %.1f s",
                    exc,
                    len(entries),
                    backoff,
                )
                await self._pause(backoff)
                if self._stopping.is_set():
                    raise LedgerStopping from exc
                backoff = min(backoff * 2, 5.0)

    async def _insert(self, entries: list[Entry]) -> set[str]:
        """One transaction: the grants, their events, the statuses those events imply, the
        report rollups of what was newly written, and the card events (batch.py). Returns the
        ids of the grants newly inserted."""
        async with self._pool.acquire() as conn, conn.transaction():
            return await write_batch(conn, entries, self._tz)

    async def _check_unwritten(
        self, entries: list[GrantEntry], inserted: set[str], dead: list[tuple[str, dict, str]]
    ) -> None:
        """A grant not inserted is either already in the ledger (a re-delivery) or collides with
        another grant for the same channel and request id, which only a Redis data loss can
        cause: that one is kept aside for reconciliation, never silently dropped. One born
        fulfilled is failed, giving back what it took (duplicates.py), before it is set aside."""
        missing = [e for e in entries if e.grant_id not in inserted]
        if not missing:
            return
        existing = {
            r["grant_id"]
            for r in await self._pool.fetch(queries.existing_grants, [e.grant_id for e in missing])
        }
        born_fulfilled = []
        for e in missing:
            if e.grant_id not in existing:
                if e.fulfilled_at_ms is not None:
                    born_fulfilled.append(e)
                log.error(
                    "ledger: grant %s collides with another grant for request %s/%s",
                    e.grant_id,
                    e.event["channel_id"],
                    e.event["request_id"],
                )
                dead.append(
                    (e.outbox_id, entry_fields(e), "duplicate channel request id in ledger")
                )
        await refuse_born_fulfilled(self._pool, self._lifecycle, born_fulfilled)

    async def _dead_letter(self, dead: list[tuple[str, dict, str]], shard: ShardKeys) -> None:
        async with self._redis.pipeline(transaction=False) as pipe:
            for outbox_id, fields, reason in dead:
                pipe.xadd(shard.outbox_dead, {**fields, "outbox_id": outbox_id, "error": reason})
                pipe.xack(shard.outbox, LEDGER_GROUP, outbox_id)
                self._forget_pending(pipe, fields, shard)
                metrics.LEDGER_DEAD_LETTERS.labels(reason.split(":")[0]).inc()
            await pipe.execute()

    def _forget_pending(self, pipe: Any, fields: dict, shard: ShardKeys) -> None:
        """A dead-lettered entry is no longer on its way to the ledger: drop its pending copy."""
        try:
            entry = parse_entry("0-0", fields)
        except (KeyError, TypeError, ValueError, orjson.JSONDecodeError):
            return
        if isinstance(entry, GrantEntry):
            pipe.hdel(shard.pending, entry.grant_id)
            pipe.srem(shard.customer_pending(entry.event["customer_id"]), entry.grant_id)
        elif isinstance(entry, EventEntry):
            pipe.hdel(shard.pending_events, entry.field)
        # A card event has no pending copy: nothing reads it back before the ledger holds it.

    async def _acknowledge(self, entries: list[Entry], shard: ShardKeys) -> None:
        """Acknowledge what the ledger now holds and drop the read-your-writes copies."""
        if not entries:
            return
        grants = [e for e in entries if isinstance(e, GrantEntry)]
        events = [e for e in entries if isinstance(e, EventEntry)]
        async with self._redis.pipeline(transaction=False) as pipe:
            # One shard's keys: one slot, so one node's pipeline on a cluster too.
            pipe.xack(shard.outbox, LEDGER_GROUP, *(e.outbox_id for e in entries))
            if grants:
                pipe.hdel(shard.pending, *(e.grant_id for e in grants))
            for e in grants:
                pipe.srem(shard.customer_pending(e.event["customer_id"]), e.grant_id)
            if events:
                pipe.hdel(shard.pending_events, *(e.field for e in events))
            await pipe.execute()

    async def _pause(self, seconds: float) -> None:
        try:
            await asyncio.wait_for(self._stopping.wait(), seconds)
        except TimeoutError:
            pass

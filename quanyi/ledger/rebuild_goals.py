"""Spending goals for `quanyi rebuild-redis` (quanyi/ledger/rebuild.py): what
lua/record_events.lua and lua/claim.lua keep in Redis, restored from the ledger's card_events
and grants, as those scripts would have left it.

Per campaign with a goal:
- in each customer's progress hash (Keys.progress), each goal's field
  `<reward>|<customer>|<period>` -> "<count>:<amount>[:<grant id> <day>]": the events counted
  toward it less the reversals that took one back, and the grant of the period (without it, a
  goal could grant twice in one period): an automatic grant no reversal clawed back, or the
  claim of a reward claimed once its goal is reached;
- in the campaign's counted events (Keys.counted_events, bucket of the event's own id), each
  event's record `<channel>|<event id>` (so that a repeat is still a duplicate and a reversal
  still finds what its original counted): a transaction's
  "<customer>|<amount>|<reward>@<period>,...", "x" in front once reversed (or cancelled by a
  reversal that came first: then nothing after the second "|"), and a reversal's
  "R<original id>".
Both kept until the campaign's retention ends, as the scripts keep them. And, shared by all
campaigns, the reversals still waiting for their original (Keys.held_reversals, with their
count).

Progress fields and records are only ever added or overwritten by the live path, never
removed, so they are written over whatever Redis holds without emptying the 65,536 progress
hashes and 4,096 event hashes of every campaign first. Held reversals are removed once their
original comes or their wait is over: their hashes are replaced whole.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from typing import Any

import asyncpg
from redis.asyncio import Redis
from redis.typing import EncodableT, FieldT

from quanyi.core.clock import Clock, LocalCalendar, LocalPeriods
from quanyi.core.settings import Settings
from quanyi.inventory.hot_campaigns import HotCampaign
from quanyi.issuance.claims import DAY_S
from quanyi.stores.db import load_queries
from quanyi.stores.keys import (
    EVENT_BUCKETS,
    PROGRESS_BUCKETS,
    Keys,
    ShardKeys,
    customer_bucket,
    progress_value,
)

queries = load_queries("quanyi.ledger", "recovery.sql")

PIPELINE_CHUNK = 2000


class _Writes:
    """HSETs sent in pipelines of PIPELINE_CHUNK, each key given its expiry once."""

    def __init__(self, redis: Redis, expire_at: int) -> None:
        self._redis = redis
        self._expire_at = expire_at
        self._queued: list[tuple[str, str, str]] = []
        self._expiring: set[str] = set()
        self.written = 0

    async def hset(self, key: str, field: str, value: str) -> None:
        self._queued.append((key, field, value))
        if len(self._queued) >= PIPELINE_CHUNK:
            await self.flush()

    async def flush(self) -> None:
        if not self._queued:
            return
        async with self._redis.pipeline(transaction=False) as pipe:
            for key, field, value in self._queued:
                pipe.hset(key, field, value)
                if key not in self._expiring:
                    # As the scripts: a campaign's keys all go when its retention ends.
                    pipe.expireat(key, self._expire_at)
                    self._expiring.add(key)
            await pipe.execute()
        self.written += len(self._queued)
        self._queued = []


class GoalRebuild:
    def __init__(
        self, pool: asyncpg.Pool, redis: Redis, keys: Keys, settings: Settings, clock: Clock
    ) -> None:
        self._pool = pool
        self._redis = redis
        self._keys = keys
        self._clock = clock
        self._zone = settings.zone
        self._hold_s = settings.event_hold_days * DAY_S
        self._cancelled: list[asyncpg.Record] | None = None

    async def total(self) -> int:
        """Work units for a progress bar: one per card event and campaign it counted in."""
        count: int = await self._pool.fetchval(queries.goal_record_count)
        return count

    async def restore(
        self, campaign: HotCampaign, keep_until: int, advance: Callable[[int], Any]
    ) -> tuple[int, int]:
        """(goal progress fields, event records) written for one campaign, its keys kept until
        `keep_until`."""
        if not any(r.goal for r in campaign.rewards):
            return 0, 0
        progress = _Writes(self._redis, keep_until)
        await self._progress(campaign, progress)
        records = _Writes(self._redis, keep_until)
        await self._records(campaign, records, advance)
        await self._cancelled_records(campaign, records)
        await records.flush()
        return progress.written, records.written

    def _progress_key(self, campaign_id: str, customer_id: str) -> str:
        return self._keys.progress(campaign_id, customer_bucket(customer_id, PROGRESS_BUCKETS))

    def _events_key(self, campaign_id: str, event_id: str) -> str:
        return self._keys.counted_events(campaign_id, customer_bucket(event_id, EVENT_BUCKETS))

    async def _grants_of_periods(self, campaign: HotCampaign) -> dict[str, str]:
        """Progress field -> "<grant id> <day>": the grant each goal gave in its period."""
        given: dict[str, str] = {}
        calendar = LocalCalendar(self._zone)
        # Automatic: granted by the event that reached the goal, in that event's period, on the
        # day it was received; a claw back took the marker away (the goal may grant again).
        for g in await self._pool.fetch(queries.goal_grants_of_campaign, campaign.id):
            day, _ = calendar.day(g["granted_at"].timestamp())
            given[f"{g['reward_id']}|{g['customer_id']}|{g['period']}"] = f"{g['grant_id']} {day}"
        # Claimed: in the period and on the day of the claim (claim.lua), whatever the grant
        # became since (a revoke does not make the period's goal claimable again).
        claimed = {r.id: r.goal for r in campaign.rewards if r.goal and r.grant == "claim"}
        if claimed:
            periods = LocalPeriods(self._zone)
            for g in await self._pool.fetch(queries.claims_of_rewards, campaign.id, list(claimed)):
                at = g["granted_at"].timestamp()
                period, _ = periods.period(claimed[g["reward_id"]].window, at)
                day, _ = calendar.day(at)
                given[f"{g['reward_id']}|{g['customer_id']}|{period}"] = f"{g['grant_id']} {day}"
        return given

    async def _progress(self, campaign: HotCampaign, writes: _Writes) -> None:
        given = await self._grants_of_periods(campaign)
        async with self._pool.acquire() as conn, conn.transaction():
            async for p in conn.cursor(queries.goal_progress_of_campaign, campaign.id):
                field = f"{p['reward_id']}|{p['customer_id']}|{p['period']}"
                value = progress_value(p["count"], p["amount"], given.pop(field, None))
                await writes.hset(self._progress_key(campaign.id, p["customer_id"]), field, value)
        # A claim of a goal with neither a count nor an amount needs no event counted.
        for field, grant in given.items():
            customer = field.split("|")[1]
            key = self._progress_key(campaign.id, customer)
            await writes.hset(key, field, progress_value(0, 0, grant))
        await writes.flush()

    async def _records(
        self, campaign: HotCampaign, writes: _Writes, advance: Callable[[int], Any]
    ) -> None:
        done = 0
        async with self._pool.acquire() as conn, conn.transaction():
            async for r in conn.cursor(queries.goal_records_of_campaign, campaign.id):
                key = self._events_key(campaign.id, r["event_id"])
                await writes.hset(key, r["field"], r["record"])
                done += 1
                if done == PIPELINE_CHUNK:
                    advance(done)
                    done = 0
        advance(done)

    async def _cancelled_records(self, campaign: HotCampaign, writes: _Writes) -> None:
        """A transaction whose reversal came first counted for nothing, and was recorded so
        (with its reversal) in every campaign with a goal it would have counted for. The
        ledger names none (`counted` is empty): they are found again from the definitions."""
        if self._cancelled is None:
            self._cancelled = await self._pool.fetch(queries.cancelled_card_events)
        goals = [r.goal for r in campaign.rewards if r.goal]
        for e in self._cancelled:
            at_ms = round(e["occurred_at"].timestamp() * 1000)
            if not campaign.starts_ms <= at_ms < campaign.ends_ms:
                continue
            if not any(g.qualifies(e["amount"], e["mcc"]) for g in goals):
                continue
            channel, event_id, reversal_id = e["channel_id"], e["event_id"], e["reversal_id"]
            await writes.hset(
                self._events_key(campaign.id, event_id),
                f"{channel}|{event_id}",
                f"x{e['customer_id']}|{e['amount']}|",
            )
            await writes.hset(
                self._events_key(campaign.id, reversal_id),
                f"{channel}|{reversal_id}",
                f"R{event_id}",
            )

    async def _held_in(
        self,
        shard: ShardKeys,
        content: dict[str, dict[FieldT, EncodableT]],
        expiry: dict[str, int],
        held: int,
    ) -> None:
        """The held-reversal hashes of one shard (`content` and `expiry` by bucket number) and
        their count, replaced."""
        for start in range(0, EVENT_BUCKETS, PIPELINE_CHUNK):
            async with self._redis.pipeline(transaction=True) as pipe:
                for b in range(start, min(start + PIPELINE_CHUNK, EVENT_BUCKETS)):
                    key = shard.held_reversals(b)
                    pipe.delete(key)
                    if str(b) in content:
                        pipe.hset(key, mapping=content[str(b)])
                        pipe.expireat(key, expiry[str(b)])
                await pipe.execute()
        if expiry:
            # As the scripts leave it: "0" once every hold is gone, until the latest one ends.
            await self._redis.set(shard.held_reversals_count, held, exat=max(expiry.values()))
        else:
            await self._redis.delete(shard.held_reversals_count)

    async def held(self) -> int:
        """Reversals still waiting for their original (held, not cancelled by it since, their
        wait not over), restored with the count the scripts read. A hash and the count are
        kept until the latest hold written to them ends (record_events.lua moves their expiry
        with every hold): a hold whose wait is over is gone, as the scripts sweep it."""
        now = int(self._clock())
        content: dict[str, dict[FieldT, EncodableT]] = defaultdict(dict)
        expiry: dict[str, int] = {}
        seen: set[tuple[str, str]] = set()
        async with self._pool.acquire() as conn, conn.transaction():
            async for h in conn.cursor(queries.held_card_events, now, self._hold_s):
                key = str(customer_bucket(h["reversal_of"], EVENT_BUCKETS))
                until = h["held_at"] + self._hold_s
                expiry[key] = max(expiry.get(key, 0), until)
                original = (h["channel_id"], h["reversal_of"])
                if original in seen:
                    continue  # the latest hold of an original replaced the earlier ones
                seen.add(original)
                if h["waiting"]:
                    reversal_id = h["event_id"]
                    own_bucket = customer_bucket(reversal_id, EVENT_BUCKETS)
                    content[key][f"{h['channel_id']}|{h['reversal_of']}"] = (
                        f"{reversal_id}|{h['customer_id']}|{h['amount']}|{own_bucket}"
                        f"|{h['held_at']}"
                    )
        held = sum(len(v) for v in content.values())
        # With several shards a reversal is held in each shard where its original may count
        # (quanyi/issuance/events.py): restored in every shard, where it waits and ends alike.
        for shard in self._keys.shards:
            await self._held_in(shard, content, expiry, held)
        return held

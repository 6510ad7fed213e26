"""`quanyi rebuild-redis`: restore what the hot path keeps in Redis from the PostgreSQL ledger,
after Redis lost its data (no persistence, a failover without replication, a flush).

Restored, per campaign: the definition, the stock and budget counters, per-customer totals,
today's daily counters, the final states of grants (so each gives stock back once), the
idempotency entries (channel, request id → grant, as claim.lua writes them), with the expiry
claim.lua gives them, and goal progress with the card events counted (rebuild_goals.py); and
the reversals still waiting for their original. Counters are set to exactly what the ledger's live grants add up to, so
a second run changes nothing. A campaign split into stock parts (inventory/stock_parts.py) is
restored part by part: each customer's counters, request ids and grant states in the
customer's part, and the parts' stocks adding up to the campaign's (rebuild_parts.py).

What guards the claims is the store-ready marker (inventory/readiness.py): a flush took it
away, so claim.lua and transition.lua decide nothing while this runs; it is removed first
(should it still be there) and set again as the very last step, once everything else is back.
Definitions are published first only because the counters are built from them: with no
marker, no claim acts on them before the idempotency entries and counters are restored.
An interrupted run leaves the marker unset: claims wait (503) until a run completes.

It must not run while claims flow: a claim decided between reading the ledger and writing a
counter would be overwritten. It refuses unless the ledger holds every outbox entry and the
newest one is old enough (or it is forced).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from typing import Any

import asyncpg
from redis.asyncio import Redis
from redis.typing import EncodableT, FieldT

from quanyi.campaigns.service import CampaignService
from quanyi.core.clock import Clock, local_day
from quanyi.core.settings import Settings
from quanyi.inventory import channel_quota
from quanyi.inventory.hot_campaigns import HotCampaign, HotCampaigns
from quanyi.inventory.readiness import mark_store_ready, store_ready, unmark_store_ready
from quanyi.issuance.claims import DAY_S, Claim
from quanyi.ledger.rebuild_goals import PIPELINE_CHUNK, GoalRebuild
from quanyi.ledger.rebuild_parts import restore_part_counters
from quanyi.stores.db import load_queries
from quanyi.stores.keys import Keys, customer_bucket, part_of
from quanyi.stores.outbox import LEDGER_GROUP, ensure_group, outbox_lag, stream_id_key
from quanyi.stores.shards import queue_route

queries = load_queries("quanyi.ledger", "recovery.sql")

FULFIL_GROUP = "fulfil"  # vendors.fulfil.FULFIL_GROUP, without importing the worker
DEFAULT_QUIET_S = 10.0


async def live_channel_totals(pool: asyncpg.Pool) -> dict[str, dict[str, dict[str, int]]]:
    """campaign -> reward -> channel -> live grants, as the channel quota counters count them."""
    found: dict[str, dict[str, dict[str, int]]] = defaultdict(lambda: defaultdict(dict))
    for row in await pool.fetch(queries.live_channel_totals):
        found[row["campaign_id"]][row["reward_id"]][row["channel_id"]] = row["granted"]
    return found


class ClaimsFlowing(RuntimeError):
    """Claims or transitions are still being decided: a rebuild now would lose some."""


@dataclass
class Restored:
    campaigns: int = 0
    counters: int = 0
    customer_totals: int = 0
    daily_counters: int = 0
    grant_states: int = 0
    idempotency_entries: int = 0
    goal_progress_fields: int = 0
    card_event_records: int = 0
    held_reversals: int = 0

    def items(self) -> list[tuple[str, int]]:
        return [(f.name.replace("_", " "), getattr(self, f.name)) for f in fields(self)]


async def refuse_while_flowing(redis: Redis, keys: Keys, now: float, quiet_s: float) -> None:
    """Raises ClaimsFlowing unless the ledger holds the whole outbox and it has been quiet."""
    lag = await outbox_lag(redis, keys, LEDGER_GROUP)
    if lag.entries:
        raise ClaimsFlowing(f"the outbox holds {lag.entries} entries the ledger has not stored yet")
    for shard in keys.shards:
        await _refuse_if_recent(redis, shard.outbox, now, quiet_s)


async def _refuse_if_recent(redis: Redis, outbox: str, now: float, quiet_s: float) -> None:
    newest = await redis.xrevrange(outbox, "+", "-", count=1)
    if newest:
        age = now - stream_id_key(str(newest[0][0]))[0] / 1000
        if age < quiet_s:
            raise ClaimsFlowing(
                f"the newest outbox entry is {age:.1f} s old (less than {quiet_s:.0f} s):"
                " claims are still flowing"
            )


async def open_store_at_startup(
    redis: Redis, pool: asyncpg.Pool, keys: Keys, clock: Clock, log: logging.Logger
) -> bool:
    """At API start-up: whether Redis may decide claims. With its marker there, yes. Without it
    and a ledger holding no grant, Redis has nothing to lose (a fresh install): the marker is
    set. Without it and a ledger holding grants, Redis lost its data: claims and transitions
    answer 503 until `quanyi rebuild-redis` ran, and this is logged as an error."""
    if await store_ready(redis, keys):
        return True
    if not await pool.fetchval(queries.any_grant):
        await mark_store_ready(redis, keys, "fresh: the ledger holds no grant", clock())
        return True
    if await _holds_newest_grant(redis, pool, keys):
        await mark_store_ready(
            redis, keys, "kept: redis still holds the ledger's newest grant", clock()
        )
        return True
    log.error(
        "redis lost its data (its store-ready marker is missing while the ledger holds grants):"
        " claims and grant transitions answer 503 until `quanyi rebuild-redis` restores it"
    )
    return False


async def _holds_newest_grant(redis: Redis, pool: asyncpg.Pool, keys: Keys) -> bool:
    """A Redis that was never emptied (a deployment from before the marker existed) still has
    the newest grant's idempotency entry: only claim.lua, which the marker gates, and a rebuild,
    which sets the marker, write one."""
    newest = await pool.fetchrow(queries.newest_grant)
    if newest is None:  # goal grants alone: nothing tells a kept Redis from an emptied one
        return False
    # A split campaign's entry is in the shard of the customer's part (issuance/claims.py).
    shard = keys.of(part_of(newest["campaign_id"], newest["stock_parts"], newest["customer_id"]))
    bucket, field = shard.idempotency(newest["channel_id"], newest["request_id"])
    held = await redis.hget(bucket, field)
    if isinstance(held, bytes):
        held = held.decode()
    return held is not None and held[:26] == newest["grant_id"]


class Rebuild:
    def __init__(
        self, pool: asyncpg.Pool, redis: Redis, keys: Keys, settings: Settings, clock: Clock
    ) -> None:
        self._pool = pool
        self._redis = redis
        self._keys = keys
        self._settings = settings
        self._clock = clock
        self._retention_s = settings.idempotency_retention_days * DAY_S
        self._goals = GoalRebuild(pool, redis, keys, settings, clock)

    async def total(self) -> int:
        """Work units for a progress bar: one per campaign, one per grant and one per card
        event and campaign it counted in."""
        campaigns = await self._pool.fetch(queries.campaigns)
        grants: int = await self._pool.fetchval(queries.grant_count)
        return len(campaigns) + grants + await self._goals.total()

    async def run(self, advance: Callable[[int], Any] = lambda _n: None) -> Restored:
        restored = Restored()
        # Nothing is decided against a half-restored store, even when forced while claims flow.
        await unmark_store_ready(self._redis, self._keys)
        for group in (LEDGER_GROUP, FULFIL_GROUP):
            await ensure_group(self._redis, self._keys, group)
        await CampaignService(self._pool, self._redis, self._keys).publish_all()
        stock = HotCampaigns(self._redis, self._keys)
        totals: dict[str, dict[str, asyncpg.Record]] = defaultdict(dict)
        for row in await self._pool.fetch(queries.live_totals):
            totals[row["campaign_id"]][row["reward_id"]] = row
        by_channel = await live_channel_totals(self._pool)
        for row in await self._pool.fetch(queries.campaigns):
            campaign = await stock.definition(row["id"])
            if campaign is None:  # publish_all just wrote it
                raise RuntimeError(f"campaign {row['id']} was not published")
            restored.campaigns += 1
            restored.counters += await self._counters(
                campaign, totals[campaign.id], by_channel[campaign.id]
            )
            keep_until = campaign.ends_ms // 1000 + self._retention_s
            if keep_until > self._clock():
                restored.customer_totals += await self._customer_totals(campaign, keep_until)
                restored.daily_counters += await self._daily(campaign)
                restored.grant_states += await self._grant_states(campaign, keep_until)
                restored.idempotency_entries += await self._idempotency(
                    campaign, keep_until, row["rewards"] == 1, advance
                )
                goal_fields, records = await self._goals.restore(campaign, keep_until, advance)
                restored.goal_progress_fields += goal_fields
                restored.card_event_records += records
            advance(1)
        restored.held_reversals = await self._goals.held()
        # The last step: claims and transitions are decided again from here on.
        await mark_store_ready(
            self._redis,
            self._keys,
            "rebuilt from the ledger by quanyi rebuild-redis",
            self._clock(),
        )
        return restored

    async def _counters(
        self,
        campaign: HotCampaign,
        totals: dict[str, asyncpg.Record],
        by_channel: dict[str, dict[str, int]],
    ) -> int:
        if campaign.parts > 1:  # no channel quotas there (campaigns/model.py)
            return await restore_part_counters(self._pool, self._redis, self._keys, campaign)
        mapping: dict[FieldT, EncodableT] = {
            f"r:{r.id}:granted": totals[r.id]["granted"] if r.id in totals else 0
            for r in campaign.rewards
        }
        mapping["spent"] = sum(t["spent"] for t in totals.values())
        for r in campaign.rewards:
            if r.channel_quota is not None:  # only those count grants per channel
                mapping.update(
                    channel_quota.counter_fields(
                        r.id, r.channel_quota, campaign.channels, by_channel.get(r.id, {})
                    )
                )
        await self._redis.hset(self._keys.campaign(campaign.id), mapping=mapping)
        return len(mapping)

    async def _replace_buckets(
        self,
        groups: list[list[str]],
        content: dict[str, dict[FieldT, EncodableT]],
        expire_at: int,
    ) -> int:
        """Each key ends up holding exactly its content (or nothing), expiring at `expire_at`.
        A group's keys share a slot (one part's of a campaign): a transaction is within one."""
        written = 0
        for keys in groups:
            for i in range(0, len(keys), PIPELINE_CHUNK):
                async with self._redis.pipeline(transaction=True) as pipe:
                    for key in keys[i : i + PIPELINE_CHUNK]:
                        pipe.delete(key)
                        if content.get(key):
                            pipe.hset(key, mapping=content[key])
                            pipe.expireat(key, expire_at)
                            written += len(content[key])
                    await pipe.execute()
        return written

    async def _customer_totals(self, campaign: HotCampaign, keep_until: int) -> int:
        content: dict[str, dict[FieldT, EncodableT]] = defaultdict(dict)
        for r in await self._pool.fetch(queries.live_customer_counts, campaign.id, None, None):
            bucket = customer_bucket(r["customer_id"], campaign.buckets)
            key = self._keys.customer_totals(campaign.part_of(r["customer_id"]), bucket)
            content[key][f"{r['reward_id']}|{r['customer_id']}"] = r["granted"]
        groups = [
            [self._keys.customer_totals(pid, b) for b in range(campaign.buckets)]
            for pid in campaign.part_ids()
        ]
        return await self._replace_buckets(groups, content, keep_until)

    async def _daily(self, campaign: HotCampaign) -> int:
        """Today's counters, only those claim.lua keeps: a reward's with a daily stock, a
        customer's with a daily limit."""
        daily_stock = {r.id for r in campaign.rewards if r.daily_stock}
        daily_limit = {r.id for r in campaign.rewards if r.daily_limit}
        if not daily_stock and not daily_limit:
            return 0
        day, day_ends = local_day(self._clock(), self._settings.zone)
        start = datetime.strptime(day, "%Y%m%d").replace(tzinfo=self._settings.zone)
        end = datetime.fromtimestamp(day_ends, UTC)
        rows = await self._pool.fetch(queries.live_customer_counts, campaign.id, start, end)
        content: dict[str, dict[FieldT, EncodableT]] = defaultdict(dict)
        # Each counter in the part of the customer whose claim counted it (one part unsplit).
        for r in rows:
            part = campaign.part_of(r["customer_id"])
            if r["reward_id"] in daily_stock:
                held = content[self._keys.reward_daily(part, day)]
                held[r["reward_id"]] = int(held.get(r["reward_id"], 0)) + r["granted"]
            if r["reward_id"] in daily_limit:
                bucket = customer_bucket(r["customer_id"], campaign.buckets)
                key = self._keys.customer_daily(part, day, bucket)
                content[key][f"{r['reward_id']}|{r['customer_id']}"] = r["granted"]
        groups: list[list[str]] = []
        for pid in campaign.part_ids():
            keys = [self._keys.reward_daily(pid, day)] if daily_stock else []
            if daily_limit:
                keys += [self._keys.customer_daily(pid, day, b) for b in range(campaign.buckets)]
            groups.append(keys)
        # As claim.lua: a day's counters go a day after the day ends.
        return await self._replace_buckets(groups, content, day_ends + DAY_S)

    async def _grant_states(self, campaign: HotCampaign, keep_until: int) -> int:
        # In the part of the grant's customer: where transition.lua looks for it.
        content: dict[str, dict[FieldT, EncodableT]] = defaultdict(dict)
        for r in await self._pool.fetch(queries.final_states, campaign.id):
            key = self._keys.grant_states(campaign.part_of(r["customer_id"]))
            content[key][r["grant_id"]] = r["status"]
        groups = [[self._keys.grant_states(pid)] for pid in campaign.part_ids()]
        return await self._replace_buckets(groups, content, keep_until)

    async def _idempotency(
        self,
        campaign: HotCampaign,
        keep_until: int,
        single_reward: bool,
        advance: Callable[[int], Any],
    ) -> int:
        written = 0
        async with self._pool.acquire() as conn, conn.transaction():
            batch: list[asyncpg.Record] = []
            async for grant in conn.cursor(queries.requests_of_campaign, campaign.id):
                batch.append(grant)
                if len(batch) >= PIPELINE_CHUNK:
                    written += await self._write_requests(
                        campaign, batch, keep_until, single_reward
                    )
                    advance(len(batch))
                    batch = []
            if batch:
                written += await self._write_requests(campaign, batch, keep_until, single_reward)
                advance(len(batch))
        return written

    async def _write_requests(
        self,
        campaign: HotCampaign,
        grants: list[asyncpg.Record],
        keep_until: int,
        single_reward: bool,
    ) -> int:
        buckets: set[str] = set()
        async with self._redis.pipeline(transaction=False) as pipe:
            for g in grants:
                # A split campaign's request ids are in the shard of the customer's part.
                shard = self._keys.of(campaign.part_of(g["customer_id"]))
                if self._keys.sharded:  # the route of the request id to this shard (shards.py)
                    queue_route(
                        pipe, self._keys, g["channel_id"], g["request_id"], shard.shard, keep_until
                    )
                key, field = shard.idempotency(g["channel_id"], g["request_id"])
                fingerprint = _request_fingerprint(campaign.id, g, single_reward)
                pipe.hset(key, field, g["grant_id"] + fingerprint)
                buckets.add(key)
            for key in buckets:
                # As claim.lua: a bucket is kept until the latest retention of its campaigns.
                pipe.expireat(key, keep_until, nx=True)
                pipe.expireat(key, keep_until, gt=True)
            await pipe.execute()
        return len(grants)


def _request_fingerprint(campaign_id: str, grant: asyncpg.Record, single_reward: bool) -> str:
    """The body fingerprint claim.lua stored for this grant's request. A claim may leave
    reward_id out when its campaign has one reward, and that is the usual body of such a claim:
    a retry that named the reward explicitly gets idempotency_conflict (never a second grant)."""
    reward_id = None if single_reward else grant["reward_id"]
    return Claim(
        grant["channel_id"], grant["request_id"], campaign_id, grant["customer_id"], reward_id
    ).fingerprint()

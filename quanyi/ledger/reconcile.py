"""`quanyi reconcile`: do Redis, the outbox, the ledger and the vendors' outcomes agree?

Redis is where claims are decided, the ledger is what the bank keeps; the outbox carries what
Redis decided and the ledger has not stored yet. So Redis must equal the ledger plus the
outbox, for every counter claim.lua and transition.lua keep:

- stock and budget counters per reward: the ledger's live grants (not revoked; not failed
  where the campaign gives stock back on failure) plus the grants and transitions still on
  their way to it;
- per-customer totals, the same per customer;
- idempotency entries: every grant of a campaign within its retention made under a channel's
  request id (not a goal's: those grant once a period by their progress) is found under its
  channel and request id, pointing at that grant;
- final states (redeemed, expired, failed, revoked) that keep a grant from giving stock back
  twice;
- the store-ready marker, without which Redis decides no claim (it lost its data);
- of a campaign split into stock parts (inventory/stock_parts.py): the counters summed over
  its parts, each customer's in the customer's part, and the parts' stocks (and budgets)
  adding up to the campaign's. Moves between parts a crash left half done are completed
  first, the one thing it writes: it only gives a part stock that is in no part's;
- vendor outcomes: each grant's status is its latest event, and a fulfilled grant has a
  fulfilment event. Entries the ledger refused (its dead-letter stream) are shown, not counted
  as drift: what they did to the counters is.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import asyncpg
import orjson
from redis.asyncio import Redis

from quanyi.core.clock import Clock
from quanyi.core.settings import Settings
from quanyi.inventory.channel_quota import GOAL_CHANNEL, granted_fields
from quanyi.inventory.hot_campaigns import HotCampaign, HotCampaigns
from quanyi.inventory.readiness import store_ready
from quanyi.inventory.stock_parts import MOVE_FIELD, StockParts, read_parts
from quanyi.issuance.claims import DAY_S
from quanyi.ledger import queries as ledger_queries
from quanyi.ledger.rebuild import FULFIL_GROUP, PIPELINE_CHUNK, live_channel_totals, queries
from quanyi.stores.keys import Keys
from quanyi.stores.outbox import LEDGER_GROUP, outbox_lag
from quanyi.stores.redis import as_text
from quanyi.stores.scripts import Scripts

# (campaign, reward, customer) -> grants still on their way to the ledger, net of the
# transitions also on their way (a revoke not stored yet gives one back).
Delta = dict[tuple[str, str, str], int]


@dataclass(frozen=True)
class Finding:
    check: str
    subject: str
    redis: int | str
    ledger: int | str
    ok: bool


class Reconcile:
    def __init__(
        self, pool: asyncpg.Pool, redis: Redis, keys: Keys, settings: Settings, clock: Clock
    ) -> None:
        self._pool = pool
        self._redis = redis
        self._keys = keys
        self._clock = clock
        self._retention_s = settings.idempotency_retention_days * DAY_S
        self._stock = HotCampaigns(redis, keys)
        self._parts = StockParts(redis, keys, Scripts(redis))

    async def run(self) -> list[Finding]:
        findings = [await self._marker(), *await self._outbox()]
        campaigns: dict[str, HotCampaign] = {}
        single: dict[str, bool] = {}
        for row in await self._pool.fetch(queries.campaigns):
            campaign = await self._stock.definition(row["id"])
            if campaign is None:
                findings.append(Finding("definition", row["id"], "missing", "present", False))
                continue
            campaigns[row["id"]] = campaign
            single[row["id"]] = row["rewards"] == 1
            if campaign.parts > 1:
                findings += await self._split(campaign)
        delta, spent_delta, channel_delta = await self._in_flight(campaigns)
        findings += await self._counters(campaigns, delta, spent_delta)
        findings += await self._channel_counters(campaigns, channel_delta)
        now = self._clock()
        for campaign in campaigns.values():
            if campaign.ends_ms // 1000 + self._retention_s <= now:
                continue  # its Redis entries are meant to have expired
            findings += await self._customers(campaign, delta)
            findings += await self._requests(campaign)
            findings += await self._states(campaign)
        findings += await self._outcomes()
        return findings

    async def _marker(self) -> Finding:
        """Without its store-ready marker Redis decides nothing: it lost its data (rebuild)."""
        ready = await store_ready(self._redis, self._keys)
        return Finding(
            "store", "ready marker (claims decided)", "present" if ready else "missing", "-", ready
        )

    async def _outbox(self) -> list[Finding]:
        ledger = await outbox_lag(self._redis, self._keys, LEDGER_GROUP)
        fulfil = await outbox_lag(self._redis, self._keys, FULFIL_GROUP)
        refused = sum([await self._redis.xlen(s.outbox_dead) for s in self._keys.shards])
        return [
            Finding("outbox", "not yet in the ledger (counted below)", ledger.entries, "-", True),
            Finding("outbox", "not yet done by fulfilment", fulfil.entries, "-", True),
            # Kept for inspection, not drift: what they did to the counters is checked below.
            Finding("outbox", "entries the ledger refused (dead letters)", refused, "-", True),
        ]

    async def _split(self, campaign: HotCampaign) -> list[Finding]:
        """A split campaign's moves completed, then its parts' stocks and budgets summed: stock
        still in a move is in no part, so the sums are checked once none is left."""
        completed = await self._parts.complete_moves(campaign.id, campaign.parts)
        findings = [
            Finding("stock parts", f"{campaign.id}: stock moves completed", completed, "-", True)
        ]
        hashes = await read_parts(self._redis, self._keys, campaign.id, campaign.parts)
        open_moves = sum(1 for h in hashes for name in h if name.startswith(MOVE_FIELD))
        findings.append(
            Finding(
                "stock parts", f"{campaign.id}: moves still open", open_moves, 0, open_moves == 0
            )
        )
        for r in campaign.rewards:
            held = sum(int(h.get(f"r:{r.id}:stock") or 0) for h in hashes)
            subject = f"{campaign.id}/{r.id}: stock over the parts"
            findings.append(Finding("stock parts", subject, held, r.stock, held == r.stock))
            # Each part's own invariant: a part that granted past its stock oversold.
            over = sum(
                1
                for h in hashes
                if int(h.get(f"r:{r.id}:granted") or 0) > int(h.get(f"r:{r.id}:stock") or 0)
            )
            subject = f"{campaign.id}/{r.id}: parts granted past their stock"
            findings.append(Finding("stock parts", subject, over, 0, over == 0))
        if campaign.budget is not None:
            held = sum(int(h.get("budget") or 0) for h in hashes)
            subject = f"{campaign.id}: budget over the parts"
            findings.append(
                Finding("stock parts", subject, held, campaign.budget, held == campaign.budget)
            )
        return findings

    async def _in_flight(
        self, campaigns: dict[str, HotCampaign]
    ) -> tuple[Delta, dict[str, int], Delta]:
        """What Redis counts that the ledger has not stored yet: grants in the pending hash and
        transitions in the pending events hash, less those the ledger already holds; the last
        figures per (campaign, reward, channel), for channel quotas."""
        delta: Delta = defaultdict(int)
        by_channel: Delta = defaultdict(int)
        spent: dict[str, int] = defaultdict(int)
        grants: dict[str, Any] = {
            as_text(k): orjson.loads(v)
            for shard in self._keys.shards
            for k, v in (await self._redis.hgetall(shard.pending)).items()
        }
        stored = {
            r["grant_id"]
            for r in await self._pool.fetch(ledger_queries.existing_grants, list(grants))
        }
        for grant_id, g in grants.items():
            if grant_id not in stored:
                delta[(g["campaign_id"], g["reward_id"], g["customer_id"])] += 1
                by_channel[(g["campaign_id"], g["reward_id"], g["channel_id"])] += 1
                spent[g["campaign_id"]] += int(g["unit_cost"])
        events = [
            (outbox_id, orjson.loads(body))
            for shard in self._keys.shards
            for outbox_id, _, body in (
                as_text(raw).partition(" ")
                for raw in (await self._redis.hgetall(shard.pending_events)).values()
            )
        ]
        # By (grant id, outbox id): an outbox id is unique in its own shard's stream only.
        stored_events = (
            {
                (r["grant_id"], r["outbox_id"])
                for r in await self._pool.fetch(
                    queries.stored_events,
                    [e["grant_id"] for _, e in events],
                    [outbox_id for outbox_id, _ in events],
                )
            }
            if events
            else set()
        )
        customers = await self._customers_of([e["grant_id"] for _, e in events], grants)
        channels = await self._channels_of([e["grant_id"] for _, e in events], grants)
        for outbox_id, e in events:
            campaign = campaigns.get(e.get("campaign_id", ""))
            if (e["grant_id"], outbox_id) in stored_events or campaign is None:
                continue
            returns = e["event"] == "revoked" or (
                e["event"] in ("failed", "redriven") and campaign.return_stock_on_failure
            )
            customer = customers.get(e["grant_id"])
            if not returns or customer is None:
                continue
            sign = 1 if e["event"] == "redriven" else -1
            reward = campaign.reward(e["reward_id"])
            delta[(campaign.id, e["reward_id"], customer)] += sign
            by_channel[(campaign.id, e["reward_id"], channels.get(e["grant_id"], "goal"))] += sign
            spent[campaign.id] += sign * (reward.cost if reward else 0)
        return delta, spent, by_channel

    async def _customers_of(self, grant_ids: list[str], pending: dict[str, Any]) -> dict[str, str]:
        found = {g: pending[g]["customer_id"] for g in grant_ids if g in pending}
        missing = [g for g in grant_ids if g not in found]
        if missing:
            for r in await self._pool.fetch(
                queries.customers_of_grants,
                missing,
            ):
                found[r["grant_id"]] = r["customer_id"]
        return found

    async def _channels_of(self, grant_ids: list[str], pending: dict[str, Any]) -> dict[str, str]:
        found = {g: pending[g]["channel_id"] for g in grant_ids if g in pending}
        missing = [g for g in grant_ids if g not in found]
        if missing:
            for r in await self._pool.fetch(queries.channels_of_grants, missing):
                found[r["grant_id"]] = r["channel_id"]
        return found

    async def _channel_counters(
        self, campaigns: dict[str, HotCampaign], delta: Delta
    ) -> list[Finding]:
        """Channel quotas: what each channel granted (qg:<channel>) and what the channels not
        named took of the rest (qfg), as the ledger plus the outbox count them."""
        ledger = await live_channel_totals(self._pool)
        findings = []
        for campaign in campaigns.values():
            for r in campaign.rewards:
                if r.channel_quota is None:
                    continue
                want = dict(ledger[campaign.id][r.id])
                for (cid, rid, channel), n in delta.items():
                    if (cid, rid) == (campaign.id, r.id):
                        want[channel] = want.get(channel, 0) + n
                names = sorted({*campaign.channels, GOAL_CHANNEL, *want})
                have = await self._redis.hmget(
                    self._keys.campaign(campaign.id),
                    [*granted_fields(r.id, names), f"r:{r.id}:qfg"],
                )
                for channel, held in zip(names, have, strict=False):
                    n, w = int(held or 0), want.get(channel, 0)
                    subject = f"{campaign.id}/{r.id}/{channel}"
                    findings.append(Finding("channel granted", subject, n, w, n == w))
                shared = sum(n for ch, n in want.items() if ch not in r.channel_quota)
                n = int(have[-1] or 0)
                subject = f"{campaign.id}/{r.id}: channels not named"
                findings.append(Finding("channel granted", subject, n, shared, n == shared))
        return findings

    async def _counters(
        self, campaigns: dict[str, HotCampaign], delta: Delta, spent_delta: dict[str, int]
    ) -> list[Finding]:
        ledger: dict[tuple[str, str], int] = defaultdict(int)
        spent: dict[str, int] = defaultdict(int)
        for row in await self._pool.fetch(queries.live_totals):
            ledger[(row["campaign_id"], row["reward_id"])] = row["granted"]
            spent[row["campaign_id"]] += row["spent"]
        for (cid, rid, _customer), n in delta.items():
            ledger[(cid, rid)] += n
        findings = []
        for campaign in campaigns.values():
            ids = [r.id for r in campaign.rewards]
            live = await self._stock.counters(campaign.id, ids, parts=campaign.parts)
            for rid in ids:
                want = ledger[(campaign.id, rid)]
                have = live.granted[rid]
                findings.append(
                    Finding("granted", f"{campaign.id}/{rid}", have, want, have == want)
                )
            want = spent[campaign.id] + spent_delta.get(campaign.id, 0)
            findings.append(Finding("spent", campaign.id, live.spent, want, live.spent == want))
        return findings

    async def _customers(self, campaign: HotCampaign, delta: Delta) -> list[Finding]:
        # By (part, field): a customer's total counts only in the customer's part, where
        # claim.lua reads it (one part, the campaign's own id, unless split).
        want: dict[tuple[str, str], int] = defaultdict(int)
        for r in await self._pool.fetch(queries.live_customer_counts, campaign.id, None, None):
            part = campaign.part_of(r["customer_id"])
            want[(part, f"{r['reward_id']}|{r['customer_id']}")] = r["granted"]
        for (cid, rid, customer), n in delta.items():
            if cid == campaign.id:
                want[(campaign.part_of(customer), f"{rid}|{customer}")] += n
        have: dict[tuple[str, str], int] = {}
        buckets = [(pid, b) for pid in campaign.part_ids() for b in range(campaign.buckets)]
        for first in range(0, len(buckets), PIPELINE_CHUNK):
            chunk = buckets[first : first + PIPELINE_CHUNK]
            async with self._redis.pipeline(transaction=False) as pipe:
                for pid, b in chunk:
                    pipe.hgetall(self._keys.customer_totals(pid, b))
                for (pid, _b), held in zip(chunk, await pipe.execute(), strict=True):
                    have.update({(pid, k): int(v) for k, v in held.items()})
        fields = {k for k, v in want.items() if v} | {k for k, v in have.items() if v}
        wrong = sum(1 for k in fields if have.get(k, 0) != want.get(k, 0))
        return [
            Finding(
                "customer totals",
                f"{campaign.id}: customers that disagree",
                wrong,
                0,
                wrong == 0,
            )
        ]

    async def _requests(self, campaign: HotCampaign) -> list[Finding]:
        missing = other = 0
        async with self._pool.acquire() as conn, conn.transaction():
            batch: list[asyncpg.Record] = []
            async for grant in conn.cursor(queries.requests_of_campaign, campaign.id):
                batch.append(grant)
                if len(batch) >= PIPELINE_CHUNK:
                    m, o = await self._check_requests(campaign, batch)
                    missing, other, batch = missing + m, other + o, []
            if batch:
                m, o = await self._check_requests(campaign, batch)
                missing, other = missing + m, other + o
        return [
            Finding("idempotency", f"{campaign.id}: request ids missing", missing, 0, missing == 0),
            Finding(
                "idempotency", f"{campaign.id}: request ids on another grant", other, 0, other == 0
            ),
        ]

    async def _check_requests(
        self, campaign: HotCampaign, grants: list[asyncpg.Record]
    ) -> tuple[int, int]:
        async with self._redis.pipeline(transaction=False) as pipe:
            for g in grants:
                # A split campaign's request ids are in the shard of the customer's part.
                shard = self._keys.of(campaign.part_of(g["customer_id"]))
                key, field = shard.idempotency(g["channel_id"], g["request_id"])
                pipe.hget(key, field)
            held = await pipe.execute()
        missing = sum(1 for h in held if h is None)
        other = sum(1 for g, h in zip(grants, held, strict=True) if h and h[:26] != g["grant_id"])
        return missing, other

    async def _states(self, campaign: HotCampaign) -> list[Finding]:
        rows = await self._pool.fetch(queries.final_states, campaign.id)
        # Every part's, each grant looked for in its customer's part: where transition.lua
        # keeps it (the campaign's own id alone, unless split).
        redis = {
            pid: await self._redis.hgetall(self._keys.grant_states(pid))
            for pid in campaign.part_ids()
        }
        # Redis may be ahead by the transitions still in the outbox, never behind.
        wrong = sum(
            1
            for r in rows
            if redis[campaign.part_of(r["customer_id"])].get(r["grant_id"]) != r["status"]
        )
        return [
            Finding(
                "grant states",
                f"{campaign.id}: final states missing in redis",
                wrong,
                0,
                wrong == 0,
            )
        ]

    async def _outcomes(self) -> list[Finding]:
        drift = await self._pool.fetchval(queries.status_drift)
        unfulfilled = await self._pool.fetchval(queries.unfulfilled_outcomes)
        return [
            Finding("vendor outcomes", "status is not the latest event", drift, 0, drift == 0),
            Finding(
                "vendor outcomes",
                "fulfilled without a fulfilment event",
                unfulfilled,
                0,
                unfulfilled == 0,
            ),
        ]


def drifted(findings: list[Finding]) -> list[Finding]:
    return [f for f in findings if not f.ok]

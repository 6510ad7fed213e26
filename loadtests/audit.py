"""After the load: wait for the ledger to catch up and fulfilment to settle, then check the
invariants of issuance against the real stores (PostgreSQL ledger, Redis counters) and what the
clients were told, and those of goals against the ledger's card events (loadtests/goal_audit.py).
Those of fulfilment are in loadtests/fulfilment_audit.py."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import asyncpg
from redis.asyncio import Redis

from loadtests.checks import Check
from loadtests.goal_audit import goal_grants, reversals
from loadtests.scenario import Scenario
from loadtests.seed import Admin
from quanyi.stores.keys import Keys
from quanyi.stores.outbox import FULFIL_GROUP, outbox_lag

# Which of the service's processes died: waiting for a dead worker to catch up is pointless.
Died = Callable[[], list[str]]


def _none_died() -> list[str]:
    return []


@dataclass
class LagPeak:
    entries: int = 0
    seconds: float = 0.0
    samples: int = 0


async def sample_ledger_lag(admin: Admin, campaign_id: str, every_s: float = 1.0) -> LagPeak:
    """The worst outbox lag seen while the load runs, until cancelled. The lag is the outbox's,
    shared by all campaigns, so any campaign's page reports it."""
    peak = LagPeak()
    try:
        while True:
            lag = (await admin.campaign(campaign_id))["ledger_lag"]
            peak.entries = max(peak.entries, lag["entries"])
            peak.seconds = max(peak.seconds, lag["seconds"])
            peak.samples += 1
            await asyncio.sleep(every_s)
    except asyncio.CancelledError:
        return peak


async def wait_for_ledger(
    admin: Admin, scenario: Scenario, timeout_s: float, died: Died = _none_died
) -> Check:
    """Until every reward's `persisted` equals its `granted` and the outbox is drained."""
    started = time.monotonic()
    while True:
        behind = []
        for plan in scenario.campaigns:
            campaign = await admin.campaign(plan.id)
            behind += [
                f"{plan.id}/{r['id']} {r['persisted']}/{r['granted']}"
                for r in campaign["rewards"]
                if r["persisted"] != r["granted"]
            ]
            if campaign["ledger_lag"]["entries"]:
                behind.append(f"outbox lag {campaign['ledger_lag']['entries']} entries")
        waited = time.monotonic() - started
        if not behind:
            return Check("ledger caught up", True, f"after {waited:.1f} s")
        if waited > timeout_s or died():
            why = ", ".join(died()) or "timed out"
            return Check(
                "ledger caught up", False, f"still behind after {waited:.0f} s ({why}): {behind}"
            )
        await asyncio.sleep(0.5)


async def wait_for_fulfilment(
    db: asyncpg.Connection,
    redis: Redis,
    key_prefix: str,
    scenario: Scenario,
    timeout_s: float,
    died: Died = _none_died,
    shards: int = 1,
) -> Check:
    """Until no grant is still `granted` in the ledger (every fulfilment, failure included, has
    been recorded) and both consumer groups have read the whole outbox, of every one of the
    `shards` shards (the service's redis_shards: a cluster run's outboxes are one a shard)."""
    keys = Keys(key_prefix, shards=shards)
    ids = [plan.id for plan in scenario.campaigns]
    started = time.monotonic()
    while True:
        pending = await db.fetchval(
            "SELECT count(*) FROM grants WHERE campaign_id = ANY($1::text[]) AND status = 'granted'",
            ids,
        )
        ledger = (await outbox_lag(redis, keys)).entries
        fulfil = (await outbox_lag(redis, keys, FULFIL_GROUP)).entries
        parked = sum([await redis.zcard(shard.fulfil_retry) for shard in keys.shards])
        waited = time.monotonic() - started
        if not (pending or ledger or fulfil or parked):
            return Check("fulfilment settled", True, f"after {waited:.1f} s")
        if waited > timeout_s or died():
            readers = sum(
                [len(await redis.xinfo_consumers(s.outbox, FULFIL_GROUP)) for s in keys.shards]
            )
            return Check(
                "fulfilment settled",
                False,
                f"not after {waited:.0f} s ({', '.join(died()) or 'timed out'}):"
                f" {pending} grants still granted, outbox lag ledger {ledger} / fulfil"
                f" {fulfil}, {parked} parked for retry, {readers} consumers in the fulfil group",
            )
        await asyncio.sleep(0.5)


async def audit(
    admin: Admin,
    db: asyncpg.Connection,
    redis: Redis,
    key_prefix: str,
    scenario: Scenario,
    summary: dict[str, Any] | None,
    shards: int = 1,
) -> list[Check]:
    """The checks of a run; Redis's side read over every one of the `shards` shards (the
    service's redis_shards), so a cluster run is audited whole."""
    keys = Keys(key_prefix, shards=shards)
    checks: list[Check] = []
    client_grants = (summary or {}).get("grant_ids", {})
    client_failures = (summary or {}).get("failures")

    for plan in scenario.campaigns:
        live = await admin.campaign(plan.id)
        rows = {
            r["reward_id"]: r
            for r in await db.fetch(
                "SELECT reward_id, count(*) AS n, coalesce(sum(unit_cost), 0) AS spent"
                " FROM grants WHERE campaign_id = $1 GROUP BY reward_id",
                plan.id,
            )
        }
        for reward in live["rewards"]:
            where = f"{plan.id}/{reward['id']}"
            granted, stock = reward["granted"], reward["stock"]
            in_ledger = rows[reward["id"]]["n"] if reward["id"] in rows else 0
            checks.append(
                Check(
                    f"{where}: granted <= stock",
                    granted <= stock,
                    f"granted {granted}, stock {stock}",
                )
            )
            checks.append(
                Check(
                    f"{where}: redis granted == ledger rows",
                    granted == in_ledger,
                    f"redis {granted}, ledger {in_ledger}",
                )
            )
        ledger_spent = sum(r["spent"] for r in rows.values())
        budget, spent = live["budget"], live["spent"]
        if budget is not None:
            checks.append(
                Check(
                    f"{plan.id}: spent <= budget",
                    spent <= budget,
                    f"spent {spent}, budget {budget}",
                )
            )
        checks.append(
            Check(
                f"{plan.id}: redis spent == ledger cost",
                spent == ledger_spent,
                f"redis {spent}, ledger {ledger_spent}",
            )
        )
        checks += await _client_view(db, plan.id, client_grants.get(plan.id), client_failures)
        checks.append(await _customer_counters(db, redis, keys, plan.id))

    over = await db.fetch(
        "SELECT g.campaign_id, g.reward_id, g.customer_id, count(*) AS n, r.per_customer_limit"
        " FROM grants g JOIN rewards r ON r.campaign_id = g.campaign_id AND r.id = g.reward_id"
        " GROUP BY g.campaign_id, g.reward_id, g.customer_id, r.per_customer_limit"
        " HAVING count(*) > r.per_customer_limit LIMIT 5"
    )
    checks.append(
        Check(
            "no customer over per_customer_limit (ledger)",
            not over,
            "none"
            if not over
            else "; ".join(
                f"{o['campaign_id']}/{o['reward_id']} {o['customer_id']}: "
                f"{o['n']} > {o['per_customer_limit']}"
                for o in over
            ),
        )
    )
    dupes = await db.fetch(
        "SELECT channel_id, request_id, count(*) AS n FROM grants"
        " GROUP BY channel_id, request_id HAVING count(*) > 1 LIMIT 5"
    )
    # The ledger's unique index keeps duplicates out of the table; a duplicate the service
    # produced would land in the dead-letter stream instead, hence both checks.
    checks.append(
        Check(
            "no duplicate (channel_id, request_id) in ledger",
            not dupes,
            "none" if not dupes else str([dict(d) for d in dupes]),
        )
    )
    for plan in scenario.campaigns:
        if plan.reward.goal is not None:
            checks += await goal_grants(db, plan.id, plan.reward.per_customer_limit)
    checks += await reversals(db)
    dead = sum([await redis.xlen(shard.outbox_dead) for shard in keys.shards])
    checks.append(Check("outbox dead-letter stream empty", dead == 0, f"{dead} entries"))
    return checks


async def _client_view(
    db: asyncpg.Connection, campaign_id: str, seen: list[str] | None, failures: int | None
) -> list[Check]:
    """Every grant a client was given is in the ledger; and, when no request failed (so no
    answer was lost on the way), the ledger holds nothing the clients were not told about."""
    if seen is None:
        return [Check(f"{campaign_id}: client grants in ledger", False, "no client summary")]
    ledger = {
        r["grant_id"]
        for r in await db.fetch("SELECT grant_id FROM grants WHERE campaign_id = $1", campaign_id)
    }
    lost = set(seen) - ledger
    checks = [
        Check(
            f"{campaign_id}: every 201 grant is in the ledger",
            not lost,
            f"{len(seen)} given, {len(lost)} missing" + (f" e.g. {min(lost)}" if lost else ""),
        )
    ]
    unknown = len(ledger - set(seen))
    if failures == 0:
        checks.append(
            Check(
                f"{campaign_id}: ledger holds only grants clients saw",
                unknown == 0,
                f"{unknown} unknown to clients",
            )
        )
    return checks


async def _customer_counters(
    db: asyncpg.Connection, redis: Redis, keys: Keys, campaign_id: str
) -> Check:
    """The per-customer counters claim.lua enforces limits with agree with the ledger, customer
    by customer: a drift would let a customer over the limit or refuse one wrongly. They are in
    the campaign's shard (Keys.campaign routes it); a cluster client's scan visits every node."""
    ledger = Counter(
        {
            f"{r['reward_id']}|{r['customer_id']}": r["n"]
            for r in await db.fetch(
                "SELECT reward_id, customer_id, count(*) AS n FROM grants WHERE campaign_id = $1"
                " GROUP BY reward_id, customer_id",
                campaign_id,
            )
        }
    )
    counters: Counter[str] = Counter()
    async for key in redis.scan_iter(match=f"{keys.campaign(campaign_id)}:cu:*", count=1000):
        for field, value in (await redis.hgetall(key)).items():
            counters[_text(field)] += int(value)
    differ = [k for k in ledger.keys() | counters.keys() if ledger[k] != counters[k]]
    return Check(
        f"{campaign_id}: redis customer counters == ledger",
        not differ,
        f"{len(counters)} customers"
        if not differ
        else f"{len(differ)} differ, e.g. {differ[0]}: redis {counters[differ[0]]}, ledger {ledger[differ[0]]}",
    )


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value

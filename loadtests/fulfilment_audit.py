"""After the load: the invariants of fulfilment. Every grant in exactly one state, redemptions
only of fulfilled grants, each grant issued exactly once at its vendor (the simulator's own
count), the codes and redemptions clients were told are the ledger's, and the outbox trimmed."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Any

import asyncpg
from redis.asyncio import Redis

from loadtests.checks import Check
from loadtests.scenario import Scenario
from quanyi.stores.keys import Keys

# A grant's states once it is no longer pending; redeemed and expired grants were fulfilled first.
FULFILLED_STATES = ("fulfilled", "redeemed", "expired")
FINAL_STATES = (*FULFILLED_STATES, "failed", "revoked")


async def fulfilment(
    db: asyncpg.Connection,
    redis: Redis,
    key_prefix: str,
    scenario: Scenario,
    summary: dict[str, Any] | None,
    sim_stats: dict[str, Any],
    shards: int = 1,
) -> list[Check]:
    """Every grant in exactly one state, redemptions only of fulfilled grants, each grant issued
    exactly once at its vendor, and what clients were told (codes, redemptions) in the ledger.
    Redis's streams are read in every one of the `shards` shards (the service's redis_shards)."""
    summary = summary or {}
    checks: list[Check] = []
    for plan in scenario.campaigns:
        checks += await _states(db, plan.id)
        checks.append(await _redeemed_after_fulfilled(db, plan.id))
    for plan in scenario.vendor_campaigns:
        checks.append(await _exactly_once_at_vendor(db, plan.id, sim_stats))
    checks.append(await _codes_as_told(db, summary.get("fulfilled_codes")))
    checks += await _redemptions_as_told(db, scenario, summary)
    keys = Keys(key_prefix, shards=shards)
    dead = sum([await redis.xlen(shard.fulfil_dead) for shard in keys.shards])
    checks.append(Check("fulfilment dead-letter stream empty", dead == 0, f"{dead} entries"))
    checks.append(await _outbox_trimmed(redis, keys))
    return checks


async def _states(db: asyncpg.Connection, campaign_id: str) -> list[Check]:
    """fulfilled + failed + pending (+ revoked) = granted, where fulfilled counts the redeemed
    and expired grants too; and redeemed <= every grant that was ever fulfilled."""
    n = Counter(
        {
            r["status"]: r["n"]
            for r in await db.fetch(
                "SELECT status, count(*) AS n FROM grants WHERE campaign_id = $1 GROUP BY status",
                campaign_id,
            )
        }
    )
    rows = sum(n.values())
    fulfilled = sum(n[s] for s in FULFILLED_STATES)
    unknown = {s: c for s, c in n.items() if s not in (*FINAL_STATES, "granted")}
    total = fulfilled + n["failed"] + n["granted"] + n["revoked"]
    ever_fulfilled = await db.fetchval(
        "SELECT count(DISTINCT e.grant_id) FROM grant_events e JOIN grants g USING (grant_id)"
        " WHERE g.campaign_id = $1 AND e.event = 'fulfilled'",
        campaign_id,
    )
    return [
        Check(
            f"{campaign_id}: fulfilled + failed + pending (+ revoked) = granted",
            total == rows and not unknown,
            f"{fulfilled} (of which {n['redeemed']} redeemed, {n['expired']} expired) + "
            f"{n['failed']} + {n['granted']} + {n['revoked']} = {total}; {rows} ledger rows"
            + (f"; unknown states {unknown}" if unknown else ""),
        ),
        Check(
            f"{campaign_id}: redeemed <= ever fulfilled",
            n["redeemed"] <= ever_fulfilled,
            f"redeemed {n['redeemed']}, fulfilled events {ever_fulfilled}",
        ),
    ]


async def _redeemed_after_fulfilled(db: asyncpg.Connection, campaign_id: str) -> Check:
    """Each redeemed grant has a `fulfilled` event and, after it in outbox order, a `redeemed`."""
    events: dict[str, dict[str, tuple[int, int]]] = {}
    for r in await db.fetch(
        "SELECT g.grant_id, e.event, e.outbox_id FROM grants g"
        " LEFT JOIN grant_events e ON e.grant_id = g.grant_id"
        " WHERE g.campaign_id = $1 AND g.status = 'redeemed'",
        campaign_id,
    ):
        seen = events.setdefault(r["grant_id"], {})
        if r["event"] is not None:
            seen[r["event"]] = _stream_id(r["outbox_id"])
    wrong = [
        grant_id
        for grant_id, seen in events.items()
        if not ("fulfilled" in seen and "redeemed" in seen and seen["fulfilled"] < seen["redeemed"])
    ]
    return Check(
        f"{campaign_id}: redeemed grants have fulfilled then redeemed events",
        not wrong,
        f"{len(events)} redeemed" + (f", {len(wrong)} wrong, e.g. {wrong[0]}" if wrong else ""),
    )


async def _exactly_once_at_vendor(
    db: asyncpg.Connection, campaign_id: str, sim_stats: dict[str, Any]
) -> Check:
    """The simulator counts what it issued per idempotency key (the grant id): each grant of
    the campaign exactly once, and nothing that is not one of them."""
    ledger = {
        r["grant_id"]
        for r in await db.fetch("SELECT grant_id FROM grants WHERE campaign_id = $1", campaign_id)
    }
    effects: dict[str, int] = sim_stats.get("effects", {})
    calls: dict[str, int] = sim_stats.get("calls", {})
    twice = [g for g, n in effects.items() if n != 1]
    never = ledger - effects.keys()
    unknown = effects.keys() - ledger
    retried = sum(1 for g in ledger if calls.get(g, 0) > 1)
    return Check(
        f"{campaign_id}: issued exactly once at the vendor",
        bool(ledger) and not (twice or never or unknown),
        f"{len(ledger)} grants, {sum(effects.values())} issued, {retried} called more than once;"
        f" {len(twice)} issued twice, {len(never)} never, {len(unknown)} not ours",
    )


async def _codes_as_told(db: asyncpg.Connection, told: dict[str, str] | None) -> Check:
    """The code a client got back from a claim that waited is the one the ledger holds."""
    name = "codes told to waiting clients == ledger codes"
    if told is None:
        return Check(name, False, "no client summary")
    rows = await db.fetch(
        "SELECT grant_id, code FROM grants WHERE grant_id = ANY($1::text[])", list(told)
    )
    ledger = {r["grant_id"]: r["code"] for r in rows}
    differ = [g for g, code in told.items() if ledger.get(g) != code]
    return Check(
        name,
        bool(told) and not differ,
        f"{len(told)} fulfilled while waiting"
        + (f", {len(differ)} differ, e.g. {differ[0]}" if differ else "")
        + ("" if told else " (none came back fulfilled)"),
    )


async def _redemptions_as_told(
    db: asyncpg.Connection, scenario: Scenario, summary: dict[str, Any]
) -> list[Check]:
    """Every redemption the callback confirmed is in the ledger, once; and when no request
    failed, the ledger holds no redemption the clients did not make."""
    told = set(summary.get("redeemed", []))
    ids = [plan.id for plan in scenario.vendor_campaigns]
    redeemed = {
        r["grant_id"]
        for r in await db.fetch(
            "SELECT grant_id FROM grants WHERE campaign_id = ANY($1::text[])"
            " AND status = 'redeemed'",
            ids,
        )
    }
    applied = await db.fetchval("SELECT count(*) FROM redemptions WHERE outcome = 'applied'")
    refused = await db.fetchval("SELECT count(*) FROM redemptions WHERE outcome = 'refused'")
    lost = told - redeemed
    checks = [
        Check(
            "confirmed redemptions are redeemed in the ledger",
            bool(told) and not lost,
            f"{len(told)} confirmed ({summary.get('redemption_replays', 0)} replayed callbacks),"
            f" {len(lost)} missing" + ("" if told else " (no redemption was made)"),
        ),
        Check(
            "one applied redemption per redeemed grant",
            applied == len(redeemed) and refused == 0,
            f"{applied} applied, {refused} refused, {len(redeemed)} redeemed grants",
        ),
    ]
    if summary.get("failures") == 0:
        unknown = redeemed - told
        checks.append(
            Check(
                "ledger holds only redemptions clients made",
                not unknown,
                f"{len(unknown)} unknown to clients",
            )
        )
    return checks


async def _outbox_trimmed(redis: Redis, keys: Keys, timeout_s: float = 5.0) -> Check:
    """Once both groups acknowledged everything, the ledger worker's trim (about once a second)
    leaves only the last entry of each shard's outbox, which marks where the groups stand."""
    started = time.monotonic()
    while True:
        lengths = [await redis.xlen(shard.outbox) for shard in keys.shards]
        waited = time.monotonic() - started
        if max(lengths) <= 1 or waited > timeout_s:
            return Check(
                "outbox trimmed below both consumer groups",
                max(lengths) <= 1,
                f"{sum(lengths)} entries left over {len(lengths)} outboxes",
            )
        await asyncio.sleep(0.5)


def _stream_id(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)

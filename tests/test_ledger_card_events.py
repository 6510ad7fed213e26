"""Card events in the outbox (field `t`, as record_events.lua writes them: the events of one
call in one entry) reach the ledger's
card_events table once per (channel, event id); a card event the ledger cannot write goes to the
dead letters without holding back the rest; fulfilment acknowledges card events and moves on."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from quanyi.ledger.worker import LedgerWorker
from quanyi.stores.outbox import FULFIL_GROUP, LEDGER_GROUP, ensure_groups
from tests.support.clients import grant_view
from tests.support.waiting import running, until

OCCURRED_MS = 1_796_000_000_000  # 2026-11-28, as the card system stamps it
RECEIVED_MS = OCCURRED_MS + 1_500
GRANT_ID = "01JZ0000000000000000000000"


def card_event(event_id: str = "tx-1", **changes: Any) -> dict[str, Any]:
    """A counted card transaction that moved one goal and caused one grant."""
    return {
        "channel_id": "core",
        "event_id": event_id,
        "type": "card_transaction",
        "customer_id": "cust-1",
        "amount": 12_800,
        "mcc": "5812",
        "occurred_at_ms": OCCURRED_MS,
        "outcome": "counted",
        "counted": [{"campaign_id": "c1", "reward_id": "r1", "period": "M202611"}],
        "grants": [{"grant_id": GRANT_ID, "event": "granted"}],
        "received_at_ms": RECEIVED_MS,
        **changes,
    }


def wire(*events: dict[str, Any]) -> str:
    """The `t` entry record_events.lua writes for these events of one call (one channel)."""

    def joined(items: Any, names: tuple[str, ...], sep: str) -> Any:
        if not all(isinstance(i, dict) for i in items or []):
            return str(items[0][0])  # not a list of objects: sent broken, as it is
        return ",".join(sep.join(i[n] for n in names) for i in items or [])

    first = events[0]
    return orjson.dumps(
        {
            "channel_id": first["channel_id"],
            "type": first["type"],
            "received_at_ms": first["received_at_ms"],
            "events": [
                [
                    e["event_id"],
                    e.get("customer_id"),
                    e["amount"],
                    e["mcc"],
                    e["occurred_at_ms"],
                    e.get("reversal_of", ""),
                    e["outcome"],
                    joined(e.get("counted"), ("campaign_id", "reward_id", "period"), "/"),
                    joined(e.get("grants"), ("grant_id", "event"), ":"),
                ]
                for e in events
            ],
        }
    ).decode()


async def append(redis, keys, *events: dict[str, Any] | str) -> str:
    """XADD a `t` entry as record_events.lua does: the events of one call together; a str is
    sent as it is (a broken entry)."""
    if len(events) == 1 and isinstance(events[0], str):
        body = events[0]
    else:
        body = wire(*(e for e in events if isinstance(e, dict)))
    return await redis.xadd(keys.outbox, {"t": body})


async def card_events(pool) -> dict[str, dict[str, Any]]:
    """Each row by event id, its jsonb columns decoded."""
    rows = await pool.fetch("SELECT * FROM card_events ORDER BY event_id, channel_id")
    return {
        r["event_id"]: {
            **dict(r),
            "counted": orjson.loads(r["counted"]),
            "grants": orjson.loads(r["grants"]),
        }
        for r in rows
    }


def ordered(first: str, then: str) -> bool:
    """Whether stream id `first` is at or before `then`."""
    return tuple(map(int, first.split("-"))) <= tuple(map(int, then.split("-")))


def moment(unix_ms: int) -> datetime:
    return datetime.fromtimestamp(unix_ms / 1000, UTC)


@pytest.fixture
async def groups(redis, keys) -> None:
    """Both consumer groups, as the API makes them at start: fulfilment sees every entry."""
    await ensure_groups(redis, keys)


@pytest.mark.usefixtures("groups")
async def test_card_events_become_rows_with_every_column(pool, redis, keys):
    counted = await append(redis, keys, card_event("tx-1"))
    # Lua's cjson writes every number as a double; no reversal_of when it reverses nothing.
    empty = card_event("tx-2", outcome="uncounted", counted=[], grants=[], amount=300.0)
    empty_id = await append(redis, keys, empty)
    reversal = card_event(
        "tx-3",
        amount=-12_800,
        reversal_of="tx-1",
        outcome="reversal",
        grants=[{"grant_id": GRANT_ID, "event": "revoked"}],
    )
    reversal_id = await append(redis, keys, reversal)

    assert await LedgerWorker(redis, pool, keys).drain() == 0  # no grants among them
    rows = await card_events(pool)
    assert rows["tx-1"] == {
        "channel_id": "core",
        "event_id": "tx-1",
        "type": "card_transaction",
        "customer_id": "cust-1",
        "amount": 12_800,
        "mcc": "5812",
        "occurred_at": moment(OCCURRED_MS),
        "reversal_of": None,
        "outcome": "counted",
        "counted": [{"campaign_id": "c1", "reward_id": "r1", "period": "M202611"}],
        "grants": [{"grant_id": GRANT_ID, "event": "granted"}],
        "received_at": moment(RECEIVED_MS),
        "outbox_id": counted,
    }
    assert (rows["tx-2"]["counted"], rows["tx-2"]["grants"]) == ([], [])
    assert (rows["tx-2"]["outcome"], rows["tx-2"]["amount"]) == ("uncounted", 300)
    assert rows["tx-2"]["reversal_of"] is None and rows["tx-2"]["outbox_id"] == empty_id
    assert (rows["tx-3"]["reversal_of"], rows["tx-3"]["outcome"]) == ("tx-1", "reversal")
    assert rows["tx-3"]["amount"] == -12_800 and rows["tx-3"]["outbox_id"] == reversal_id
    assert rows["tx-3"]["grants"] == [{"grant_id": GRANT_ID, "event": "revoked"}]
    assert (await redis.xpending(keys.outbox, LEDGER_GROUP))["pending"] == 0
    assert await redis.xlen(keys.outbox_dead) == 0


async def test_card_events_and_grants_are_written_together(api, c1, pool, redis, keys):
    await append(redis, keys, card_event("tx-1"))
    status, grant = await api.claim(request_id="q1", campaign_id="c1", customer_id="cust-1")
    assert status == 201, grant
    await append(redis, keys, card_event("tx-2", customer_id="cust-2"))

    assert await LedgerWorker(redis, pool, keys).drain() == 1
    assert sorted(await card_events(pool)) == ["tx-1", "tx-2"]
    assert await pool.fetchval("SELECT count(*) FROM grants") == 1
    assert (await grant_view(api, grant["grant_id"]))["persisted"] is True


@pytest.mark.usefixtures("groups")
async def test_a_card_event_delivered_again_inserts_nothing(pool, redis, keys):
    first = await append(redis, keys, card_event("tx-1"))
    worker = LedgerWorker(redis, pool, keys)
    await worker.drain()
    # The card system sends it again (recorded again, differently), and a dead worker's copy
    # of the first entry is taken over after it was written.
    await append(redis, keys, card_event("tx-1", outcome="uncounted", counted=[], grants=[]))
    await worker.drain()
    await worker._persist([(first, {"t": wire(card_event("tx-1"))})])

    rows = await card_events(pool)
    assert list(rows) == ["tx-1"]
    assert (rows["tx-1"]["outcome"], rows["tx-1"]["outbox_id"]) == ("counted", first)
    # The same event id from another channel is another event.
    await append(redis, keys, card_event("tx-1", channel_id="core-2"))
    await worker.drain()
    assert await pool.fetchval("SELECT count(*) FROM card_events WHERE event_id = 'tx-1'") == 2
    assert await redis.xlen(keys.outbox_dead) == 0


@pytest.mark.usefixtures("groups")
async def test_bad_card_events_go_to_the_dead_letters_and_the_rest_is_written(pool, redis, keys):
    good = await append(redis, keys, card_event("tx-1"))
    missing = card_event("tx-2")
    del missing["customer_id"]
    unreadable = {
        await append(redis, keys, missing): "expected a string",
        await append(redis, keys, card_event("tx-3", outcome="refunded")): "refunded",
        await append(redis, keys, card_event("tx-4", amount="12.80")): "integer",
        await append(redis, keys, card_event("tx-5", counted=[["c1"]])): "3 values",
        await append(redis, keys, "{not json"): "unreadable",
    }
    # Readable, but PostgreSQL refuses it: text may not hold a NUL character.
    refused = await append(redis, keys, card_event("tx-6", mcc="58\u000012"))
    also_good = await append(redis, keys, card_event("tx-7", customer_id="cust-7"))

    await LedgerWorker(redis, pool, keys).drain()
    rows = await card_events(pool)
    assert sorted(rows) == ["tx-1", "tx-7"]
    assert (rows["tx-1"]["outbox_id"], rows["tx-7"]["outbox_id"]) == (good, also_good)
    dead = {f["outbox_id"]: f for _id, f in await redis.xrange(keys.outbox_dead)}
    assert set(dead) == {*unreadable, refused}
    for outbox_id, why in unreadable.items():
        assert dead[outbox_id]["error"].startswith("unreadable event"), dead[outbox_id]
        assert why in dead[outbox_id]["error"], dead[outbox_id]
        assert "t" in dead[outbox_id]  # kept as it came, for whoever redrives it
    assert dead[refused]["error"].startswith("refused by postgresql"), dead[refused]
    assert orjson.loads(dead[refused]["t"])["events"][0][0] == "tx-6"
    assert (await redis.xpending(keys.outbox, LEDGER_GROUP))["pending"] == 0


async def test_fulfilment_acknowledges_card_events_and_fulfils_around_them(
    api, c1, pool, redis, keys, make_worker, caplog
):
    caplog.set_level(logging.WARNING)
    await append(redis, keys, card_event("tx-1"))
    await append(redis, keys, card_event("tx-2", counted=[], grants=[], outcome="uncounted"))
    status, grant = await api.claim(request_id="q1", campaign_id="c1", customer_id="cust-1")
    assert status == 201, grant
    last = await append(redis, keys, "{not json")  # fulfilment has nothing to read in it

    async with running(make_worker()):

        async def all_done() -> bool:
            pending = (await redis.xpending(keys.outbox, FULFIL_GROUP))["pending"]
            seen = await grant_view(api, grant["grant_id"])
            groups = {g["name"]: g for g in await redis.xinfo_groups(keys.outbox)}
            delivered = groups[FULFIL_GROUP]["last-delivered-id"]
            # The grant's `fulfilled` entry comes after ours: delivered up to it at least.
            return pending == 0 and seen["status"] == "fulfilled" and ordered(last, delivered)

        await until(all_done, what="fulfilment past the card events")
    failures = [r for r in caplog.records if r.name.startswith("quanyi.fulfilment")]
    assert [r.getMessage() for r in failures if r.levelno >= logging.ERROR] == []
    await LedgerWorker(redis, pool, keys).drain()
    assert sorted(await card_events(pool)) == ["tx-1", "tx-2"]


async def test_fulfilment_takes_over_card_events_a_dead_worker_left(
    api, c1, redis, keys, worker_factory
):
    await append(redis, keys, card_event("tx-1"))
    await append(redis, keys, card_event("tx-2"))
    taken = await redis.xreadgroup(FULFIL_GROUP, "dead", {keys.outbox: ">"}, count=10)
    assert len(taken[0][1]) == 2
    async with running(worker_factory(reclaim_idle_ms=200, reclaim_every_s=0.1)):

        async def taken_over() -> bool:
            return (await redis.xpending(keys.outbox, FULFIL_GROUP))["pending"] == 0

        await until(taken_over, what="the dead worker's card events acknowledged")


@pytest.mark.usefixtures("groups")
async def test_one_entry_holds_the_events_of_one_call(pool, redis, keys):
    """record_events.lua appends one `t` entry per call: every event in it becomes a row."""
    await append(redis, keys, *(card_event(f"tx-{i}", customer_id=f"cust-{i}") for i in range(5)))
    await LedgerWorker(redis, pool, keys).drain()
    rows = await card_events(pool)
    assert sorted(rows) == [f"tx-{i}" for i in range(5)]
    assert {r["customer_id"] for r in rows.values()} == {f"cust-{i}" for i in range(5)}


@pytest.mark.cluster_too
@pytest.mark.usefixtures("groups")
async def test_an_event_counted_in_campaigns_of_several_shards_is_one_row_with_all_of_it(
    pool, redis, keys
):
    """On a cluster each shard records the event against its own campaigns, in its own outbox:
    the row gets every shard's goals and grants, the outcome that moved progress, and the first
    entry's outbox id, whichever order, batch or redelivery they come in. (On one Redis the
    entries share the one outbox: the same merge.)"""
    other = next(
        c for c in ("c2", "c3", "c4", "c5", "c6") if keys.of(c) != keys.of("c1") or not keys.sharded
    )
    here, there = keys.of("c1"), keys.of(other)
    in_c1 = card_event("tx-1")  # goal c1/r1, grant GRANT_ID
    in_other = card_event(
        "tx-1",
        counted=[{"campaign_id": other, "reward_id": "r9", "period": "M202611"}],
        grants=[{"grant_id": "01JZ0000000000000000000009", "event": "granted"}],
    )
    nowhere = card_event("tx-1", outcome="uncounted", counted=[], grants=[])
    worker = LedgerWorker(redis, pool, keys)
    first_id = ""
    # One entry at a time: each later one merges into the row.
    written = []
    for shard, event in ((there, nowhere), (here, in_c1), (there, in_other)):
        written.append((shard, {"t": wire(event)}))
        written_id = await redis.xadd(shard.outbox, written[-1][1])
        first_id = first_id if written[:-1] else written_id
        await worker.drain()
    # Both in the outbox before the ledger reads them (on one Redis, in one batch).
    await redis.xadd(here.outbox, {"t": wire({**in_c1, "event_id": "tx-2"})})
    await redis.xadd(there.outbox, {"t": wire({**in_other, "event_id": "tx-2"})})
    await worker.drain()
    # Every entry delivered again, together: nothing changes.
    for shard in {here.shard: here, there.shard: there}.values():
        again = [(f"9-{n}", f) for n, (s, f) in enumerate(written) if s == shard]
        await worker._persist(again, shard)

    rows = await card_events(pool)
    assert sorted(rows) == ["tx-1", "tx-2"]
    for event_id in ("tx-1", "tx-2"):
        row = rows[event_id]
        assert row["outcome"] == "counted", row
        assert row["counted"] == in_c1["counted"] + in_other["counted"], row
        assert row["grants"] == in_c1["grants"] + in_other["grants"], row
    assert rows["tx-1"]["outbox_id"] == first_id
    assert sum([await redis.xlen(s.outbox_dead) for s in keys.shards]) == 0

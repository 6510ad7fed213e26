"""`quanyi rebuild-redis` after Redis lost its data restores goal progress from the ledger: each
goal's count, amount and grant of the period, the card events counted (so repeats stay
duplicates and reversals find their original) and the reversals waiting for their original.

Redis loses this run's keys only (its test prefix): other runs share the server."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

import asyncpg
import pytest
from redis.asyncio import Redis, RedisCluster

from quanyi.core.settings import Settings
from quanyi.ledger.rebuild import Rebuild
from quanyi.ledger.worker import LedgerWorker
from quanyi.stores.keys import EVENT_BUCKETS, Keys, customer_bucket
from tests.support.clients import Api, grant_view
from tests.support.clock import SHANGHAI, FakeClock
from tests.support.events import (
    add_card_channel,
    campaign_figures,
    event,
    goal_campaign,
    granted,
    progress,
    refund,
    send,
)
from tests.support.factories import reward
from tests.support.settings import TEST_PREFIX
from tests.support.stores import delete_test_keys

pytestmark = [pytest.mark.usefixtures("signed_in"), pytest.mark.cluster_too]

# Two purchases a month of at least 10 yuan: a refund of 5 yuan counts toward no goal here.
TWO_A_MONTH = {"window": "month", "count": 2, "min_amount": 1_000}


@pytest.fixture
async def core(api: Api, pool: asyncpg.Pool, settings: Settings) -> str:
    return await add_card_channel(api, pool, settings)


GoalState = Callable[[], Awaitable[dict[bytes, Any]]]


@pytest.fixture
def goal_state(redis_mode: str, redis_url: str) -> GoalState:
    """Reads every progress hash, counted-events hash and held-reversal key of this run, with
    its content and expiry, from every node of a cluster too (its scan visits each master)."""

    async def read() -> dict[bytes, Any]:
        raw: Redis = (
            RedisCluster.from_url(redis_url)  # type: ignore[assignment]
            if redis_mode == "cluster"
            else Redis.from_url(redis_url)
        )
        return await _goal_state(raw)

    return read


async def _goal_state(raw: Redis) -> dict[bytes, Any]:
    try:
        state: dict[bytes, Any] = {}
        patterns = (f"{TEST_PREFIX}:*:pg:*", f"{TEST_PREFIX}:*:ev:*", f"{TEST_PREFIX}:*:evheld:*")
        for pattern in patterns:
            async for key in raw.scan_iter(match=pattern, count=1000):
                if (await raw.type(key)) == b"hash":
                    content: Any = await raw.hgetall(key)
                else:
                    content = await raw.get(key)
                state[key] = (content, await raw.expiretime(key))
        return state
    finally:
        await raw.aclose()


def without_extra_holds(
    state: dict[bytes, Any], keys: Keys, live: dict[bytes, Any]
) -> dict[bytes, Any]:
    """`state` less the holds the rebuild restores in shards where no campaign of `live` held
    them: it restores a hold in every shard (rebuild_goals.py), where the claims held it only in
    the shards of the campaigns it may count for. Those extra holds are asserted to be exact
    copies of a live one, so nothing else is left out."""
    held_in = {s.held_reversals_prefix.encode() for s in keys.shards}
    live_holds = {k.split(b":evheld:")[1]: v for k, v in live.items() if b":evheld:" in k}
    kept: dict[bytes, Any] = {}
    for key, value in state.items():
        prefix = key.split(b":evheld:")[0] + b":evheld:" if b":evheld:" in key else None
        if prefix in held_in and key not in live:
            assert live_holds[key.split(b":evheld:")[1]] == value, key
            continue
        kept[key] = value
    return kept


def record(state: dict[bytes, Any], keys: Keys, campaign_id: str, event_id: str) -> Any:
    """The record of core's event `event_id` in the campaign's counted events of `state`."""
    key = keys.counted_events(campaign_id, customer_bucket(event_id, EVENT_BUCKETS)).encode()
    fields, _ = state.get(key, ({}, None))
    return fields.get(f"core|{event_id}".encode())


def month(at: float) -> str:
    """The month period ("M202612") of unix second `at` in the tests' zone."""
    return datetime.fromtimestamp(at, SHANGHAI).strftime("M%Y%m")


async def claim(api: Api, request_id: str, customer: str = "cust-1") -> tuple[int, dict]:
    return await api.claim(request_id=request_id, campaign_id="g2", customer_id=customer)


async def outcome(pool: asyncpg.Pool, event_id: str) -> str:
    found: str = await pool.fetchval(
        "SELECT outcome FROM card_events WHERE channel_id = 'core' AND event_id = $1", event_id
    )
    return found


async def test_rebuild_restores_goal_progress_event_records_and_held_reversals(
    api: Api,
    core: str,
    pool: asyncpg.Pool,
    redis: Redis,
    keys: Keys,
    settings: Settings,
    clock: FakeClock,
    goal_state: GoalState,
) -> None:
    # g1: five purchases of 100 yuan a month, granted automatically and clawed back by a
    # reversal; g2: two purchases a month, then claimed.
    await goal_campaign(api, claw_back=True)
    await goal_campaign(
        api, "g2", right_id="coffee", goal=TWO_A_MONTH, grant="claim", per_customer_limit=5
    )
    (first,) = granted(await send(api, *(event(api, f"tx-{i}") for i in range(5))))
    assert (await send(api, refund(api, "rf-1", "tx-2")))[0]["revoked"] == [first]
    (standing,) = granted(await send(api, event(api, "tx-5")))
    status, claimed = await claim(api, "q1")
    assert status == 201, claimed
    # A reversal whose original never comes, one whose original comes after it, and one that
    # no goal could count (it is not held).
    assert (await send(api, refund(api, "rf-9", "tx-90", "cust-2")))[0]["held"] is True
    assert (await send(api, refund(api, "rf-8", "tx-80", "cust-3")))[0]["held"] is True
    assert granted(await send(api, event(api, "tx-80", "cust-3"))) == []
    small = (await send(api, refund(api, "rf-7", "tx-70", "cust-2", 500)))[0]
    assert small == {"event_id": "rf-7", "status": "accepted"}
    await send(api, event(api, "tx-20", "cust-2"))
    await LedgerWorker(redis, pool, keys).drain()
    assert await outcome(pool, "tx-80") == "cancelled"
    assert await outcome(pool, "rf-7") == "uncounted"
    before = await goal_state()
    # A reversal is held in the shard of each campaign it may count for (one shard, or g1's
    # and g2's on a cluster).
    for campaign_id in ("g1", "g2"):
        shard = keys.of(campaign_id)
        assert before[shard.held_reversals_count.encode()][0] == b"1"
        held_keys = [k for k in before if k.startswith(shard.held_reversals_prefix.encode())]
        assert len(held_keys) == 2  # rf-9's hash and the count
    # Records are kept apart from progress: the progress hashes hold progress fields only, and
    # each event's record is in the bucket of its own id.
    progress_fields = [f for k, (v, _) in before.items() if b":pg:" in k for f in v]
    assert progress_fields and all(f.count(b"|") == 2 for f in progress_fields)
    for campaign_id in ("g1", "g2"):
        assert record(before, keys, campaign_id, "tx-80") == b"xcust-3|12000|"
        assert record(before, keys, campaign_id, "rf-8") == b"Rtx-80"
        assert record(before, keys, campaign_id, "rf-7") is None
    assert record(before, keys, "g1", "tx-2") == f"xcust-1|12000|r1@{month(clock() - 60)}".encode()

    await delete_test_keys(redis)
    assert await goal_state() == {}
    restored = await Rebuild(pool, redis, keys, settings, clock).run()
    # Two customers' progress in each campaign; in each, eight events counted or reversed
    # and the cancelled one with its reversal.
    assert (restored.goal_progress_fields, restored.card_event_records) == (4, 20)
    assert restored.held_reversals == 1
    assert without_extra_holds(await goal_state(), keys, before) == before
    # A second run changes nothing.
    after = await goal_state()
    await Rebuild(pool, redis, keys, settings, clock).run()
    assert await goal_state() == after

    # Old events are still repeats: counted, reversed, a reversal, cancelled, held.
    for old in (
        event(api, "tx-0"),
        event(api, "tx-2"),
        refund(api, "rf-1", "tx-2"),
        event(api, "tx-80", "cust-3"),
        refund(api, "rf-8", "tx-80", "cust-3"),
        refund(api, "rf-9", "tx-90", "cust-2"),
    ):
        assert (await send(api, old))[0]["status"] == "duplicate", old["event_id"]
    # The period's grants stand: no second automatic grant, no second claim.
    assert granted(await send(api, event(api, "tx-6"))) == []
    assert (await progress(api))["count"] == 6
    assert await campaign_figures(api) == (1, 3_000)
    status, body = await claim(api, "q2")
    assert (status, body["error"]["code"]) == (409, "limit_reached"), body
    status, replay = await claim(api, "q1")
    assert (status, replay["grant_id"]) == (200, claimed["grant_id"])

    # Reversals after the rebuild take back what their originals counted, and the second one
    # takes the goal below five again: its grant is clawed back.
    result = (await send(api, refund(api, "rf-2", "tx-3")))[0]
    assert result == {"event_id": "rf-2", "status": "accepted"}
    assert (await progress(api))["count"] == 5
    assert (await send(api, refund(api, "rf-3", "tx-4")))[0]["revoked"] == [standing]
    assert (await progress(api))["count"] == 4
    assert (await grant_view(api, standing))["status"] == "revoked"
    assert await campaign_figures(api) == (0, 0)
    assert (await progress(api, campaign_id="g2"))["count"] == 4

    # The held reversal still cancels its original: it counts for nothing.
    assert (await progress(api, "cust-2"))["count"] == 1
    late = (await send(api, event(api, "tx-90", "cust-2")))[0]
    assert late == {"event_id": "tx-90", "status": "accepted"}
    assert (await progress(api, "cust-2"))["count"] == 1
    assert (await progress(api, "cust-2", "g2"))["count"] == 1
    for campaign_id in ("g1", "g2"):
        assert await redis.get(keys.of(campaign_id).held_reversals_count) == "0"
    await LedgerWorker(redis, pool, keys).drain()
    assert await outcome(pool, "tx-90") == "cancelled"


async def test_rebuild_keeps_each_goal_of_a_campaign_and_a_revoked_claims_period(
    api: Api,
    core: str,
    pool: asyncpg.Pool,
    redis: Redis,
    keys: Keys,
    settings: Settings,
    clock: FakeClock,
    goal_state: GoalState,
) -> None:
    # One campaign, three goals an event may count for: a week's purchase of at least 100
    # yuan (granted), a month's 200 yuan (claimed) and a campaign's dining purchases (none).
    await api.create_right("lounge", 3_000)
    await api.create_campaign(
        "g3",
        [
            reward("w", "lounge", 10, goal={"window": "week", "count": 1, "min_amount": 10_000}),
            reward("m", "lounge", 10, goal={"window": "month", "amount": 20_000}, grant="claim"),
            reward("d", "lounge", 10, goal={"window": "campaign", "count": 9, "mcc_in": ["5812"]}),
        ],
    )
    results = await send(
        api, event(api, "tx-0", amount=5_000), event(api, "tx-1", mcc="5411"), event(api, "tx-2")
    )
    assert len(granted(results)) == 1
    status, claimed = await api.claim(
        request_id="q1", campaign_id="g3", customer_id="cust-1", reward_id="m"
    )
    assert status == 201, claimed
    status, _ = await api.channel("POST", f"/v1/grants/{claimed['grant_id']}/revoke", {})
    assert status == 200
    assert (await send(api, refund(api, "rf-0", "tx-0", amount=5_000)))[0]["status"] == "accepted"
    await LedgerWorker(redis, pool, keys).drain()
    before = await goal_state()
    records = [v for k, (fields, _) in before.items() if b":ev:" in k for v in fields.values()]
    assert any(v.count(b"@") == 3 for v in records)  # one event, three goals, in their order

    await delete_test_keys(redis)
    await Rebuild(pool, redis, keys, settings, clock).run()
    assert await goal_state() == before
    # The month's claim was revoked, yet the month's goal gave its claim: not again.
    status, body = await api.claim(
        request_id="q2", campaign_id="g3", customer_id="cust-1", reward_id="m"
    )
    assert (status, body["error"]["code"]) == (409, "limit_reached"), body
    assert (await send(api, refund(api, "rf-0", "tx-0", amount=5_000)))[0]["status"] == "duplicate"


async def test_rebuild_restores_only_the_holds_still_waiting(
    api: Api,
    core: str,
    pool: asyncpg.Pool,
    redis: Redis,
    keys: Keys,
    settings: Settings,
    clock: FakeClock,
    goal_state: GoalState,
) -> None:
    # A reversal held now, another two days before the first one's wait is over; the rebuild
    # comes a day after that: the first waits no more, the second still does.
    hold_s = settings.event_hold_days * 86_400
    await goal_campaign(
        api, claw_back=True, campaign={"ends_at": at(clock() + 3 * hold_s).isoformat()}
    )
    first_at = clock()
    assert (await send(api, refund(api, "rf-1", "tx-1")))[0]["held"] is True
    clock.advance(hold_s - 2 * 86_400)
    second_at = clock()
    assert (await send(api, refund(api, "rf-2", "tx-2", "cust-2")))[0]["held"] is True
    clock.advance(3 * 86_400)
    await LedgerWorker(redis, pool, keys).drain()
    assert int(clock()) >= int(first_at) + hold_s

    await delete_test_keys(redis)
    restored = await Rebuild(pool, redis, keys, settings, clock).run()
    assert restored.held_reversals == 1
    state = {k: v for k, v in (await goal_state()).items() if b":evheld:" in k}
    bucket = customer_bucket("tx-2", EVENT_BUCKETS)
    own = customer_bucket("rf-2", EVENT_BUCKETS)
    until = int(second_at) + hold_s
    # Restored in every shard (rebuild_goals.py: where its original may count), as one shard.
    hold = {b"core|tx-2": f"rf-2|cust-2|12000|{own}|{int(second_at)}".encode()}
    assert state == {
        key.encode(): value
        for shard in keys.shards
        for key, value in (
            (shard.held_reversals(bucket), (hold, until)),
            (shard.held_reversals_count, (b"1", until)),
        )
    }
    # The first original counts again; the second is still held to nothing by its reversal.
    late = at(first_at + 60)
    first = (await send(api, event(api, "tx-1", at=late)))[0]
    assert first == {"event_id": "tx-1", "status": "accepted"}
    assert (await send(api, event(api, "tx-2", "cust-2", at=late)))[0]["status"] == "accepted"
    assert await redis.get(keys.of("g1").held_reversals_count) == "0"
    await LedgerWorker(redis, pool, keys).drain()
    assert (await outcome(pool, "tx-1"), await outcome(pool, "tx-2")) == ("counted", "cancelled")


def at(unix_s: float) -> datetime:
    return datetime.fromtimestamp(unix_s, SHANGHAI)

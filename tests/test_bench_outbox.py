"""What the benchmarks read from the outbox while they run (its length, every group's lag, the
fulfilment group's unfinished work, a campaign's outcomes), over every shard's stream: with one
shard the single stream's figures, with several their sum (ages: the oldest)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from redis.asyncio import Redis

from loadtests.bench.stores import outbox_groups
from loadtests.bench_fulfil.drain import _Outcomes, _unfinished
from loadtests.bench_sustained.watch import group_names, lags, outbox_length
from quanyi.stores.keys import Keys
from quanyi.stores.outbox import FULFIL_GROUP, LEDGER_GROUP, OUTBOX_GROUPS, ensure_groups
from tests.support.settings import TEST_PREFIX

pytestmark = pytest.mark.cluster_too


async def append(redis: Redis, keys: Keys, per_shard: int, **event: str) -> int:
    """`per_shard` entries in every shard's outbox; how many in all."""
    for shard in keys.shards:
        for n in range(per_shard):
            body = orjson.dumps({"grant_id": f"g{shard.shard}-{n}", **event})
            await redis.xadd(shard.outbox, {"e": body})
    return per_shard * len(keys.shards)


async def test_an_outbox_not_made_yet_reads_as_empty(redis: Redis, keys: Keys) -> None:
    assert await outbox_length(redis, keys) == 0
    assert await group_names(redis, keys) == []
    assert await lags(redis, keys) == {}
    assert await outbox_groups(redis, keys) == {}


async def test_length_and_lags_count_every_shards_stream(redis: Redis, keys: Keys) -> None:
    await ensure_groups(redis, keys)
    total = await append(redis, keys, 3, event="granted", campaign_id="c1")

    assert await outbox_length(redis, keys) == total
    assert sorted(await group_names(redis, keys)) == sorted(OUTBOX_GROUPS)
    found = await lags(redis, keys)
    assert {name: lag.entries for name, lag in found.items()} == {
        LEDGER_GROUP: total,
        FULFIL_GROUP: total,
    }
    assert all(lag.seconds >= 0 for lag in found.values())
    assert await outbox_groups(redis, keys) == {LEDGER_GROUP: total, FULFIL_GROUP: total}
    assert await _unfinished(redis, keys) == total

    # The ledger reads and acknowledges the first shard's entries only: the rest still count.
    first = keys.shards[0].outbox
    read: Any = await redis.xreadgroup(LEDGER_GROUP, "c", {first: ">"})
    ids = [entry_id for _stream, entries in read for entry_id, _fields in entries]
    await redis.xack(first, LEDGER_GROUP, *ids)
    assert (await outbox_groups(redis, keys))[LEDGER_GROUP] == total - 3
    assert (await lags(redis, keys))[LEDGER_GROUP].entries == total - 3


async def test_grants_parked_for_a_retry_in_any_shard_are_unfinished(
    redis: Redis, keys: Keys
) -> None:
    await ensure_groups(redis, keys)
    for shard in keys.shards:
        await redis.zadd(shard.fulfil_retry, {f"g{shard.shard}": 1.0})
    assert await _unfinished(redis, keys) == len(keys.shards)


async def test_a_campaigns_outcomes_are_counted_in_every_shard(redis: Redis, keys: Keys) -> None:
    await append(redis, keys, 2, event="fulfilled", campaign_id="c1")  # before: not counted
    outcomes = await _Outcomes.from_now(redis, keys, "c1")
    assert await outcomes.count() == 0

    fulfilled = await append(redis, keys, 2, event="fulfilled", campaign_id="c1")
    failed = await append(redis, keys, 1, event="failed", campaign_id="c1")
    await append(redis, keys, 2, event="fulfilled", campaign_id="other")
    await append(redis, keys, 2, event="granted", campaign_id="c1")
    assert await outcomes.count() == fulfilled + failed
    # Only what was appended since is read again.
    more = await append(redis, keys, 1, event="fulfilled", campaign_id="c1")
    assert await outcomes.count() == fulfilled + failed + more


async def test_several_shards_on_one_redis_are_summed(redis: Redis) -> None:
    # A shard count of its own, whatever the fixture's: the keys are the test run's all the same.
    keys = Keys(TEST_PREFIX, shards=4)
    await ensure_groups(redis, keys)
    total = await append(redis, keys, 2, event="granted", campaign_id="c1")
    assert total == 8
    assert await outbox_length(redis, keys) == 8
    assert await outbox_groups(redis, keys) == {LEDGER_GROUP: 8, FULFIL_GROUP: 8}
    assert await _unfinished(redis, keys) == 8

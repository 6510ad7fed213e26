"""On a Redis Cluster, a worker's reads of the outbox go on while one master is away: the
shards on the other masters are read and handed on (their entries delivered to the worker are
not left to wait for the reclaim), the away shards rest and are tried again later, and only
with every master away does the read fail, for the read loop to wait out. Each test runs on a
scratch cluster of its own, whose masters it kills."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from redis.asyncio import Redis

from quanyi.core import metrics
from quanyi.ledger.worker import LedgerWorker
from quanyi.stores.keys import Keys
from quanyi.stores.outbox import LEDGER_GROUP, REDIS_AWAY, ensure_groups
from quanyi.stores.outbox_reader import FIRST_REST_S, OutboxReader
from quanyi.stores.redis import cluster_client
from tests.support.clients import CLAIM, assert_only_error
from tests.support.scratch import ScratchCluster
from tests.support.stores import TEST_PREFIX
from tests.support.waiting import until
from tests.test_ledger_card_events import card_event, card_events, wire

SHARDS = 6


class Ticks:
    """A monotonic clock that moves only when told."""

    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def cluster(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ScratchCluster]:
    """This test's own cluster; parametrized (indirect), the masters' node timeout in ms."""
    with ScratchCluster(tmp_path, node_timeout_ms=getattr(request, "param", 15_000)) as cluster:
        yield cluster


# The API fixtures (conftest.py) on this test's cluster. Nothing to clean up on the way out: the
# cluster goes with the test, killed masters and all.
@pytest.fixture
def redis_mode() -> str:
    return "cluster"


@pytest.fixture
def redis_url(cluster: ScratchCluster) -> str:
    return cluster.url()


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    client: Redis = cluster_client(redis_url)  # type: ignore[assignment]
    await client.initialize()  # the slots' masters known, for the tests to pick one
    yield client
    await client.aclose()


@pytest.fixture
async def store(redis: Redis) -> tuple[Redis, Keys]:
    keys = Keys(TEST_PREFIX, shards=SHARDS)
    await ensure_groups(redis, keys)
    return redis, keys


def master_of(redis: Redis, keys: Keys) -> dict[int, int]:
    """Each shard's master, by port."""
    return {s.shard: redis.get_node_from_key(s.outbox).port for s in keys.shards}  # type: ignore[attr-defined]


def failures() -> float:
    return metrics.OUTBOX_SHARD_READ_FAILURES.labels(LEDGER_GROUP)._value.get()


async def test_a_master_away_holds_back_only_its_own_shards(store, cluster) -> None:
    redis, keys = store
    entries = {s.shard: await redis.xadd(s.outbox, {"x": str(s.shard)}) for s in keys.shards}
    masters = master_of(redis, keys)
    dead = masters[0]
    away = sorted(s for s, port in masters.items() if port == dead)
    live = sorted(s for s, port in masters.items() if port != dead)
    assert away and live  # six shards over three masters
    cluster.kill(dead)
    ticks, before = Ticks(), failures()
    reader = OutboxReader(redis, keys, LEDGER_GROUP, "w1", clock=ticks)

    assert await settled(reader) == {s: [entries[s]] for s in live}
    assert reader.resting == away
    assert failures() - before == len(away)
    # The others' entries are this worker's to handle, not left for a reclaim.
    for s in live:
        assert (await redis.xpending(keys.shards[s].outbox, LEDGER_GROUP))["consumers"] == [
            {"name": "w1", "pending": 1}
        ]

    # While they rest, the away shards are not tried: the reads are of the live ones alone.
    new = {s: await redis.xadd(keys.shards[s].outbox, {"x": "again"}) for s in live}
    assert await settled(reader) == {s: [new[s]] for s in live}
    assert failures() - before == len(away)
    # Rested, they are tried again, fail again and rest twice as long.
    ticks.now += FIRST_REST_S
    assert await settled(reader) == {}
    assert failures() - before == 2 * len(away)
    ticks.now += FIRST_REST_S
    assert reader.resting == away
    ticks.now += FIRST_REST_S
    assert reader.resting == []


async def settled(reader: OutboxReader) -> dict[int, list[str]]:
    """What reads hand on until none is under way any more (a read of a dead master may take
    longer than one read waits, on a loaded machine), by shard."""
    got: dict[int, list[str]] = {}
    for _ in range(100):
        for shard, messages in await reader.read(100, 20):
            got.setdefault(shard.shard, []).extend(i for i, _f in messages)
        if not reader.reading:
            return got
    raise AssertionError(f"reads of shards {reader.reading} never ended")


async def test_a_master_that_does_not_answer_holds_back_only_its_own_shards(store, cluster):
    """A master cut off (no answer, not a refused connection): the others' entries are handed
    on while its shards' reads are still under way, and what those deliver once it answers
    again is handed on by a later read, each entry once."""
    redis, keys = store
    entries = {s.shard: await redis.xadd(s.outbox, {"x": str(s.shard)}) for s in keys.shards}
    masters = master_of(redis, keys)
    silent = masters[0]
    cut_off = sorted(s for s, port in masters.items() if port == silent)
    reader = OutboxReader(redis, keys, LEDGER_GROUP, "w1", clock=Ticks())
    others = {s: [e] for s, e in entries.items() if s not in cut_off}
    got: dict[int, list[str]] = {}
    cluster.pause(silent)
    try:
        for _ in range(20):  # one read, unless the machine is too busy to answer in time
            for shard, messages in await reader.read(100, 20):
                got.setdefault(shard.shard, []).extend(i for i, _f in messages)
            if got == others:
                break
        assert got == others
        assert reader.reading == cut_off
    finally:
        cluster.resume(silent)
    assert await settled(reader) == {s: [entries[s]] for s in cut_off}
    await reader.close()


async def card_events_then_a_master_dead(redis, keys, cluster) -> list[str]:
    """A card event in each shard's outbox, then shard 0's master killed: the ids of the events
    on the masters still up."""
    for s in keys.shards:
        body = wire(card_event(f"tx-{s.shard}", customer_id=f"cust-{s.shard}"))
        await redis.xadd(s.outbox, {"t": body})
    masters = master_of(redis, keys)
    cluster.kill(masters[0])
    return sorted(f"tx-{s}" for s, port in masters.items() if port != masters[0])


async def test_a_worker_started_with_a_master_away_reads_the_other_shards(
    store, cluster, pool
) -> None:
    """Its groups cannot be made on the away master's shards: made on the others, which it
    reads, and tried again on those later."""
    redis, keys = store
    live = await card_events_then_a_master_dead(redis, keys, cluster)
    worker = LedgerWorker(redis, pool, keys, consumer="w1", block_ms=20)

    async def written() -> bool:
        return sorted(await card_events(pool)) == live

    task = asyncio.create_task(worker.run())
    try:
        await until(written, 20, "the live shards' card events written")
    finally:
        worker.stop()
        await asyncio.wait_for(task, 15)


async def test_with_every_master_away_the_read_fails(store, cluster) -> None:
    redis, keys = store
    reader = OutboxReader(redis, keys, LEDGER_GROUP, "w1", clock=Ticks())
    for port in cluster.ports:
        cluster.kill(port)
    with pytest.raises(REDIS_AWAY):
        await reader.read(100, 20)
    assert reader.resting == list(range(SHARDS))
    # And while all rest, at once: nothing to read, which is no empty answer.
    with pytest.raises(REDIS_AWAY):
        await reader.read(100, 20)


async def test_a_shards_group_gone_is_raised_after_the_others_entries(store) -> None:
    redis, keys = store
    entries = {s.shard: await redis.xadd(s.outbox, {"x": "1"}) for s in keys.shards}
    await redis.xgroup_destroy(keys.shards[2].outbox, LEDGER_GROUP)
    reader = OutboxReader(redis, keys, LEDGER_GROUP, "w1", clock=Ticks())

    batch = await reader.read(100, 20)
    assert {shard.shard: [i for i, _f in m] for shard, m in batch} == {
        s: [e] for s, e in entries.items() if s != 2
    }
    with pytest.raises(Exception, match="NOGROUP"):
        await reader.read(100, 20)
    # Made again (as the read loop does), the shard is read like the others.
    await ensure_groups(redis, keys)
    assert [shard.shard for shard, _m in await reader.read(100, 20)] == [2]


async def test_the_ledger_writes_the_live_shards_card_events_with_a_master_away(
    store, cluster, pool
) -> None:
    redis, keys = store
    live = await card_events_then_a_master_dead(redis, keys, cluster)
    worker = LedgerWorker(redis, pool, keys, consumer="w1", block_ms=20)

    await worker.step()
    assert sorted(await card_events(pool)) == live
    # Drain (tests, the CLI) wants every shard: it fails rather than stop short.
    with pytest.raises(REDIS_AWAY):
        await worker.drain()


def cluster_state(port: int) -> str:
    info = subprocess.run(
        ["redis-cli", "-p", str(port), "cluster", "info"], capture_output=True, text=True, timeout=5
    ).stdout
    return next(line.split(":")[1].strip() for line in info.splitlines() if "cluster_state" in line)


@pytest.mark.usefixtures("signed_in")
@pytest.mark.parametrize("cluster", [500], indirect=True)
async def test_a_cluster_down_is_a_503_not_a_500(api, c1, cluster, redis, keys) -> None:
    """A master with no replica dead past the node timeout: every master answers CLUSTERDOWN,
    even for the slots it serves. The claim is told to retry, as when Redis is unreachable."""
    status, _grant = await api.claim(**CLAIM)
    assert status == 201
    home = redis.get_node_from_key(keys.campaign("c1")).port  # type: ignore[attr-defined]
    other = next(p for p in cluster.ports if p != home)
    cluster.kill(other)

    async def down() -> bool:
        return cluster_state(home) == "fail"

    await until(down, 30, "the cluster down")
    status, body = await api.claim(**{**CLAIM, "request_id": "q2", "customer_id": "cust-2"})
    assert_only_error(status, body, 503, "unavailable")

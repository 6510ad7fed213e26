"""Test fixtures: a real PostgreSQL database and a real Redis db of their own, emptied per test;
the API on them; vendors simulated by real HTTP servers. Helpers live in tests/support/."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import asyncpg
import pytest
from aiohttp import web
from redis.asyncio import Redis

from quanyi.access.channels import create_channel
from quanyi.access.secret_box import secret_box
from quanyi.core.clock import system_clock
from quanyi.core.settings import Settings
from quanyi.fulfilment.worker import FulfilmentWorker
from quanyi.ledger.worker import LedgerWorker
from quanyi.stores.db import migrate
from quanyi.stores.keys import Keys
from quanyi.stores.redis import cluster_client, open_redis
from quanyi.web.app import create_app
from quanyi.web.middleware import app_runner
from tests.support.clients import STAFF_ACCOUNTS, Api, add_staff, grant_view, sign_in
from tests.support.clock import FakeClock
from tests.support.factories import register_vendor
from tests.support.scratch import ScratchCluster
from tests.support.settings import (
    CHANNEL,
    CHANNEL_SECRET,
    TEST_DATABASE_URL,
    TEST_PREFIX,
    TEST_REDIS_URL,
    settings_for_tests,
)
from tests.support.stores import delete_test_keys, drop_test_database, empty_tables
from tests.support.vendors import SIM, KeyPairs, new_key_pairs, simulator_starter
from tests.support.waiting import running, until
from tests.support.workers import fulfilment_worker

# --- stores -------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def database() -> Iterator[str]:
    async def fresh() -> None:
        await drop_test_database()
        await migrate(TEST_DATABASE_URL)

    asyncio.run(fresh())
    yield TEST_DATABASE_URL
    asyncio.run(drop_test_database())


@pytest.fixture
async def pool(database: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await asyncpg.create_pool(database, min_size=1, max_size=10)
    await empty_tables(pool)
    yield pool
    await pool.close()


# A test marked `cluster_too` runs twice: on the single Redis, and on a scratch Redis Cluster of
# three masters (started once per run, the first time a test needs it) with CLUSTER_SHARDS
# shards, so campaigns spread over every master.
CLUSTER_SHARDS = 8


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "cluster_too: run on the single Redis and on a 3-master Redis Cluster"
    )
    config.addinivalue_line(
        "markers",
        "single_redis(reason): in a cluster_too module, run on the single Redis only, for the"
        " reason given (a part not yet per shard)",
    )
    config.addinivalue_line(
        "markers",
        "cluster_only(reason): run on the scratch cluster only, for the reason given (what it"
        " tests cannot happen with one shard)",
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    definition = metafunc.definition
    if "redis_mode" not in metafunc.fixturenames:
        return
    if definition.get_closest_marker("cluster_only"):
        metafunc.parametrize("redis_mode", ["cluster"], indirect=True)
    elif definition.get_closest_marker("cluster_too") and not definition.get_closest_marker(
        "single_redis"
    ):
        metafunc.parametrize("redis_mode", ["single", "cluster"], indirect=True)


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with ScratchCluster(tmp_path_factory.mktemp("redis-cluster")) as cluster:
        yield cluster.url()


@pytest.fixture
def redis_mode(request: pytest.FixtureRequest) -> str:
    return getattr(request, "param", "single")


@pytest.fixture
def redis_url(request: pytest.FixtureRequest, redis_mode: str) -> str:
    if redis_mode == "cluster":
        return request.getfixturevalue("redis_cluster")
    return TEST_REDIS_URL


@pytest.fixture
async def redis(redis_mode: str, redis_url: str) -> AsyncIterator[Redis]:
    if redis_mode == "cluster":
        client: Redis = cluster_client(redis_url)  # type: ignore[assignment]
    else:
        client = Redis.from_url(redis_url, decode_responses=True)
    await delete_test_keys(client)
    yield client
    await delete_test_keys(client)
    await client.aclose()


@pytest.fixture
def keys(redis_mode: str) -> Keys:
    return Keys(TEST_PREFIX, shards=CLUSTER_SHARDS if redis_mode == "cluster" else 1)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def settings(redis_mode: str, redis_url: str) -> Settings:
    if redis_mode == "cluster":
        return settings_for_tests(
            redis_url=redis_url, redis_cluster=True, redis_shards=CLUSTER_SHARDS
        )
    return settings_for_tests()


# --- the API ------------------------------------------------------------------------------


@pytest.fixture
async def staff(pool: asyncpg.Pool) -> dict[str, str]:
    """One account per role at head office, plus branch accounts; username -> role."""
    await add_staff(pool, STAFF_ACCOUNTS)
    return {u: r for u, (r, _b) in STAFF_ACCOUNTS.items()}


@pytest.fixture
async def api(
    aiohttp_client: Any,
    pool: asyncpg.Pool,
    redis: Redis,
    staff: dict[str, str],
    clock: FakeClock,
    settings: Settings,
) -> Api:
    """The API (without workers) on a fresh database and Redis db, with one channel `app`."""
    box = secret_box(settings)
    await create_channel(pool, CHANNEL, CHANNEL_SECRET, box=box)
    await create_channel(pool, "wechat", "wechat-secret", box=box)
    client = await aiohttp_client(create_app(settings, clock))
    return Api(client, clock)


@pytest.fixture
async def signed_in(api: Api, pool: asyncpg.Pool) -> Api:
    """Every staff account signed in on `api` (modules use it with
    `pytestmark = pytest.mark.usefixtures("signed_in")`)."""
    await sign_in(api, pool)
    return api


@pytest.fixture
async def coffee(api: Api) -> None:
    """Right `coffee` (unit cost 100), nothing on it yet."""
    await api.create_right()


@pytest.fixture
async def c1(api: Api) -> dict[str, Any]:
    """Right `coffee` (unit cost 100) and approved campaign c1: reward r1, stock 100, limit 1."""
    await api.create_right()
    return await api.create_campaign()


@pytest.fixture
async def served(pool, redis, settings, clock) -> AsyncIterator[tuple[str, int]]:
    """The API served by `app_runner` (what `quanyi serve` uses) on a free local port."""
    runner = app_runner(create_app(settings, clock), settings)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    yield host, port
    await runner.cleanup()


# --- vendors ------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def key_pairs() -> KeyPairs:
    """RSA pairs for a vendor, for us, and the vendor's next key (a rotation); made once."""
    return new_key_pairs()


@pytest.fixture
def our_key_file(tmp_path: Any, key_pairs: KeyPairs) -> str:
    path = tmp_path / "ours.pem"
    path.write_text(key_pairs.ours_private)
    return f"file:{path}"


@pytest.fixture
async def start_sim(aiohttp_server: Any, key_pairs: KeyPairs) -> Any:
    """Starts a simulated vendor (a real HTTP server); returns its base URL."""
    return simulator_starter(aiohttp_server, key_pairs)


@pytest.fixture
def make_worker(redis, pool, keys, settings, clock) -> Callable[..., FulfilmentWorker]:
    """A fulfilment worker in process, quick to poll and to close its circuit again."""

    def make(**options: Any) -> FulfilmentWorker:
        options.setdefault("block_ms", 20)
        options.setdefault("breaker_reset_s", 0.5)
        return fulfilment_worker(redis, pool, keys, settings, clock, **options)

    return make


@pytest.fixture
async def worker_redis(redis, settings) -> AsyncIterator[Redis]:
    """The worker's own Redis client, made as `quanyi worker` makes it (a blocking pool)."""
    client = await open_redis(settings)
    yield client
    await client.aclose()


@pytest.fixture
def worker_factory(worker_redis, pool, keys, settings):
    """A fulfilment worker on the system clock: parked retries fall due as real time passes
    (the frozen test clock would keep every retry waiting)."""

    def make(clock=system_clock, **options: Any) -> FulfilmentWorker:
        options.setdefault("block_ms", 20)
        options.setdefault("breaker_reset_s", 0.5)
        return fulfilment_worker(worker_redis, pool, keys, settings, clock, **options)

    return make


@pytest.fixture
async def sim(api, pool, start_sim, key_pairs, our_key_file) -> str:
    """Vendor `sim` (a running simulator) fulfils right `lounge` of approved campaign c1."""
    await sign_in(api, pool)
    base_url = await start_sim()
    await register_vendor(api, SIM, base_url, key_pairs, our_key_file)
    await api.create_right("lounge", vendor_id=SIM)
    await api.create_campaign(
        rewards=[{"id": "r1", "right_id": "lounge", "stock": 50, "per_customer_limit": 1}]
    )
    return base_url


@pytest.fixture
def fulfilled(
    api, redis, pool, keys, make_worker, sim
) -> Callable[..., Awaitable[list[dict[str, Any]]]]:
    """Claims `n` grants for new customers, fulfils them at the vendor and persists them."""
    made = 0

    async def fulfil(n: int = 1) -> list[dict[str, Any]]:
        nonlocal made
        ids = []
        for _ in range(n):
            made += 1
            status, grant = await api.claim(
                request_id=f"q{made}", campaign_id="c1", customer_id=f"cust-{made}"
            )
            assert status == 201, grant
            ids.append(grant["grant_id"])
        async with running(make_worker()):

            async def all_fulfilled() -> bool:
                views = [await grant_view(api, g) for g in ids]
                return all(v["status"] == "fulfilled" for v in views)

            await until(all_fulfilled, what="fulfilment")
        await LedgerWorker(redis, pool, keys).drain()
        grants = [await grant_view(api, g) for g in ids]
        assert all(g["persisted"] and g["vendor_id"] == SIM and g["code"] for g in grants)
        return grants

    return fulfil

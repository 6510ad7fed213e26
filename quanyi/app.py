"""The composition root: `create_app()` builds every resource and task, and closes them in
reverse order (workers stop before the pools they use)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator, Awaitable
from typing import Any

import asyncpg
from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    generate_latest,
    multiprocess,
)
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.connection import Connection
from redis.connection import HiredisRespSerializer
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from access.channels import ChannelDirectory
from access.secret_box import secret_box
from access.staff import keep_staff_records_swept
from campaigns import admin
from campaigns.service import CampaignService
from inventory.keys import Keys
from inventory.readiness import LOST as STORE_LOST
from inventory.readiness import store_ready
from issuance import api
from issuance.claims import ClaimService
from issuance.grants import GrantReader
from issuance.lifecycle import GrantLifecycle
from issuance.outcomes import OutcomeWaiter
from ledger.lag import FULFIL_GROUP, LEDGER_GROUP, outbox_lag
from ledger.rebuild import open_store_at_startup
from ledger.worker import LedgerWorker, ensure_groups
from quanyi import metrics
from quanyi.appkeys import (
    CAMPAIGNS,
    CHANNELS,
    CLAIMS,
    CLOCK,
    GRANTS,
    KEYS,
    LIFECYCLE,
    OUTCOMES,
    POOL,
    REDIS,
    SETTINGS,
    VENDORS,
)
from quanyi.clock import Clock, system_clock
from quanyi.db import create_pool
from quanyi.errors import SecretsKeyError
from quanyi.logs import install_redaction, redact
from quanyi.settings import Settings
from quanyi.supervisor import Supervisor
from quanyi.web import errors_middleware, json_response
from vendors import api as vendor_api
from vendors.directory import VendorDirectory
from vendors.fulfil import FulfilmentWorker

log = logging.getLogger(__name__)

SHUTDOWN_GRACE_S = 10.0
# The workers this process runs (`quanyi run`), by name; /readyz reports each.
WORKERS = web.AppKey("workers", dict[str, Supervisor])
# The outbox consumer group each worker drains: its lag is the worker's lag.
WORKER_GROUPS = {"ledger": LEDGER_GROUP, "fulfil": FULFIL_GROUP}


class StartupError(RuntimeError):
    """A dependency is missing or unsafe: the service refuses to start. The message is printed
    and logged: credentials and card numbers in it are masked."""

    def __init__(self, message: str) -> None:
        super().__init__(redact(message))


class PackedConnection(Connection):
    """Packs commands with hiredis, as redis-py's sync client does: the same bytes, several
    times faster than the asyncio client's pure-Python packer (~10 us a claim)."""

    _packer = HiredisRespSerializer()

    def pack_command(self, *args: Any) -> list[bytes]:
        return self._packer.pack(*args)


async def open_redis(settings: Settings) -> Redis:
    # A blocking pool: a burst beyond max_connections waits for a free connection instead of
    # failing the request.
    redis = Redis.from_pool(
        BlockingConnectionPool.from_url(
            settings.redis_url,
            connection_class=PackedConnection,
            decode_responses=True,
            max_connections=128,
            timeout=5,
            socket_connect_timeout=2,
            socket_timeout=5,
            health_check_interval=30,
        )
    )
    try:
        await redis.ping()
    except (OSError, RedisConnectionError) as exc:
        await redis.aclose()
        raise StartupError(f"redis at {settings.redis_url} is unreachable: {exc}") from exc
    try:
        policy = (await redis.config_get("maxmemory-policy")).get("maxmemory-policy")
    except ResponseError:  # CONFIG is disabled on some managed services
        policy = None
        log.warning("cannot read maxmemory-policy; make sure it is noeviction")
    if policy not in (None, "noeviction"):
        await redis.aclose()
        raise StartupError(
            f"redis maxmemory-policy is {policy}: it may evict stock counters or idempotency keys; "
            "set it to noeviction"
        )
    return redis


async def open_pool(settings: Settings) -> asyncpg.Pool:
    try:
        return await create_pool(settings.database_url)
    except (OSError, asyncpg.PostgresError) as exc:
        raise StartupError(f"postgresql at {settings.database_url} is unreachable: {exc}") from exc


async def close_pool(pool: asyncpg.Pool) -> None:
    try:
        await asyncio.wait_for(pool.close(), SHUTDOWN_GRACE_S)
    except TimeoutError:
        log.warning("postgresql pool did not close in time; terminating")
        pool.terminate()


@contextlib.asynccontextmanager
async def background(name: str, coro: Awaitable[None]) -> AsyncIterator[asyncio.Task]:
    """A named task that is cancelled on the way out, its error logged rather than lost."""
    task = asyncio.create_task(coro, name=name)  # type: ignore[arg-type]

    def died(t: asyncio.Task) -> None:
        # Said the moment it happens, not at shutdown: a dead worker stalls the outbox.
        if not t.cancelled() and t.exception() is not None:
            log.error("background task %s died", name, exc_info=t.exception())

    task.add_done_callback(died)
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            with contextlib.suppress(Exception):  # already logged by died()
                await asyncio.wait_for(task, SHUTDOWN_GRACE_S)


async def _watch_levels(app: web.Application) -> None:
    """Keeps the stock and outbox gauges current for /metrics."""
    while True:
        try:
            lag = await outbox_lag(app[REDIS], app[KEYS])
            metrics.OUTBOX_LAG_ENTRIES.set(lag.entries)
            metrics.OUTBOX_LAG_SECONDS.set(lag.seconds)
            for campaign_id, reward_id, remaining in await app[CAMPAIGNS].stock_levels():
                metrics.STOCK_REMAINING.labels(campaign_id, reward_id).set(remaining)
        except Exception as exc:  # a gauge going stale must not take the API down
            log.warning("metrics refresh failed: %s", exc)
        await asyncio.sleep(2.0)


def create_app(
    settings: Settings,
    clock: Clock = system_clock,
    *,
    workers: bool = False,
) -> web.Application:
    """The API; with `workers`, the ledger and fulfilment workers run in the same process
    (`quanyi run`), each under a supervisor that restarts it should it die."""
    install_redaction()  # no card number or credential in any log record of the process
    app = web.Application(middlewares=[errors_middleware], client_max_size=64 * 1024)
    app[SETTINGS] = settings
    app[CLOCK] = clock
    app[KEYS] = Keys(settings.key_prefix, settings.idempotency_buckets)
    app[WORKERS] = {}

    async def stores(app: web.Application) -> AsyncIterator[None]:
        app[REDIS] = await open_redis(settings)
        try:
            app[POOL] = await open_pool(settings)
        except StartupError:
            await app[REDIS].aclose()
            raise
        # Every consumer group exists before the first claim: the outbox is trimmed only below
        # what all groups acknowledged, so a group made later would miss entries.
        await ensure_groups(app[REDIS], app[KEYS])
        yield
        await close_pool(app[POOL])
        await app[REDIS].aclose()

    async def services(app: web.Application) -> AsyncIterator[None]:
        redis, pool, keys = app[REDIS], app[POOL], app[KEYS]
        try:
            app[CHANNELS] = ChannelDirectory(
                pool, clock, settings.signature_window_s, secret_box(settings)
            )
            await app[CHANNELS].refresh()
        except SecretsKeyError as exc:
            raise StartupError(str(exc)) from exc
        app[CAMPAIGNS] = CampaignService(pool, redis, keys)
        # Definitions alone in an emptied Redis would reopen claims with no idempotency entries
        # or counters behind them: a lost store waits for `quanyi rebuild-redis` instead.
        if await open_store_at_startup(redis, pool, keys, clock, log):
            published = await app[CAMPAIGNS].publish_all()
            log.info("published %d campaigns to redis", published)
        app[GRANTS] = GrantReader(redis, pool, keys)
        app[CLAIMS] = ClaimService(
            redis,
            keys,
            settings,
            clock,
            republish=app[CAMPAIGNS].publish_one,
        )
        app[LIFECYCLE] = GrantLifecycle(
            redis, keys, app[GRANTS], app[CLAIMS].campaigns, settings, clock
        )
        app[OUTCOMES] = OutcomeWaiter(redis, keys)
        app[VENDORS] = VendorDirectory(pool)
        await app[VENDORS].refresh()
        await app[CLAIMS].start()
        async with (
            background("channel-refresh", app[CHANNELS].keep_fresh(settings.channel_refresh_s)),
            background("vendor-refresh", app[VENDORS].keep_fresh(settings.channel_refresh_s)),
            background("outcomes", app[OUTCOMES].listen()),
            background("metrics-levels", _watch_levels(app)),
            background("staff-sweep", keep_staff_records_swept(pool)),
        ):
            yield
        await app[CLAIMS].close()

    app.cleanup_ctx.extend([stores, services])
    if workers:
        app.cleanup_ctx.extend([_ledger_worker, _fulfilment_worker])
    app.add_routes(api.routes)
    app.add_routes(admin.routes)
    app.add_routes(vendor_api.routes)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_endpoint)
    return app


@contextlib.asynccontextmanager
async def supervised(app: web.Application, supervisor: Supervisor) -> AsyncIterator[None]:
    """The worker runs under its supervisor for as long as the app; /readyz reports it."""
    app[WORKERS][supervisor.name] = supervisor
    async with background(f"{supervisor.name}-worker", supervisor.run()) as task:
        yield
        supervisor.stop()
        with contextlib.suppress(TimeoutError, asyncio.CancelledError):
            await asyncio.wait_for(asyncio.shield(task), SHUTDOWN_GRACE_S)


async def _ledger_worker(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]

    def make() -> LedgerWorker:
        return LedgerWorker(
            app[REDIS],
            app[POOL],
            app[KEYS],
            batch_size=settings.ledger_batch_size,
            block_ms=settings.ledger_block_ms,
            reclaim_idle_ms=settings.ledger_reclaim_idle_ms,
            linger_ms=settings.ledger_linger_ms,
        )

    async with supervised(app, Supervisor("ledger", make)):
        yield


async def _fulfilment_worker(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]

    def make() -> FulfilmentWorker:
        return FulfilmentWorker(
            app[REDIS],
            app[POOL],
            app[KEYS],
            settings,
            app[CLOCK],
            reclaim_idle_ms=settings.ledger_reclaim_idle_ms,
        )

    async with supervised(app, Supervisor("fulfil", make)):
        yield


async def healthz(request: web.Request) -> web.Response:
    return json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    checks: dict[str, str] = {}
    try:
        await request.app[REDIS].ping()  # bounded by the client's socket timeout
        checks["redis"] = "ok"
    except Exception as exc:
        checks["redis"] = f"unreachable: {exc.__class__.__name__}"
    try:
        await request.app[POOL].fetchval("SELECT 1", timeout=2.0)
        checks["postgresql"] = "ok"
    except Exception as exc:
        checks["postgresql"] = f"unreachable: {exc.__class__.__name__}"
    if checks["redis"] == "ok":
        try:
            ready = await store_ready(request.app[REDIS], request.app[KEYS])
            checks["redis_data"] = "ok" if ready else STORE_LOST
        except Exception as exc:
            checks["redis_data"] = f"unknown: {exc.__class__.__name__}"
    checks.update(await _worker_checks(request.app, checks["redis"] == "ok"))
    ready = all(v == "ok" for v in checks.values())
    return json_response(
        {"status": "ready" if ready else "not_ready", "checks": checks}, 200 if ready else 503
    )


async def _worker_checks(app: web.Application, redis_ok: bool) -> dict[str, str]:
    """Each worker of this process: running, and not further behind the outbox than allowed."""
    checks: dict[str, str] = {}
    max_lag_s = app[SETTINGS].ready_max_lag_s
    for name, supervisor in app[WORKERS].items():
        checks[f"{name}_worker"] = supervisor.health()
        if max_lag_s <= 0 or not redis_ok:
            continue
        try:
            lag = await outbox_lag(app[REDIS], app[KEYS], WORKER_GROUPS[name])
        except Exception as exc:
            checks[f"{name}_lag"] = f"unknown: {exc.__class__.__name__}"
            continue
        checks[f"{name}_lag"] = (
            "ok"
            if lag.seconds <= max_lag_s
            else f"{lag.seconds:.0f} s behind ({lag.entries} entries; at most {max_lag_s:g} s)"
        )
    return checks


async def metrics_endpoint(request: web.Request) -> web.Response:
    registry = REGISTRY
    if "PROMETHEUS_MULTIPROC_DIR" in os.environ:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    return web.Response(
        body=generate_latest(registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
    )

"""The HTTP app: the routes of every API, health and metrics, on the runtime's services.

`create_app()` opens the stores and services through `quanyi.runtime` when the app starts and
closes them in reverse order when it stops (workers stop before the pools they use).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator, Coroutine
from typing import Any, Literal

from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    generate_latest,
    multiprocess,
)

from quanyi.access import api as access_api
from quanyi.access import channels_api, staff_api
from quanyi.access.api import CHANNELS
from quanyi.access.audit_api import routes as audit_routes
from quanyi.access.staff import keep_staff_records_swept
from quanyi.audiences import api as audiences_api
from quanyi.audiences.api import AUDIENCES
from quanyi.campaigns import api as campaigns_api
from quanyi.campaigns import budgets_api, issuances_api, issuances_list_api, revisions_api
from quanyi.campaigns.api import CAMPAIGNS
from quanyi.core import metrics
from quanyi.core.clock import Clock, system_clock
from quanyi.core.http import CLOCK, SETTINGS, json_response
from quanyi.core.logs import install_redaction
from quanyi.core.schemas import Reply, endpoint
from quanyi.core.settings import Settings
from quanyi.core.supervisor import Supervisor
from quanyi.inventory.readiness import LOST as STORE_LOST
from quanyi.inventory.readiness import store_ready
from quanyi.issuance import api as issuance_api
from quanyi.issuance import events_api, h5_api, offers_api, staff_grants_api
from quanyi.issuance.api import CLAIMS, GRANTS, LIFECYCLE, OUTCOMES
from quanyi.issuance.events_api import EVENTS
from quanyi.issuance.offers_api import OFFERS
from quanyi.reports import api as reports_api
from quanyi.reports.api import REPORTS
from quanyi.runtime import Stores, open_services, open_stores
from quanyi.stores.appkeys import KEYS, POOL, REDIS
from quanyi.stores.outbox import FULFIL_GROUP, LEDGER_GROUP, outbox_lag
from quanyi.vendors import api as vendors_api
from quanyi.vendors import callbacks as vendor_callbacks
from quanyi.vendors import operations_api as vendor_operations_api
from quanyi.vendors.api import VENDORS
from quanyi.web import console, h5_static, openapi
from quanyi.web.middleware import errors_middleware

log = logging.getLogger(__name__)

SHUTDOWN_GRACE_S = 10.0
STORES = web.AppKey("stores", Stores)
# The workers this process runs (`quanyi run`), by name; /readyz reports each.
WORKERS = web.AppKey("workers", dict[str, Supervisor])
# The outbox consumer group each worker drains: its lag is the worker's lag.
WORKER_GROUPS = {"ledger": LEDGER_GROUP, "fulfil": FULFIL_GROUP}


@contextlib.asynccontextmanager
async def background(name: str, coro: Coroutine[Any, Any, None]) -> AsyncIterator[asyncio.Task]:
    """A named task that is cancelled on the way out, its error logged rather than lost."""
    task: asyncio.Task[None] = asyncio.create_task(coro, name=name)

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
            for campaign_id, reward_id, stock, remaining in await app[CAMPAIGNS].stock_levels():
                metrics.STOCK_TOTAL.labels(campaign_id, reward_id).set(stock)
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
    app[WORKERS] = {}
    app[openapi.API_DOCUMENT] = openapi.ApiDocument()

    async def stores(app: web.Application) -> AsyncIterator[None]:
        async with open_stores(settings, clock) as opened:
            app[STORES] = opened
            app[REDIS], app[POOL], app[KEYS] = opened.redis, opened.pool, opened.keys
            yield

    async def services(app: web.Application) -> AsyncIterator[None]:
        async with open_services(app[STORES]) as s:
            app[CHANNELS], app[CAMPAIGNS], app[VENDORS] = s.channels, s.campaigns, s.vendors
            app[GRANTS], app[CLAIMS], app[LIFECYCLE] = s.grants, s.claims, s.lifecycle
            app[OUTCOMES], app[AUDIENCES] = s.outcomes, s.audiences
            app[OFFERS] = s.offers
            app[EVENTS] = s.events
            app[REPORTS] = s.reports
            async with (
                background("channel-refresh", s.channels.keep_fresh(settings.channel_refresh_s)),
                background("vendor-refresh", s.vendors.keep_fresh(settings.channel_refresh_s)),
                background("outcomes", s.outcomes.listen()),
                background("metrics-levels", _watch_levels(app)),
                background("staff-sweep", keep_staff_records_swept(app[POOL])),
                background("offer-exposures", s.exposures.keep_flushing()),
            ):
                yield

    app.cleanup_ctx.extend([stores, services])
    if workers:
        app.cleanup_ctx.extend([_ledger_worker, _fulfilment_worker, _scheduler, _webhook_sender])
        app.cleanup_ctx.append(_issuance_worker)
    app.add_routes(access_api.routes)
    app.add_routes(audit_routes)
    app.add_routes(channels_api.routes)
    app.add_routes(staff_api.routes)
    app.add_routes(issuance_api.routes)
    app.add_routes(staff_grants_api.routes)
    app.add_routes(offers_api.routes)
    app.add_routes(events_api.routes)
    h5_api.install(app)  # the customer H5 page's API and token key
    # Before the campaigns API, whose /campaigns/{id}/{action} would take "revisions".
    app.add_routes(revisions_api.routes)
    app.add_routes(issuances_api.routes)
    app.add_routes(issuances_list_api.routes)
    app.add_routes(campaigns_api.routes)
    app.add_routes(budgets_api.routes)
    app.add_routes(vendors_api.routes)
    app.add_routes(vendor_callbacks.routes)
    app.add_routes(vendor_operations_api.routes)
    app.add_routes(audiences_api.routes)
    app.add_routes(reports_api.routes)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_endpoint)
    app.add_routes(openapi.routes)
    app.add_routes(console.routes)
    app.add_routes(h5_static.routes)
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
    async with supervised(app, Supervisor("ledger", app[STORES].ledger_worker)):
        yield


async def _fulfilment_worker(app: web.Application) -> AsyncIterator[None]:
    async with supervised(app, Supervisor("fulfil", app[STORES].fulfilment_worker)):
        yield


async def _scheduler(app: web.Application) -> AsyncIterator[None]:
    async with supervised(app, Supervisor("schedule", app[STORES].scheduler)):
        yield


async def _issuance_worker(app: web.Application) -> AsyncIterator[None]:
    async with supervised(app, Supervisor("issuance", app[STORES].issuance_worker)):
        yield


async def _webhook_sender(app: web.Application) -> AsyncIterator[None]:
    app[STORES].webhook_sender()  # a URL without its secret stops the start here
    async with supervised(app, Supervisor("webhook", app[STORES].webhook_sender)):
        yield


class HealthReply(Reply):
    status: Literal["ok"]


class ReadyReply(Reply):
    status: Literal["ready", "not_ready"]
    # redis, postgresql, redis_data, and per worker of the process its state and lag:
    # "ok", or what is wrong
    checks: dict[str, str]


@endpoint("The process runs", auth="none", responses={200: HealthReply}, tags=("operations",))
async def healthz(request: web.Request) -> web.Response:
    return json_response({"status": "ok"})


@endpoint(
    "Ready to serve: the stores answer, Redis holds its data, the workers keep up",
    auth="none",
    responses={200: ReadyReply, 503: ReadyReply},
    tags=("operations",),
)
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
        if max_lag_s <= 0 or not redis_ok or name not in WORKER_GROUPS:  # reads no outbox
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


@endpoint(
    "Prometheus metrics",
    auth="none",
    responses={200: None},
    response_media="text/plain",
    tags=("operations",),
)
async def metrics_endpoint(request: web.Request) -> web.Response:
    registry = REGISTRY
    if "PROMETHEUS_MULTIPROC_DIR" in os.environ:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    return web.Response(
        body=generate_latest(registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
    )

"""The API, with its workers if asked, on stores a fault test owns (tests/support/scratch.py), so
the test may stop, restart or flush them while claims go on.

    async with scratch_api(aiohttp_client, clock, database_url=pg.url("quanyi"),
                           redis_url=r.url(0), workers=True) as (api, app):
        ...
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
from aiohttp import web

from quanyi.access.channels import create_channel
from quanyi.access.secret_box import secret_box
from quanyi.core.clock import Clock
from quanyi.stores.db import migrate
from quanyi.web.app import create_app
from tests.support.clients import STAFF_ACCOUNTS, Api, add_staff, sign_in
from tests.support.settings import CHANNEL, CHANNEL_SECRET, settings_for_tests

STAFF = {u: STAFF_ACCOUNTS[u] for u in ("marketer", "approver", "admin")}  # head office


async def prepare_database(database_url: str) -> None:
    """Schema, head-office staff and the test channel, as the conftest fixtures make them."""
    await migrate(database_url)
    conn = await asyncpg.connect(database_url)
    try:
        await add_staff(conn, STAFF)
    finally:
        await conn.close()
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
    try:
        await create_channel(pool, CHANNEL, CHANNEL_SECRET, box=secret_box(settings_for_tests()))
    finally:
        await pool.close()


@contextlib.asynccontextmanager
async def scratch_api(
    aiohttp_client: Any,
    clock: Clock,
    *,
    database_url: str,
    redis_url: str | None = None,
    workers: bool = False,
    **settings: Any,
) -> AsyncIterator[tuple[Api, web.Application]]:
    """The API on `database_url` (made ready first) and `redis_url` (default: the test Redis),
    with staff signed in. It is closed on the way out, before the caller stops the stores."""
    await prepare_database(database_url)
    changes: dict[str, Any] = {"database_url": database_url, **settings}
    if redis_url is not None:
        changes["redis_url"] = redis_url
    client = await aiohttp_client(create_app(settings_for_tests(**changes), clock, workers=workers))
    try:
        api = Api(client, clock)
        pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
        try:
            await sign_in(api, pool, *STAFF)
        finally:
            await pool.close()
        yield api, client.server.app
    finally:
        await client.close()


async def metric(client: Any, name: str, labels: dict[str, str]) -> float | None:
    """One sample of an app's /metrics (a test client), as Prometheus would scrape it."""
    resp = await client.get("/metrics")
    text = await resp.text()
    wanted = ",".join(f'{k}="{v}"' for k, v in labels.items())
    found = re.search(rf"^{re.escape(name)}{{{re.escape(wanted)}}} (\S+)$", text, re.MULTILINE)
    return float(found.group(1)) if found else None

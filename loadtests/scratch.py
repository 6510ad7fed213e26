"""A benchmark's scratch stores wiped: its database dropped (and made afresh with the schema), its
keys under its own prefix deleted. The Redis dbs are shared between benchmarks, so a prefix is
cleared key by key, never with FLUSHDB; only local databases named quanyi_bench* are dropped,
so a wrong URL can never wipe a real one."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from quanyi.stores.db import migrate

SCRATCH_DATABASE_PREFIX = "quanyi_bench"
UNLINK_BATCH = 1000


def _admin_url(database_url: str) -> tuple[str, str]:
    """(the server's postgres database URL, the database's name), for a scratch database only."""
    parts = urlsplit(database_url)
    name = parts.path.lstrip("/")
    local = parts.hostname in ("127.0.0.1", "localhost")
    if not (local and name.startswith(SCRATCH_DATABASE_PREFIX)):
        raise ValueError(f"refusing to drop {database_url}: not a local {SCRATCH_DATABASE_PREFIX}*")
    return urlunsplit(parts._replace(path="/postgres")), name


async def drop_database(database_url: str) -> None:
    admin_url, name = _admin_url(database_url)
    admin = await asyncpg.connect(admin_url)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


async def fresh_database(database_url: str) -> None:
    """Dropped, then created again with every migration applied."""
    await drop_database(database_url)
    await migrate(database_url)


async def clear_prefix(redis: Any, prefix: str) -> None:
    """Every key under `prefix:` deleted, a batch at a time (any redis.asyncio client)."""
    batch: list[Any] = []
    async for key in redis.scan_iter(match=f"{prefix}:*", count=UNLINK_BATCH):
        batch.append(key)
        if len(batch) >= UNLINK_BATCH:
            await redis.unlink(*batch)
            batch.clear()
    if batch:
        await redis.unlink(*batch)

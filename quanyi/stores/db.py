"""PostgreSQL: the pool, ordered migrations and named queries read from `.sql` files."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable
from importlib.resources import files
from importlib.resources.abc import Traversable
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from quanyi.core.errors import StartupError
from quanyi.core.settings import Settings

log = logging.getLogger(__name__)

# Package data: the installed wheel applies the same files as a checkout.
MIGRATIONS_DIR: Traversable = files("quanyi.stores") / "migrations"
# PostgreSQL is away (restarting, failing over): retry the same batch later.
POSTGRES_AWAY = (
    OSError,
    asyncpg.InterfaceError,
    asyncpg.PostgresConnectionError,
    asyncpg.OperatorInterventionError,
    asyncpg.InsufficientResourcesError,
    # A pooled connection the server cut mid-way (a restart) can surface as asyncpg's own
    # "cannot switch to state ..." instead of a connection error.
    asyncpg.InternalClientError,
)
# How long a closing pool waits for the queries in flight.
SHUTDOWN_GRACE_S = 10.0
_MIGRATION_LOCK = 0x7175_616E  # "quan": one migrator at a time
_NAME = re.compile(r"^--\s*name:\s*(\w+)\s*$", re.MULTILINE)


class Queries(dict[str, str]):
    """Named queries from a `.sql` file: each starts with a `-- name: NAME` line."""

    def __getattr__(self, name: str) -> str:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


def load_queries(package: str, name: str = "queries.sql") -> Queries:
    """The named queries of `name`, a file of the package `package` (its `__name__`)."""
    text = files(package).joinpath(name).read_text()
    parts = _NAME.split(text)
    return Queries(
        (name, body.strip().rstrip(";"))
        for name, body in zip(parts[1::2], parts[2::2], strict=True)
    )


async def keep_refreshed(
    refresh: Callable[[], Awaitable[None]], interval_s: float, what: str
) -> None:
    """Call `refresh` every `interval_s` for good; while PostgreSQL is away, keep what was loaded."""
    while True:
        await asyncio.sleep(interval_s)
        try:
            await refresh()
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            log.warning("%s refresh failed, keeping what was loaded: %s", what, exc)


async def create_pool(database_url: str, **options: object) -> asyncpg.Pool:
    # JIT compiling pays off for analytics, not for short OLTP statements: the ledger's status
    # refresh is costed high enough to trigger it and spent over a second compiling each batch.
    options.setdefault("server_settings", {"jit": "off"})
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=10, **options)
    assert pool is not None
    return pool


async def open_pool(settings: Settings) -> asyncpg.Pool:
    """The service's pool (or a StartupError saying why PostgreSQL cannot be reached)."""
    try:
        return await create_pool(settings.database_url)
    except (OSError, asyncpg.PostgresError) as exc:
        raise StartupError(f"postgresql at {settings.database_url} is unreachable: {exc}") from exc


async def close_pool(pool: asyncpg.Pool, grace_s: float = SHUTDOWN_GRACE_S) -> None:
    """Close the pool, giving queries in flight `grace_s` before they are cut off."""
    try:
        await asyncio.wait_for(pool.close(), grace_s)
    except TimeoutError:
        log.warning("postgresql pool did not close in time; terminating")
        pool.terminate()


async def ensure_database(database_url: str) -> bool:
    """Create the URL's database when it is missing. True when it was created."""
    try:
        conn = await asyncpg.connect(database_url)
    except asyncpg.InvalidCatalogNameError:
        pass
    else:
        await conn.close()
        return False
    parts = urlsplit(database_url)
    name = parts.path.lstrip("/")
    admin = await asyncpg.connect(urlunsplit(parts._replace(path="/postgres")))
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    except asyncpg.DuplicateDatabaseError:
        return False
    finally:
        await admin.close()
    log.info("created database %s", name)
    return True


def migration_files() -> list[tuple[int, Traversable]]:
    """(version, file) of every migration, in order: `0003_maker_checker.sql` is version 3."""
    found = [p for p in MIGRATIONS_DIR.iterdir() if p.name.endswith(".sql")]
    return sorted(((int(p.name.split("_", 1)[0]), p) for p in found), key=lambda vp: vp[0])


async def migrate(database_url: str) -> list[str]:
    """Apply the migrations not applied yet, in order; returns the names applied."""
    await ensure_database(database_url)
    conn = await asyncpg.connect(database_url)
    applied_now = []
    try:
        await conn.execute("SELECT pg_advisory_lock($1)", _MIGRATION_LOCK)
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version integer PRIMARY KEY, name text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
        for version, path in migration_files():
            if version in done:
                continue
            async with conn.transaction():
                await conn.execute(path.read_text())
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
                    version,
                    path.name,
                )
            applied_now.append(path.name)
            log.info("applied migration %s", path.name)
    finally:
        await conn.close()
    return applied_now

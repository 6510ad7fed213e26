"""The schema every migration builds, as pg_dump prints it: what quanyi/stores/schema.sql holds.

    python -m tests.support.schema      # `make schema`: rewrites quanyi/stores/schema.sql

The migrations run on a throwaway database of their own (`quanyi_schema_<pid>_<random>`) on
the test PostgreSQL server, dropped afterwards: never the service's database."""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import shutil
import sys
from pathlib import Path

import asyncpg

from quanyi.stores.db import migrate
from tests.support.settings import TEST_DATABASE_URL

SCHEMA_FILE = Path(__file__).resolve().parents[2] / "quanyi" / "stores" / "schema.sql"
REGENERATE = "make schema"
# What changes from one pg_dump run or build to the next without the schema changing: the
# versions, the random key of \restrict (PostgreSQL 15.14 and later), newer servers' settings.
_VOLATILE = re.compile(
    r"^(-- Dumped (from database|by pg_dump) version .*"
    r"|\\(un)?restrict .*"
    r"|SET transaction_timeout = .*)\n",
    re.MULTILINE,
)


def pg_dump_path() -> str:
    """QUANYI_PG_DUMP, else the newest installed PostgreSQL's pg_dump, else the one on PATH."""
    if os.environ.get("QUANYI_PG_DUMP"):
        return os.environ["QUANYI_PG_DUMP"]
    installed = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/pg_dump"), key=lambda p: int(p.parts[-3])
    )
    found = str(installed[-1]) if installed else shutil.which("pg_dump")
    if found is None:
        raise RuntimeError("pg_dump not found: install PostgreSQL's client or set QUANYI_PG_DUMP")
    return found


def stable(dump: str) -> str:
    """The dump without its volatile lines, and without the blank runs they leave."""
    text = _VOLATILE.sub("", dump)
    return re.sub(r"\n{3,}", "\n\n\n", text).strip("\n") + "\n"


async def dump_schema(database_url: str) -> str:
    proc = await asyncio.create_subprocess_exec(
        pg_dump_path(),
        "--schema-only",
        "--no-owner",
        "--no-privileges",
        "--dbname",
        database_url,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"pg_dump failed ({proc.returncode}): {err.decode().strip()}")
    return stable(out.decode())


async def migrated_schema(server_url: str | None = None) -> str:
    """The stable dump of a fresh database with every migration applied; `server_url`
    (postgresql://host:port) defaults to the test database's server."""
    server = server_url or TEST_DATABASE_URL.rsplit("/", 1)[0]
    name = f"quanyi_schema_{os.getpid()}_{secrets.token_hex(4)}"
    url = f"{server}/{name}"
    try:
        await migrate(url)
        return await dump_schema(url)
    finally:
        admin = await asyncpg.connect(f"{server}/postgres")
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


def main() -> int:
    SCHEMA_FILE.write_text(asyncio.run(migrated_schema()))
    print(f"wrote {SCHEMA_FILE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

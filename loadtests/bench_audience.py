"""`python -m loadtests.bench_audience`: 1,000,000 customer ids imported into one audience
through the service (no HTTP), timed, then Redis bytes per member measured over its hashes.

Runs on its own database (quanyi_benchaudience, migrated if needed) and Redis db 13 under its
own key prefix; it deletes only that prefix's keys and its own audience row."""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

from loadtests import scratch
from loadtests.bench.report import RULE, verdict
from quanyi.access.staff import Staff
from quanyi.audiences.members import file_source
from quanyi.core.settings import Settings
from quanyi.runtime import open_stores
from quanyi.stores.db import migrate
from quanyi.stores.keys import Keys

DATABASE_URL = "postgresql://127.0.0.1:5432/quanyi_benchaudience"
REDIS_URL = "redis://127.0.0.1:6379/13"
KEY_PREFIX = "qyba"
AUDIENCE = "bench-audience"
TARGET_S = 5.0
TARGET_BYTES_PER_MEMBER = 24.0
BENCH_STAFF = Staff("bench", "admin", "HQ")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m loadtests.bench_audience", description=__doc__)
    p.add_argument("--members", type=int, default=1_000_000, help="ids to import")
    return p


def write_ids(path: Path, members: int) -> None:
    with path.open("w") as f:
        f.write("customer_id\n")
        for start in range(0, members, 100_000):
            f.write("".join(f"C{i:09d}\n" for i in range(start, min(start + 100_000, members))))


async def clear(redis, keys: Keys) -> None:
    await scratch.clear_prefix(redis, keys.prefix)


async def bytes_in(redis, keys: Keys, version: int, buckets: int) -> int:
    pipe = redis.pipeline(transaction=False)
    for b in range(buckets):
        pipe.memory_usage(keys.audience_bucket(AUDIENCE, version, b), samples=0)
    return sum(n or 0 for n in await pipe.execute())


async def run(members: int) -> int:
    settings = Settings(redis_url=REDIS_URL, database_url=DATABASE_URL, key_prefix=KEY_PREFIX)
    await migrate(DATABASE_URL)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "members.csv"
        write_ids(path, members)
        async with open_stores(settings, consumer_groups=False) as stores:
            await clear(stores.redis, stores.keys)
            await stores.pool.execute("DELETE FROM audiences WHERE id = $1", AUDIENCE)
            audiences = stores.audiences()
            await audiences.create(BENCH_STAFF, AUDIENCE, "bench", "HQ")
            try:
                started = time.perf_counter()
                done = await audiences.import_members(BENCH_STAFF, AUDIENCE, file_source(path))
                seconds = time.perf_counter() - started
                pointer = await stores.redis.get(stores.keys.audience(AUDIENCE))
                version, buckets = (int(x) for x in pointer.split(":"))
                used = await bytes_in(stores.redis, stores.keys, version, buckets)
                sample = f"C{members // 2:09d}"
                member_found = await audiences.store.has(AUDIENCE, sample)
            finally:
                await clear(stores.redis, stores.keys)
                await stores.pool.execute("DELETE FROM audiences WHERE id = $1", AUDIENCE)
    per_member = used / max(done.members, 1)
    print(RULE)
    print(f"Quanyi audience import: {members:,} ids (C%09d) from a CSV file, service, no HTTP")
    print(RULE)
    print(f"members stored       {done.members:,} (rejected {done.rejected}), {buckets} hashes")
    print(
        f"import time          {seconds:.2f} s (target <= {TARGET_S:g} s)"
        f"  {verdict(seconds <= TARGET_S)}"
    )
    print(
        f"Redis per member     {per_member:.1f} B (target <= {TARGET_BYTES_PER_MEMBER:g} B)"
        f"  {verdict(per_member <= TARGET_BYTES_PER_MEMBER)}"
    )
    print(f"membership check     {sample}: {'member' if member_found else 'NOT FOUND'}")
    return 0 if done.members == members and member_found else 1


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    return asyncio.run(run(args.members))


if __name__ == "__main__":
    sys.exit(main())

"""`python -m loadtests.bench_reports`: the report summary over a ledger of 10,000,000 grants.

A scratch database gets 10,000,000 grants over 30 days (10 campaigns, 2 rewards each, 4
channels) with fulfilments for 30 % and redemptions for 10 %; `quanyi reports rebuild`'s
function rolls them up (timed). `quanyi serve` then answers GET /admin/v1/reports/summary over
the 30 days by day, by channel for one campaign, and by reward, one request at a time; the
target is p99 <= 200 ms. The baseline, in the same run, is the same figures counted straight
from the grants and their events, as a report without rollups would have to.

Runs on database quanyi_benchreports and Redis db 10 under prefix qybr; it drops only that
database and deletes only that prefix's keys."""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import asyncpg
from redis.asyncio import Redis
from rich.progress import Progress

from loadtests import scratch
from loadtests.bench.report import RULE, verdict
from loadtests.procs import free_port, quanyi_argv, running, wait_http
from loadtests.stats import percentile
from quanyi.access.staff import create_staff
from quanyi.ledger.rollups import rebuild_rollups

DATABASE = "quanyi_benchreports"
DATABASE_URL = f"postgresql://127.0.0.1:5432/{DATABASE}"
REDIS_URL = "redis://127.0.0.1:6379/10"
PREFIX = "qybr"
TZ = "Asia/Shanghai"
READER, PASSWORD = "bench-reader", "bench-reader-password-not-for-production"
GRANTS = 10_000_000
CHUNK = 1_000_000
DAYS = 30
REQUESTS = 60
TARGET_P99_MS = 200.0

# The catalog the grants name: 2 rights, 10 head-office campaigns of 2 rewards each, so the
# rollups carry face values and branches as a real ledger's do.
CATALOG = [
    """INSERT INTO rights (id, name, kind, face_value, unit_cost, created_by, proposed_by)
       SELECT 'right' || n, 'right ' || n, 'voucher', 1000 + n * 1000, 100 + n * 400, 'bench',
              'bench'
       FROM generate_series(0, 1) AS n""",
    """INSERT INTO campaigns (id, name, branch, starts_at, ends_at, channels, created_by)
       SELECT 'c' || n, 'campaign ' || n, 'HQ', now() - interval '40 days',
              now() + interval '10 days', ARRAY['app', 'wechat', 'h5', 'branch'], 'bench'
       FROM generate_series(0, 9) AS n""",
    """INSERT INTO rewards (campaign_id, id, right_id, unit_cost, face_value, stock,
                           per_customer_limit, position)
       SELECT 'c' || c, 'r' || r, 'right' || r, 100 + r * 400, 1000 + r * 1000, 10000000, 1, r
       FROM generate_series(0, 9) AS c, generate_series(0, 1) AS r""",
]
# Grants n..n+CHUNK-1, spread evenly over the 30 days before now.
INSERT_GRANTS = """
INSERT INTO grants (grant_id, campaign_id, reward_id, right_id, customer_id, channel_id,
                    request_id, unit_cost, status, granted_at, outbox_id)
SELECT 'G' || lpad(n::text, 10, '0'), 'c' || (n % 10), 'r' || (n % 2), 'right' || (n % 2),
       'C' || n, (ARRAY['app', 'wechat', 'h5', 'branch'])[1 + n % 4], 'q' || n, 100 + n % 2 * 400,
       CASE WHEN n % 10 = 0 THEN 'redeemed' WHEN n % 10 < 3 THEN 'fulfilled' ELSE 'granted' END,
       now() - make_interval(secs => (n::float8 / $3) * $4 * 86400), n || '-0'
FROM generate_series($1::bigint, $2::bigint) AS n
"""
INSERT_EVENTS = """
INSERT INTO grant_events (grant_id, event, at, actor, outbox_id)
SELECT grant_id, 'fulfilled', granted_at + interval '1 second', 'vendor:bench',
       split_part(outbox_id, '-', 1) || '-1'
FROM grants WHERE grant_id BETWEEN $1 AND $2 AND status IN ('fulfilled', 'redeemed')
UNION ALL
SELECT grant_id, 'redeemed', granted_at + interval '1 hour', 'vendor:bench',
       split_part(outbox_id, '-', 1) || '-2'
FROM grants WHERE grant_id BETWEEN $1 AND $2 AND status = 'redeemed'
"""
# What a summary by day would have to do without rollups.
BASELINE = """
SELECT d.day, d.issued, coalesce(e.fulfilled, 0), coalesce(e.redeemed, 0)
FROM (SELECT (granted_at AT TIME ZONE $1)::date AS day, count(*) AS issued, sum(unit_cost)
      FROM grants GROUP BY 1) d
LEFT JOIN (SELECT (at AT TIME ZONE $1)::date AS day,
                  count(*) FILTER (WHERE event = 'fulfilled') AS fulfilled,
                  count(*) FILTER (WHERE event = 'redeemed') AS redeemed
           FROM grant_events GROUP BY 1) e USING (day)
ORDER BY 1
"""
QUERIES = {
    "by day, 30 days": "group_by=day",
    "by channel, one campaign": "group_by=channel&campaign_id=c3",
    "by reward": "group_by=reward",
}


def say(message: str) -> None:
    print(f"bench-reports: {message}", flush=True)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m loadtests.bench_reports", description=__doc__)
    p.add_argument("--grants", type=int, default=GRANTS, help="grants in the ledger")
    p.add_argument("--quick", action="store_true", help="a smoke run: 200,000 grants")
    return p


async def fresh_database() -> None:
    await scratch.fresh_database(DATABASE_URL)


async def drop_stores() -> None:
    """The scratch database, and the keys the API made under the bench's prefix."""
    await scratch.drop_database(DATABASE_URL)
    redis = Redis.from_url(REDIS_URL)
    try:
        await scratch.clear_prefix(redis, PREFIX)
    finally:
        await redis.aclose()


async def load_ledger(pool: asyncpg.Pool, grants: int) -> float:
    """The grants and their events, a chunk at a time; returns the seconds the rollups took."""
    for statement in CATALOG:
        await pool.execute(statement)
    with Progress() as bar:
        task = bar.add_task("ledger rows", total=grants)
        for first in range(0, grants, CHUNK):
            last = min(first + CHUNK, grants) - 1
            async with pool.acquire() as conn:
                await conn.execute(INSERT_GRANTS, first, last, grants, DAYS)
                await conn.execute(INSERT_EVENTS, f"G{first:010d}", f"G{last:010d}")
            bar.advance(task, last - first + 1)
    await pool.execute("ANALYZE")
    started = time.perf_counter()
    with Progress() as bar:
        task = bar.add_task("rolling up", total=grants)
        await rebuild_rollups(pool, TZ, lambda n: bar.advance(task, n))
    return time.perf_counter() - started


async def summaries(url: str, token: str) -> dict[str, list[float]]:
    """Milliseconds per request, one at a time, for each query."""
    times: dict[str, list[float]] = {name: [] for name in QUERIES}
    headers = {"Authorization": f"Bearer {token}"}
    async with aiohttp.ClientSession(headers=headers) as http:
        for name, query in QUERIES.items():
            for n in range(REQUESTS + 5):
                started = time.perf_counter()
                async with http.get(f"{url}/admin/v1/reports/summary?{query}") as resp:
                    body = await resp.json()
                    if resp.status != 200:
                        raise RuntimeError(f"summary {query}: {resp.status} {body}")
                if n >= 5:  # the first few warm the pool and the plan cache
                    times[name].append((time.perf_counter() - started) * 1000)
    return times


async def run(grants: int) -> int:
    say(f"scratch database {DATABASE}: {grants:,} grants over {DAYS} days")
    await fresh_database()
    try:
        pool = await asyncpg.create_pool(DATABASE_URL, min_size=1, max_size=2)
        try:
            rollup_s = await load_ledger(pool, grants)
            await create_staff(pool, READER, PASSWORD, "approver", "HQ")
            started = time.perf_counter()
            await pool.fetch(BASELINE, TZ)
            baseline_ms = (time.perf_counter() - started) * 1000
        finally:
            await pool.close()
        port = free_port()
        env = dict(os.environ)
        env.update(
            QUANYI_REDIS_URL=REDIS_URL,
            QUANYI_DATABASE_URL=DATABASE_URL,
            QUANYI_KEY_PREFIX=PREFIX,
            QUANYI_HTTP_PORT=str(port),
            QUANYI_TZ=TZ,
            QUANYI_LOG_LEVEL="WARNING",
            QUANYI_ACCESS_LOG="false",
        )
        url = f"http://127.0.0.1:{port}"
        with tempfile.TemporaryDirectory(prefix="quanyi-bench-reports-") as work_dir:
            argv = quanyi_argv("serve", "--port", str(port))
            async with running("api", argv, env, Path(work_dir)) as api:
                await wait_http(api, f"{url}/healthz")
                async with aiohttp.ClientSession() as http:
                    async with http.post(
                        f"{url}/admin/v1/login", json={"username": READER, "password": PASSWORD}
                    ) as resp:
                        token = (await resp.json())["token"]
                times = await summaries(url, token)
    finally:
        await drop_stores()
    print(RULE)
    print(f"Quanyi reports: GET /admin/v1/reports/summary over {grants:,} grants")
    print(RULE)
    print(
        f"rollups built from the ledger     {rollup_s:,.1f} s ({grants / rollup_s:,.0f} grants/s)"
    )
    ok = True
    for name, ms in times.items():
        p99 = percentile(ms, 0.99)
        ok = ok and p99 <= TARGET_P99_MS
        print(
            f"summary {name:<26} p50 {statistics.median(ms):6.1f} ms, p99 {p99:6.1f} ms"
            f"  (target p99 <= {TARGET_P99_MS:.0f} ms)  {verdict(p99 <= TARGET_P99_MS)}"
        )
    by_day = statistics.median(times["by day, 30 days"])
    print(
        f"baseline: the day figures counted from the grants   {baseline_ms:,.0f} ms"
        f" ({baseline_ms / by_day:,.0f} x the summary's p50)"
    )
    print(f"  {REQUESTS} requests each, one at a time, after 5 to warm up")
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    return asyncio.run(run(200_000 if args.quick else args.grants))


if __name__ == "__main__":
    sys.exit(main())

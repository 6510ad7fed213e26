"""`python -m loadtests.bench_simulate`: the dry run of a draft campaign over a month of
1,000,000 card transactions of ~100,000 customers (1% of them reversed), through the service
(the process pool, the parse and the replay; no HTTP), timed end to end.

The campaign: a monthly goal of five purchases of at least ¥100 (auto, claw_back), a weekly
goal of ¥2,000 at supermarkets, and a welcome reward without a goal; a budget.

Runs on its own database (quanyi_benchsimulate, migrated if needed) and Redis db 13 under its
own key prefix; it deletes only that prefix's keys and its own campaign and right rows."""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import time
from datetime import datetime, timedelta, timezone

from loadtests import scratch
from loadtests.bench.report import RULE, verdict
from quanyi.access.staff import Staff
from quanyi.campaigns.service import CampaignService
from quanyi.core.settings import Settings
from quanyi.runtime import open_stores
from quanyi.stores.db import migrate
from quanyi.stores.keys import Keys

DATABASE_URL = "postgresql://127.0.0.1:5432/quanyi_benchsimulate"
REDIS_URL = "redis://127.0.0.1:6379/13"
KEY_PREFIX = "qybs"
CAMPAIGN = "bench-simulate"
RIGHT = "bench-coffee"
TARGET_S = 30.0
BENCH_STAFF = Staff("bench", "admin", "HQ")
# Admits the right BENCH_STAFF proposed: whoever proposes a right may not admit it.
BENCH_CHECKER = Staff("bench-approver", "approver", "HQ")
SHANGHAI = timezone(timedelta(hours=8))
MONTH = datetime(2026, 11, 1, tzinfo=SHANGHAI)
MCCS = ("5411", "5411", "5812", "5999", "4511", "6011")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m loadtests.bench_simulate", description=__doc__)
    p.add_argument("--transactions", type=int, default=1_000_000)
    p.add_argument("--customers", type=int, default=100_000)
    return p


def transactions(count: int, customers: int) -> bytes:
    """`count` transactions of November 2026 in random order, 1% followed by their reversal."""
    rng = random.Random(7)
    span = 30 * 86_400
    lines = ["customer_id,amount,mcc,occurred_at,event_id,reversal_of"]
    for i in range(count):
        customer = f"C{rng.randrange(customers):08d}"
        amount = rng.randrange(1_000, 60_000)
        at = MONTH + timedelta(seconds=rng.randrange(span))
        lines.append(f"{customer},{amount},{rng.choice(MCCS)},{at.isoformat()},e{i},")
        if i % 100 == 0:
            later = at + timedelta(days=1)
            lines.append(f"{customer},{amount},{MCCS[0]},{later.isoformat()},v{i},e{i}")
    return ("\n".join(lines) + "\n").encode()


def campaign_body() -> dict:
    return {
        "id": CAMPAIGN,
        "name": "bench dry run",
        "branch": "HQ",
        "starts_at": MONTH.isoformat(),
        "ends_at": (MONTH + timedelta(days=30)).isoformat(),
        "channels": ["app"],
        "budget": 5_000_000,
        "rewards": [
            {
                "id": "monthly",
                "right_id": RIGHT,
                "stock": 20_000,
                "per_customer_limit": 1,
                "goal": {"window": "month", "count": 5, "min_amount": 10_000},
                "grant": "auto",
                "claw_back": True,
            },
            {
                "id": "grocery",
                "right_id": RIGHT,
                "stock": 50_000,
                "daily_stock": 3_000,
                "per_customer_limit": 4,
                "goal": {"window": "week", "amount": 200_000, "mcc_in": ["5411"]},
            },
            {"id": "welcome", "right_id": RIGHT, "stock": 30_000, "per_customer_limit": 1},
        ],
    }


async def clear(redis, keys: Keys) -> None:
    await scratch.clear_prefix(redis, keys.prefix)


async def forget(pool) -> None:
    await pool.execute("DELETE FROM rewards WHERE campaign_id = $1", CAMPAIGN)
    await pool.execute("DELETE FROM campaigns WHERE id = $1", CAMPAIGN)
    await pool.execute("DELETE FROM rights WHERE id = $1", RIGHT)


async def run(count: int, customers: int) -> int:
    settings = Settings(redis_url=REDIS_URL, database_url=DATABASE_URL, key_prefix=KEY_PREFIX)
    await migrate(DATABASE_URL)
    made = time.perf_counter()
    body = transactions(count, customers)
    made = time.perf_counter() - made
    async with open_stores(settings, consumer_groups=False) as stores:
        await clear(stores.redis, stores.keys)
        await forget(stores.pool)
        campaigns = CampaignService(stores.pool, stores.redis, stores.keys)
        right = {"id": RIGHT, "name": "coffee", "kind": "voucher", "face_value": 200}
        await campaigns.create_right(BENCH_STAFF, {**right, "unit_cost": 100})
        await campaigns.rights.transition(BENCH_CHECKER, RIGHT, "admit")
        await campaigns.create(BENCH_STAFF, campaign_body())
        try:
            started = time.perf_counter()
            result = await campaigns.dry_runs.simulate(
                BENCH_STAFF, CAMPAIGN, body, settings.tz, None
            )
            seconds = time.perf_counter() - started
        finally:
            await clear(stores.redis, stores.keys)
            await forget(stores.pool)
    rows = body.count(b"\n") - 1
    print(RULE)
    print(f"Quanyi campaign dry run: {rows:,} transactions of ~{customers:,} customers, service")
    print(RULE)
    print(f"file                 {len(body) / 1e6:.1f} MB (made in {made:.1f} s)")
    print(
        f"dry run              {seconds:.2f} s, {rows / seconds:,.0f} rows/s"
        f" (target <= {TARGET_S:g} s)  {verdict(seconds <= TARGET_S)}"
    )
    print(
        f"forecast             {result['customers']:,} customers, {result['qualified']:,}"
        f" qualified, {result['grants']:,} grants, cost {result['cost']:,} fen,"
        f" stock out {result['stock_exhausted_at']}"
    )
    for reward in result["by_reward"]:
        print(
            f"  {reward['reward_id']:<18} {reward['qualified']:>7,} qualified"
            f" {reward['grants']:>7,} grants  stock out {reward['stock_exhausted_at']}"
        )
    return 0 if seconds <= TARGET_S and result["grants"] > 0 else 1


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    return asyncio.run(run(args.transactions, args.customers))


if __name__ == "__main__":
    sys.exit(main())

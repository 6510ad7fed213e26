"""`python -m loadtests.bench_issuance`: one bulk issuance of 1,000,000 members (or --members),
timed from its approval until every member is issued, and until the PostgreSQL ledger holds
every grant, fulfilled internally. Target: <= 20 s for the ledger.

An audience of `members` customers, a campaign with one reward of an internal right (no vendor)
and as much stock, one job created and approved; then `quanyi worker issuance`, `quanyi worker
ledger` and `quanyi worker fulfil` run as processes of their own, as deployed.

Runs on database quanyi_benchissue (migrated) and Redis db 14 under prefix qybi; it deletes only
that prefix's keys and drops only that database."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg

from loadtests.bench.report import RULE, verdict
from loadtests.procs import quanyi_argv, running
from quanyi.access.staff import Staff, create_staff
from quanyi.audiences.members import body_source
from quanyi.campaigns.issuances import IssuanceBody, IssuanceService
from quanyi.campaigns.service import CampaignService
from quanyi.core.settings import Settings
from quanyi.inventory.readiness import mark_store_ready
from quanyi.runtime import open_stores
from quanyi.stores.db import migrate

PG_ADMIN_URL = "postgresql://127.0.0.1:5432/postgres"
DATABASE = "quanyi_benchissue"
DATABASE_URL = f"postgresql://127.0.0.1:5432/{DATABASE}"
REDIS_URL = "redis://127.0.0.1:6379/14"
PREFIX = "qybi"
MARKETER = Staff("bench-marketer", "marketer", "HQ")
APPROVER = Staff("bench-approver", "approver", "HQ")
TARGET_S = 20.0
MEMBERS = 1_000_000


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m loadtests.bench_issuance", description=__doc__)
    p.add_argument("--members", type=int, default=MEMBERS, help="audience members to issue to")
    p.add_argument("--timeout", type=float, default=900.0, help="seconds to wait at most")
    return p


def settings() -> Settings:
    return Settings(redis_url=REDIS_URL, database_url=DATABASE_URL, key_prefix=PREFIX)


def env() -> dict[str, str]:
    return {
        **os.environ,
        "QUANYI_DATABASE_URL": DATABASE_URL,
        "QUANYI_REDIS_URL": REDIS_URL,
        "QUANYI_KEY_PREFIX": PREFIX,
        "QUANYI_WORKER_METRICS_PORT": "0",
        "QUANYI_LOG_LEVEL": "WARNING",
    }


async def fresh_stores() -> None:
    admin = await asyncpg.connect(PG_ADMIN_URL)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)')
    finally:
        await admin.close()
    await migrate(DATABASE_URL)
    async with open_stores(settings(), consumer_groups=False) as stores:
        batch = [k async for k in stores.redis.scan_iter(match=f"{PREFIX}:*", count=5000)]
        for i in range(0, len(batch), 1000):
            await stores.redis.unlink(*batch[i : i + 1000])


async def seed(members: int) -> float:
    """The audience, the campaign and an approved job; the seconds the approval took (it
    freezes the member list)."""
    async with open_stores(settings()) as stores:
        pool = stores.pool
        for staff in (MARKETER, APPROVER):
            await create_staff(pool, staff.username, "bench-password", staff.role, "HQ")
        audiences = stores.audiences()
        await audiences.create(MARKETER, "bench-aud", "bench audience", "HQ")
        ids = b"".join(f"m{i:07d}\n".encode() for i in range(members))
        await audiences.import_members(MARKETER, "bench-aud", body_source(ids, "text/csv"))
        service = CampaignService(pool, stores.redis, stores.keys)
        right = {
            "id": "bench-pass",
            "name": "p",
            "kind": "voucher",
            "face_value": 2,
            "unit_cost": 1,
        }
        await service.create_right(MARKETER, right)
        await service.rights.transition(APPROVER, "bench-pass", "admit")
        now = datetime.now(UTC)
        body = {
            "id": "bulk",
            "name": "bench bulk",
            "branch": "HQ",
            "starts_at": (now - timedelta(days=1)).isoformat(),
            "ends_at": (now + timedelta(days=20)).isoformat(),
            "channels": ["bench-app"],
            "rewards": [
                {"id": "r1", "right_id": "bench-pass", "stock": members, "per_customer_limit": 1}
            ],
        }
        await service.create(MARKETER, body)
        await service.transition(MARKETER, "bulk", "submit")
        await service.transition(APPROVER, "bulk", "approve")
        await mark_store_ready(
            stores.redis, stores.keys, "bench: a fresh scratch store", time.time()
        )
        jobs = IssuanceService(pool, stores.redis, stores.keys, dual_approval_above=0)
        job = IssuanceBody(id="job1", reward_id="r1", audience_id="bench-aud")
        await jobs.create(MARKETER, "bulk", job)
        started = time.perf_counter()
        await jobs.approve(APPROVER, "job1")
        return time.perf_counter() - started


async def measure(members: int, timeout_s: float, log_dir: Path) -> tuple[float, float, float]:
    """Seconds from the workers' start until the job is done, until the ledger holds every
    grant, and until every grant is fulfilled there."""
    conn = await asyncpg.connect(DATABASE_URL)
    done_s = ledger_s = fulfilled_s = float("nan")
    try:
        async with (
            running("ledger", quanyi_argv("worker", "ledger"), env(), log_dir),
            running("fulfil", quanyi_argv("worker", "fulfil"), env(), log_dir),
        ):
            started = time.perf_counter()
            async with running("issuance", quanyi_argv("worker", "issuance"), env(), log_dir):
                while time.perf_counter() - started < timeout_s:
                    await asyncio.sleep(0.25)
                    now = time.perf_counter() - started
                    job = await conn.fetchrow("SELECT state, issued FROM issuance_jobs")
                    if job["state"] == "done" and done_s != done_s:
                        done_s = now
                        print(f"issued {job['issued']:,} in {done_s:.1f} s", flush=True)
                    if done_s == done_s:
                        break
            while time.perf_counter() - started < timeout_s:
                held, fulfilled = await conn.fetchrow(
                    "SELECT count(*), count(*) FILTER (WHERE status = 'fulfilled') FROM grants"
                )
                now = time.perf_counter() - started
                if held >= members and ledger_s != ledger_s:
                    ledger_s = now
                if fulfilled >= members:
                    fulfilled_s = now
                    break
                await asyncio.sleep(0.5)
        issued = await conn.fetchval("SELECT issued FROM issuance_jobs")
        twice = await conn.fetchval(
            "SELECT count(*) FROM (SELECT customer_id FROM grants GROUP BY 1 HAVING count(*) > 1) t"
        )
        if issued != members or twice:
            raise SystemExit(f"wrong figures: issued {issued}, customers granted twice {twice}")
    finally:
        await conn.close()
    return done_s, ledger_s, fulfilled_s


async def bench(members: int, timeout_s: float) -> bool:
    await fresh_stores()
    print(f"seeding an audience of {members:,} and an approved job ...", flush=True)
    approve_s = await seed(members)
    with tempfile.TemporaryDirectory(prefix="bench-issuance-") as logs:
        done_s, ledger_s, fulfilled_s = await measure(members, timeout_s, Path(logs))
    scale = MEMBERS / members  # a smaller run's figures, scaled to 1,000,000, for the target
    ok = fulfilled_s * scale <= TARGET_S
    print(RULE)
    print(f"Quanyi bench: bulk issuance of {members:,} members (one job, one worker each)")
    print(RULE)
    print(f"approval (freezes the member list):      {approve_s:7.2f} s")
    print(f"all issued (claim.lua, channel bulk):    {done_s:7.2f} s  {members / done_s:9,.0f}/s")
    print(
        f"all in the ledger:                       {ledger_s:7.2f} s  {members / ledger_s:9,.0f}/s"
    )
    print(f"all fulfilled (internal) in the ledger:  {fulfilled_s:7.2f} s")
    extra = (
        "" if members == MEMBERS else f" (x{scale:g} for 1,000,000: {fulfilled_s * scale:.1f} s)"
    )
    print(
        f"target <= {TARGET_S:.0f} s for 1,000,000 in the ledger, fulfilled{extra}: {verdict(ok)}"
    )
    print(RULE)
    return ok


def main() -> None:
    args = _parser().parse_args()
    sys.exit(0 if asyncio.run(bench(args.members, args.timeout)) else 1)


if __name__ == "__main__":
    main()

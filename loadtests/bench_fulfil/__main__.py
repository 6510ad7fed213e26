"""`python -m loadtests.bench_fulfil`: options, the stack, the phases, then the report."""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
from redis.asyncio import Redis

from loadtests import bench_fulfil, seed
from loadtests.bench_fulfil.drain import Drain, drain
from loadtests.bench_fulfil.internal import internal_phase
from loadtests.bench_fulfil.plan import (
    DATABASE_URL,
    KEY_PREFIX,
    LOCK_PATH,
    MAX_IN_FLIGHT,
    REDIS_URL,
    THROUGHPUT_LATENCY_MS,
    Lane,
    Options,
    campaign_plan,
    clear_prefix,
)
from loadtests.bench_fulfil.report import report
from loadtests.bench_fulfil.waiting import wait_phase
from loadtests.procs import cancel_on_sigterm, free_port, quanyi_argv
from loadtests.scenario import CampaignPlan
from loadtests.stack import SetupError, Stack, exclusive, make_vendor_keys, reset_database


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m loadtests.bench_fulfil", description=bench_fulfil.__doc__
    )
    p.add_argument("--quick", action="store_true", help="smaller backlogs and fewer claims")
    p.add_argument("--grants", type=int, help="unsigned backlog (default 20,000; quick 5,000)")
    p.add_argument("--signed-grants", type=int, help="signed backlog (default 4,000; quick 1,000)")
    p.add_argument(
        "--internal-grants",
        type=int,
        help="grants of a right with no vendor (default 20,000; quick 5,000)",
    )
    p.add_argument(
        "--internal-only", action="store_true", help="only the grants of a right with no vendor"
    )
    p.add_argument("--claims", type=int, help="claims with wait_ms (default 2,000; quick 500)")
    p.add_argument("--concurrency", type=int, default=16, help="claims in flight (default 16)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    opts = Options(
        grants=args.grants or (5_000 if args.quick else 20_000),
        signed_grants=args.signed_grants or (1_000 if args.quick else 4_000),
        claims=args.claims or (500 if args.quick else 2_000),
        internal_grants=args.internal_grants or (5_000 if args.quick else 20_000),
        concurrency=args.concurrency,
    )
    if (
        min(opts.grants, opts.signed_grants, opts.claims, opts.concurrency, opts.internal_grants)
        < 1
    ):
        print("grants, claims and concurrency must be positive", file=sys.stderr)
        return 2
    try:
        with exclusive(LOCK_PATH):
            return asyncio.run(_bench(opts, args.internal_only))
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("bench_fulfil: stopped; the children were shut down", file=sys.stderr)
        return 130
    except SetupError as exc:
        print(f"bench_fulfil: {exc}", file=sys.stderr)
        return 1
    except aiohttp.ClientError as exc:
        print(f"bench_fulfil: lost a child: {exc!r}", file=sys.stderr)
        return 1


async def _bench(opts: Options, internal_only: bool = False) -> int:
    cancel_on_sigterm()
    stack = Stack(
        Path(tempfile.mkdtemp(prefix="quanyi-benchfulfil-")),
        database_url=DATABASE_URL,
        redis_url=REDIS_URL,
        key_prefix=KEY_PREFIX,
    )
    started = time.monotonic()

    def say(message: str) -> None:
        print(f"[{time.monotonic() - started:5.1f}s] {message}", flush=True)

    say(f"logs in {stack.workdir}")
    await reset_database(DATABASE_URL)
    await clear_prefix(REDIS_URL, KEY_PREFIX)
    redis = Redis.from_url(REDIS_URL, decode_responses=True)
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
            secret, plain, signed, internal = await _setup(stack, http)
            inside = await internal_phase(stack, redis, internal, opts.internal_grants, say)
            if internal_only:
                print(report(opts, {}, None, inside))
                return 0
            drains: dict[str, Drain] = {}
            for lane, count in ((plain, opts.grants), (signed, opts.signed_grants)):
                drains[lane.name] = await drain(stack, redis, http, lane, count, say)
            wait = await wait_phase(stack, http, secret, signed, opts, say)
    finally:
        await redis.aclose()
        await stack.stop_all()
    print(report(opts, drains, wait, inside))
    return 0


async def _setup(stack: Stack, http: aiohttp.ClientSession) -> tuple[str, Lane, Lane, CampaignPlan]:
    """Schema, accounts, two simulators (one signing), the API, and a vendor and a campaign
    for each simulator, and a campaign of a right with no vendor. Returns the channel secret,
    the two lanes and that campaign."""
    await stack.run("migrate", *quanyi_argv("migrate"))
    passwords, secret = await seed.accounts(DATABASE_URL)
    keys = make_vendor_keys(stack.workdir)
    plain_url = await stack.start_vendor_sim(None, THROUGHPUT_LATENCY_MS)
    signed_url = await stack.start_vendor_sim(
        keys, THROUGHPUT_LATENCY_MS, name="vendor-sim-signed", port=free_port()
    )
    await stack.start_api()
    await stack.wait_ready()
    plain = Lane(
        "unsigned", "bf-plain", plain_url, campaign_plan("bf-plain", "bf-plain"), signed=False
    )
    signed = Lane(
        "RSA-signed", "bf-signed", signed_url, campaign_plan("bf-signed", "bf-signed"), True
    )
    admin, marketer, approver = [
        await seed.Admin.login(http, stack.base_url, user, passwords[user])
        for user in (seed.ADMIN, seed.MARKETER, seed.APPROVER)
    ]
    for lane in (plain, signed):
        vendor_keys = keys if lane.signed else None
        await seed.vendor(admin, approver, lane.vendor_id, lane.sim_url, vendor_keys, MAX_IN_FLIGHT)
        await seed.campaign(marketer, approver, lane.plan)
    internal = campaign_plan("bf-internal", None)
    await seed.campaign(marketer, approver, internal)
    return secret, plain, signed, internal


if __name__ == "__main__":
    sys.exit(main())

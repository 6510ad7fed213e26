"""`python -m loadtests.run [--short] [--users N] [--duration S] [--cluster [--masters N]]`: a
self-contained load test.

Starts the service on its own database (quanyi_loadtest, recreated), Redis db 10 (flushed), or
with --cluster a scratch Redis Cluster of its own (killed at the end), and key prefix `qylt`
on free ports, with a simulated vendor and the ledger and fulfilment workers;
creates staff, a channel, the card system's channel, the vendor and three campaigns (one
fulfilled at the vendor, one granted by card events reaching a goal), runs
Locust headless against it, waits for the ledger to catch up and fulfilment to settle, and
audits the invariants. Exits non-zero when Locust failed (errors or the p99 SLA) or an invariant
does not hold.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
from redis.asyncio import Redis

from loadtests import audit, fulfilment_audit, seed
from loadtests import scenario as sc
from loadtests.procs import BIN, cancel_on_sigterm
from loadtests.scratch_redis import ScratchServers, redis_tools_available
from loadtests.stack import (
    DATABASE_URL,
    KEY_PREFIX,
    SetupError,
    Stack,
    VendorKeys,
    exclusive,
    make_vendor_keys,
    service,
    sim_stats,
)
from quanyi.stores.keys import Keys

LOCUSTFILE = Path(__file__).resolve().parent / "locustfile.py"
LEDGER_TIMEOUT_S = 60.0
FULFILMENT_TIMEOUT_S = 30.0
# Past the planned duration, Locust gets this long to stop before it is killed.
LOCUST_GRACE_S = 60.0
# The cluster run's virtual shards: a few per master (so shards move with slots), as many as
# the cluster benchmark's.
CLUSTER_SHARDS = 16
# `redis-cli --cluster create` wants at least three masters.
MIN_MASTERS = 3


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m loadtests.run", description=__doc__.split("\n")[0])
    p.add_argument("--short", action="store_true", help="about 25 s of load (make loadtest)")
    p.add_argument("--users", type=int, help="concurrent Locust users (default 50)")
    p.add_argument(
        "--spawn-rate", type=float, help="users started per second (default: all in 1 s)"
    )
    p.add_argument("--duration", type=int, help="seconds of load (default 25 short, 180 otherwise)")
    p.add_argument(
        "--p99-ms",
        type=float,
        default=float(os.environ.get(sc.ENV_P99_MS, sc.DEFAULT_P99_MS)),
        help=f"p99 SLA per channel endpoint, ms (default {sc.DEFAULT_P99_MS:g}, or ${sc.ENV_P99_MS})",
    )
    p.add_argument(
        "--cluster",
        action="store_true",
        help="run against a scratch Redis Cluster of its own instead of db 10 of the local Redis",
    )
    p.add_argument(
        "--masters", type=int, default=3, help="masters of the --cluster (default 3, at least 3)"
    )
    p.add_argument(
        "--shards",
        type=int,
        default=CLUSTER_SHARDS,
        help=f"the service's redis_shards on the --cluster (default {CLUSTER_SHARDS})",
    )
    return p


def stack_for(args: argparse.Namespace, workdir: Path, cluster_url: str | None) -> Stack:
    """The run's stack: on db 10 of the local Redis, or with `cluster_url` (a node of the
    scratch cluster) its processes set to the cluster and `args.shards` shards."""
    if not args.cluster:
        return Stack(workdir)
    if cluster_url is None:
        raise SetupError("--cluster needs the scratch cluster's URL")
    return Stack(workdir, redis_url=cluster_url, redis_cluster=True, redis_shards=args.shards)


@contextlib.contextmanager
def _stack(args: argparse.Namespace) -> Iterator[Stack]:
    """The stack in a fresh folder; with --cluster, its scratch cluster running (in the folder's
    redis/) until we leave, however we leave."""
    workdir = Path(tempfile.mkdtemp(prefix="quanyi-loadtest-"))
    if not args.cluster:
        yield stack_for(args, workdir, None)
        return
    if not redis_tools_available():
        raise SetupError("--cluster needs redis-server and redis-cli on PATH")
    with contextlib.ExitStack() as running:
        try:
            # Entering stops what it started when it fails; leaving kills the cluster.
            servers = running.enter_context(ScratchServers(workdir / "redis", masters=args.masters))
        except (OSError, RuntimeError, subprocess.SubprocessError) as exc:
            detail = getattr(exc, "stderr", None) or b""
            raise SetupError(
                f"scratch redis cluster: {exc} {detail.decode(errors='replace')}"
            ) from exc
        yield stack_for(args, workdir, servers.url)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    args.users = args.users or 50
    args.spawn_rate = args.spawn_rate or args.users
    args.duration = args.duration or (25 if args.short else 180)
    if args.users < 1 or args.duration < 1 or args.spawn_rate <= 0:
        print("users, duration and spawn rate must be positive", file=sys.stderr)
        return 2
    if args.cluster and (args.masters < MIN_MASTERS or not 1 <= args.shards <= 1024):
        print(f"a cluster needs at least {MIN_MASTERS} masters, 1 to 1024 shards", file=sys.stderr)
        return 2
    try:
        with exclusive(), _stack(args) as stack:
            return asyncio.run(_run(args, stack))
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("loadtest: stopped; the service was shut down", file=sys.stderr)
        return 130
    except SetupError as exc:  # the message carries the tail of the failing process's log
        print(f"loadtest: {exc}", file=sys.stderr)
        return 1
    except aiohttp.ClientError as exc:  # the API went away mid-run; its log says why
        print(f"loadtest: lost the API: {exc!r}", file=sys.stderr)
        return 1


async def _run(args: argparse.Namespace, stack: Stack) -> int:
    cancel_on_sigterm()
    plan = sc.scenario(args.short)
    summary_path = stack.workdir / "summary.json"
    made: dict[str, Any] = {}

    async def accounts() -> None:
        made["passwords"], made["channel_secret"] = await seed.accounts(DATABASE_URL)
        made["events_secret"] = await seed.events_channel(DATABASE_URL)

    vendor_keys = make_vendor_keys(stack.workdir)

    print(
        f"loadtest: API {stack.base_url}, vendor {stack.sim_url}, redis {stack.redis_url}"
        f"{' (cluster)' if stack.redis_cluster else ''}, logs in {stack.workdir}",
        flush=True,
    )
    async with service(stack, accounts, vendor_keys, sc.SIM_LATENCY_MS):
        await stack.wait_ready()
        timeout = aiohttp.ClientTimeout(total=30)
        async with aiohttp.ClientSession(timeout=timeout) as http:

            async def login(username: str) -> seed.Admin:
                password = made["passwords"][username]
                return await seed.Admin.login(http, stack.base_url, username, password)

            marketer, approver = await login(seed.MARKETER), await login(seed.APPROVER)
            admin = await login(seed.ADMIN)
            await seed.vendor(admin, approver, sc.VENDOR_ID, stack.sim_url, vendor_keys)
            await seed.campaigns(marketer, approver, plan)
            print(
                f"loadtest: {args.users} users for {args.duration} s; flash stock "
                f"{plan.flash.reward.stock} for {plan.flash.customers} customers",
                flush=True,
            )
            sampler = asyncio.create_task(audit.sample_ledger_lag(marketer, plan.flash.id))
            try:
                locust_rc = await _locust(stack, args, plan, made, summary_path, vendor_keys)
            finally:
                sampler.cancel()
            lag = await asyncio.gather(sampler, return_exceptions=True)
            summary = _read_summary(summary_path)
            died = stack.check_alive
            caught_up = await audit.wait_for_ledger(marketer, plan, LEDGER_TIMEOUT_S, died)
            db = await asyncpg.connect(DATABASE_URL)
            redis = stack.redis_client()
            shards = stack.redis_shards  # the service's: Redis's side is read over every one
            try:
                settled = await audit.wait_for_fulfilment(
                    db, redis, KEY_PREFIX, plan, FULFILMENT_TIMEOUT_S, died, shards=shards
                )
                vendor = await sim_stats(http, stack.sim_url)
                checks = await audit.audit(
                    marketer, db, redis, KEY_PREFIX, plan, summary, shards=shards
                )
                checks += await fulfilment_audit.fulfilment(
                    db, redis, KEY_PREFIX, plan, summary, vendor, shards=shards
                )
                where = await _placement(stack, redis, plan)
            finally:
                await db.close()
                await redis.aclose()
        dead = stack.check_alive()
    checks = [
        audit.Check(
            "locust passed (no failures, p99 within SLA)", locust_rc == 0, f"exit code {locust_rc}"
        ),
        audit.Check(
            "simulator, API, ledger and fulfilment workers stayed up",
            not dead,
            ", ".join(dead) or "yes",
        ),
        caught_up,
        settled,
        *checks,
    ]
    ok = all(c.ok for c in checks)
    print(_report(args, summary, lag[0], vendor, where, checks, ok))
    for death in dead:  # "NAME exited CODE": why it died is at the end of its log
        name = death.split()[0]
        print(f"loadtest: {death}; the end of {name}.log:\n{stack.tail(name, 15)}", file=sys.stderr)
    if not ok:
        print(f"loadtest: logs of the service in {stack.workdir}", file=sys.stderr)
    return 0 if ok else 1


async def _locust(
    stack: Stack,
    args: argparse.Namespace,
    plan: sc.Scenario,
    made: dict[str, Any],
    summary: Path,
    vendor_keys: VendorKeys,
) -> int:
    env = {
        sc.ENV_CHANNEL_ID: seed.CHANNEL_ID,
        sc.ENV_CHANNEL_SECRET: made["channel_secret"],
        sc.ENV_EVENTS_CHANNEL_ID: seed.EVENTS_CHANNEL_ID,
        sc.ENV_EVENTS_CHANNEL_SECRET: made["events_secret"],
        sc.ENV_GOAL_CAMPAIGN: plan.goal.id,
        sc.ENV_GOAL_CUSTOMERS: str(plan.goal.customers),
        sc.ENV_FLASH_CAMPAIGN: plan.flash.id,
        sc.ENV_FLASH_CUSTOMERS: str(plan.flash.customers),
        sc.ENV_STEADY_CAMPAIGN: plan.steady.id,
        sc.ENV_STEADY_REWARD: plan.steady.reward.id,
        sc.ENV_STEADY_CUSTOMERS: str(plan.steady.customers),
        sc.ENV_P99_MS: str(args.p99_ms),
        sc.ENV_SUMMARY: str(summary),
        sc.ENV_SIM_URL: stack.sim_url,
        sc.ENV_VENDOR_ID: sc.VENDOR_ID,
        sc.ENV_WAIT_MS: str(sc.DEFAULT_WAIT_MS),
        sc.ENV_VENDOR_KEY_FILE: str(vendor_keys.vendor_private),
        sc.ENV_STATEMENT_MIB: str(sc.DEFAULT_STATEMENT_MIB),
    }
    locust = await stack.start(
        "locust",
        str(BIN / "locust"),
        "-f", str(LOCUSTFILE),
        "--headless",
        "--only-summary",
        "-u", str(args.users),
        "-r", str(args.spawn_rate),
        "-t", f"{args.duration}s",
        "--stop-timeout", "5",
        "--host", stack.base_url,
        env=env,
        log=False,  # its summary table is part of the run's output
    )  # fmt: skip
    try:
        return await asyncio.wait_for(locust.wait(), args.duration + LOCUST_GRACE_S)
    except TimeoutError:
        print("loadtest: locust overran its duration; stopping it", file=sys.stderr)
        await stack.stop("locust")
        return 1


async def _placement(stack: Stack, redis: Redis, plan: sc.Scenario) -> str:
    """Where the run's Redis data lived: on a cluster, each campaign's shard and master (a
    campaign's keys all go to its shard's master)."""
    if not stack.redis_cluster:
        return f"redis: {stack.redis_url}, {stack.redis_shards} shard(s)"
    keys = Keys(KEY_PREFIX, shards=stack.redis_shards)
    cluster: Any = redis  # a RedisCluster: the slot table is its own
    masters = sorted(node.port for node in cluster.get_primaries())
    campaigns = [
        f"{c.id} shard {keys.of(c.id).shard} on :{cluster.get_node_from_key(keys.campaign(c.id)).port}"
        for c in plan.campaigns
    ]
    return (
        f"redis: cluster of {len(masters)} masters (:{', :'.join(map(str, masters))}),"
        f" {stack.redis_shards} shards; {', '.join(campaigns)}"
    )


def _read_summary(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _report(
    args: argparse.Namespace,
    summary: dict[str, Any] | None,
    lag: audit.LagPeak | BaseException,
    vendor: dict[str, Any],
    where: str,
    checks: list[audit.Check],
    ok: bool,
) -> str:
    lines = ["", "=" * 78, "Quanyi load test report", "=" * 78]
    lines.append(
        f"load: {args.users} users, {args.duration} s, p99 SLA {args.p99_ms:g} ms"
        f" ({time.strftime('%Y-%m-%d %H:%M:%S')})"
    )
    if summary:
        lines.append(
            f"{'endpoint':<48}{'reqs':>8}{'fail':>6}{'rps':>8}{'p50':>7}{'p99':>7}{'max':>7}"
        )
        for name, e in sorted(summary["endpoints"].items()):
            lines.append(
                f"{name:<48}{e['requests']:>8}{e['failures']:>6}{e['rps']:>8}"
                f"{e['p50_ms']:>7}{e['p99_ms']:>7}{e['max_ms']:>7}"
            )
        lines.append("outcomes seen by clients:")
        for campaign, outcomes in sorted(summary["outcomes"].items()):
            text = ", ".join(f"{k} {v}" for k, v in sorted(outcomes.items(), key=lambda kv: -kv[1]))
            lines.append(f"  {campaign:<12} {text}")
        waited = summary.get("waited", {})
        if waited:
            text = ", ".join(f"{k} {v}" for k, v in sorted(waited.items()))
            share = waited.get("fulfilled", 0) / max(sum(waited.values()), 1)
            lines.append(
                f"  claims with wait_ms {sc.DEFAULT_WAIT_MS}: {text} ({share:.0%} fulfilled in time)"
            )
        lines.append(
            f"  redemptions confirmed by callback: {len(summary.get('redeemed', []))}"
            f" (+{summary.get('redemption_replays', 0)} replayed)"
        )
        logins = summary.get("logins", {})
        lines.append(
            f"  login flood (wrong passwords): {sum(logins.values())} attempts, "
            + ", ".join(f"{k} {v}" for k, v in sorted(logins.items()))
        )
        lines.append(
            f"  signed statement uploads: {summary.get('statements', 0)}"
            f" ({summary.get('statement_bytes', 0) / 2**20:.0f} MiB in all),"
            f" {summary.get('statements_refused', 0)} refused (429) while the vendor's other"
            " upload was in flight"
        )
        exempt = summary.get("sla_exempt", [])
        if exempt:
            lines.append(f"  not held to the channel SLA: {', '.join(exempt)}")
        for problem in summary.get("problems", []):
            lines.append(f"  locust: {problem}")
    else:
        lines.append("no summary from locust (it did not finish normally)")
    if isinstance(lag, audit.LagPeak):
        lines.append(
            f"ledger lag during the load: at most {lag.entries} entries, {lag.seconds:.2f} s"
            f" ({lag.samples} samples)"
        )
    calls = sum(vendor.get("calls", {}).values())
    lines.append(
        f"vendor {sc.VENDOR_ID} ({sc.SIM_LATENCY_MS:g} ms): {calls} issue calls, "
        f"{vendor.get('issued', 0)} issued, at most {vendor.get('max_in_flight', 0)} in flight"
    )
    lines.append(where)
    lines.append("invariants:")
    for c in checks:
        lines.append(f"  [{'PASS' if c.ok else 'FAIL'}] {c.name}: {c.detail}")
    lines.append(f"RESULT: {'PASS' if ok else 'FAIL'}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())

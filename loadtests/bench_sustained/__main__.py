"""`python -m loadtests.bench_sustained`: options, the tools it needs, the runs, the report."""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

from loadtests import bench_sustained
from loadtests.bench.report import machine_context
from loadtests.bench_sustained.report import report
from loadtests.bench_sustained.results import SCENARIOS, TOPOLOGIES, Options, Results
from loadtests.bench_sustained.runs import Runner
from loadtests.bench_sustained.stores import drop_database, redis_client
from loadtests.procs import finish_in_work_dir, run_in_work_dir


def parse_options(argv: list[str] | None) -> Options:
    assert bench_sustained.__doc__ is not None
    p = argparse.ArgumentParser(
        prog="python -m loadtests.bench_sustained",
        description=bench_sustained.__doc__.split("\n\n")[0],
    )
    p.add_argument("--duration", type=int, help="measured seconds per run (default 60)")
    p.add_argument("--quick", action="store_true", help="10 s runs: a smoke run of the script")
    p.add_argument("--scenario", choices=[*SCENARIOS, "all"], default="all", help="default: all")
    p.add_argument("--topology", choices=[*TOPOLOGIES, "all"], default="all", help="default: all")
    p.add_argument("--threads", type=int, default=1, help="wrk threads (default 1)")
    p.add_argument("--connections", type=int, default=64, help="wrk connections (default 64)")
    p.add_argument(
        "--max-rate",
        type=float,
        help="claims/s the claim files hold (default 0.6 of the no-op endpoint's rate)",
    )
    p.add_argument(
        "--profile",
        nargs="?",
        type=int,
        const=10,
        default=0,
        metavar="S",
        help="after each run, py-spy every process for S seconds (default 10) under the same load",
    )
    args = p.parse_args(argv)
    duration = max(args.duration or (10 if args.quick else 60), 3)
    return Options(
        duration=duration,
        warmup=1 if args.quick else 3,
        noop_s=min(duration, 15),
        # Enough samples for the boundedness rule however short the run.
        sample_every_s=min(2.0, duration / 12),
        threads=max(args.threads, 1),
        connections=max(args.connections, args.threads, 1),
        scenarios=tuple(SCENARIOS) if args.scenario == "all" else (args.scenario,),
        topologies=tuple(TOPOLOGIES) if args.topology == "all" else (args.topology,),
        max_rate=args.max_rate,
        profile_s=max(args.profile, 0),
        drain_timeout_s=120.0,
    )


def main(argv: list[str] | None = None) -> int:
    opts = parse_options(argv)
    if shutil.which("wrk") is None:
        print("bench_sustained: wrk not found (bash deploy/tools.sh wrk)")
        return 1

    work_dir = Path(tempfile.mkdtemp(prefix="quanyi-bench-sustained-"))

    async def run() -> tuple[Results, str]:
        context = await machine_context()
        redis = redis_client()
        try:
            return await Runner(opts, work_dir, redis).run(), context
        finally:
            await redis.aclose()
            await drop_database()

    outcome = run_in_work_dir("bench_sustained", work_dir, run())
    if outcome is None:
        return 130
    results, context = outcome
    return finish_in_work_dir(
        "bench_sustained", work_dir, bool(results.failures), report(results, opts, context)
    )


if __name__ == "__main__":
    sys.exit(main())

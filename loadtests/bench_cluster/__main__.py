"""`python -m loadtests.bench_cluster`: options, the scratch servers, the runs, the report."""

from __future__ import annotations

import argparse
import contextlib
import shutil
import sys
import tempfile
from pathlib import Path

from loadtests import bench_cluster
from loadtests.bench.report import machine_context
from loadtests.bench_cluster.report import report
from loadtests.bench_cluster.runs import Options, Results, Runner
from loadtests.bench_cluster.stores import drop_database
from loadtests.procs import finish_in_work_dir, run_in_work_dir
from loadtests.scratch_redis import ScratchServers, redis_tools_available


def parse_options(argv: list[str] | None) -> Options:
    assert bench_cluster.__doc__ is not None
    p = argparse.ArgumentParser(
        prog="python -m loadtests.bench_cluster",
        description=bench_cluster.__doc__.split("\n\n")[0],
    )
    p.add_argument("--duration", type=int, help="measured seconds per run (default 20)")
    p.add_argument("--quick", action="store_true", help="5 s runs: a smoke run of the script")
    p.add_argument("--api", default="1,2", help="numbers of API processes (default 1,2)")
    p.add_argument("--connections", type=int, default=64, help="wrk connections (default 64)")
    p.add_argument("--max-rate", type=float, default=15_000.0, help="claims/s the claim files hold")
    p.add_argument(
        "--micro", type=int, help="seconds of the in-process figure per target (0: none)"
    )
    p.add_argument(
        "--no-hot", action="store_true", help="without the hot campaign's runs (1 part, 3 parts)"
    )
    args = p.parse_args(argv)
    duration = max(args.duration or (5 if args.quick else 20), 2)
    return Options(
        duration=duration,
        warmup=1 if args.quick else 3,
        api=tuple(sorted({max(int(n), 1) for n in args.api.split(",") if n.strip()})),
        connections=max(args.connections, 1),
        max_rate=args.max_rate,
        micro_s=max(args.micro if args.micro is not None else min(duration, 10), 0),
        hot=not args.no_hot,
    )


def main(argv: list[str] | None = None) -> int:
    opts = parse_options(argv)
    missing = [t for t in ("wrk",) if shutil.which(t) is None]
    if missing or not redis_tools_available():
        print("bench_cluster: needs wrk, redis-server and redis-cli (bash deploy/tools.sh wrk)")
        return 1
    work_dir = Path(tempfile.mkdtemp(prefix="quanyi-bench-cluster-"))

    async def run() -> tuple[Results, str]:
        context = await machine_context()
        with contextlib.ExitStack() as servers:
            single = servers.enter_context(ScratchServers(work_dir / "single", masters=1))
            cluster = servers.enter_context(ScratchServers(work_dir / "cluster", masters=3))
            try:
                return await Runner(opts, work_dir, {1: single, 3: cluster}).run(), context
            finally:
                await drop_database()

    outcome = run_in_work_dir("bench_cluster", work_dir, run())
    if outcome is None:
        return 130
    results, context = outcome
    return finish_in_work_dir(
        "bench_cluster", work_dir, bool(results.failures), report(results, opts, context)
    )


if __name__ == "__main__":
    sys.exit(main())

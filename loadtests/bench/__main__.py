"""`python -m loadtests.bench`: options, the tools it needs, the phases, then the report."""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

from loadtests import bench
from loadtests.bench.phases import Bench
from loadtests.bench.report import machine_context, report
from loadtests.bench.results import Options, Results
from loadtests.procs import run_interruptible

TOOLS = ("wrk", "redis-benchmark")


def parse_options(argv: list[str] | None) -> Options:
    assert bench.__doc__ is not None
    p = argparse.ArgumentParser(
        prog="python -m loadtests.bench", description=bench.__doc__.split("\n\n")[0]
    )
    p.add_argument("--duration", type=int, help="measured seconds per HTTP phase (default 15)")
    p.add_argument("--quick", action="store_true", help="5 s phases: a smoke run of the script")
    p.add_argument("--threads", type=int, default=1, help="wrk threads (default 1)")
    p.add_argument("--connections", type=int, default=64, help="wrk connections (default 64)")
    p.add_argument("--keep", action="store_true", help="keep the scratch database and Redis dbs")
    args = p.parse_args(argv)
    duration = args.duration or (5 if args.quick else 15)
    return Options(
        duration=max(duration, 1),
        warmup=1 if args.quick else 3,
        threads=max(args.threads, 1),
        connections=max(args.connections, args.threads, 1),
        lua_scale=duration / 15,
        rowlock_s=min(duration, 10),
        keep=args.keep,
    )


def main(argv: list[str] | None = None) -> int:
    opts = parse_options(argv)
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing:
        print(f"bench: {' and '.join(missing)} not found (bash deploy/tools.sh {' '.join(TOOLS)})")
        return 1

    async def run() -> tuple[Results, str]:
        context = await machine_context()
        with tempfile.TemporaryDirectory(prefix="quanyi-bench-") as work_dir:
            return await Bench(opts, Path(work_dir)).run(), context

    outcome = run_interruptible(run())
    if outcome is None:
        print("bench: interrupted", file=sys.stderr)
        return 130
    results, context = outcome
    print(report(results, opts, context))
    return 1 if results.failures else 0


if __name__ == "__main__":
    sys.exit(main())

"""The claim benchmark's report: throughput, ratios, targets, CPU per claim, the ledger and
Redis memory, from one run's Results."""

from __future__ import annotations

import contextlib
import os
from datetime import datetime

import asyncpg

from loadtests.bench.results import Options, Results
from loadtests.bench.rowlock import ROWLOCK_TASKS
from loadtests.bench.stores import API_REDIS_DB, CATCH_UP_TIMEOUT_S, PG_ADMIN_URL, redis_client
from loadtests.drivers import WrkRun
from loadtests.stats import ratio

TARGET_API_RPS = 10_000
TARGET_API_P99_MS = 10.0
TARGET_NOOP_RATIO = 0.30
TARGET_WORKERS2_RPS = 16_000
TARGET_LEDGER_LAG_S = 1.0
TARGET_BYTES_PER_GRANT = 150


def fmt_s(seconds: float | None) -> str:
    return "n/a" if seconds is None else f"{seconds:.2f} s"


def fmt_us(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def fmt_n(value: float | None, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("PASS" if ok else "MISS")


RULE = "=" * 100


def banner(title: str, setup: str) -> list[str]:
    """A report's head: the title (the machine's context lines after it) and how it ran."""
    return ["", RULE, *title.splitlines(), setup, RULE]


def report(results: Results, opts: Options, context: str) -> str:
    lines = banner(
        f"Quanyi bench: {context}",
        f"wrk -t{opts.threads} -c{opts.connections}, {opts.duration} s measured after "
        f"{opts.warmup} s of warm-up per HTTP run; all figures from this one run",
    )
    for section in (
        throughput_lines,
        ratio_lines,
        target_lines,
        cpu_lines,
        ledger_lines,
        memory_lines,
        failure_lines,
    ):
        part = section(results)
        if part:
            lines += ["", *part]
    lines.append(RULE)
    return "\n".join(lines)


def throughput_lines(results: Results) -> list[str]:
    lines = [
        f"{'Throughput':44}{'per s':>10}{'p50 ms':>9}{'p99 ms':>9}{'p99.9 ms':>10}{'errors':>9}"
    ]

    def http_row(label: str, run: WrkRun | None) -> None:
        if run is None:
            lines.append(f"{label:44}{'failed':>10}")
        else:
            lines.append(
                f"{label:44}{run.rps:>10,.0f}{run.p50_ms:>9.2f}{run.p99_ms:>9.2f}"
                f"{run.p999_ms:>10.2f}{run.non_2xx + run.socket_errors:>9,}"
            )

    api1, api2 = results.api.get(1), results.api.get(2)
    http_row("API claims, 1 process (quanyi serve)", api1.wrk if api1 else None)
    http_row("API claims, quanyi serve --workers 2", api2.wrk if api2 else None)
    http_row("no-op aiohttp+uvloop endpoint", results.noop)
    for run in results.lua:
        row = f"{'claim.lua ' + run.label:44}{run.claims_per_s:>10,.0f}"
        if run.granted < 0.99 * run.expected:
            row += f"   only {run.granted:,} of {run.expected:,} granted"
        lines.append(row)
    if "lua" in results.failures:
        lines.append(f"{'claim.lua via redis-benchmark':44}{'failed':>10}")
    rl = results.rowlock
    label = f"PostgreSQL row lock, {ROWLOCK_TASKS} asyncpg tasks"
    if rl is None:
        lines.append(f"{label:44}{'failed':>10}")
    else:
        lines.append(
            f"{label:44}{rl.rps:>10,.0f}{rl.p50_ms:>9.2f}{rl.p99_ms:>9.2f}{'-':>10}{rl.errors:>9,}"
        )
    lines.append("  per s: 2xx responses (API, no-op), claims (claim.lua, row lock)")
    lines.append("  errors: non-2xx responses and socket errors; row lock: failed transactions")
    for run in (api1, api2):
        if run and run.replayed:
            lines.append(
                f"  note: the {run.workers}-process run ran out of unique claims and replayed "
                f"{run.replayed:,} (answered 200 without a new grant)"
            )
    return lines


def ratio_lines(results: Results) -> list[str]:
    api1, api2 = results.api.get(1), results.api.get(2)
    a1 = api1.wrk.rps if api1 else None
    best = max(results.lua, key=lambda r: r.claims_per_s, default=None)
    rows = [
        ("API 1 process / no-op endpoint", ratio(a1, results.noop.rps if results.noop else None)),
        (
            f"API 1 process / claim.lua ceiling ({best.label if best else 'n/a'})",
            ratio(a1, best.claims_per_s if best else None),
        ),
        (
            "API 1 process / PostgreSQL row lock",
            ratio(a1, results.rowlock.rps if results.rowlock else None),
        ),
        ("API --workers 2 / API 1 process", ratio(api2.wrk.rps if api2 else None, a1)),
    ]
    return ["Ratios"] + [
        f"  {label:70}{'n/a' if value is None else f'{value:.2f}':>8}" for label, value in rows
    ]


def target_lines(results: Results) -> list[str]:
    api1, api2, mem = results.api.get(1), results.api.get(2), results.memory
    noop_ratio = ratio(api1.wrk.rps if api1 else None, results.noop.rps if results.noop else None)
    judged = mem.judged if mem else None
    runs = [run for run in (api1, api2) if run]
    lags = [v for run in runs for v in (run.lag_max_s, run.catch_up_s) if v is not None]
    worst_lag = max(lags, default=None)
    lag_shown, lag_ok = (
        fmt_s(worst_lag),
        None if worst_lag is None else worst_lag < TARGET_LEDGER_LAG_S,
    )
    if any(run.catch_up_s is None for run in runs):
        lag_shown, lag_ok = f"> {CATCH_UP_TIMEOUT_S:.0f} s", False
    rows: list[tuple[str, str, bool | None]] = [
        (
            f"API 1 process >= {TARGET_API_RPS:,} claims/s",
            f"{api1.wrk.rps:,.0f}" if api1 else "n/a",
            api1.wrk.rps >= TARGET_API_RPS if api1 else None,
        ),
        (
            f"API 1 process p99 <= {TARGET_API_P99_MS:.0f} ms",
            f"{api1.wrk.p99_ms:.1f} ms" if api1 else "n/a",
            api1.wrk.p99_ms <= TARGET_API_P99_MS if api1 else None,
        ),
        (
            f"API 1 process / no-op endpoint >= {TARGET_NOOP_RATIO:.2f}",
            "n/a" if noop_ratio is None else f"{noop_ratio:.2f}",
            None if noop_ratio is None else noop_ratio >= TARGET_NOOP_RATIO,
        ),
        (
            f"API --workers 2 >= {TARGET_WORKERS2_RPS:,} claims/s",
            f"{api2.wrk.rps:,.0f}" if api2 else "n/a",
            api2.wrk.rps >= TARGET_WORKERS2_RPS if api2 else None,
        ),
        (
            f"ledger lag < {TARGET_LEDGER_LAG_S:.0f} s (worst grant lag or catch-up)",
            lag_shown,
            lag_ok,
        ),
        (
            f"Redis memory <= {TARGET_BYTES_PER_GRANT} B per grant (used_memory"
            f"{', outbox aside' if mem and mem.after.held else ''})",
            f"{fmt_n(judged, ',.0f')} B",
            None if judged is None else judged <= TARGET_BYTES_PER_GRANT,
        ),
    ]
    return ["Targets (informational)"] + [
        f"  {label:58}{shown:>12}  {verdict(ok)}" for label, shown, ok in rows
    ]


def cpu_lines(results: Results) -> list[str]:
    if not (results.noop or results.api or results.lua):
        return []
    columns = ("wrk", "server", "Redis", "ledger", "PG", "sum")
    lines = [
        "CPU time per claim, microseconds, and the machine's cores during each HTTP run",
        f"  {'':42}" + "".join(f"{c:>7}" for c in columns) + f"{'busy':>7}{'ours':>7}",
    ]

    def row(label: str, costs: tuple[float | None, ...], wrk: WrkRun | None = None) -> None:
        costs = (*costs, *(None,) * (len(columns) - 1 - len(costs)))
        total = sum(v for v in costs if v is not None)
        shown = "".join(f"{fmt_us(v):>7}" for v in (*costs, total))
        if wrk is not None and wrk.busy_cores is not None:
            ours = total * wrk.ok / wrk.seconds / 1e6 if wrk.seconds else 0.0
            shown += f"{wrk.busy_cores:>7.2f}{ours:>7.2f}"
        lines.append(f"  {label:42}{shown}")

    if noop := results.noop:
        row("no-op endpoint (per request)", (noop.client_cpu_us, noop.server_cpu_us), noop)
    for run in results.api.values():
        label = "API, 1 process" if run.workers == 1 else f"API, --workers {run.workers}"
        costs = (
            run.wrk.client_cpu_us,
            run.api_cpu_us,
            run.redis_cpu_us,
            run.ledger_cpu_us,
            run.postgres_cpu_us,
        )
        row(label, costs, run.wrk)
    for lua in results.lua:
        row(f"claim.lua {lua.label}", (None, None, lua.redis_cpu_us))
    lines += [
        "  Redis and PG (PostgreSQL): the whole servers (claim.lua, the ledger's reads, acks and",
        "  inserts), so their other users add noise; busy: cores the machine used, of"
        f" {os.cpu_count()};",
        "  ours: cores the columns account for (the rest went to other work on the machine)",
    ]
    return lines


def ledger_lines(results: Results) -> list[str]:
    if not results.api:
        return []
    lines = [
        "Ledger (quanyi worker ledger running through both API runs)",
        f"  {'run':14}{'granted':>10}{'claims/call':>13}{'grants/batch':>14}{'catch-up':>11}"
        f"{'max lag':>10}{'p99 lag':>10}{'gauge max':>11}",
    ]
    for run in results.api.values():
        label = "1 process" if run.workers == 1 else f"--workers {run.workers}"
        lines.append(
            f"  {label:14}{run.granted:>10,}{fmt_n(run.claims_per_call, '.1f'):>13}"
            f"{fmt_n(run.grants_per_ledger_batch, '.0f'):>14}{fmt_s(run.catch_up_s):>11}"
            f"{fmt_s(run.lag_max_s):>10}{fmt_s(run.lag_p99_s):>10}{fmt_s(run.lag_gauge_max_s):>11}"
        )
    lines += [
        "  claims/call: claims per claim.lua call (quanyi_claim_batch_size)",
        "  grants/batch: grants per ledger transaction (quanyi_ledger_batch_size)",
        "  catch-up: from the end of the run until count(grants) = the Redis granted counter",
        "  lag: persisted_at - granted_at of each grant; gauge: polled quanyi_outbox_lag_seconds",
    ]
    return lines


def memory_lines(results: Results) -> list[str]:
    mem = results.memory
    if mem is None:
        return []
    before, after = mem.before, mem.after
    lines = [
        "Redis memory per grant (ledger caught up, outbox trimmed, API and worker stopped)",
        f"  used_memory {before.used_memory / 1e6:,.1f} MB -> {after.used_memory / 1e6:,.1f} MB "
        f"for {mem.grants:,} grants: {fmt_n(mem.per_grant, ',.0f')} B/grant",
    ]
    if after.held:
        held = ", ".join(f"{name} ({n:,} entries)" for name, n in after.held.items())
        lines += [
            f"  the outbox is held by consumer groups no worker here serves: {held}",
            f"  without the outbox: {fmt_n(mem.per_grant_trimmed, ',.0f')} B/grant",
        ]
    lines += [
        f"  MEMORY USAGE of this run's keys: {fmt_n(mem.keys_per_grant, ',.0f')} B/grant"
        " (used_memory also counts",
        "    the keyspace and expiry tables, and moves with other users of this Redis), by family:",
    ]
    for family, (count, size) in sorted(after.keys.items(), key=lambda kv: -kv[1][1]):
        lines.append(
            f"    {family:20}{count:>10,} keys{size / 1e6:>9,.1f} MB"
            f"{size / mem.grants if mem.grants else 0:>8,.0f} B/grant"
        )
    lines += [
        "  the --workers 2 run's grants alone, outbox aside (MEMORY USAGE; the buckets exist",
        f"    already, as in a campaign under way): {fmt_n(mem.marginal, ',.0f')} B/grant",
    ]
    return lines


def failure_lines(results: Results) -> list[str]:
    if not results.failures:
        return []
    return ["Failed phases (details above)"] + [
        f"  {name}: {message.splitlines()[0] if message else ''}"
        for name, message in results.failures.items()
    ]


async def machine_context() -> str:
    """When, where and on what: a figure means little without the load the machine had."""
    versions = []
    with contextlib.suppress(Exception):  # only decoration: the phases report real failures
        redis = redis_client(API_REDIS_DB)
        try:
            versions.append(f"redis {(await redis.info('server'))['redis_version']}")
        finally:
            await redis.aclose()
    with contextlib.suppress(Exception):
        conn = await asyncpg.connect(PG_ADMIN_URL)
        try:
            version = await conn.fetchval("SHOW server_version")
            versions.append(f"postgresql {version.split()[0]}")
            versions.append(f"synchronous_commit={await conn.fetchval('SHOW synchronous_commit')}")
        finally:
            await conn.close()
    return (
        f"{datetime.now().astimezone():%Y-%m-%d %H:%M %Z}, {os.cpu_count()} cores, "
        f"load average {os.getloadavg()[0]:.2f} at start\n{', '.join(versions)}"
    )

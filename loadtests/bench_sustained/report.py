"""The sustained benchmark's report: per scenario, throughput and latency next to the no-op
endpoint, every consumer group's lag, the outbox over time and whether it stayed bounded, CPU
per claim by process, the issue's targets, and the profiles when taken."""

from __future__ import annotations

import os

from loadtests.bench.report import RULE, banner, fmt_us, verdict
from loadtests.bench_sustained.profile import ENTRY_SHARE, Profile
from loadtests.bench_sustained.results import (
    SCENARIOS,
    TOPOLOGIES,
    Options,
    Results,
    SustainedRun,
)
from loadtests.bench_sustained.watch import RULE as BOUNDED_RULE
from loadtests.drivers import WrkRun
from loadtests.stats import ratio

TARGET_SERVE_NOOP_RATIO = 0.35
TARGET_RUN_SHARE = 0.8  # of the serve + workers target
TARGET_P99_MS = 10.0
TARGET_LAG_S = 1.0
TARGET_CPU_US = 120.0
CPU_COLUMNS = ("wrk", "API", "ledger", "fulfil", "vendor-sim", "Redis", "PG")
SERIES_PER_LINE = 15


def report(results: Results, opts: Options, context: str) -> str:
    lines = banner(
        f"Quanyi sustained bench: {context}",
        f"wrk -t{opts.threads} -c{opts.connections}; each topology {opts.duration} s measured after"
        f" {opts.warmup} s of warm-up, workers running; the no-op endpoint {opts.noop_s} s",
    )
    for name in opts.scenarios:
        runs = {t: r for (s, t), r in results.runs.items() if s == name}
        lines += ["", f"Scenario: {SCENARIOS[name].label}"]
        for section in (throughput_lines, lag_lines, outbox_lines, cpu_lines):
            part = section(runs, results.noop)
            if part:
                lines += ["", *part]
        lines += ["", *target_lines(runs, results.noop)]
        for run in runs.values():
            lines += profile_lines(run)
    if results.failures:
        lines += ["", "Failed runs (details above)"]
        lines += [f"  {n}: {m.splitlines()[0] if m else ''}" for n, m in results.failures.items()]
    lines.append(RULE)
    return "\n".join(lines)


def throughput_lines(runs: dict[str, SustainedRun], noop: WrkRun | None) -> list[str]:
    lines = [
        f"  {'':46}{'per s':>9}{'p50 ms':>8}{'p99 ms':>8}{'p99.9 ms':>9}{'errors':>8}{'/no-op':>8}"
    ]

    def row(label: str, rate: float, wrk: WrkRun) -> str:
        share = ratio(rate, noop.rps if noop else None)
        return (
            f"  {label:46}{rate:>9,.0f}{wrk.p50_ms:>8.2f}{wrk.p99_ms:>8.2f}{wrk.p999_ms:>9.2f}"
            f"{wrk.non_2xx + wrk.socket_errors:>8,}{'-' if share is None else f'{share:.2f}':>8}"
        )

    if noop:
        lines.append(row("no-op aiohttp+uvloop endpoint (req/s)", noop.rps, noop))
    for topology, label in TOPOLOGIES.items():
        if run := runs.get(topology):
            lines.append(row(label, run.claims_per_s, run.wrk))
            if run.replayed:
                lines.append(
                    f"    note: the claim file ran out; {run.replayed:,} replays answered 200"
                    " (not counted as claims): raise --max-rate"
                )
    lines.append("  per s: grants Redis counted per second of load (no-op: 2xx per second)")
    return lines


def lag_lines(runs: dict[str, SustainedRun], _noop: WrkRun | None) -> list[str]:
    if not runs:
        return []
    lines = [
        "  Consumer groups: lag = entries not yet delivered + pending, and the oldest one's age",
        f"  {'':8}{'group':10}{'at the end: entries':>21}{'age s':>8}{'worst age s':>13}"
        f"{'drained after s':>17}",
    ]
    for topology, run in runs.items():
        for i, (group, lag) in enumerate(sorted(run.end_lags.items())):
            drained = f"{run.drain_s:.1f}" if i == 0 else ""
            lines.append(
                f"  {topology if i == 0 else '':8}{group:10}{lag.entries:>21,}{lag.seconds:>8.2f}"
                f"{run.worst_lag_s.get(group, 0.0):>13.2f}{drained:>17}"
            )
    lines.append("  worst age: the greatest over the samples taken while the load ran")
    return lines


def outbox_lines(runs: dict[str, SustainedRun], _noop: WrkRun | None) -> list[str]:
    if not runs:
        return []
    every = next(iter(runs.values())).samples
    step = f"{every[1].at_s - every[0].at_s:.1f} s" if len(every) > 1 else "interval"
    lines = [f"  Outbox length (XLEN, thousands of entries), one sample every {step}"]
    for topology, run in runs.items():
        values = [f"{s.length / 1000:.1f}" for s in run.samples]
        for start in range(0, len(values), SERIES_PER_LINE):
            label = topology if start == 0 else ""
            lines.append(f"  {label:8}{' '.join(values[start : start + SERIES_PER_LINE])}")
        b = run.bounded
        shown = {True: "bounded", False: "GROWING", None: "too few samples to judge"}[b.bounded]
        lines.append(
            f"  {'':8}peak in the middle third {b.middle_peak:,}, in the last third"
            f" {b.last_peak:,}: {shown}"
        )
    lines.append(f"  {BOUNDED_RULE}")
    return lines


def cpu_lines(runs: dict[str, SustainedRun], noop: WrkRun | None) -> list[str]:
    lines = [
        "  CPU per claim, microseconds, from the start of the load until every group drained",
        f"  {'':8}" + "".join(f"{c:>11}" for c in (*CPU_COLUMNS, "sum")) + f"{'busy':>7}",
    ]
    if noop:
        costs = (noop.client_cpu_us, noop.server_cpu_us)
        total = sum(v for v in costs if v is not None)
        shown = f"{fmt_us(costs[0]):>11}{fmt_us(costs[1]):>11}" + " " * 11 * 5
        lines.append(f"  {'no-op':8}{shown}{fmt_us(total):>11}{noop.busy_cores or 0:>7.2f}")
    for topology, run in runs.items():
        shown = "".join(f"{fmt_us(run.cpu_us.get(c)):>11}" for c in CPU_COLUMNS)
        busy = run.wrk.busy_cores
        lines.append(
            f"  {topology:8}{shown}{fmt_us(run.cpu_total_us):>11}"
            f"{'-' if busy is None else f'{busy:.2f}':>7}"
        )
    lines += [
        "  run: the API column is the one process (API and every worker); Redis: the whole server"
        " (INFO cpu);",
        "  PG: backends of the bench database and the server's background processes"
        " (/proc/<pid>/stat);",
        f"  busy: cores the whole machine used during the load, of {os.cpu_count()}"
        " (other work on it shows here)",
    ]
    return lines


def target_lines(runs: dict[str, SustainedRun], noop: WrkRun | None) -> list[str]:
    serve, run = runs.get("serve"), runs.get("run")
    noop_rps = noop.rps if noop else None
    run_bar = TARGET_RUN_SHARE * TARGET_SERVE_NOOP_RATIO
    rows: list[tuple[str, str, bool | None]] = []

    def share_row(label: str, r: SustainedRun | None, bar: float) -> None:
        share = ratio(r.claims_per_s if r else None, noop_rps)
        rows.append((label, "n/a" if share is None else f"{share:.2f}", _at_least(share, bar)))

    share_row(
        f"serve + workers / no-op >= {TARGET_SERVE_NOOP_RATIO:.2f}", serve, TARGET_SERVE_NOOP_RATIO
    )
    rows.append(
        (
            f"serve + workers p99 <= {TARGET_P99_MS:.0f} ms",
            f"{serve.wrk.p99_ms:.1f} ms" if serve else "n/a",
            serve.wrk.p99_ms <= TARGET_P99_MS if serve else None,
        )
    )
    share_row(
        f"quanyi run / no-op >= {run_bar:.2f} ({TARGET_RUN_SHARE:g} x {TARGET_SERVE_NOOP_RATIO})",
        run,
        run_bar,
    )
    for topology, r in runs.items():
        worst = r.worst_age_s
        rows.append(
            (
                f"{topology}: every group's lag < {TARGET_LAG_S:.0f} s (end and while running)",
                "n/a" if worst is None else f"{worst:.2f} s",
                None if worst is None else worst < TARGET_LAG_S,
            )
        )
        total = r.cpu_total_us
        rows.append(
            (
                f"{topology}: CPU per claim, all processes <= {TARGET_CPU_US:.0f} us",
                f"{fmt_us(total)} us",
                None if total is None else total <= TARGET_CPU_US,
            )
        )
        b = r.bounded
        peaks = f"{b.middle_peak / 1000:.1f}k->{b.last_peak / 1000:.1f}k"
        rows.append((f"{topology}: outbox bounded (peak middle -> last third)", peaks, b.bounded))
    lines = ["  Targets (informational, from one run on a shared machine)"]
    lines += [f"    {label:62}{shown:>12}  {verdict(ok)}" for label, shown, ok in rows]
    if run and serve and (value := ratio(run.claims_per_s, serve.claims_per_s)):
        lines.append(f"    {'quanyi run / serve + workers':62}{value:>12.2f}")
    return lines


def _at_least(value: float | None, bar: float) -> bool | None:
    return None if value is None else value >= bar


def profile_lines(run: SustainedRun) -> list[str]:
    if run.profile_error:
        return ["", f"  Profile of {run.topology}: failed: {run.profile_error}"]
    lines: list[str] = []
    for p in run.profiles:
        lines += ["", *_profile(run.topology, p)]
    return lines


def _profile(topology: str, p: Profile) -> list[str]:
    head = (
        f"  Profile, {topology}, process {p.process}: {p.samples:,} samples on CPU of"
        f" {p.expected:,} ({p.busy:.0%} busy; py-spy leaves out threads waiting for I/O)"
    )
    if not p.samples:
        return [head]
    lines = [
        head,
        f"    {'own':>6}{'total':>7}  function (own: running in it; total: on the stack)",
    ]
    lines += [f"    {f.own:>6.1%}{f.total:>7.1%}  {f.name}" for f in p.by_own]
    lines.append(
        f"    by total share (first {len(p.by_total)}; left out: frames with >= {ENTRY_SHARE:.0%}"
        " of the top frame's samples, the event loop and main):"
    )
    lines += [f"    {f.own:>6.1%}{f.total:>7.1%}  {f.name}" for f in p.by_total]
    return lines

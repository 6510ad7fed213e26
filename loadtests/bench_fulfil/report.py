"""The fulfilment benchmark's report: one block per backlog, one for the claims that wait."""

from __future__ import annotations

import os
import time

from loadtests.bench_fulfil.drain import Drain, fmt_s
from loadtests.bench_fulfil.internal import InternalRun
from loadtests.bench_fulfil.plan import (
    MAX_IN_FLIGHT,
    TARGET_PER_S,
    THROUGHPUT_LATENCY_MS,
    WAIT_LATENCY_MS,
    WAIT_MS,
    WAIT_PHASE_MAX_S,
    Options,
)
from loadtests.bench_fulfil.waiting import WaitRun
from loadtests.stats import percentile


def _drain_rows(name: str, d: Drain, bound: float) -> list[tuple[str, str]]:
    rate = d.per_s
    p99 = f"{d.p99_s:.1f} s" if d.p99_s is not None else "-"
    rows = [
        ("", ""),
        (f"one fulfilment worker, {name}", f"vendor {THROUGHPUT_LATENCY_MS:g} ms"),
        ("  backlog", f"{d.grants:,} grants, made before the worker started"),
        (
            "  recorded (from worker start)",
            f"first {d.first_s:.1f} s, 99% {p99}, "
            + (
                f"all {d.last_s:.1f} s"
                if d.complete
                else f"only {d.fulfilled:,} by {d.last_s:.0f} s"
            ),
        ),
        ("  fulfilments/s after the first", f"{rate:,.0f}  ({d.overall_per_s:,.0f} from start)"),
        ("  bound: max_in_flight / latency", f"{bound:,.0f}  ({MAX_IN_FLIGHT} / 50 ms)"),
        ("  ratio to the bound", f"{rate / bound:.2f}"),
        (f"  target >= {TARGET_PER_S:,.0f}/s", "met" if rate >= TARGET_PER_S else "NOT met"),
    ]
    if d.cpu_us is not None:
        ceiling = 1e6 / d.cpu_us
        rows.append(
            ("  worker CPU per fulfilment", f"{d.cpu_us:,.0f} us: {ceiling:,.0f}/s on a whole core")
        )
    if d.busy_cores is not None:
        rows.append(("  machine busy meanwhile", f"{d.busy_cores:.1f} of {os.cpu_count()} cores"))
    if d.carried_over > 0:
        rows.append(("  left by the drain before", f"{d.carried_over:,} entries or retries"))
    once = d.issued == d.grants and not d.issued_twice
    rows += [
        ("  most calls in flight at the vendor", str(d.peak_in_flight)),
        ("  vendor calls", f"{d.calls:,} ({d.calls - d.issued:,} repeated a grant)"),
        (
            "  issued exactly once at the vendor",
            f"{'yes' if once else 'NO'} ({d.issued:,} issued, {d.issued_twice} more than once)",
        ),
        ("  worker errors logged / dead letters", f"{d.errors:,} / {d.dead:,}"),
        ("  ledger catch-up afterwards", fmt_s(d.ledger_s)),
    ]
    return rows


def _wait_rows(opts: Options, wait: WaitRun) -> list[tuple[str, str]]:
    rows = [
        ("", ""),
        (
            f"claims with wait_ms {WAIT_MS}, {WAIT_LATENCY_MS:g} ms signed vendor",
            f"API + ledger + fulfil, {opts.concurrency} at a time",
        ),
        (
            "  claims",
            f"{wait.claims:,} in {wait.seconds:.1f} s ({wait.claims / wait.seconds:,.0f}/s)",
        ),
    ]
    if wait.claims < opts.claims:
        rows.append(("  not sent", f"{opts.claims - wait.claims:,} (past {WAIT_PHASE_MAX_S:g} s)"))
    lat = wait.latencies_ms
    if lat:
        p50, p99 = percentile(lat, 0.5), percentile(lat, 0.99)
        rows.append(("  latency p50 / p99 / max", f"{p50:.0f} / {p99:.0f} / {max(lat):.0f} ms"))
    fulfilled = wait.statuses.get("fulfilled", 0)
    share = fulfilled / wait.claims if wait.claims else 0.0
    others = ", ".join(f"{k} {v:,}" for k, v in sorted(wait.statuses.items()) if k != "fulfilled")
    rows += [
        ("  returned fulfilled", f"{share:.1%} ({fulfilled:,})"),
        ("  otherwise", others or "none"),
    ]
    return rows


def _us(value: float | None) -> str:
    # Negative: processes of that name ended meanwhile (PostgreSQL backends), taking their CPU.
    return "-" if value is None or value < 0 else f"{value:,.1f} us"


def _internal_rows(run: InternalRun) -> list[tuple[str, str]]:
    workers = (
        None
        if run.fulfil_cpu_s is None or run.ledger_cpu_s is None
        else run.fulfil_cpu_s + run.ledger_cpu_s
    )
    per_grant = run.per_grant_us(workers)
    target = "-" if per_grant is None else ("met" if per_grant <= 10 else "NOT met")
    return [
        ("", ""),
        ("grants of a right with no vendor", "both workers running, claims in this process"),
        ("  grants", f"{run.grants:,}"),
        ("  claimed, fulfilled and in the ledger in", fmt_s(run.seconds)),
        ("  fulfilment worker CPU per grant", _us(run.per_grant_us(run.fulfil_cpu_s))),
        ("  ledger worker CPU per grant", _us(run.per_grant_us(run.ledger_cpu_s))),
        (
            "  both workers, per grant",
            f"{_us(per_grant)} (target <= 10 us beyond the claim: {target})",
        ),
        (
            "  Redis / PostgreSQL meanwhile (shared)",
            f"{_us(run.per_grant_us(run.redis_cpu_s))}"
            f" / {_us(run.per_grant_us(run.postgres_cpu_s))} per grant, claims included",
        ),
    ]


def report(
    opts: Options,
    drains: dict[str, Drain],
    wait: WaitRun | None,
    internal: InternalRun | None = None,
) -> str:
    bound = MAX_IN_FLIGHT / (THROUGHPUT_LATENCY_MS / 1000)
    rows: list[tuple[str, str]] = []
    if internal is not None:
        rows += _internal_rows(internal)
    for name, d in drains.items():
        rows += _drain_rows(name, d, bound)
    if wait is not None:
        rows += _wait_rows(opts, wait)
    width = max(len(label) for label, _ in rows) + 2
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    lines = ["", "=" * 78, "Quanyi fulfilment benchmark", "=" * 78]
    lines.append(
        f"{time.strftime('%Y-%m-%d %H:%M:%S')}, {os.cpu_count()} cores shared by every process"
        f" (load average {load})"
    )
    lines += [f"{label:<{width}}{value}".rstrip() for label, value in rows]
    return "\n".join(lines)

"""`quanyi events send`: card events to a running API, signed as the card system's channel (scope
events), as `POST /v1/events` takes them: one purchase (or a few alike) from the options, or a
file of them sent in batches with a progress bar; then what the API made of them."""

from __future__ import annotations

import argparse
import csv
import json
import os
import secrets
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from quanyi.access.signing import signed_headers
from quanyi.cli.calls import SECRET_ENV
from quanyi.cli.command import Commands, add_command, add_group
from quanyi.core.errors import QuanyiError
from quanyi.core.settings import Settings

PATH = "/v1/events"
MAX_BATCH = 1000  # what one POST /v1/events takes (quanyi/issuance/event_model.py MAX_EVENTS)
EVENT_TYPE = "card_transaction"
# The events a summary lists one by one (grants made, refusals); the rest are counted.
SHOWN = 20


def register(commands: Commands) -> None:
    events = add_group(commands, "events")
    send = add_command(
        events,
        "send",
        send_events,
        "send card events to a running API as the card system (a channel with scope events):"
        " one purchase from the options (--count times), or a file of them",
    )
    send.add_argument("--channel", required=True, help="the channel id to sign as")
    send.add_argument("--secret", help="the channel secret (default: read from --secret-env)")
    send.add_argument(
        "--secret-env",
        default=SECRET_ENV,
        metavar="VAR",
        help="the environment variable holding the channel secret when --secret is not given",
    )
    send.add_argument(
        "--url",
        help="API base URL (default: http://QUANYI_HTTP_HOST:QUANYI_HTTP_PORT,"
        f" else http://{Settings.http_host}:{Settings.http_port})",
    )
    send.add_argument(
        "--file",
        type=Path,
        help="events to send, one a line: .jsonl (an event object a line) or .csv (a header"
        " line naming event_id, customer_id, amount, mcc, occurred_at, reversal_of); a missing"
        " event_id or occurred_at is filled in as for one purchase (default: send one purchase"
        " from the options)",
    )
    send.add_argument(
        "--customer", help="the customer id, required unless --file is given (default: none)"
    )
    send.add_argument(
        "--amount",
        type=int,
        help="the amount in fen, required unless --file is given (default: none)",
    )
    send.add_argument(
        "--mcc",
        help="the merchant category code, 4 digits, required unless --file is given (default: none)",
    )
    send.add_argument("--count", type=int, default=1, help="how many such purchases to send")
    send.add_argument(
        "--occurred-at",
        help="when it happened, RFC 3339 with an offset (default: now)",
    )
    send.add_argument(
        "--reversal-of", help="the event id this one reverses, a refund (default: none: a purchase)"
    )
    send.add_argument(
        "--id-prefix",
        help="event ids are PREFIX-1, PREFIX-2, ... (default: a fresh random prefix, so a"
        " second run sends new events; give one to send the same events again)",
    )
    send.add_argument(
        "--batch-size", type=int, default=MAX_BATCH, help=f"events per request, 1-{MAX_BATCH}"
    )


@dataclass
class Tally:
    """What the API answered, event by event."""

    statuses: Counter[str] = field(default_factory=Counter)
    held: int = 0
    granted: list[tuple[str, str]] = field(default_factory=list)  # (event id, grant id)
    revoked: list[tuple[str, str]] = field(default_factory=list)
    refused: list[tuple[str, str]] = field(default_factory=list)  # (event id, why)
    seen: int = 0

    def add(self, result: dict[str, Any]) -> None:
        self.seen += 1
        # An event whose id was unusable is named by its place among those sent.
        event_id = str(result.get("event_id") or f"#{self.seen}")
        self.statuses[str(result.get("status"))] += 1
        self.held += bool(result.get("held"))
        self.granted += [(event_id, g) for g in result.get("granted") or ()]
        self.revoked += [(event_id, g) for g in result.get("revoked") or ()]
        if result.get("status") == "rejected":
            error = result.get("error") or {}
            fields = error.get("fields") or {}
            named = "; ".join(f"{k}: {v}" for k, v in fields.items())
            self.refused.append(
                (event_id, f"{error.get('message')}" + (f" ({named})" if named else ""))
            )


async def send_events(settings: Settings, args: argparse.Namespace) -> int:
    problem = _usage_problem(args)
    if problem:
        print(f"quanyi: {problem}", file=sys.stderr)
        return 2
    secret = args.secret or os.environ.get(args.secret_env)
    if not secret:
        print(f"quanyi: give --secret or set {args.secret_env}", file=sys.stderr)
        return 2
    prefix = args.id_prefix or f"ev{secrets.token_hex(4)}"
    now = datetime.now(UTC).isoformat(timespec="milliseconds")
    if args.file is not None:
        total = _count_lines(args.file)
        events = _from_file(args.file, prefix, now)
    else:
        total = args.count
        events = _from_options(args, prefix, now)
    base = (args.url or f"http://{settings.http_host}:{settings.http_port}").rstrip("/")
    tally = Tally()
    try:
        await _send(base, args.channel, secret, events, args.batch_size, total, tally)
    except QuanyiError:
        if tally.statuses:  # what the batches before the refused one did
            _print_summary(tally)
        raise
    _print_summary(tally)
    return 0 if not tally.statuses["rejected"] else 1


def _usage_problem(args: argparse.Namespace) -> str | None:
    if not 1 <= args.batch_size <= MAX_BATCH:
        return f"--batch-size: 1 to {MAX_BATCH}"
    if args.file is not None:
        given = [
            o
            for o in ("customer", "amount", "mcc", "occurred_at", "reversal_of")
            if getattr(args, o) is not None
        ]
        if given or args.count != 1:
            named = ", ".join("--" + o.replace("_", "-") for o in given) or "--count"
            return f"--file sends the file's events: leave out {named}"
        return None
    missing = [o for o in ("customer", "amount", "mcc") if getattr(args, o) is None]
    if missing:
        return "give --file, or " + ", ".join(f"--{o}" for o in missing)
    if args.count < 1:
        return "--count: at least 1"
    if args.reversal_of is not None and args.count != 1:
        return "--reversal-of reverses one event: --count 1"
    return None


def _from_options(args: argparse.Namespace, prefix: str, now: str) -> Iterator[dict[str, Any]]:
    for n in range(1, args.count + 1):
        event: dict[str, Any] = {
            "event_id": f"{prefix}-{n}",
            "type": EVENT_TYPE,
            "customer_id": args.customer,
            "amount": args.amount,
            "mcc": args.mcc,
            "occurred_at": args.occurred_at or now,
        }
        if args.reversal_of is not None:
            event["reversal_of"] = args.reversal_of
        yield event


def _count_lines(path: Path) -> int:
    """Events in the file, for the progress bar: its non-blank lines, less a CSV header."""
    with path.open("rb") as f:
        lines = sum(1 for line in f if line.strip())
    return max(lines - 1, 0) if _is_csv(path) else lines


def _is_csv(path: Path) -> bool:
    return path.suffix.lower() == ".csv"


def _from_file(path: Path, prefix: str, now: str) -> Iterator[dict[str, Any]]:
    """The file's events, read as they are sent. A line that is not an event is sent as it is
    (the API rejects it in its place, saying why) rather than stopping the whole file."""
    with path.open(encoding="utf-8-sig", newline="") as f:
        if _is_csv(path):
            rows: Iterator[Any] = (
                {k: v for k, v in row.items() if k and v not in (None, "")}
                for row in csv.DictReader(f)
            )
        else:
            rows = (_json_line(line) for line in f if line.strip())
        for n, event in enumerate(rows, 1):
            if isinstance(event, dict):
                event.setdefault("event_id", f"{prefix}-{n}")
                event.setdefault("type", EVENT_TYPE)
                event.setdefault("occurred_at", now)
                if isinstance(event.get("amount"), str) and event["amount"].isdigit():
                    event["amount"] = int(event["amount"])
            yield event


def _json_line(line: str) -> Any:
    try:
        return json.loads(line)
    except ValueError:
        return "not JSON"  # never the line itself: it may hold a card number


async def _send(
    base: str,
    channel: str,
    secret: str,
    events: Iterator[dict[str, Any]],
    batch_size: int,
    total: int,
    tally: Tally,
) -> None:
    timeout = aiohttp.ClientTimeout(total=60)
    # On stderr, and only on a terminal: stdout is the summary, a log file wants no bar.
    with Progress(console=Console(stderr=True), disable=not sys.stderr.isatty()) as progress:
        task = progress.add_task("sending events", total=total)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            for batch in _batches(events, batch_size):
                results = await _post(session, base, channel, secret, batch)
                for result in results:
                    tally.add(result)
                progress.advance(task, len(batch))


def _batches(events: Iterator[dict[str, Any]], size: int) -> Iterator[list[dict[str, Any]]]:
    batch: list[dict[str, Any]] = []
    for event in events:
        batch.append(event)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


async def _post(
    session: aiohttp.ClientSession,
    base: str,
    channel: str,
    secret: str,
    batch: list[dict[str, Any]],
) -> list[dict[str, Any]]:
    """One signed POST /v1/events; its results, or a QuanyiError saying why the whole batch was
    refused (main() prints it as one line)."""
    body = orjson.dumps({"events": batch})
    headers = signed_headers(channel, secret, "POST", PATH, int(time.time()), body)
    headers["Content-Type"] = "application/json"
    try:
        async with session.post(base + PATH, data=body, headers=headers) as resp:
            status, reply = resp.status, await resp.read()
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        raise QuanyiError(f"cannot reach {base}: {exc or type(exc).__name__}") from None
    try:
        data = orjson.loads(reply)
    except orjson.JSONDecodeError:
        data = None
    if status == 200 and isinstance(data, dict) and isinstance(data.get("results"), list):
        results: list[dict[str, Any]] = data["results"]
        return results
    error = data.get("error") if isinstance(data, dict) else None
    if isinstance(error, dict):
        raise QuanyiError(
            f"{base}{PATH} answered {status} {error.get('code')}: {error.get('message')}",
            fields=error.get("fields") or {},
        )
    raise QuanyiError(f"{base}{PATH} answered {status} without a JSON answer")


def _print_summary(tally: Tally) -> None:
    console = Console(soft_wrap=True)
    table = Table(title="card events")
    for column in ("accepted", "duplicate", "rejected", "held", "grants made", "grants revoked"):
        table.add_column(column, justify="right")
    s = tally.statuses
    table.add_row(
        *(str(n) for n in (s["accepted"], s["duplicate"], s["rejected"], tally.held)),
        str(len(tally.granted)),
        str(len(tally.revoked)),
    )
    console.print(table)
    for verb, pairs in (("granted", tally.granted), ("revoked", tally.revoked)):
        for event_id, grant_id in pairs[:SHOWN]:
            console.print(f"{verb} {grant_id} (event {event_id})", highlight=False)
        if len(pairs) > SHOWN:
            console.print(f"... and {len(pairs) - SHOWN} more {verb}", highlight=False)
    for event_id, why in tally.refused[:SHOWN]:
        console.print(f"rejected {event_id}: {why}", highlight=False, markup=False)
    if len(tally.refused) > SHOWN:
        console.print(f"... and {len(tally.refused) - SHOWN} more rejected", highlight=False)

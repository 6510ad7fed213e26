"""`quanyi export grants|events|rollups --from --to --format csv|parquet`: the ledger's rows of
a range of local days for the data warehouse, streamed to a file with a progress bar."""

from __future__ import annotations

import argparse
import sys
from datetime import date
from pathlib import Path

from rich.console import Console
from rich.progress import Progress

from quanyi.cli.command import Commands, add_command
from quanyi.core.settings import Settings
from quanyi.reports.exports import KINDS, count_rows, export
from quanyi.stores.db import close_pool, open_pool


def register(commands: Commands) -> None:
    parser = add_command(commands, "export", run_export)
    parser.add_argument("kind", choices=KINDS, help="what to export")
    parser.add_argument(
        "--from", dest="first", required=True, type=date.fromisoformat, help="first local day"
    )
    parser.add_argument(
        "--to", dest="last", required=True, type=date.fromisoformat, help="last local day"
    )
    parser.add_argument(
        "--format", choices=("csv", "parquet"), default="csv", help="the file's format"
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=None,
        help="the file to write (default: KIND-FROM-TO.FORMAT here); it appears once complete",
    )


async def run_export(settings: Settings, args: argparse.Namespace) -> int:
    if args.first > args.last:
        print("--from is after --to", file=sys.stderr)
        return 2
    path = args.output or Path(f"{args.kind}-{args.first}-{args.last}.{args.format}")
    console = Console(stderr=True)
    pool = await open_pool(settings)
    try:
        total = await count_rows(pool, args.kind, args.first, args.last, settings.zone)
        with Progress(console=console, transient=True, disable=not console.is_terminal) as bar:
            task = bar.add_task(f"exporting {args.kind}", total=total)
            written = await export(
                pool,
                args.kind,
                args.first,
                args.last,
                settings.zone,
                path,
                args.format,
                lambda n: bar.advance(task, n),
            )
    finally:
        await close_pool(pool)
    print(f"{written} {args.kind} of {args.first}..{args.last} written to {path}")
    return 0

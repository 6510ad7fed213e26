"""`quanyi reports rebuild`: the report rollups recomputed from the ledger's grants and events
(a ledger that held grants before the rollups existed, or a change of QUANYI_TZ)."""

from __future__ import annotations

import argparse

from rich.console import Console
from rich.progress import Progress

from quanyi.cli.command import Commands, add_command, add_group
from quanyi.core.settings import Settings
from quanyi.ledger.rollups import rebuild_rollups
from quanyi.stores.db import close_pool, open_pool


def register(commands: Commands) -> None:
    reports = add_group(commands, "reports")
    add_command(
        reports,
        "rebuild",
        rebuild,
        "recompute every report rollup from the ledger, in QUANYI_TZ days, in one transaction"
        " (reports show the old figures until it commits; the ledger worker waits for it)",
    )


async def rebuild(settings: Settings, args: argparse.Namespace) -> int:
    console = Console(stderr=True)
    pool = await open_pool(settings)
    try:
        total = await pool.fetchval("SELECT count(*) FROM grants")
        with Progress(console=console, transient=True, disable=not console.is_terminal) as bar:
            task = bar.add_task("rolling up the ledger", total=total)
            counted = await rebuild_rollups(pool, settings.tz, lambda page: bar.advance(task, page))
    finally:
        await close_pool(pool)
    print(f"report rollups rebuilt from {counted} grants ({settings.tz} days)")
    return 0

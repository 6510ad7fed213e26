"""`quanyi audit verify`: walks the audit log's hash chain and names the first row that was
altered, inserted or deleted."""

from __future__ import annotations

import argparse

from rich.console import Console
from rich.progress import Progress

from quanyi.access.audit import verify_chain
from quanyi.cli.command import Commands, add_command, add_group
from quanyi.core.settings import Settings
from quanyi.stores.db import close_pool, open_pool

# Exit codes: 0 intact; 1 the check could not run (quanyi.cli.main); this when it found a break.
CHAIN_BROKEN = 3


def register(commands: Commands) -> None:
    audit = add_group(commands, "audit")
    add_command(
        audit,
        "verify",
        verify,
        "recompute every audit row's hash in id order and check it against the chain head;"
        f" exit 0 when intact, {CHAIN_BROKEN} naming the first row altered, inserted or deleted",
    )


async def verify(settings: Settings, args: argparse.Namespace) -> int:
    console = Console(stderr=True)
    pool = await open_pool(settings)
    try:
        # A bar on a terminal only: piped or logged output gets the verdict alone.
        with Progress(console=console, transient=True, disable=not console.is_terminal) as bar:
            task = bar.add_task("verifying the audit chain", total=None)
            async with pool.acquire() as conn:
                report = await verify_chain(
                    conn, lambda done, total: bar.update(task, completed=done, total=total)
                )
    finally:
        await close_pool(pool)
    if report.broken is not None:
        print(f"audit chain broken at row {report.broken.row_id} ({report.broken.kind}):")
        print(f"  {report.broken.message}")
        print(f"  {report.rows} rows before it verified")
        return CHAIN_BROKEN
    head = report.head_hash.hex() if report.head_hash else "none"
    print(f"audit chain intact: {report.rows} rows (head {head})")
    return 0

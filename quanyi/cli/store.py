"""`quanyi migrate`, `quanyi rebuild-redis` and `quanyi reconcile`: the stores themselves."""

from __future__ import annotations

import argparse
import sys

from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from quanyi.cli.command import Commands, add_command
from quanyi.core.settings import Settings
from quanyi.ledger.rebuild import DEFAULT_QUIET_S, ClaimsFlowing, Rebuild, refuse_while_flowing
from quanyi.ledger.reconcile import Reconcile, drifted
from quanyi.runtime import open_stores
from quanyi.stores.db import migrate


def register(commands: Commands) -> None:
    add_command(commands, "migrate", migrate_database)
    rebuild = add_command(commands, "rebuild-redis", rebuild_redis)
    rebuild.add_argument(
        "--quiet-s",
        type=float,
        default=DEFAULT_QUIET_S,
        help="refuse unless the newest outbox entry is at least this many seconds old",
    )
    rebuild.add_argument(
        "--force", action="store_true", help="run even while claims flow (may lose some)"
    )
    add_command(commands, "reconcile", reconcile)


async def apply_migrations(settings: Settings) -> None:
    # Before any pool: the database itself may not exist yet.
    applied = await migrate(settings.database_url)
    print(f"migrations applied: {', '.join(applied) if applied else 'none (up to date)'}")


async def migrate_database(settings: Settings, args: argparse.Namespace) -> int:
    await apply_migrations(settings)
    return 0


async def rebuild_redis(settings: Settings, args: argparse.Namespace) -> int:
    async with open_stores(settings) as stores:
        if not args.force:
            try:
                await refuse_while_flowing(stores.redis, stores.keys, stores.clock(), args.quiet_s)
            except ClaimsFlowing as exc:
                print(
                    f"quanyi: refusing to rebuild: {exc}; stop the API or pass --force",
                    file=sys.stderr,
                )
                return 1
        rebuild = Rebuild(stores.pool, stores.redis, stores.keys, settings, stores.clock)
        with Progress() as progress:
            task = progress.add_task("restoring redis", total=await rebuild.total())
            restored = await rebuild.run(lambda n: progress.advance(task, n))
    for what, count in restored.items():
        print(f"restored {count} {what}")
    return 0


async def reconcile(settings: Settings, args: argparse.Namespace) -> int:
    # It reads, and writes only to complete stock moves a crash left (inventory/stock_parts.py).
    async with open_stores(settings, consumer_groups=False) as stores:
        findings = await Reconcile(
            stores.pool, stores.redis, stores.keys, settings, stores.clock
        ).run()
    drift = drifted(findings)
    table = Table(title="drift" if drift else "reconciliation")
    for column in ("check", "subject", "redis", "ledger", ""):
        table.add_column(column)
    for f in findings:
        table.add_row(f.check, f.subject, str(f.redis), str(f.ledger), "ok" if f.ok else "DRIFT")
    console = Console()
    console.print(table)
    if drift:
        console.print(f"{len(drift)} checks drift")
        return 1
    console.print("in agreement")
    return 0

"""`quanyi audience create` and `quanyi audience import`: customer segments and their members
(a CSV or Parquet export of the data warehouse), imported with a progress bar."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rich.progress import Progress

from quanyi.audiences.members import file_source
from quanyi.audiences.model import AudienceBody
from quanyi.cli.command import Commands, add_command, add_group
from quanyi.core.schemas import check
from quanyi.core.settings import Settings
from quanyi.runtime import open_stores
from quanyi.vendors.operations import cli_staff


def register(commands: Commands) -> None:
    audience = add_group(commands, "audience")
    create = add_command(audience, "create", create_audience, "create an audience of a branch")
    create.add_argument("--id", required=True, help="the audience id")
    create.add_argument("--name", required=True, help="a name people read")
    create.add_argument(
        "--branch", required=True, help="the branch it belongs to (HQ: head office)"
    )
    load = add_command(
        audience,
        "import",
        import_members,
        "replace an audience's members with a file's (CSV: one customer id a line; or Parquet:"
        " a column customer_id)",
    )
    load.add_argument("--id", required=True, help="the audience id")
    load.add_argument("--file", required=True, type=Path, help="the members file (CSV or Parquet)")


async def create_audience(settings: Settings, args: argparse.Namespace) -> int:
    body = check(AudienceBody, {"id": args.id, "name": args.name, "branch": args.branch})
    async with open_stores(settings, consumer_groups=False) as stores:
        audience = await stores.audiences().create(cli_staff(), body.id, body.name, body.branch)
    print(json.dumps(audience.created_json()))
    return 0


async def import_members(settings: Settings, args: argparse.Namespace) -> int:
    source = file_source(args.file)
    async with open_stores(settings, consumer_groups=False) as stores:
        with Progress() as progress:
            task = progress.add_task(f"importing {args.file.name}", total=source.expected)
            report = await stores.audiences().import_members(
                cli_staff(), args.id, source, lambda read: progress.advance(task, read)
            )
            progress.update(task, completed=source.expected)
    print(json.dumps(report.to_json()))
    return 0

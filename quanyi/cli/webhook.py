"""`quanyi webhook redrive`: notifications marked failed (their last attempt refused) sent again
from a first attempt, once the bank's receiver is back."""

from __future__ import annotations

import argparse

from quanyi.cli.command import Commands, add_command, add_group
from quanyi.core.settings import Settings
from quanyi.runtime import open_stores


def register(commands: Commands) -> None:
    webhook = add_group(commands, "webhook")
    redrive_cmd = add_command(
        webhook,
        "redrive",
        redrive,
        "queue failed notifications again, due at once, their attempts counted from zero",
    )
    which = redrive_cmd.add_mutually_exclusive_group(required=True)
    which.add_argument(
        "--id",
        action="append",
        dest="ids",
        metavar="ID",
        help="a delivery id, repeatable (default: none; --id or --all is needed)",
    )
    which.add_argument("--all", action="store_true", help="every failed notification")


async def redrive(settings: Settings, args: argparse.Namespace) -> int:
    async with open_stores(settings, consumer_groups=False) as stores:
        queued = await stores.webhook_sender().redrive(None if args.all else args.ids)
    for delivery_id in queued:
        print(delivery_id)
    print(f"{len(queued)} notification(s) queued again")
    return 0

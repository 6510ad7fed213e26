"""`quanyi channel create`: the channels (bank apps, partners) that send claims, and the card
system that sends card events."""

from __future__ import annotations

import argparse
import sys

from quanyi.access.channels import CLAIMS, SCOPES, create_channel
from quanyi.access.secret_box import secret_box
from quanyi.cli.command import Commands, add_command, add_group
from quanyi.core.schemas import is_ident
from quanyi.core.settings import Settings
from quanyi.runtime import open_stores


def register(commands: Commands) -> None:
    channel = add_group(commands, "channel")
    create = add_command(channel, "create", create_one, "register a channel and print its secret")
    create.add_argument("--id", required=True, help="the channel id its requests carry")
    create.add_argument(
        "--secret",
        help="the shared secret (default: one generated and printed once)",
    )
    create.add_argument(
        "--scope",
        action="append",
        choices=SCOPES,
        dest="scopes",
        help=(
            "what it may call: claims (claims, grants, offers, progress) or events (card events,"
            f" for the card system); repeat for both (default: {CLAIMS})"
        ),
    )


async def create_one(settings: Settings, args: argparse.Namespace) -> int:
    if not is_ident(args.id):
        print("quanyi: channel id: 1-64 letters, digits, _ . : -, no card number", file=sys.stderr)
        return 2
    box = secret_box(settings)  # sealed at rest: refuses to run without a usable key
    # Not argparse's default: `append` would add to it instead of replacing it.
    scopes = sorted(set(args.scopes or [CLAIMS]))
    async with open_stores(settings) as stores:
        secret = await create_channel(stores.pool, args.id, args.secret, box=box, scopes=scopes)
    created = f"channel {args.id} created, scopes {', '.join(scopes)}"
    if args.secret:
        print(created)
    else:
        print(f"{created}; its secret (shown once, keep it safe):\n{secret}")
    return 0

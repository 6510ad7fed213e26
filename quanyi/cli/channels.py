"""`quanyi channel create`: the channels (bank apps, partners) that send claims, and the card
system that sends card events; `quanyi channel rotate`: a new secret for one, the old one
signing on for a grace period; `quanyi channel rekey`: every stored secret sealed again under a
new secrets key."""

from __future__ import annotations

import argparse
import getpass
import re
import sys
from dataclasses import dataclass
from datetime import UTC, datetime

from quanyi.access.channels import (
    CLAIMS,
    MAX_GRACE_S,
    RESERVED_CHANNELS,
    SCOPES,
    create_channel,
    rekey_secrets,
    rotate_secret,
)
from quanyi.access.secret_box import secret_box
from quanyi.access.staff import HEAD_OFFICE
from quanyi.cli.command import Commands, add_command, add_group
from quanyi.core.clock import system_clock
from quanyi.core.errors import NotFound
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
    rotate = add_command(
        channel,
        "rotate",
        rotate_one,
        "give a channel a new secret and print it; the old one keeps signing for a grace period",
    )
    rotate.add_argument("--id", required=True, help="the channel")
    rotate.add_argument(
        "--grace",
        help="how long the old secret keeps signing: 90s, 30m, 24h, 2d, or 0 to stop it at once"
        " (default: the channel_rotation_grace_s setting, 24h)",
    )
    add_command(
        channel,
        "rekey",
        rekey_all,
        "seal every stored channel secret again under QUANYI_SECRETS_KEY, opening what"
        " QUANYI_SECRETS_KEY_PREVIOUS sealed",
    )


GRACE = re.compile(r"(\d{1,7})([smhd]?)\Z")
UNIT_S = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_grace(text: str) -> float:
    """Seconds of `90s`, `30m`, `24h`, `2d` or plain seconds; ValueError for anything else."""
    found = GRACE.match(text.strip())
    if not found:
        raise ValueError(f"--grace: {text!r} is not like 90s, 30m, 24h or 2d")
    seconds = float(int(found.group(1)) * UNIT_S[found.group(2)])
    if seconds > MAX_GRACE_S:
        raise ValueError(f"--grace: at most {MAX_GRACE_S / 86400:.0f}d")
    return seconds


@dataclass(frozen=True)
class CommandLineActor:
    """Whom the audit log names for a rotation made on the command line: the system user, at
    head office (only who runs the service's commands can)."""

    username: str
    branch: str = HEAD_OFFICE


async def create_one(settings: Settings, args: argparse.Namespace) -> int:
    if not is_ident(args.id):
        print("quanyi: channel id: 1-64 letters, digits, _ . : -, no card number", file=sys.stderr)
        return 2
    if args.id in RESERVED_CHANNELS:
        print(f"quanyi: channel id {args.id} is the service's own: choose another", file=sys.stderr)
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


async def rotate_one(settings: Settings, args: argparse.Namespace) -> int:
    try:
        grace_s = (
            settings.channel_rotation_grace_s if args.grace is None else parse_grace(args.grace)
        )
    except ValueError as exc:
        print(f"quanyi: {exc}", file=sys.stderr)
        return 2
    box = secret_box(settings)
    actor = CommandLineActor(f"cli:{getpass.getuser()}")
    async with open_stores(settings, consumer_groups=False) as stores:
        try:
            secret, until = await rotate_secret(
                stores.pool, args.id, box, grace_s=grace_s, now=system_clock(), actor=actor
            )
        except NotFound:
            print(f"quanyi: no active channel {args.id}", file=sys.stderr)
            return 1
    ends = datetime.fromtimestamp(until, UTC).isoformat(timespec="seconds")
    print(
        f"channel {args.id} rotated; the old secret signs until {ends}; the new one signs on"
        f" every API process within {settings.channel_refresh_s:g} s."
        f"\nIts new secret (shown once, keep it safe):\n{secret}"
    )
    return 0


async def rekey_all(settings: Settings, _args: argparse.Namespace) -> int:
    """Step 2 of a secrets-key rotation (README "Rotating the secrets key"): every process
    already runs with the new key and the previous one named beside it."""
    if not settings.secrets_key:
        print("quanyi: QUANYI_SECRETS_KEY is not set: name the new key", file=sys.stderr)
        return 2
    box = secret_box(settings)
    if not box.rolling:
        print(
            "quanyi: QUANYI_SECRETS_KEY_PREVIOUS is not set: name the key being replaced beside"
            " the new QUANYI_SECRETS_KEY",
            file=sys.stderr,
        )
        return 2
    actor = CommandLineActor(f"cli:{getpass.getuser()}")
    async with open_stores(settings, consumer_groups=False) as stores:
        rekeyed = await rekey_secrets(stores.pool, box, actor=actor)
    print(
        f"{len(rekeyed)} channel secret(s) sealed again under the new key"
        + (f": {', '.join(rekeyed)}" if rekeyed else " (all were already)")
        + "; once every process runs with the new key, QUANYI_SECRETS_KEY_PREVIOUS can go."
    )
    return 0

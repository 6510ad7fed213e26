"""`quanyi staff create`: staff accounts, made from the command line."""

from __future__ import annotations

import argparse
import sys

from quanyi.access.staff import HEAD_OFFICE, ROLES, create_staff
from quanyi.cli.command import Commands, add_command, add_group
from quanyi.core.settings import Settings
from quanyi.runtime import open_stores


def register(commands: Commands) -> None:
    staff = add_group(commands, "staff")
    create = add_command(staff, "create", create_account, "create a staff account")
    create.add_argument("--username", required=True, help="the name staff log in with")
    create.add_argument("--role", required=True, choices=ROLES, help="what the account may do")
    create.add_argument(
        "--branch", required=True, help=f"branch code; {HEAD_OFFICE} is head office"
    )
    create.add_argument(
        "--password-stdin",
        action="store_true",
        required=True,
        help="read the password from standard input",
    )


async def create_account(settings: Settings, args: argparse.Namespace) -> int:
    password = sys.stdin.readline().rstrip("\n")
    async with open_stores(settings) as stores:
        await create_staff(stores.pool, args.username, password, args.role, args.branch)
    print(f"staff {args.username} created ({args.role}, branch {args.branch})")
    return 0

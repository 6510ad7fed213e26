"""`quanyi staff ...` and `quanyi branch ...`: staff accounts and the branch tree, from the
command line. Commands act as a head-office admin named after the operating-system user
(`cli:<user>` in the audit log), as the API's admin routes would."""

from __future__ import annotations

import argparse
import getpass
import sys
from typing import Any

from quanyi.access import accounts, branches
from quanyi.access.staff import HEAD_OFFICE, ROLES, Staff, audit, create_staff
from quanyi.cli.command import Commands, add_command, add_group
from quanyi.core.settings import Settings
from quanyi.runtime import open_stores


def cli_admin() -> Staff:
    return Staff(f"cli:{getpass.getuser()}", "admin", HEAD_OFFICE)


def register(commands: Commands) -> None:
    staff = add_group(commands, "staff")
    create = add_command(staff, "create", create_account, "create a staff account")
    _username(create)
    create.add_argument("--role", required=True, choices=ROLES, help="what the account may do")
    _branch(create)
    create.add_argument(
        "--password-stdin",
        action="store_true",
        required=True,
        help="read the password from standard input",
    )
    role = add_command(staff, "role", change_role, "give an account another role; its sessions end")
    _username(role)
    role.add_argument("--role", required=True, choices=ROLES, help="the new role")
    move = add_command(staff, "move", move_account, "move an account to another branch")
    _username(move)
    _branch(move)
    disable = add_command(
        staff, "disable", disable_account, "disable an account: it cannot log in, its sessions end"
    )
    _username(disable)
    enable = add_command(staff, "enable", enable_account, "enable a disabled account again")
    _username(enable)
    reset = add_command(
        staff,
        "reset-password",
        reset_password,
        "print a one-time temporary password; the account sets a new one at its next login",
    )
    _username(reset)
    add_command(staff, "list", list_accounts, "every staff account")

    tree = add_group(commands, "branch")
    new = add_command(tree, "create", create_branch, "add a branch under an existing one")
    new.add_argument("--id", required=True, help="branch code: upper-case letters, digits, - _")
    new.add_argument("--name", required=True, help="what staff read")
    new.add_argument(
        "--parent", required=True, help=f"the parent branch; {HEAD_OFFICE} is the root"
    )
    add_command(tree, "list", list_branches, "the branch tree, parents first")


def _username(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--username", required=True, help="the name staff log in with")


def _branch(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--branch", required=True, help=f"branch code; {HEAD_OFFICE} is head office"
    )


async def create_account(settings: Settings, args: argparse.Namespace) -> int:
    password = sys.stdin.readline().rstrip("\n")
    async with open_stores(settings) as stores, stores.pool.acquire() as conn:
        async with conn.transaction():
            await create_staff(conn, args.username, password, args.role, args.branch)
            await audit(
                conn,
                cli_admin(),
                "staff.create",
                f"staff:{args.username}",
                {"role": args.role, "branch": args.branch},
            )
    print(f"staff {args.username} created ({args.role}, branch {args.branch})")
    return 0


async def _change(
    settings: Settings,
    username: str,
    role: str | None = None,
    branch: str | None = None,
    disabled: bool | None = None,
) -> dict[str, Any]:
    async with open_stores(settings) as stores:
        return await accounts.change_account(
            stores.pool, cli_admin(), username, role, branch, disabled
        )


async def change_role(settings: Settings, args: argparse.Namespace) -> int:
    done = await _change(settings, args.username, role=args.role)
    print(f"staff {args.username} is now {done['role']}")
    return 0


async def move_account(settings: Settings, args: argparse.Namespace) -> int:
    done = await _change(settings, args.username, branch=args.branch)
    print(f"staff {args.username} is now at branch {done['branch']}")
    return 0


async def disable_account(settings: Settings, args: argparse.Namespace) -> int:
    await _change(settings, args.username, disabled=True)
    print(f"staff {args.username} disabled")
    return 0


async def enable_account(settings: Settings, args: argparse.Namespace) -> int:
    await _change(settings, args.username, disabled=False)
    print(f"staff {args.username} enabled")
    return 0


async def reset_password(settings: Settings, args: argparse.Namespace) -> int:
    async with open_stores(settings) as stores:
        temporary = await accounts.reset_password(stores.pool, cli_admin(), args.username)
    print(f"temporary password for {args.username} (shown once): {temporary}")
    return 0


async def list_accounts(settings: Settings, args: argparse.Namespace) -> int:
    async with open_stores(settings) as stores:
        rows = await accounts.list_accounts(stores.pool, cli_admin())
    for row in rows:
        flags = [f for f in ("disabled", "must_change_password") if row[f]]
        print(f"{row['username']}\t{row['role']}\t{row['branch']}\t{' '.join(flags)}".rstrip())
    return 0


async def create_branch(settings: Settings, args: argparse.Namespace) -> int:
    async with open_stores(settings) as stores:
        made = await branches.create_branch(
            stores.pool, cli_admin(), args.id, args.name, args.parent
        )
    print(f"branch {made['id']} created under {made['parent_id']} (level {made['depth']})")
    return 0


async def list_branches(settings: Settings, args: argparse.Namespace) -> int:
    async with open_stores(settings) as stores:
        rows = await branches.list_branches(stores.pool, cli_admin())
    for row in rows:
        indent = "  " * (row["depth"] - 1)
        print(f"{indent}{row['id']}\t{row['name']}")
    return 0

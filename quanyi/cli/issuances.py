"""`quanyi issuance create|approve|status`: bulk issuances from the command line, their progress
followed with a live bar. The worker that runs them is `quanyi worker issuance` (or `quanyi run`)."""

from __future__ import annotations

import argparse
import asyncio
import json
from typing import Any

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from quanyi.access.staff import Staff
from quanyi.campaigns.issuances import IssuanceBody, IssuanceService
from quanyi.cli.command import Commands, add_command, add_group
from quanyi.core.errors import NotFound
from quanyi.core.schemas import check
from quanyi.core.settings import Settings
from quanyi.runtime import Stores, open_stores
from quanyi.vendors.operations import cli_staff

FINAL = ("done", "cancelled")


def register(commands: Commands) -> None:
    issuance = add_group(commands, "issuance")
    create = add_command(
        issuance,
        "create",
        create_issuance,
        "create a bulk issuance: a campaign's reward to every member of an audience, once approved",
    )
    create.add_argument("--id", required=True, help="the issuance id")
    create.add_argument("--campaign", required=True, help="the campaign id")
    create.add_argument("--reward", required=True, help="the reward id in the campaign")
    create.add_argument("--audience", required=True, help="the audience id")
    approve = add_command(
        issuance,
        "approve",
        approve_issuance,
        "approve a bulk issuance as a staff account (an approver who did not create it)",
    )
    approve.add_argument("--id", required=True, help="the issuance id")
    approve.add_argument(
        "--as", dest="approver", required=True, help="the approving staff account's username"
    )
    status = add_command(
        issuance, "status", issuance_status, "a bulk issuance's state and progress"
    )
    status.add_argument("--id", required=True, help="the issuance id")
    status.add_argument(
        "--follow", action="store_true", help="show a live progress bar until it is done"
    )
    status.add_argument(
        "--every", type=float, default=0.5, help="seconds between looks with --follow"
    )


def _service(stores: Stores) -> IssuanceService:
    return IssuanceService(
        stores.pool,
        stores.redis,
        stores.keys,
        dual_approval_above=stores.settings.dual_approval_above,
    )


async def create_issuance(settings: Settings, args: argparse.Namespace) -> int:
    body = check(
        IssuanceBody, {"id": args.id, "reward_id": args.reward, "audience_id": args.audience}
    )
    async with open_stores(settings, consumer_groups=False) as stores:
        made = await _service(stores).create(cli_staff(), args.campaign, body)
    print(json.dumps(made))
    return 0


async def approve_issuance(settings: Settings, args: argparse.Namespace) -> int:
    async with open_stores(settings, consumer_groups=False) as stores:
        row = await stores.pool.fetchrow(
            "SELECT username, role, branch FROM staff WHERE username = $1 AND NOT disabled",
            args.approver,
        )
        if row is None:
            raise NotFound(f"no active staff account {args.approver!r}")
        staff = Staff(row["username"], row["role"], row["branch"])
        approved = await _service(stores).approve(staff, args.id)
    print(json.dumps(approved))
    return 0


def _done(job: dict[str, Any]) -> int:
    return job["issued"] + job["failed"] + sum(job["skipped"].values())


async def issuance_status(settings: Settings, args: argparse.Namespace) -> int:
    async with open_stores(settings, consumer_groups=False) as stores:
        service = _service(stores)
        job = await service.get(cli_staff(), args.id)
        if args.follow and job["state"] not in FINAL:
            columns = (
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("issued {task.fields[issued]}"),
                TimeElapsedColumn(),
            )
            with Progress(*columns) as progress:
                bar = progress.add_task(
                    f"{args.id} {job['state']}", total=job["total"] or None, issued=job["issued"]
                )
                while job["state"] not in FINAL:
                    progress.update(
                        bar,
                        completed=_done(job),
                        total=job["total"] or None,
                        description=f"{args.id} {job['state']}",
                        issued=job["issued"],
                    )
                    await asyncio.sleep(args.every)
                    job = await service.get(cli_staff(), args.id)
                progress.update(bar, completed=_done(job), issued=job["issued"])
    print(json.dumps(job))
    return 0

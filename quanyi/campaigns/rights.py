"""A right's lifecycle (准入 / 退出): admit, suspend, resume, retire, each a head-office
approver's move (quanyi/campaigns/model.py RIGHT_ACTIONS).

A suspension reaches the hot path by republishing the rewards of every live campaign that pays
the right out, with a suspended marker grant.lua reads with the fields it reads anyway: claims
and goal grants of them are refused (campaign_not_active, state right_suspended) from the
moment Redis took the publication, and resuming republishes them without it. Each campaign's
publication is one Redis transaction, so a claim is decided either before it or after it.

Locks are taken in the order a campaign's transition takes them, campaigns before rights, so a
suspension and a campaign going live never wait for each other; a campaign that went live
between the two is caught by looking again under the right's lock, and the whole move is
retried with it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg

from quanyi.access.staff import Staff, audit
from quanyi.campaigns import queries
from quanyi.campaigns.model import LIVE, RIGHT_ACTIONS, Campaign
from quanyi.core.errors import (
    Forbidden,
    InvalidTransition,
    NotFound,
    RightInUse,
    RightNotAdmitted,
    Unavailable,
    VendorNotActive,
)

# A campaign going live at the very moment of a suspension makes it look again; past this many
# times the caller is asked to retry (503) rather than hold locks longer.
LOCK_ATTEMPTS = 3

Load = Callable[[asyncpg.Connection, str], Awaitable[Campaign]]
Publish = Callable[[asyncpg.Connection, Campaign], Awaitable[None]]


def right_json(row: asyncpg.Record) -> dict[str, Any]:
    return {k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in row.items()}


def refuse_unadmitted(rights: dict[str, asyncpg.Record], right_ids: list[str]) -> None:
    """RightNotAdmitted naming each of `right_ids` whose right is not admitted: a campaign may
    only be drafted, edited or submitted on admitted rights."""
    refused = [
        {"right_id": right_id, "state": rights[right_id]["state"]}
        for right_id in sorted(set(right_ids))
        if right_id in rights and rights[right_id]["state"] != "admitted"
    ]
    if refused:
        names = ", ".join(f"{r['right_id']} is {r['state']}" for r in refused)
        raise RightNotAdmitted(f"only admitted rights may be paid out: {names}", rights=refused)


class RightLifecycle:
    def __init__(self, pool: asyncpg.Pool, load: Load, publish: Publish) -> None:
        self._pool = pool
        self._load = load
        self._publish = publish

    async def transition(self, staff: Staff, right_id: str, action: str) -> dict[str, Any]:
        sources, target = RIGHT_ACTIONS[action]
        staff.require_role("approver")
        staff.require_head_office()
        republish = action in ("suspend", "resume")
        for _ in range(LOCK_ATTEMPTS):
            async with self._pool.acquire() as conn, conn.transaction():
                locked: list[str] = []
                if republish:
                    live = await self._live(conn, right_id)
                    locked = [r["id"] for r in await conn.fetch(queries.campaigns_for_update, live)]
                row = await conn.fetchrow(queries.get_right_for_update, right_id)
                if row is None:
                    raise NotFound(f"no right {right_id}")
                state = row["state"]
                if state not in sources:
                    raise InvalidTransition(f"cannot {action} a right that is {state}", state=state)
                live = await self._live(conn, right_id)
                if republish and not set(live) <= set(locked):
                    continue  # a campaign went live meanwhile: lock it too, from the start
                if action == "admit" and staff.username in row["proposers"]:
                    raise Forbidden(
                        "maker-checker: whoever proposed or edited a right may not admit it"
                    )
                if action in ("admit", "resume") and row["vendor_id"]:
                    await self._vendor_active(conn, right_id, row["vendor_id"], action)
                if action == "retire" and live:
                    raise RightInUse(
                        f"right {right_id} is paid out by live campaigns; end them first",
                        campaigns=live,
                    )
                updated = await conn.fetchrow(
                    queries.set_right_state, right_id, target, staff.username
                )
                await audit(
                    conn,
                    staff,
                    f"right.{action}",
                    f"right:{right_id}",
                    {"from": state, "to": target, "campaigns": live},
                )
                for campaign_id in live if republish else ():
                    await self._publish(conn, await self._load(conn, campaign_id))
                return right_json(updated)
        raise Unavailable(f"campaigns of right {right_id} are changing; retry")

    @staticmethod
    async def _live(conn: asyncpg.Connection, right_id: str) -> list[str]:
        return [r["id"] for r in await conn.fetch(queries.campaigns_using_right, right_id, LIVE)]

    @staticmethod
    async def _vendor_active(
        conn: asyncpg.Connection, right_id: str, vendor_id: str, action: str
    ) -> None:
        vendor = await conn.fetchrow(queries.right_vendor_state, vendor_id)
        state = vendor["state"] if vendor else "missing"
        if state != "active":
            raise VendorNotActive(
                f"cannot {action} right {right_id}: its vendor {vendor_id} is {state}",
                vendor_id=vendor_id,
                state=state,
            )

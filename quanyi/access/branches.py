"""The branch tree: head office (HQ) at the root, at most four levels (head office, branch,
sub-branch, outlet). A branch is added under an existing one and never moves, so its depth and
the subtree of every staff member above it only ever grow."""

from __future__ import annotations

from typing import Any

import asyncpg

from quanyi.access import queries
from quanyi.access.model import BRANCH_ID, BRANCH_ID_RULE
from quanyi.access.staff import Staff, audit
from quanyi.core.errors import AlreadyExists, InvalidRequest

MAX_DEPTH = 4
LEVELS = {1: "head office", 2: "branch", 3: "sub-branch", 4: "outlet"}


def branch_json(row: asyncpg.Record) -> dict[str, Any]:
    return {
        "id": row["id"],
        "name": row["name"],
        "parent_id": row["parent_id"],
        "depth": row["depth"],
        "created_at": row["created_at"].isoformat(),
    }


async def create_branch(
    pool: asyncpg.Pool, actor: Staff, branch_id: str, name: str, parent_id: str
) -> dict[str, Any]:
    """A new branch under `parent_id`; head-office admins only (the tree is the bank's
    organisation, not a branch's to redraw). Audited."""
    actor.require_role("admin")
    actor.require_head_office()
    if not BRANCH_ID.match(branch_id):
        raise InvalidRequest("bad branch id", {"id": BRANCH_ID_RULE})
    async with pool.acquire() as conn, conn.transaction():
        parent = await conn.fetchrow(queries.get_branch, parent_id)
        if parent is None:
            raise InvalidRequest("no such parent branch", {"parent_id": "no such branch"})
        if parent["depth"] >= MAX_DEPTH:
            raise InvalidRequest(
                f"branches go {MAX_DEPTH} levels deep at most; {parent_id} is an"
                f" {LEVELS[MAX_DEPTH]}",
                {"parent_id": f"an {LEVELS[MAX_DEPTH]}: nothing goes below it"},
            )
        try:
            row = await conn.fetchrow(queries.insert_branch, branch_id, name, parent_id)
        except asyncpg.UniqueViolationError:
            raise AlreadyExists(f"branch {branch_id} exists") from None
        created = branch_json(row)
        await audit(conn, actor, "branch.create", f"branch:{branch_id}", created)
    return created


async def list_branches(pool: asyncpg.Pool, actor: Staff) -> list[dict[str, Any]]:
    """The caller's subtree (every branch for head office), parents before children."""
    rows = await pool.fetch(queries.list_branches, actor.visible_branches())
    return [branch_json(r) for r in rows]

"""Staff accounts managed by admins: create, change role, move branch, disable, reset a
password; and a staff member setting their own password.

Head-office admins manage every account; a branch admin manages the accounts of its own
branch and those below it, and places them there only. Nobody changes their own role, branch
or disabled flag, or resets their own password: another admin does, so an account cannot lift
itself or lock every admin out. A change of role, branch or disabled flag, and a reset, end
the account's sessions at once: the next request signs in again under the new terms. Every
change is audited in the transaction that makes it."""

from __future__ import annotations

import secrets
from typing import Any

import asyncpg

from quanyi.access import queries
from quanyi.access.passwords import hash_password_off_loop, verify_password_off_loop
from quanyi.access.staff import (
    Staff,
    _token_hash,
    audit,
    check_password,
    check_role,
    create_staff,
    unknown_branch,
)
from quanyi.core.errors import Forbidden, InvalidRequest, NotFound

# A temporary password: 16 random bytes, shown once.
TEMPORARY_BYTES = 16


def staff_json(row: asyncpg.Record) -> dict[str, Any]:
    return {
        "username": row["username"],
        "role": row["role"],
        "branch": row["branch"],
        "disabled": row["disabled"],
        "must_change_password": row["must_change_password"],
        "created_at": row["created_at"].isoformat(),
    }


def me_json(staff: Staff) -> dict[str, Any]:
    return {
        "username": staff.username,
        "role": staff.role,
        "branch": staff.branch,
        "branches": sorted(staff.subtree),
        "must_change_password": staff.must_change_password,
    }


def _not_self(actor: Staff, username: str, what: str) -> None:
    if actor.username == username:
        raise Forbidden(f"nobody {what} their own account; another admin does")


async def _locked(conn: asyncpg.Connection, actor: Staff, username: str) -> asyncpg.Record:
    """The account, locked, if `actor` manages it: an admin whose subtree holds it."""
    actor.require_role("admin")
    row = await conn.fetchrow(queries.lock_staff, username)
    if row is None:
        raise NotFound(f"no staff {username}")
    actor.require_branch(row["branch"])
    return row


async def create_account(
    pool: asyncpg.Pool, actor: Staff, username: str, password: str, role: str, branch: str
) -> dict[str, Any]:
    """A new account of `branch` (in the admin's subtree) with a first password its owner
    replaces at the first login."""
    actor.require_role("admin")
    actor.require_branch(branch)
    check_role(role)
    check_password(password)
    async with pool.acquire() as conn, conn.transaction():
        await create_staff(conn, username, password, role, branch, must_change_password=True)
        row = await conn.fetchrow(queries.lock_staff, username)
        created = staff_json(row)
        await audit(
            conn, actor, "staff.create", f"staff:{username}", {"role": role, "branch": branch}
        )
    return created


async def list_accounts(pool: asyncpg.Pool, actor: Staff) -> list[dict[str, Any]]:
    """The accounts of the caller's subtree (every account for head office)."""
    actor.require_reader()
    return [staff_json(r) for r in await pool.fetch(queries.list_staff, actor.visible_branches())]


async def change_account(
    pool: asyncpg.Pool,
    actor: Staff,
    username: str,
    role: str | None = None,
    branch: str | None = None,
    disabled: bool | None = None,
) -> dict[str, Any]:
    """A new role, branch or disabled flag (what is None stays); ends the account's sessions
    when anything changed."""
    if role is None and branch is None and disabled is None:
        raise InvalidRequest("nothing to change: send role, branch or disabled")
    if role is not None:
        check_role(role)
    async with pool.acquire() as conn, conn.transaction():
        current = await _locked(conn, actor, username)
        _not_self(actor, username, "changes")
        if branch is not None:
            actor.require_branch(branch)  # an admin places staff in its own subtree only
        new = {
            "role": current["role"] if role is None else role,
            "branch": current["branch"] if branch is None else branch,
            "disabled": current["disabled"] if disabled is None else disabled,
        }
        old = {k: current[k] for k in new}
        if new == old:
            return staff_json(current)
        try:
            row = await conn.fetchrow(
                queries.update_staff, username, new["role"], new["branch"], new["disabled"]
            )
        except asyncpg.ForeignKeyViolationError:
            raise unknown_branch() from None
        ended = await conn.execute(queries.delete_sessions_of, username)
        changed = {k: {"from": old[k], "to": new[k]} for k in new if new[k] != old[k]}
        await audit(
            conn,
            actor,
            "staff.update",
            f"staff:{username}",
            {**changed, "sessions_ended": int(ended.split()[-1])},
        )
    return staff_json(row)


async def reset_password(pool: asyncpg.Pool, actor: Staff, username: str) -> str:
    """A temporary password for the account (returned once, stored hashed): its sessions end
    and its next login must set a new password before anything else."""
    temporary = secrets.token_urlsafe(TEMPORARY_BYTES)
    password_hash = await hash_password_off_loop(temporary)
    async with pool.acquire() as conn, conn.transaction():
        await _locked(conn, actor, username)
        _not_self(actor, username, "resets the password of")
        await conn.execute(queries.set_password, username, password_hash, True)
        ended = await conn.execute(queries.delete_sessions_of, username)
        await audit(
            conn,
            actor,
            "staff.reset_password",
            f"staff:{username}",
            {"sessions_ended": int(ended.split()[-1])},
        )
    return temporary


async def change_own_password(
    pool: asyncpg.Pool, staff: Staff, token: str, old: str, new: str
) -> None:
    """The caller's new password, given the current one; their other sessions end, the one
    that asked stays."""
    check_password(new, "new")
    if new == old:
        raise InvalidRequest("the new password is the old one", {"new": "differs from old"})
    stored = await pool.fetchval(queries.password_of, staff.username)
    if stored is None or not await verify_password_off_loop(old, stored):
        await audit(pool, staff, "staff.password_failed", f"staff:{staff.username}")
        raise InvalidRequest("the old password is wrong", {"old": "not the current password"})
    password_hash = await hash_password_off_loop(new)
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(queries.set_password, staff.username, password_hash, False)
        await conn.execute(queries.delete_other_sessions, staff.username, _token_hash(token))
        await audit(conn, staff, "staff.password", f"staff:{staff.username}")

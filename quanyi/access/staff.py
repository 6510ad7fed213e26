"""Staff accounts, bearer-token sessions, branch scope and the audit log."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import asyncpg
import orjson

from quanyi.access import queries
from quanyi.access.passwords import hash_password_off_loop, verify_password_off_loop
from quanyi.core.errors import (
    AlreadyExists,
    Forbidden,
    InvalidRequest,
    TooManyAttempts,
    Unauthorized,
)
from quanyi.core.pan import mask_json, mask_pans

log = logging.getLogger(__name__)

# admin: everything in its scope; auditor: reads everything in its scope and changes nothing;
# operator: vendors and dead letters, no money (no campaign, right, audience or grant).
ROLES = ("marketer", "approver", "admin", "auditor", "operator")
HEAD_OFFICE = "HQ"
# After this many failed logins for one username within the window, further logins (even with
# the right password) are refused until the oldest of them leaves the window.
LOGIN_MAX_FAILURES = 5
LOGIN_FAILURE_WINDOW = timedelta(minutes=15)
# Expired sessions and failures older than the window are deleted this often.
STAFF_SWEEP_INTERVAL_S = 600.0
MIN_PASSWORD = 8
# Who reads whatever their scope holds, whatever a read names.
READ_ALL = ("admin", "auditor")


class PasswordChangeRequired(Forbidden):
    """The account's password was reset: it sets a new one (POST /admin/v1/password) before
    anything else."""

    code = "password_change_required"


@dataclass(frozen=True)
class Staff:
    username: str
    role: str
    branch: str
    # Its own branch and every branch below it, read with its session (quanyi/access/queries.sql
    # staff_for_token). None: an account made in code (a command, the demo) knows its own only.
    branches: frozenset[str] | None = None
    must_change_password: bool = False

    def require_role(self, *roles: str) -> None:
        """A change: staff of these roles, and admins. An auditor changes nothing, an operator
        only what names it."""
        if self.role != "admin" and self.role not in roles:
            raise Forbidden(f"role {self.role} may not do this; needs {' or '.join(roles)}")

    def require_reader(self, *roles: str) -> None:
        """A read: staff of these roles, and admins and auditors, who read everything in their
        scope. An operator reads only what names it."""
        if self.role not in READ_ALL and self.role not in roles:
            needs = " or ".join((*roles, *READ_ALL))
            raise Forbidden(f"role {self.role} may not read this; needs {needs}")

    @property
    def at_head_office(self) -> bool:
        return self.branch == HEAD_OFFICE

    @property
    def subtree(self) -> frozenset[str]:
        """The branch ids this staff member acts on, as its session read them (head office acts
        on every branch, those added since included)."""
        return frozenset({self.branch}) if self.branches is None else self.branches

    def require_branch(self, branch: str) -> None:
        """Head-office staff act on every branch; branch staff on their own and those below."""
        if not self.at_head_office and branch not in self.subtree:
            raise Forbidden(f"staff of branch {self.branch} may not act on branch {branch}")

    def visible_branches(self) -> list[str] | None:
        """The branches whose records this staff member may read: None for every branch."""
        return None if self.at_head_office else sorted(self.subtree)

    def require_head_office(self) -> None:
        """Shared resources (the rights catalog, vendors) are head office's to change."""
        if not self.at_head_office:
            raise Forbidden(f"only head-office staff may change this; you are at {self.branch}")


class Actor(Protocol):
    """Whom the audit log names: a staff member, or a vendor acting through its signed API
    (vendors/statements.py VendorActor), which has no role and no branch scope to check."""

    @property
    def username(self) -> str: ...

    @property
    def branch(self) -> str: ...


# Who the audit log names for a login with a username no staff has: what was typed into the
# username box is not kept (it may be anything, a card number included).
UNKNOWN_STAFF = Staff("(unknown)", "none", "-")


def _token_hash(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def _username_digest(username: str) -> bytes:
    return hashlib.sha256(username.encode()).digest()


def _bearer_token(authorization: str) -> str:
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("send Authorization: Bearer <token> from POST /admin/v1/login")
    return token.strip()


def check_role(role: str) -> None:
    if role not in ROLES:
        raise InvalidRequest(f"role must be one of {', '.join(ROLES)}", {"role": "unknown role"})


def check_password(password: str, field: str = "password") -> None:
    if len(password) < MIN_PASSWORD:
        raise InvalidRequest("password too short", {field: f"at least {MIN_PASSWORD} characters"})


def unknown_branch(field: str = "branch") -> InvalidRequest:
    return InvalidRequest("no such branch", {field: "no such branch: create it first"})


async def create_staff(
    conn: asyncpg.Pool | asyncpg.Connection,
    username: str,
    password: str,
    role: str,
    branch: str,
    *,
    must_change_password: bool = False,
) -> None:
    check_role(role)
    check_password(password)
    password_hash = await hash_password_off_loop(password)
    try:
        await conn.execute(
            queries.insert_staff, username, password_hash, role, branch, must_change_password
        )
    except asyncpg.UniqueViolationError:
        raise AlreadyExists(f"staff {username} exists") from None
    except asyncpg.ForeignKeyViolationError:
        raise unknown_branch() from None


async def login(
    pool: asyncpg.Pool, username: str, password: str, ttl_s: int
) -> tuple[str, datetime, bool]:
    """A new session for the right password, its expiry, and whether the account must set a
    new password first (after a reset: the session then serves POST /admin/v1/password, GET
    /admin/v1/me and logout only). Every attempt first counts as a failure of its username
    (known or not), so guesses sent at once cannot pass the limit together; a locked username
    is refused before any hashing, whatever the password."""
    digest = _username_digest(username)
    attempt = await pool.fetchval(queries.insert_login_attempt, digest)
    row = await pool.fetchrow(queries.staff_for_login, username)
    actor = Staff(username, row["role"], row["branch"]) if row else UNKNOWN_STAFF
    target = username if row else UNKNOWN_STAFF.username
    recent = [
        r
        for r in await pool.fetch(
            queries.recent_login_failures, digest, LOGIN_FAILURE_WINDOW, LOGIN_MAX_FAILURES + 1
        )
        if r["id"] != attempt
    ]
    if len(recent) >= LOGIN_MAX_FAILURES:
        await pool.execute(queries.delete_login_attempt, attempt)
        # One more try is allowed once fewer than the limit remain in the window.
        retry_after_s = max(1, math.ceil(recent[LOGIN_MAX_FAILURES - 1]["ages_out_in_s"]))
        await audit(pool, actor, "login.locked", target, {"retry_after_s": retry_after_s})
        raise TooManyAttempts(
            f"too many failed logins; try again in {retry_after_s} s", retry_after_s
        )
    # Hash even for unknown users so response time does not reveal who exists.
    stored = row["password_hash"] if row else "scrypt$16384$8$1$AAAAAAAAAAAAAAAAAAAAAA==$AA=="
    if not await verify_password_off_loop(password, stored) or row is None:
        await audit(pool, actor, "login.failed", target, {"failures": len(recent) + 1})
        raise Unauthorized("wrong username or password")
    await pool.execute(queries.delete_login_attempt, attempt)
    token = secrets.token_urlsafe(32)
    expires_at = datetime.now(UTC) + timedelta(seconds=ttl_s)
    await pool.execute(queries.insert_session, _token_hash(token), username, expires_at)
    await audit(pool, actor, "login", username)
    return token, expires_at, row["must_change_password"]


async def authenticate(pool: asyncpg.Pool, authorization: str) -> Staff:
    row = await pool.fetchrow(queries.staff_for_token, _token_hash(_bearer_token(authorization)))
    if row is None:
        raise Unauthorized("token unknown or expired")
    return Staff(
        row["username"],
        row["role"],
        row["branch"],
        frozenset(row["branches"]),
        row["must_change_password"],
    )


async def logout(pool: asyncpg.Pool, authorization: str) -> Staff:
    """Ends the session of this bearer token at once; audited."""
    staff = await authenticate(pool, authorization)
    await pool.execute(queries.delete_session, _token_hash(_bearer_token(authorization)))
    await audit(pool, staff, "logout", staff.username)
    return staff


async def sweep_staff_records(pool: asyncpg.Pool) -> tuple[int, int]:
    """Deletes expired sessions and failed logins that left the lockout window; returns how
    many of each."""
    sessions = await pool.execute(queries.delete_expired_sessions)
    failures = await pool.execute(queries.delete_old_login_failures, LOGIN_FAILURE_WINDOW)
    return int(sessions.split()[-1]), int(failures.split()[-1])


async def keep_staff_records_swept(
    pool: asyncpg.Pool, interval_s: float = STAFF_SWEEP_INTERVAL_S
) -> None:
    """sweep_staff_records at start and then every `interval_s`, for good; a sweep that fails
    (PostgreSQL away) is tried again next time."""
    while True:
        try:
            sessions, failures = await sweep_staff_records(pool)
            if sessions or failures:
                log.info("deleted %d expired sessions, %d old failed logins", sessions, failures)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            log.warning("staff sweep failed, trying again later: %s", exc)
        await asyncio.sleep(interval_s)


async def audit(
    conn: asyncpg.Pool | asyncpg.Connection,
    actor: Actor,
    action: str,
    target: str,
    detail: dict[str, Any] | None = None,
) -> None:
    # Whatever reached the detail (a reason, a name, a username typed at login) is kept with
    # its card numbers masked.
    await conn.execute(
        queries.insert_audit,
        mask_pans(actor.username),
        actor.branch,
        action,
        mask_pans(target),
        orjson.dumps(mask_json(detail or {})).decode(),
    )

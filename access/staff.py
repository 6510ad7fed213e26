"""Staff accounts, bearer-token sessions, branch scope and the audit log."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import orjson

from access import queries
from access.passwords import hash_password, verify_password
from quanyi.errors import AlreadyExists, Forbidden, InvalidRequest, Unauthorized

ROLES = ("marketer", "approver", "admin")
HEAD_OFFICE = "HQ"


@dataclass(frozen=True)
class Staff:
    username: str
    role: str
    branch: str

    def require_role(self, *roles: str) -> None:
        if self.role != "admin" and self.role not in roles:
            raise Forbidden(f"role {self.role} may not do this; needs {' or '.join(roles)}")

    @property
    def at_head_office(self) -> bool:
        return self.branch == HEAD_OFFICE

    def require_branch(self, branch: str) -> None:
        """Head-office staff act on every branch; branch staff on their own only."""
        if not self.at_head_office and self.branch != branch:
            raise Forbidden(f"staff of branch {self.branch} may not act on branch {branch}")

    def require_head_office(self) -> None:
        """Shared resources (the rights catalog, vendors) are head office's to change."""
        if not self.at_head_office:
            raise Forbidden(f"only head-office staff may change this; you are at {self.branch}")


def _token_hash(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


async def create_staff(
    pool: asyncpg.Pool, username: str, password: str, role: str, branch: str
) -> None:
    if role not in ROLES:
        raise InvalidRequest(f"role must be one of {', '.join(ROLES)}", {"role": "unknown role"})
    if len(password) < 8:
        raise InvalidRequest("password too short", {"password": "at least 8 characters"})
    try:
        await pool.execute(queries.insert_staff, username, hash_password(password), role, branch)
    except asyncpg.UniqueViolationError:
        raise AlreadyExists(f"staff {username} exists") from None


async def login(
    pool: asyncpg.Pool, username: str, password: str, ttl_s: int
) -> tuple[str, datetime]:
    row = await pool.fetchrow(queries.staff_for_login, username)
    # Hash even for unknown users so response time does not reveal who exists.
    stored = row["password_hash"] if row else "scrypt$16384$8$1$AAAAAAAAAAAAAAAAAAAAAA==$AA=="
    if not verify_password(password, stored) or row is None:
        raise Unauthorized("wrong username or password")
    token = secrets.token_urlsafe(32)
    expires_at = datetime.now(UTC) + timedelta(seconds=ttl_s)
    await pool.execute(queries.insert_session, _token_hash(token), username, expires_at)
    await audit(pool, Staff(username, row["role"], row["branch"]), "login", username)
    return token, expires_at


async def authenticate(pool: asyncpg.Pool, authorization: str) -> Staff:
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise Unauthorized("send Authorization: Bearer <token> from POST /admin/v1/login")
    row = await pool.fetchrow(queries.staff_for_token, _token_hash(token.strip()))
    if row is None:
        raise Unauthorized("token unknown or expired")
    return Staff(row["username"], row["role"], row["branch"])


async def audit(
    conn: asyncpg.Pool | asyncpg.Connection,
    staff: Staff,
    action: str,
    target: str,
    detail: dict[str, Any] | None = None,
) -> None:
    await conn.execute(
        queries.insert_audit,
        staff.username,
        staff.branch,
        action,
        target,
        orjson.dumps(detail or {}).decode(),
    )

"""Clients of the API under test: channel requests signed as a channel signs them, staff signed
in, and raw requests that send exactly the bytes and headers given."""

from __future__ import annotations

import asyncio
import functools
import secrets
import socket
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import orjson

from quanyi.access import queries as staff_queries
from quanyi.access.passwords import hash_password
from quanyi.access.signing import signed_headers
from quanyi.access.staff import _token_hash
from tests.support import factories
from tests.support.clock import FakeClock
from tests.support.settings import CHANNEL, CHANNEL_SECRET, PASSWORD

# username -> (role, branch): one account per role at head office, plus branch accounts.
STAFF_ACCOUNTS = {
    "marketer": ("marketer", "HQ"),
    "marketer2": ("marketer", "HQ"),
    "approver": ("approver", "HQ"),
    "admin": ("admin", "HQ"),
    "sz-marketer": ("marketer", "SZ"),
    "sz-approver": ("approver", "SZ"),
    "sz-admin": ("admin", "SZ"),
    "auditor": ("auditor", "HQ"),
    "operator": ("operator", "HQ"),
}
STAFF = tuple(STAFF_ACCOUNTS)
# A claim of campaign c1 (its only reward) by customer cust-1.
CLAIM = {"request_id": "q1", "campaign_id": "c1", "customer_id": "cust-1"}


@functools.cache
def password_hash() -> str:
    """PASSWORD hashed once per run: scrypt is slow."""
    return hash_password(PASSWORD)


async def add_staff(
    db: asyncpg.Pool | asyncpg.Connection, accounts: dict[str, tuple[str, str]]
) -> None:
    """What create_staff writes, for these username -> (role, branch), password PASSWORD."""
    for username, (role, branch) in accounts.items():
        await db.execute(staff_queries.insert_staff, username, password_hash(), role, branch, False)


class Api:
    """A test client that signs channel requests and logs staff in."""

    def __init__(self, client: Any, clock: FakeClock) -> None:
        self.client = client
        self.clock = clock
        self._tokens: dict[str, str] = {}

    async def channel(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        channel: str = CHANNEL,
        secret: str = CHANNEL_SECRET,
        raw: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, Any]:
        data = raw if raw is not None else (b"" if body is None else orjson.dumps(body))
        signed = signed_headers(channel, secret, method, path, int(self.clock()), data)
        signed.update(headers or {})
        resp = await self.client.request(method, path, data=data, headers=signed)
        return resp.status, await resp.json()

    async def claim(self, **body: Any) -> tuple[int, Any]:
        return await self.channel("POST", "/v1/claims", body)

    def use_session(self, username: str, token: str) -> None:
        """Act as `username` with this session token from now on (no login request)."""
        self._tokens[username] = token

    def tokens(self) -> dict[str, str]:
        """The session token of each staff member signed in so far (a copy)."""
        return dict(self._tokens)

    async def login(self, username: str) -> str:
        """The session token of `username`, logging in through the API the first time."""
        if username not in self._tokens:
            resp = await self.client.post(
                "/admin/v1/login", json={"username": username, "password": PASSWORD}
            )
            assert resp.status == 200, await resp.text()
            self._tokens[username] = (await resp.json())["token"]
        return self._tokens[username]

    async def admin(
        self, username: str, method: str, path: str, body: Any = None
    ) -> tuple[int, Any]:
        token = await self.login(username)
        resp = await self.client.request(
            method, path, json=body, headers={"Authorization": f"Bearer {token}"}
        )
        return resp.status, await resp.json()

    async def create_right(
        self, right_id: str = "coffee", unit_cost: int = 100, **extra: Any
    ) -> dict[str, Any]:
        """Proposed by `marketer`, admitted by `approver` unless admit=False."""
        return await factories.create_right(self, right_id, unit_cost, **extra)

    async def create_campaign(
        self,
        campaign_id: str = "c1",
        rewards: list[dict[str, Any]] | None = None,
        *,
        approve: bool = True,
        **fields: Any,
    ) -> dict[str, Any]:
        """A campaign open from an hour ago for 30 days, on the test channel."""
        return await factories.create_campaign(
            self, campaign_id, rewards, approve=approve, **fields
        )


async def grant_view(api: Api, grant_id: str) -> dict[str, Any]:
    """The grant as its channel sees it (GET /v1/grants/{id}), which must answer 200."""
    status, grant = await api.channel("GET", f"/v1/grants/{grant_id}")
    assert status == 200, grant
    return grant


async def statuses(api: Api, grant_ids: list[str]) -> dict[str, dict[str, Any]]:
    """grant id -> the grant as its channel sees it, all asked at once."""
    grants = await asyncio.gather(*(grant_view(api, g) for g in grant_ids))
    return dict(zip(grant_ids, grants, strict=True))


async def stock_granted(api: Api, campaign_id: str = "c1", reward_id: str = "r1") -> int:
    """The reward's live `granted` counter as head office sees it."""
    status, campaign = await api.admin("marketer", "GET", f"/admin/v1/campaigns/{campaign_id}")
    assert status == 200, campaign
    return next(r["granted"] for r in campaign["rewards"] if r["id"] == reward_id)


async def new_sessions(pool: asyncpg.Pool, *usernames: str) -> dict[str, str]:
    """A fresh session for each of these staff (all of STAFF by default), stored as
    POST /admin/v1/login stores them, without paying for scrypt in every test (login itself
    is tested in test_admin_login.py); username -> token."""
    expires_at = datetime.now(UTC) + timedelta(hours=1)
    tokens = {}
    for username in usernames or STAFF:
        token = secrets.token_urlsafe(32)
        await pool.execute(staff_queries.insert_session, _token_hash(token), username, expires_at)
        tokens[username] = token
    return tokens


async def sign_in(api: Api, pool: asyncpg.Pool, *usernames: str) -> None:
    """These staff (all of STAFF by default) signed in on `api`, by new_sessions."""
    for username, token in (await new_sessions(pool, *usernames)).items():
        api.use_session(username, token)


async def claim(api: Api, request_id: str, customer_id: str, **extra: Any) -> tuple[int, Any]:
    """A claim of campaign c1 through the signed channel API."""
    return await api.claim(
        request_id=request_id, campaign_id="c1", customer_id=customer_id, **extra
    )


def not_ready(status: int, body: Any) -> bool:
    """The answer to a claim or a transition while Redis is not rebuilt yet."""
    return status == 503 and body["error"]["reason"] == "store_not_ready"


async def claim_raw(api: Api, data: bytes) -> tuple[int, Any]:
    """POST /v1/claims with exactly these bytes, properly signed."""
    return await send(
        api, "POST", "/v1/claims", data, headers=sign(api, "POST", "/v1/claims", data)
    )


async def send(
    api: Api,
    method: str,
    path: str,
    data: bytes = b"",
    *,
    headers: dict[str, str] | None = None,
) -> tuple[int, Any]:
    """Sends exactly these headers and bytes; returns the status and the JSON body."""
    resp = await api.client.request(method, path, data=data, headers=headers or {})
    assert resp.content_type == "application/json", await resp.text()
    return resp.status, await resp.json()


def sign(
    api: Api,
    method: str,
    path: str,
    data: bytes = b"",
    *,
    ts: int | None = None,
    channel: str = CHANNEL,
    secret: str = CHANNEL_SECRET,
) -> dict[str, str]:
    """Signature headers over (method, path, ts, data); ts defaults to the app clock."""
    timestamp = int(api.clock()) if ts is None else ts
    return signed_headers(channel, secret, method, path, timestamp, data)


def assert_error(status: int, body: Any, expected_status: int, code: str) -> dict[str, Any]:
    """The answer is this status with this error code; returns the error."""
    assert status == expected_status, body
    assert body["error"]["code"] == code, body
    return body["error"]


def assert_only_error(status: int, body: Any, expected_status: int, code: str) -> dict[str, Any]:
    """The answer is this status and nothing but an error of this code with a message."""
    assert status == expected_status, body
    assert set(body) == {"error"}, body
    error = body["error"]
    assert error["code"] == code, body
    assert isinstance(error["message"], str) and error["message"], body
    return error


def error_code(status: int, body: dict[str, Any]) -> tuple[int, str]:
    return status, body["error"]["code"]


def closed_port() -> int:
    """A local TCP port nothing listens on (bound, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]

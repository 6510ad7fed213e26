"""Test fixtures: a real PostgreSQL database and a real Redis db of their own, emptied per test."""

from __future__ import annotations

import asyncio
import functools
import os
import secrets
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import asyncpg
import orjson
import pytest
from redis.asyncio import Redis

from access import queries as staff_queries
from access.channels import create_channel
from access.passwords import hash_password
from access.secret_box import secret_box
from access.signing import signed_headers
from inventory.keys import Keys
from quanyi.app import create_app
from quanyi.db import migrate
from quanyi.settings import Settings
from vendors.rsa import generate_keypair
from vendors.simulator import SimulatorConfig, create_simulator

# Each test run has its own database and key prefix, so runs side by side never meet, and
# neither ever touches the service's own data.
RUN_ID = os.getpid()
TEST_DATABASE_URL = os.environ.get(
    "QUANYI_TEST_DATABASE_URL", f"postgresql://127.0.0.1:5432/quanyi_test_{RUN_ID}"
)
TEST_REDIS_URL = os.environ.get("QUANYI_TEST_REDIS_URL", "redis://127.0.0.1:6379/9")
TEST_PREFIX = f"qyt{RUN_ID}"
PASSWORD = "test-password-1"
CHANNEL = "app"
CHANNEL_SECRET = "test-channel-secret"
# The key channel secrets are sealed with: random per run, named by reference like production's.
SECRETS_KEY_ENV = "QUANYI_TEST_SECRETS_KEY"
os.environ.setdefault(SECRETS_KEY_ENV, secrets.token_hex(32))


class FakeClock:
    """Unix seconds that only move when a test moves them."""

    def __init__(self, now: float | None = None) -> None:
        self.now = time.time() if now is None else now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def test_settings(**changes: Any) -> Settings:
    base = Settings(
        redis_url=TEST_REDIS_URL,
        database_url=TEST_DATABASE_URL,
        key_prefix=TEST_PREFIX,
        channel_refresh_s=0.2,
        ledger_block_ms=20,
        ledger_reclaim_idle_ms=500,
        worker_metrics_port=0,
        secrets_key=f"env:{SECRETS_KEY_ENV}",
    )
    return base.replace(**changes)


async def _drop_database() -> None:
    admin = await asyncpg.connect(TEST_DATABASE_URL.rsplit("/", 1)[0] + "/postgres")
    name = TEST_DATABASE_URL.rsplit("/", 1)[1]
    await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    await admin.close()


async def _delete_keys(client: Redis) -> None:
    batch = [k async for k in client.scan_iter(match=f"{TEST_PREFIX}:*", count=1000)]
    for i in range(0, len(batch), 1000):
        await client.unlink(*batch[i : i + 1000])


@pytest.fixture(scope="session")
def database() -> Iterator[str]:
    async def fresh() -> None:
        await _drop_database()
        await migrate(TEST_DATABASE_URL)

    asyncio.run(fresh())
    yield TEST_DATABASE_URL
    asyncio.run(_drop_database())


@pytest.fixture
async def pool(database: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await asyncpg.create_pool(database, min_size=1, max_size=10)
    tables = [
        r["tablename"]
        for r in await pool.fetch(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
            " AND tablename <> 'schema_migrations'"
        )
    ]
    await pool.execute(f"TRUNCATE {', '.join(tables)} CASCADE")
    yield pool
    await pool.close()


@pytest.fixture
async def redis() -> AsyncIterator[Redis]:
    client = Redis.from_url(TEST_REDIS_URL, decode_responses=True)
    await _delete_keys(client)
    yield client
    await _delete_keys(client)
    await client.aclose()


@pytest.fixture
def keys() -> Keys:
    return Keys(TEST_PREFIX)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def settings() -> Settings:
    return test_settings()


@pytest.fixture
async def staff(pool: asyncpg.Pool) -> dict[str, str]:
    """One account per role at head office, plus branch accounts; username -> role."""
    accounts = {
        "marketer": ("marketer", "HQ"),
        "marketer2": ("marketer", "HQ"),
        "approver": ("approver", "HQ"),
        "admin": ("admin", "HQ"),
        "sz-marketer": ("marketer", "SZ"),
        "sz-approver": ("approver", "SZ"),
        "sz-admin": ("admin", "SZ"),
    }
    for username, (role, branch) in accounts.items():
        # What create_staff writes, with the password hashed once per session (scrypt is slow).
        await pool.execute(staff_queries.insert_staff, username, _password_hash(), role, branch)
    return {u: r for u, (r, _b) in accounts.items()}


@functools.cache
def _password_hash() -> str:
    return hash_password(PASSWORD)


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

    async def login(self, username: str) -> str:
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
    ) -> None:
        status, body = await self.admin(
            "marketer",
            "POST",
            "/admin/v1/rights",
            {
                "id": right_id,
                "name": f"{right_id} right",
                "kind": "voucher",
                "face_value": unit_cost * 2,
                "unit_cost": unit_cost,
                **extra,
            },
        )
        assert status == 201, body

    async def create_campaign(
        self,
        campaign_id: str = "c1",
        rewards: list[dict[str, Any]] | None = None,
        *,
        approve: bool = True,
        **fields: Any,
    ) -> dict[str, Any]:
        """A campaign open from an hour ago for 30 days, on the test channel."""
        now = datetime.fromtimestamp(self.clock(), UTC)
        body = {
            "id": campaign_id,
            "name": f"campaign {campaign_id}",
            "branch": "HQ",
            "starts_at": (now - timedelta(hours=1)).isoformat(),
            "ends_at": (now + timedelta(days=30)).isoformat(),
            "channels": [CHANNEL],
            "rewards": rewards
            or [{"id": "r1", "right_id": "coffee", "stock": 100, "per_customer_limit": 1}],
            **fields,
        }
        status, created = await self.admin("marketer", "POST", "/admin/v1/campaigns", body)
        assert status == 201, created
        if approve:
            status, created = await self.admin(
                "marketer", "POST", f"/admin/v1/campaigns/{campaign_id}/submit"
            )
            assert status == 200, created
            status, created = await self.admin(
                "approver", "POST", f"/admin/v1/campaigns/{campaign_id}/approve"
            )
            assert status == 200, created
        return created


@pytest.fixture
async def api(
    aiohttp_client: Any,
    pool: asyncpg.Pool,
    redis: Redis,
    staff: dict[str, str],
    clock: FakeClock,
    settings: Settings,
) -> Api:
    """The API (without workers) on a fresh database and Redis db, with one channel `app`."""
    box = secret_box(settings)
    await create_channel(pool, CHANNEL, CHANNEL_SECRET, box=box)
    await create_channel(pool, "wechat", "wechat-secret", box=box)
    client = await aiohttp_client(create_app(settings, clock))
    return Api(client, clock)


# vendors


@dataclass(frozen=True)
class KeyPairs:
    vendor_private: str
    vendor_public: str
    ours_private: str
    ours_public: str
    rotated_private: str
    rotated_public: str


@pytest.fixture(scope="session")
def key_pairs() -> KeyPairs:
    """RSA pairs for a vendor, for us, and the vendor's next key (a rotation); made once."""
    return KeyPairs(*generate_keypair(), *generate_keypair(), *generate_keypair())


@pytest.fixture
def our_key_file(tmp_path: Any, key_pairs: KeyPairs) -> str:
    path = tmp_path / "ours.pem"
    path.write_text(key_pairs.ours_private)
    return f"file:{path}"


@pytest.fixture
async def start_sim(aiohttp_server: Any, key_pairs: KeyPairs) -> Any:
    """Starts a simulated vendor (a real HTTP server); returns its base URL."""

    async def start(**config: Any) -> str:
        config.setdefault("latency_ms", 5)
        config.setdefault("private_key_pem", key_pairs.vendor_private)
        config.setdefault("client_public_key_pem", key_pairs.ours_public)
        server = await aiohttp_server(create_simulator(SimulatorConfig(**config)))
        return str(server.make_url("")).rstrip("/")

    return start


async def register_vendor(
    api: Api,
    vendor_id: str,
    base_url: str | None,
    key_pairs: KeyPairs,
    signing_key: str,
    adapter: str = "simulated",
    **extra: Any,
) -> dict[str, Any]:
    body = {
        "id": vendor_id,
        "name": f"vendor {vendor_id}",
        "adapter": adapter,
        "public_keys": [key_pairs.vendor_public],
        "signing_key": signing_key,
        **({"base_url": base_url} if base_url else {}),
        **extra,
    }
    status, vendor = await api.admin("admin", "POST", "/admin/v1/vendors", body)
    assert status == 201, vendor
    return vendor


async def sim_stats(base_url: str) -> dict[str, Any]:
    async with aiohttp.ClientSession() as session, session.get(f"{base_url}/_sim/stats") as resp:
        return await resp.json()


async def sim_config(base_url: str, **config: Any) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{base_url}/_sim/config", json=config) as resp,
    ):
        assert resp.status == 200, await resp.text()

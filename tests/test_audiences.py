"""Audiences: create and read, member imports (CSV with and without a header, Parquet), bad and
card-number lines rejected by line and kept nowhere, a re-import that replaces the members
atomically under concurrent checks and frees the old version, Redis bytes per member, branch
scope, the body limit, and `quanyi audience` end to end. Real Redis and PostgreSQL throughout."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from quanyi.access.staff import Staff
from quanyi.audiences.members import Chunk, MemberSource, Rejections, body_source
from quanyi.audiences.service import AudienceService
from quanyi.core.pan import has_pan
from quanyi.core.schemas import IDENT_RULE, PAN_IN_ID
from quanyi.stores.keys import audience_bucket_of
from quanyi.stores.scripts import Scripts
from quanyi.web.app import create_app
from tests.support.cli import quanyi
from tests.support.clients import Api

ROOT = Path(__file__).resolve().parent.parent
CSV = "text/csv"
PARQUET = "application/vnd.apache.parquet"
MARKETER = Staff("marketer", "marketer", "HQ")
# Card numbers in the forms a file may hold them; none may reach Redis, PostgreSQL or a reply.
CARDS = [
    "4111111111111111",
    "4111 1111 1111 1111",
    "cust-4111-1111-1111-1111",
    "５５５５５５５５５５５５４４４４",
]
CARD_DIGITS = ["4111111111111111", "5555555555554444"]


@pytest.fixture
def audiences(pool, redis, keys) -> AudienceService:
    return AudienceService(pool, redis, keys, Scripts(redis))


async def create(api: Api, audience_id: str = "vip", branch: str = "HQ", user: str = "marketer"):
    body = {"id": audience_id, "name": "VIP customers", "branch": branch}
    return await api.admin(user, "POST", "/admin/v1/audiences", body)


async def put_members(
    api: Api, body: bytes, audience_id: str = "vip", media: str = CSV, user: str = "marketer"
) -> tuple[int, Any]:
    token = await api.login(user)
    resp = await api.client.put(
        f"/admin/v1/audiences/{audience_id}/members",
        data=body,
        headers={"Authorization": f"Bearer {token}", "Content-Type": media},
    )
    return resp.status, await resp.json()


def parquet_bytes(values: list[Any], column: str = "customer_id") -> bytes:
    out = io.BytesIO()
    pq.write_table(pa.table({column: values}), out)
    return out.getvalue()


async def redis_dump(redis, keys) -> str:
    """Every key of this run's audiences and what it holds, as one text."""
    parts = []
    async for key in redis.scan_iter(match=f"{keys.prefix}:aud:*", count=1000):
        kind = await redis.type(key)
        value = await (redis.hgetall(key) if kind == "hash" else redis.get(key))
        parts.append(f"{key}={value}")
    return "\n".join(parts)


async def postgres_dump(pool) -> str:
    rows = await pool.fetch("SELECT row_to_json(a)::text AS j FROM audiences a")
    # Without the chain's hashes: their hex is digits by chance, sometimes a card number's shape.
    audit = await pool.fetch(
        "SELECT (to_jsonb(l) - 'prev_hash' - 'hash')::text AS j FROM audit_log l"
    )
    return "\n".join(r["j"] for r in [*rows, *audit])


async def version_keys(redis, keys, audience_id: str, version: int) -> list[str]:
    match = f"{keys.audience(audience_id)}:{version}:*".replace("{", "\\{").replace("}", "\\}")
    return [k async for k in redis.scan_iter(match=match, count=1000)]


# --- create and read ------------------------------------------------------------------


async def test_create_then_read(api):
    status, body = await create(api)
    assert status == 201, body
    assert body == {
        "id": "vip",
        "name": "VIP customers",
        "branch": "HQ",
        "version": 0,
        "members": 0,
    }
    status, body = await api.admin("approver", "GET", "/admin/v1/audiences/vip")
    assert status == 200, body
    assert body == {
        "id": "vip",
        "name": "VIP customers",
        "branch": "HQ",
        "version": 0,
        "members": 0,
        "imported_at": None,
        "imported_by": None,
    }
    status, body = await create(api)
    assert (status, body["error"]["code"]) == (409, "already_exists")
    status, body = await api.admin("marketer", "GET", "/admin/v1/audiences/nobody")
    assert (status, body["error"]["code"]) == (404, "not_found")


async def test_an_approver_may_not_create_one(api):
    status, body = await create(api, user="approver")
    assert (status, body["error"]["code"]) == (403, "forbidden")


# --- imports --------------------------------------------------------------------------


async def test_a_csv_with_a_header_becomes_the_members(api, audiences):
    await create(api)
    status, body = await put_members(api, b"customer_id\r\nC1\r\nC2\r\nC2\r\nC3\r\n")
    assert status == 200, body
    assert body == {"id": "vip", "version": 1, "members": 3, "rejected": 0, "errors": []}
    for member in ("C1", "C2", "C3"):
        assert await audiences.store.has("vip", member)
    assert not await audiences.store.has("vip", "C4")
    assert not await audiences.store.has("vip", "customer_id")
    status, body = await api.admin("marketer", "GET", "/admin/v1/audiences/vip")
    assert (body["version"], body["members"], body["imported_by"]) == (1, 3, "marketer")
    assert body["imported_at"] is not None


async def test_a_csv_without_a_header_and_with_a_bom(api, audiences):
    await create(api)
    status, body = await put_members(api, "\ufeffC1\nC2\n\nC3".encode())
    assert status == 200, body
    assert (body["members"], body["rejected"]) == (3, 0)
    assert all([await audiences.store.has("vip", m) for m in ("C1", "C2", "C3")])


async def test_bad_and_card_number_lines_are_rejected_by_line_and_kept_nowhere(
    api, audiences, redis, keys, pool
):
    await create(api)
    lines = ["customer_id", "C1", "not an id!", *CARDS, "C2", "x" * 65]
    status, body = await put_members(api, "\n".join(lines).encode())
    assert status == 200, body
    assert (body["members"], body["rejected"]) == (2, 2 + len(CARDS))
    assert body["errors"] == [
        {"line": 3, "reason": IDENT_RULE},
        *({"line": 4 + i, "reason": PAN_IN_ID} for i in range(len(CARDS))),
        {"line": 9, "reason": IDENT_RULE},
    ]
    stored = [json.dumps(body), await redis_dump(redis, keys), await postgres_dump(pool)]
    assert "C1" in stored[1]  # the dump does see the members
    for text in stored:
        assert not has_pan(text), text
        assert not any(digits in text for digits in CARD_DIGITS)
    assert not await audiences.store.has("vip", "cust-4111-1111-1111-1111")


async def test_only_the_first_100_errors_are_listed(api):
    await create(api)
    status, body = await put_members(api, b"C1\n" + b"bad id\n" * 150)
    assert status == 200, body
    assert (body["members"], body["rejected"], len(body["errors"])) == (1, 150, 100)
    assert body["errors"][-1] == {"line": 101, "reason": IDENT_RULE}


async def test_a_parquet_file_becomes_the_members(api, audiences, redis, keys):
    await create(api)
    values = ["P1", "P2", None, "4111111111111111", "P3", "bad id"]
    status, body = await put_members(api, parquet_bytes(values), media=PARQUET)
    assert status == 200, body
    assert body["members"] == 3 and body["rejected"] == 3
    assert [e["line"] for e in body["errors"]] == [3, 4, 6]
    assert body["errors"][1]["reason"] == PAN_IN_ID
    assert all([await audiences.store.has("vip", m) for m in ("P1", "P2", "P3")])
    assert not has_pan(await redis_dump(redis, keys))


async def test_a_parquet_file_without_the_column_or_not_parquet_is_refused(api):
    await create(api)
    status, body = await put_members(api, parquet_bytes(["P1"], "id"), media=PARQUET)
    assert (status, body["error"]["code"]) == (400, "invalid_request")
    status, body = await put_members(api, b"PAR1 this is not parquet", media=PARQUET)
    assert (status, body["error"]["code"]) == (400, "invalid_request")


async def test_another_media_type_is_refused(api):
    await create(api)
    status, body = await put_members(api, b'{"customer_id": "C1"}', media="application/json")
    assert (status, body["error"]["code"]) == (400, "invalid_request")


async def test_a_body_over_the_limit_is_413(aiohttp_client, pool, redis, staff, clock, settings):
    api = Api(
        await aiohttp_client(create_app(settings.replace(audience_max_bytes=1000), clock)), clock
    )
    await create(api)
    status, body = await put_members(api, b"C1\n" * 400)  # 1,200 bytes
    assert (status, body["error"]["code"]) == (413, "payload_too_large")
    status, body = await put_members(api, b"C1\n" * 200)
    assert status == 200, body


async def test_more_than_the_app_wide_body_limit_is_taken(api, audiences):
    await create(api)
    body = "".join(f"C{i:09d}\n" for i in range(20_000)).encode()  # 220 KB
    status, reply = await put_members(api, body)
    assert status == 200, reply
    assert reply["members"] == 20_000
    assert await audiences.store.has("vip", "C000019999")


# --- the Redis layout -----------------------------------------------------------------


async def test_the_script_finds_the_bucket_the_python_side_wrote(audiences, redis, keys, pool):
    await audiences.create(MARKETER, "vip", "VIP", "HQ")
    ids = [f"id-{i}" for i in range(3000)]
    done = await audiences.import_members(
        MARKETER, "vip", body_source("\n".join(ids).encode(), CSV)
    )
    version, buckets = (int(x) for x in (await redis.get(keys.audience("vip"))).split(":"))
    assert (version, buckets) == (1, 16)  # 3000 lines / 256, to the next power of two
    assert done.members == 3000
    for customer_id in ids[:200]:
        bucket = audience_bucket_of(customer_id, buckets)
        assert await redis.hexists(keys.audience_bucket("vip", version, bucket), customer_id)
        assert await audiences.store.has("vip", customer_id)
    assert not await audiences.store.has("vip", "id-3000")
    assert not await audiences.store.has("never-imported", "id-1")


async def test_redis_holds_at_most_24_bytes_a_member(audiences, redis, keys):
    await audiences.create(MARKETER, "big", "big", "HQ")
    body = "".join(f"C{i:09d}\n" for i in range(100_000)).encode()
    done = await audiences.import_members(MARKETER, "big", body_source(body, CSV))
    assert done.members == 100_000
    version, buckets = (int(x) for x in (await redis.get(keys.audience("big"))).split(":"))
    pipe = redis.pipeline(transaction=False)
    for bucket in range(buckets):
        pipe.memory_usage(keys.audience_bucket("big", version, bucket), samples=0)
    used = sum(await pipe.execute())
    assert used / done.members <= 24, used / done.members
    encodings = {
        await redis.object("encoding", keys.audience_bucket("big", version, b))
        for b in range(buckets)
    }
    assert encodings == {"listpack"}


async def test_a_reimport_replaces_the_members_atomically(audiences, redis, keys):
    """Checks run all through a re-import: the common member is always in, and no check of an
    old member then a new one finds neither (that would be a half-imported version)."""
    await audiences.create(MARKETER, "vip", "VIP", "HQ")
    old = [f"A{i:07d}" for i in range(50_000)]
    new = [f"B{i:07d}" for i in range(200_000)]
    common = "COMMON-1"
    await audiences.import_members(
        MARKETER, "vip", body_source("\n".join([*old, common]).encode(), CSV)
    )
    old_keys = await version_keys(redis, keys, "vip", 1)
    assert old_keys
    importing = asyncio.create_task(
        audiences.import_members(
            MARKETER, "vip", body_source("\n".join([*new, common]).encode(), CSV)
        )
    )
    probes: list[tuple[bool, bool, bool]] = []

    async def probe(n: int) -> None:
        i = n
        while not importing.done():
            i = (i * 7919 + 13) % 50_000
            was_old = await audiences.store.has("vip", old[i])
            is_new = await audiences.store.has("vip", new[(i * 4) % len(new)])
            probes.append((was_old, is_new, await audiences.store.has("vip", common)))

    await asyncio.gather(*(probe(n) for n in range(8)), importing)
    done = importing.result()
    assert (done.version, done.members) == (2, 200_001)
    assert all(c for _, _, c in probes), "the common member went missing during the swap"
    neither = [p for p in probes if not p[0] and not p[1]]
    assert neither == [], f"{len(neither)} checks saw neither version"
    assert any(o and not n for o, n, _ in probes), "no check ran before the swap"
    assert await audiences.store.has("vip", new[-1]) and not await audiences.store.has(
        "vip", old[0]
    )
    assert await version_keys(redis, keys, "vip", 1) == []  # the old version is freed
    assert await redis.exists(*old_keys) == 0


async def test_an_import_that_fails_half_way_leaves_the_old_members_and_no_new_keys(
    audiences, redis, keys, pool
):
    await audiences.create(MARKETER, "vip", "VIP", "HQ")
    await audiences.import_members(MARKETER, "vip", body_source(b"A1\nA2\n", CSV))

    def broken(rejected: Rejections) -> Iterator[Chunk]:
        yield Chunk([b"B1", b"B2"], 2)
        raise OSError("the file went away")

    with pytest.raises(OSError):
        await audiences.import_members(MARKETER, "vip", MemberSource(2, broken))
    assert await redis.get(keys.audience("vip")) == "1:1"
    assert await audiences.store.has("vip", "A1") and not await audiences.store.has("vip", "B1")
    assert await version_keys(redis, keys, "vip", 2) == []
    row = await pool.fetchrow("SELECT version, members FROM audiences WHERE id = 'vip'")
    assert (row["version"], row["members"]) == (1, 2)
    # The next import takes a number of its own: nothing of the failed one can join it.
    done = await audiences.import_members(MARKETER, "vip", body_source(b"C1\n", CSV))
    assert (done.version, done.members) == (3, 1)
    assert not await audiences.store.has("vip", "B1") and await audiences.store.has("vip", "C1")


# --- branch scope ---------------------------------------------------------------------


async def test_branch_staff_import_into_their_own_branch_only(api, audiences):
    assert (await create(api, "hq-vip", "HQ"))[0] == 201
    assert (await create(api, "sz-vip", "SZ", user="sz-marketer"))[0] == 201
    status, body = await create(api, "sz-other", "HQ", user="sz-marketer")
    assert (status, body["error"]["code"]) == (403, "forbidden")
    status, body = await put_members(api, b"C1\n", "hq-vip", user="sz-marketer")
    assert (status, body["error"]["code"]) == (403, "forbidden")
    assert not await audiences.store.has("hq-vip", "C1")
    status, body = await api.admin("sz-marketer", "GET", "/admin/v1/audiences/hq-vip")
    assert status == 403
    status, body = await put_members(api, b"C1\n", "sz-vip", user="sz-marketer")
    assert status == 200, body
    assert await audiences.store.has("sz-vip", "C1")
    status, body = await put_members(api, b"C2\n", "sz-vip", user="marketer")  # head office
    assert status == 200, body


# --- the command ----------------------------------------------------------------------


async def test_the_command_creates_and_imports_csv_and_parquet(
    pool, redis, keys, audiences, tmp_path
):
    done = await asyncio.to_thread(
        quanyi, "audience", "create", "--id", "cli-vip", "--name", "from the CLI", "--branch", "HQ"
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1])["id"] == "cli-vip"
    csv_file = tmp_path / "members.csv"
    csv_file.write_text(
        "customer_id\n" + "".join(f"C{i:06d}\n" for i in range(30_000)) + "4111111111111111\n"
    )
    done = await asyncio.to_thread(
        quanyi, "audience", "import", "--id", "cli-vip", "--file", str(csv_file)
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report == {
        "id": "cli-vip",
        "version": 1,
        "members": 30_000,
        "rejected": 1,
        "errors": [{"line": 30_002, "reason": PAN_IN_ID}],
    }
    assert "4111111111111111" not in done.stdout + done.stderr
    assert await audiences.store.has("cli-vip", "C029999")
    parquet_file = tmp_path / "members.parquet"  # found by its content, not its name
    parquet_file.write_bytes(parquet_bytes(["Q1", "Q2"]))
    done = await asyncio.to_thread(
        quanyi, "audience", "import", "--id", "cli-vip", "--file", str(parquet_file)
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1])["members"] == 2
    assert await audiences.store.has("cli-vip", "Q1")
    assert not await audiences.store.has("cli-vip", "C029999")
    imported_by = await pool.fetchval("SELECT imported_by FROM audiences WHERE id = 'cli-vip'")
    assert imported_by.startswith("cli:")
    done = await asyncio.to_thread(
        quanyi, "audience", "import", "--id", "cli-vip", "--file", str(tmp_path / "none.csv")
    )
    assert done.returncode == 1 and "Traceback" not in done.stderr

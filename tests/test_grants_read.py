"""Reading grants back: right after the 201 (from Redis) and once the ledger has them, the same
grant, never twice; bad ids are 400, unknown ones 404."""

from __future__ import annotations

import pytest

from quanyi.core.ids import new_grant_id
from quanyi.ledger.worker import LedgerWorker
from tests.support.clients import send, sign

GRANT_FIELDS = (
    "grant_id",
    "campaign_id",
    "reward_id",
    "right_id",
    "customer_id",
    "channel_id",
    "status",
    "granted_at",
)


pytestmark = [pytest.mark.usefixtures("signed_in"), pytest.mark.cluster_too]


@pytest.fixture
async def c1(api):
    await api.create_right()
    await api.create_campaign(
        rewards=[{"id": "r1", "right_id": "coffee", "stock": 100, "per_customer_limit": 5}]
    )


async def claim(api, request_id: str, customer_id: str = "cust-1") -> dict:
    status, grant = await api.claim(
        request_id=request_id, campaign_id="c1", customer_id=customer_id
    )
    assert status == 201, grant
    api.clock.advance(1)  # the next grant sorts after this one
    return grant


async def drain(redis, pool, keys) -> int:
    return await LedgerWorker(redis, pool, keys).drain()


async def test_grant_is_readable_right_after_the_201_and_after_the_ledger_has_it(
    api, c1, redis, pool, keys
):
    grant = await claim(api, "q1")
    status, read = await api.channel("GET", f"/v1/grants/{grant['grant_id']}")
    assert status == 200, read
    assert {k: read[k] for k in GRANT_FIELDS} == {k: grant[k] for k in GRANT_FIELDS}
    assert (read["request_id"], read["persisted"]) == ("q1", False)
    assert await pool.fetchval("SELECT count(*) FROM grants") == 0

    assert await drain(redis, pool, keys) == 1
    assert await pool.fetchval("SELECT grant_id FROM grants") == grant["grant_id"]
    status, stored = await api.channel("GET", f"/v1/grants/{grant['grant_id']}")
    assert status == 200, stored
    assert stored == {**read, "persisted": True}


async def test_replayed_claim_reads_as_the_one_grant(api, c1, redis, pool, keys):
    grant = await claim(api, "q1")
    status, again = await api.claim(request_id="q1", campaign_id="c1", customer_id="cust-1")
    assert (status, again["grant_id"]) == (200, grant["grant_id"])
    status, listed = await api.channel("GET", "/v1/customers/cust-1/grants")
    assert status == 200
    assert [g["grant_id"] for g in listed["grants"]] == [grant["grant_id"]]
    await drain(redis, pool, keys)
    status, listed = await api.channel("GET", "/v1/customers/cust-1/grants")
    assert [g["grant_id"] for g in listed["grants"]] == [grant["grant_id"]]


async def test_customer_grants_before_during_and_after_the_ledger_catches_up(
    api, c1, redis, pool, keys
):
    first = [await claim(api, f"q{i}") for i in range(3)]
    other = await claim(api, "q-other", customer_id="cust-2")
    newest_first = [g["grant_id"] for g in reversed(first)]

    status, listed = await api.channel("GET", "/v1/customers/cust-1/grants")
    assert status == 200, listed
    assert listed["customer_id"] == "cust-1"
    assert [g["grant_id"] for g in listed["grants"]] == newest_first
    assert [g["persisted"] for g in listed["grants"]] == [False] * 3
    assert {g["customer_id"] for g in listed["grants"]} == {"cust-1"}

    assert await drain(redis, pool, keys) == 4
    status, listed = await api.channel("GET", "/v1/customers/cust-1/grants")
    assert [g["grant_id"] for g in listed["grants"]] == newest_first
    assert [g["persisted"] for g in listed["grants"]] == [True] * 3

    # One more, not yet in the ledger: listed once, with the persisted ones, newest first.
    fourth = await claim(api, "q3")
    status, listed = await api.channel("GET", "/v1/customers/cust-1/grants")
    assert [g["grant_id"] for g in listed["grants"]] == [fourth["grant_id"], *newest_first]
    assert [g["persisted"] for g in listed["grants"]] == [False, True, True, True]

    status, listed = await api.channel("GET", "/v1/customers/cust-2/grants")
    assert [g["grant_id"] for g in listed["grants"]] == [other["grant_id"]]


async def test_customer_grants_limit(api, c1, redis, pool, keys):
    grants = [await claim(api, f"q{i}") for i in range(4)]
    newest_two = [g["grant_id"] for g in reversed(grants[2:])]
    status, listed = await api.channel("GET", "/v1/customers/cust-1/grants?limit=2")
    assert status == 200, listed
    assert [g["grant_id"] for g in listed["grants"]] == newest_two
    await drain(redis, pool, keys)
    status, listed = await api.channel("GET", "/v1/customers/cust-1/grants?limit=2")
    assert [g["grant_id"] for g in listed["grants"]] == newest_two
    status, listed = await api.channel("GET", "/v1/customers/cust-1/grants?limit=500")
    assert len(listed["grants"]) == 4


async def test_customer_without_grants_has_an_empty_list(api, c1):
    await claim(api, "q1")
    status, listed = await api.channel("GET", "/v1/customers/cust-9/grants")
    assert (status, listed) == (200, {"customer_id": "cust-9", "grants": []})


@pytest.mark.parametrize(
    "grant_id",
    [
        "short",
        "01ARZ3NDEKTSV4RRFFQ69G5FA",  # 25 characters
        "01ARZ3NDEKTSV4RRFFQ69G5FAVX",  # 27 characters
        "01arz3ndektsv4rrffq69g5fav",  # lower case
        "01ARZ3NDEKTSV4RRFFQ69G5FAU",  # U is not Crockford base32
        "81ARZ3NDEKTSV4RRFFQ69G5FAV",  # more than 48 bits of milliseconds
        "01ARZ3NDEKTSV4RRFFQ69G5FA-",  # a symbol
    ],
)
async def test_bad_grant_id_is_invalid(api, c1, grant_id):
    status, resp = await api.channel("GET", f"/v1/grants/{grant_id}")
    assert status == 400, resp
    assert resp["error"]["code"] == "invalid_request"
    assert set(resp["error"]["fields"]) == {"grant_id"}


async def test_unknown_grant_id_is_not_found(api, c1, redis, pool, keys):
    await claim(api, "q1")
    await drain(redis, pool, keys)
    unknown = new_grant_id(int(api.clock() * 1000))
    status, resp = await api.channel("GET", f"/v1/grants/{unknown}")
    assert status == 404, resp
    assert resp["error"]["code"] == "grant_not_found"


@pytest.mark.parametrize("customer_id", ["4111111111111111", "4111-1111-1111-1111", "a%20b", "-x"])
async def test_bad_customer_id_in_the_path_is_invalid(api, c1, customer_id):
    status, resp = await api.channel("GET", f"/v1/customers/{customer_id}/grants")
    assert status == 400, resp
    assert resp["error"]["code"] == "invalid_request"
    assert set(resp["error"]["fields"]) == {"customer_id"}


@pytest.mark.parametrize("what", ["grant", "customer"])
async def test_reads_need_a_valid_signature(api, c1, what):
    grant = await claim(api, "q1")
    path = f"/v1/grants/{grant['grant_id']}" if what == "grant" else "/v1/customers/cust-1/grants"
    status, resp = await send(api, "GET", path)
    assert (status, resp["error"]["code"]) == (401, "unauthorized")
    status, resp = await send(api, "GET", path, headers=sign(api, "GET", path, secret="wrong"))
    assert (status, resp["error"]["code"]) == (401, "unauthorized")
    status, resp = await send(api, "GET", path, headers=sign(api, "GET", "/v1/grants/other"))
    assert (status, resp["error"]["code"]) == (401, "unauthorized")
    status, _ = await send(api, "GET", path, headers=sign(api, "GET", path))
    assert status == 200

"""The customer H5 page's sessions and API on real Redis and PostgreSQL: a channel-signed
session bound to its channel and customer, the page's reads and claims by its token alone (no
way to another customer's data), altered and expired tokens refused with a 401, a tap sent
twice granted once, and a fulfilled right listed with its code and expiry."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from quanyi.access.api import CHANNELS
from quanyi.access.channels import EVENTS, create_channel
from quanyi.access.secret_box import secret_box
from quanyi.issuance.h5 import SessionTokens, page_request_id, session_key
from quanyi.ledger.worker import LedgerWorker
from tests.support.clients import Api, assert_error, claim, stock_granted
from tests.support.settings import CHANNEL
from tests.support.waiting import running, until

pytestmark = pytest.mark.usefixtures("signed_in")


async def new_session(api: Api, customer: str = "cust-1", **kwargs: Any) -> dict[str, Any]:
    status, body = await api.channel("POST", "/v1/h5/sessions", {"customer_id": customer}, **kwargs)
    assert status == 201, body
    return body


async def page(api: Api, token: str, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    resp = await api.client.request(
        method, path, json=body, headers={"Authorization": f"Bearer {token}"}
    )
    return resp.status, await resp.json()


async def tap(api: Api, token: str, request_id: str, campaign_id: str = "c1") -> tuple[int, Any]:
    body = {"request_id": request_id, "campaign_id": campaign_id, "reward_id": "r1"}
    return await page(api, token, "POST", "/h5/api/claims", body)


async def test_a_session_is_a_token_and_a_page_url_for_fifteen_minutes(api, c1):
    session = await new_session(api)
    assert set(session) == {"token", "url", "expires_at"}
    url = urlsplit(session["url"])
    assert (url.scheme, url.netloc, url.path) == ("", "", "/h5/")
    assert parse_qs(url.query) == {"t": [session["token"]]}
    status, offers = await page(api, session["token"], "GET", "/h5/api/offers")
    assert status == 200, offers
    assert offers["customer_id"] == "cust-1"
    assert offers["expires_at"] == session["expires_at"]
    assert [(o["campaign_id"], o["reward_id"], o["claimable"]) for o in offers["offers"]] == [
        ("c1", "r1", True)
    ]


async def test_a_session_needs_a_channel_signature(api):
    resp = await api.client.post("/v1/h5/sessions", json={"customer_id": "cust-1"})
    assert_error(resp.status, await resp.json(), 401, "unauthorized")
    status, body = await api.channel("POST", "/v1/h5/sessions", {"customer_id": "4111111111111111"})
    assert_error(status, body, 400, "invalid_request")


async def test_a_channel_without_the_claims_scope_gets_no_session(api, pool, settings):
    box = secret_box(settings)
    await create_channel(pool, "cards", "cards-secret", box=box, scopes=(EVENTS,))
    await api.client.app[CHANNELS].refresh()
    status, body = await api.channel(
        "POST", "/v1/h5/sessions", {"customer_id": "cust-1"}, channel="cards", secret="cards-secret"
    )
    assert_error(status, body, 403, "forbidden")


async def test_the_token_holds_its_customer_and_no_other(api, c1):
    mine = (await new_session(api, "cust-1"))["token"]
    theirs = (await new_session(api, "cust-2"))["token"]
    status, granted = await tap(api, theirs, "tap-1")
    assert status == 201, granted
    assert granted["customer_id"] == "cust-2"

    # Whatever cust-1's page sends, it reads and claims for cust-1.
    status, rights = await page(api, mine, "GET", "/h5/api/rights?customer_id=cust-2")
    assert (status, rights) == (200, {"rights": []})
    status, offers = await page(api, mine, "GET", "/h5/api/offers")
    assert offers["customer_id"] == "cust-1" and offers["offers"][0]["claimable"] is True
    # A customer named in the body is not read (unknown fields are ignored): the claim is for
    # the token's customer, and the same page request id from another customer is another
    # claim, not a replay of theirs.
    body = {"request_id": "tap-1", "campaign_id": "c1", "reward_id": "r1", "customer_id": "cust-2"}
    status, own = await page(api, mine, "POST", "/h5/api/claims", body)
    assert status == 201, own
    assert own["customer_id"] == "cust-1" and own["grant_id"] != granted["grant_id"]
    status, rights = await page(api, theirs, "GET", "/h5/api/rights")
    assert [r["grant_id"] for r in rights["rights"]] == [granted["grant_id"]]
    status, rights = await page(api, mine, "GET", "/h5/api/rights")
    assert [r["grant_id"] for r in rights["rights"]] == [own["grant_id"]]


async def test_the_session_is_bound_to_its_channel(api, c1):
    await api.create_campaign("c2", channels=["wechat"])
    token = (await new_session(api, channel="wechat", secret="wechat-secret"))["token"]
    status, offers = await page(api, token, "GET", "/h5/api/offers")
    assert [o["campaign_id"] for o in offers["offers"]] == ["c2"]
    status, body = await tap(api, token, "tap-1", "c1")
    assert_error(status, body, 403, "channel_not_allowed")
    status, granted = await tap(api, token, "tap-2", "c2")
    assert status == 201 and granted["channel_id"] == "wechat", granted


def other_char(c: str) -> str:
    return "A" if c != "A" else "B"


B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


def spare_bit(c: str) -> str:
    """The base64 character that differs from `c` in its lowest bit: the last character of a
    32-byte value carries two spare bits, so both decode to the same bytes."""
    return B64[B64.index(c) ^ 1]


def altered(token: str, part: int, at: int) -> str:
    """The token with one character of one of its three parts changed."""
    parts = token.split(".")
    chars = list(parts[part])
    chars[at] = other_char(chars[at])
    parts[part] = "".join(chars)
    return ".".join(parts)


@pytest.mark.parametrize(
    "alter",
    [
        lambda t: altered(t, 2, -1),  # the signature
        lambda t: t[:-1] + spare_bit(t[-1]),  # the same bytes, other base64 text
        lambda t: altered(t, 2, 0),
        lambda t: altered(t, 1, -1),  # the payload
        lambda t: altered(t, 1, 3),
        lambda t: "v2" + t[2:],  # the version
        lambda t: t.rpartition(".")[0],  # no signature
        lambda t: t + "A",
        lambda t: "",
        lambda t: "not-a-token",
    ],
)
async def test_an_altered_token_is_refused(api, c1, alter):
    token = (await new_session(api))["token"]
    for path in ("/h5/api/offers", "/h5/api/rights"):
        status, body = await page(api, alter(token), "GET", path)
        assert_error(status, body, 401, "unauthorized")
    status, body = await tap(api, alter(token), "tap-1")
    assert_error(status, body, 401, "unauthorized")
    assert await stock_granted(api) == 0


async def test_a_token_for_another_customer_cannot_be_forged_from_one(api, c1, settings, clock):
    token = (await new_session(api))["token"]
    version, _, mac = token.split(".")
    forged_payload = SessionTokens(b"x" * 32, clock, 900).issue(CHANNEL, "cust-2")[0].split(".")[1]
    status, body = await page(api, f"{version}.{forged_payload}.{mac}", "GET", "/h5/api/offers")
    assert_error(status, body, 401, "unauthorized")
    # Signed with any key but ours, a well-formed token is refused too.
    other = SessionTokens(b"x" * 32, clock, 900).issue(CHANNEL, "cust-1")[0]
    status, body = await page(api, other, "GET", "/h5/api/offers")
    assert_error(status, body, 401, "unauthorized")
    ours = SessionTokens(session_key(settings), clock, 900).issue(CHANNEL, "cust-1")[0]
    status, body = await page(api, ours, "GET", "/h5/api/offers")
    assert status == 200, body


async def test_no_token_no_page(api, c1):
    resp = await api.client.get("/h5/api/offers")
    assert_error(resp.status, await resp.json(), 401, "unauthorized")
    token = (await new_session(api))["token"]
    resp = await api.client.get("/h5/api/offers", headers={"Authorization": f"Basic {token}"})
    assert_error(resp.status, await resp.json(), 401, "unauthorized")


async def test_an_expired_token_is_refused(api, c1, clock):
    token = (await new_session(api))["token"]
    clock.advance(15 * 60 - 1)
    status, _ = await page(api, token, "GET", "/h5/api/offers")
    assert status == 200
    clock.advance(1)
    for path in ("/h5/api/offers", "/h5/api/rights"):
        status, body = await page(api, token, "GET", path)
        assert_error(status, body, 401, "session_expired")
    status, body = await tap(api, token, "tap-1")
    assert_error(status, body, 401, "session_expired")
    assert await stock_granted(api) == 0


async def test_a_disabled_channel_ends_its_sessions(api, c1, pool):
    token = (await new_session(api))["token"]
    await pool.execute("UPDATE channels SET disabled = true WHERE id = $1", CHANNEL)
    await api.client.app[CHANNELS].refresh()
    status, body = await page(api, token, "GET", "/h5/api/offers")
    assert_error(status, body, 401, "unauthorized")


async def test_a_tap_sent_twice_is_granted_once(api, c1):
    token = (await new_session(api))["token"]
    status, first = await tap(api, token, "tap-7f3a9c")
    assert status == 201, first
    status, again = await tap(api, token, "tap-7f3a9c")
    assert status == 200, again
    assert again["replayed"] is True and again["grant_id"] == first["grant_id"]
    assert await stock_granted(api) == 1
    # The claim went through the channel's own path, under the page's request id.
    status, grant = await api.channel("GET", f"/v1/grants/{first['grant_id']}")
    assert grant["request_id"] == page_request_id("cust-1", "tap-7f3a9c")
    assert grant["channel_id"] == CHANNEL
    # A new tap is a new claim, which the per-customer limit of 1 refuses.
    status, body = await tap(api, token, "tap-other")
    assert_error(status, body, 409, "limit_reached")
    status, offers = await page(api, token, "GET", "/h5/api/offers")
    assert offers["offers"][0]["claimable"] is False
    assert offers["offers"][0]["reason"] == "limit_reached"


async def test_a_channel_claim_and_a_page_tap_never_share_a_request_id(api, c1):
    token = (await new_session(api))["token"]
    status, body = await claim(api, "tap-1", "cust-1")
    assert status == 201, body
    status, again = await tap(api, token, "tap-1")
    assert_error(status, again, 409, "limit_reached")


async def test_a_fulfilled_right_shows_its_code_and_expiry(
    api, sim, make_worker, redis, pool, keys
):
    token = (await new_session(api))["token"]
    status, granted = await tap(api, token, "tap-1")
    assert status == 201, granted
    status, rights = await page(api, token, "GET", "/h5/api/rights")
    assert [(r["grant_id"], r["status"], r["code"]) for r in rights["rights"]] == [
        (granted["grant_id"], "granted", None)
    ]
    async with running(make_worker()):

        async def fulfilled() -> bool:
            _, listed = await page(api, token, "GET", "/h5/api/rights")
            return listed["rights"][0]["status"] == "fulfilled"

        await until(fulfilled, what="fulfilment")
    await LedgerWorker(redis, pool, keys).drain()
    status, rights = await page(api, token, "GET", "/h5/api/rights")
    assert status == 200, rights
    (right,) = rights["rights"]
    _, grant = await api.channel("GET", f"/v1/grants/{granted['grant_id']}")
    assert right["code"] and right["code"] == grant["code"]
    assert right["expires_at"] and right["expires_at"] == grant["expires_at"]
    assert right["right_id"] == "lounge"
    assert set(right) == {
        "grant_id",
        "campaign_id",
        "reward_id",
        "right_id",
        "status",
        "granted_at",
        "code",
        "expires_at",
    }


async def test_the_url_is_absolute_when_the_page_has_a_base_url(
    aiohttp_client, pool, redis, clock, settings, c1
):
    from quanyi.web.app import create_app
    from tests.support.clients import Api as Client

    app = create_app(settings.replace(h5_base_url="https://h5.bank.example/"), clock)
    other = Client(await aiohttp_client(app), clock)
    session = await new_session(other)
    assert session["url"] == f"https://h5.bank.example/h5/?t={session['token']}"


async def test_the_page_is_served_from_the_package(api):
    resp = await api.client.get("/h5/")
    assert resp.status == 200
    html = await resp.text()
    assert resp.headers["Cache-Control"] == "no-store"
    assert resp.headers["Referrer-Policy"] == "no-referrer"
    assert "frame-ancestors 'none'" in resp.headers["Content-Security-Policy"]
    assets = re.findall(r'(?:src|href)="(/h5/assets/[^"]+)"', html)
    assert any(a.endswith(".js") for a in assets) and any(a.endswith(".css") for a in assets)
    for asset in assets:
        got = await api.client.get(asset)
        assert got.status == 200, asset
        assert "immutable" in got.headers["Cache-Control"]
    assert (await api.client.get("/h5/assets/..%2Fh5%2Findex.html")).status == 404
    assert (await api.client.get("/h5/assets/missing.js")).status == 404
    # The session URL without its slash keeps its token.
    resp = await api.client.get("/h5?t=abc", allow_redirects=False)
    assert resp.status == 302 and resp.headers["Location"] == "/h5/?t=abc"

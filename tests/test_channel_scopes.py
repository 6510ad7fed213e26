"""Channel scopes: a channel calls only what its scopes allow (claims, or the card system's
events), a good signature without the scope is a 403 (a bad one stays a 401), and the command
line and the demo register the scopes asked for."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from aiohttp import web

from quanyi.access.channels import CLAIMS, EVENTS, ChannelDirectory, create_channel
from quanyi.access.secret_box import secret_box
from quanyi.access.signing import signed_headers
from quanyi.cli.demo import DEMO_CARD_CHANNEL, DEMO_CHANNEL, load_demo
from quanyi.web.app import create_app
from quanyi.web.middleware import errors_middleware
from quanyi.web.openapi import build_document
from tests.support.cli import quanyi
from tests.support.clients import CLAIM
from tests.support.settings import CHANNEL, CHANNEL_SECRET, settings_for_tests
from tests.support.stores import redis_state

CORE, CORE_SECRET = "core", "core-secret"
BOTH, BOTH_SECRET = "both", "both-secret"


async def scopes_of(pool, channel_id: str) -> list[str]:
    return list(await pool.fetchval("SELECT scopes FROM channels WHERE id = $1", channel_id))


@pytest.fixture
async def card_channels(pool, settings) -> None:
    """`core` holds events only, `both` holds claims and events (beside the api's `app`)."""
    box = secret_box(settings)
    await create_channel(pool, CORE, CORE_SECRET, box=box, scopes=(EVENTS,))
    await create_channel(pool, BOTH, BOTH_SECRET, box=box, scopes=(CLAIMS, EVENTS))


@pytest.fixture
async def scoped_api(card_channels, api):
    """The real API, its channel directory loaded after the card channels were registered."""
    return api


@pytest.fixture
async def events_route(aiohttp_client, pool, clock, settings, card_channels) -> AsyncIterator[Any]:
    """An app with one route that needs the events scope, checked as the service checks it."""
    box = secret_box(settings)
    await create_channel(pool, CHANNEL, CHANNEL_SECRET, box=box)  # claims only: the default
    directory = ChannelDirectory(pool, clock, settings.signature_window_s, box)
    await directory.refresh()

    async def events(request: web.Request) -> web.Response:
        channel_id, body = await directory.authenticate(request, scope=EVENTS)
        return web.json_response({"channel_id": channel_id, "bytes": len(body)})

    app = web.Application(middlewares=[errors_middleware])
    app.router.add_post("/v1/events", events)
    client = await aiohttp_client(app)

    async def call(channel: str, secret: str) -> tuple[int, Any]:
        body = b'{"events": []}'
        headers = signed_headers(channel, secret, "POST", "/v1/events", int(clock()), body)
        resp = await client.post("/v1/events", data=body, headers=headers)
        return resp.status, await resp.json()

    yield call


async def test_a_claims_only_channel_is_refused_where_events_are_needed(events_route):
    status, body = await events_route(CHANNEL, CHANNEL_SECRET)
    assert status == 403, body
    assert body["error"]["code"] == "forbidden"
    assert body["error"]["message"] == (
        f"channel {CHANNEL} may not call this: it lacks the events scope"
    )


async def test_a_channel_holding_events_passes_where_events_are_needed(events_route):
    for channel, secret in ((CORE, CORE_SECRET), (BOTH, BOTH_SECRET)):
        status, body = await events_route(channel, secret)
        assert (status, body) == (200, {"channel_id": channel, "bytes": 14})


async def test_the_signature_is_checked_before_the_scope(events_route):
    """A wrong secret says nothing about the channel's scopes: 401, as for an unknown one."""
    for channel, secret in ((CHANNEL, "wrong-secret"), ("nobody", "any-secret")):
        status, body = await events_route(channel, secret)
        assert status == 401, body
        assert body["error"]["code"] == "unauthorized"


async def test_an_events_only_channel_may_not_claim_nor_read_grants(scoped_api):
    await scoped_api.create_right()
    await scoped_api.create_campaign(channels=[CHANNEL, CORE, BOTH])
    before = await redis_state()
    status, body = await scoped_api.channel(
        "POST", "/v1/claims", CLAIM, channel=CORE, secret=CORE_SECRET
    )
    assert status == 403, body
    assert body["error"] == {
        "code": "forbidden",
        "message": f"channel {CORE} may not call this: it lacks the claims scope",
    }
    assert await redis_state() == before  # nothing claimed, nothing counted
    status, body = await scoped_api.channel(
        "GET", "/v1/customers/cust-1/grants", channel=CORE, secret=CORE_SECRET
    )
    assert (status, body["error"]["code"]) == (403, "forbidden")
    # A bad signature from the same channel is still a 401.
    status, body = await scoped_api.channel(
        "POST", "/v1/claims", CLAIM, channel=CORE, secret="wrong-secret"
    )
    assert (status, body["error"]["code"]) == (401, "unauthorized")


async def test_a_channel_holding_both_scopes_claims(scoped_api):
    await scoped_api.create_right()
    await scoped_api.create_campaign(channels=[CHANNEL, BOTH])
    status, body = await scoped_api.channel(
        "POST", "/v1/claims", CLAIM, channel=BOTH, secret=BOTH_SECRET
    )
    assert status == 201, body
    status, body = await scoped_api.claim(**{**CLAIM, "request_id": "q2", "customer_id": "c-2"})
    assert status == 201, body  # the default channel keeps claiming


async def test_scopes_are_stored_and_replaced_with_the_channel(pool, settings):
    box = secret_box(settings)
    await create_channel(pool, "plain", "s1", box=box)
    assert await scopes_of(pool, "plain") == [CLAIMS]
    await create_channel(pool, "plain", "s2", box=box, replace=True, scopes=(EVENTS,))
    assert await scopes_of(pool, "plain") == [EVENTS]
    for bad in ((), ("claims", "refunds")):
        with pytest.raises(ValueError, match="channel scopes"):
            await create_channel(pool, "bad", "s3", box=box, scopes=bad)
    assert await pool.fetchval("SELECT count(*) FROM channels WHERE id = 'bad'") == 0


def test_the_api_document_gives_403_forbidden_on_every_channel_route():
    document = build_document(create_app(settings_for_tests()))
    channel_routes = [
        (path, operation)
        for path, item in document["paths"].items()
        for operation in item.values()
        if operation["security"] and "channelId" in operation["security"][0]
    ]
    assert channel_routes
    for path, operation in channel_routes:
        forbidden = operation["responses"]["403"]
        assert "forbidden" in forbidden["description"], path
        assert "forbidden" in orjson.dumps(forbidden["content"]).decode(), path


async def test_the_command_stores_the_scopes_asked_for(pool):
    done = quanyi("channel", "create", "--id", CORE, "--scope", EVENTS, "--secret", "s-core")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"channel {CORE} created, scopes {EVENTS}"
    assert await scopes_of(pool, CORE) == [EVENTS]

    done = quanyi("channel", "create", "--id", "twice", "--scope", "events", "--scope", "claims")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("channel twice created, scopes claims, events; its secret")
    assert await scopes_of(pool, "twice") == [CLAIMS, EVENTS]

    done = quanyi("channel", "create", "--id", "plain", "--secret", "s-plain")
    assert done.returncode == 0, done.stderr
    assert await scopes_of(pool, "plain") == [CLAIMS]


async def test_goal_and_bulk_are_not_channel_ids(pool, settings):
    for reserved in ("goal", "bulk"):
        with pytest.raises(ValueError, match="the service's own"):
            await create_channel(pool, reserved, "s1", box=secret_box(settings))
        done = quanyi("channel", "create", "--id", reserved)
        assert done.returncode == 2 and "the service's own" in done.stderr
    assert await pool.fetchval("SELECT count(*) FROM channels") == 0


async def test_the_command_refuses_an_unknown_scope(pool):
    done = quanyi("channel", "create", "--id", "x", "--scope", "refunds")
    assert done.returncode == 2
    assert "invalid choice: 'refunds'" in done.stderr
    assert await pool.fetchval("SELECT count(*) FROM channels") == 0


async def test_the_demo_registers_the_card_system_with_events_only(
    pool, redis, keys, settings, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)  # the demo's keys are made under the working directory
    await load_demo(pool, redis, keys, secret_box(settings))
    assert await scopes_of(pool, DEMO_CARD_CHANNEL) == [EVENTS]
    assert await scopes_of(pool, DEMO_CHANNEL) == [CLAIMS]

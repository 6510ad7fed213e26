"""POST /v1/events refuses a batch it cannot read as a whole (over 1,000 events, none, not JSON,
too large) with a typed 400 or 413 and records nothing, and refuses a channel without the
events scope (403) on the real route."""

from __future__ import annotations

import asyncpg
import orjson
import pytest

from quanyi.core.settings import Settings
from tests.support.clients import Api, assert_error
from tests.support.events import (
    CORE,
    CORE_SECRET,
    add_card_channel,
    event,
    goal_campaign,
    post_events,
)
from tests.support.settings import CHANNEL
from tests.support.stores import redis_state

pytestmark = pytest.mark.usefixtures("signed_in")


@pytest.fixture
async def core(api: Api, pool: asyncpg.Pool, settings: Settings) -> str:
    return await add_card_channel(api, pool, settings)


@pytest.fixture
async def goal(api: Api, core: str) -> None:
    await goal_campaign(api)


async def raw_events(api: Api, data: bytes) -> tuple[int, dict]:
    return await api.channel("POST", "/v1/events", raw=data, channel=CORE, secret=CORE_SECRET)


@pytest.mark.usefixtures("goal")
async def test_more_than_1000_events_are_refused_whole(api: Api) -> None:
    before = await redis_state()
    status, body = await post_events(api, [event(api, f"tx-{i}") for i in range(1001)])
    assert_error(status, body, 400, "invalid_request")
    assert await redis_state() == before
    status, body = await post_events(api, [event(api, f"tx-{i}") for i in range(1000)])
    assert status == 200 and len(body["results"]) == 1000


@pytest.mark.usefixtures("goal")
@pytest.mark.parametrize(
    "data",
    [b'{"events": []}', b"not json", b'{"events": {"event_id": "tx-1"}}', b"{}", b"[]", b""],
    ids=["empty", "not-json", "not-a-list", "no-events", "a-list", "nothing"],
)
async def test_a_batch_that_is_not_one_is_400(api: Api, data: bytes) -> None:
    before = await redis_state()
    status, body = await raw_events(api, data)
    error = assert_error(status, body, 400, "invalid_request")
    assert error["message"]
    assert await redis_state() == before


@pytest.mark.usefixtures("goal")
async def test_a_body_over_a_mebibyte_is_413(api: Api) -> None:
    events = [event(api, f"tx-{i}", note="x" * 1200) for i in range(900)]
    data = orjson.dumps({"events": events})
    assert len(data) > 1024 * 1024
    before = await redis_state()
    status, body = await raw_events(api, data)
    assert_error(status, body, 413, "payload_too_large")
    assert await redis_state() == before


@pytest.mark.usefixtures("goal")
async def test_a_claims_only_channel_may_not_send_events(api: Api) -> None:
    """tests/test_channel_scopes.py checks the scope on a stand-in route; this is the real one."""
    before = await redis_state()
    status, body = await api.channel("POST", "/v1/events", {"events": [event(api, "tx-1")]})
    error = assert_error(status, body, 403, "forbidden")
    assert error["message"] == f"channel {CHANNEL} may not call this: it lacks the events scope"
    assert await redis_state() == before

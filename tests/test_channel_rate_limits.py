"""Per-channel rate limits: a token bucket in Redis shared by every API process, set per channel
through the admin API and in force within the refresh interval; beyond it 429 rate_limited with
Retry-After; checked only once the signature is good; channels without a limit never touch
it; counted per channel in /metrics."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from quanyi.access.rate_limits import RateLimit, RateLimited, RateLimiter, default_limit
from quanyi.core.errors import StartupError
from quanyi.stores.keys import Keys
from quanyi.stores.redis import open_redis
from quanyi.stores.scripts import Scripts
from quanyi.web.app import create_app
from tests.support.clients import Api, sign, sign_in
from tests.support.scratch import ScratchRedis
from tests.support.scratch_api import metric
from tests.support.settings import CHANNEL, settings_for_tests
from tests.support.waiting import until

pytestmark = pytest.mark.usefixtures("signed_in")

LIMIT = f"/admin/v1/channels/{CHANNEL}/rate-limit"
# A claim for a campaign that does not exist: signed, verified, rate-limited and only then
# looked up, so 404 means "let through", 429 "over the limit".
PROBE = {"request_id": "probe", "campaign_id": "nope", "customer_id": "C1"}
REQUESTS = "quanyi_channel_requests_total"


async def probe(api: Api, channel: str = CHANNEL, secret: str | None = None) -> tuple[int, Any]:
    kwargs = {"channel": channel} | ({"secret": secret} if secret else {})
    status, body = await api.channel("POST", "/v1/claims", PROBE, **kwargs)
    assert status in (404, 429), body
    return status, body


async def set_limit(api: Api, per_second: Any, burst: Any) -> None:
    status, body = await api.admin(
        "admin", "PUT", LIMIT, {"per_second": per_second, "burst": burst}
    )
    assert status == 200, body


async def limit_row(pool) -> tuple[Any, Any]:
    row = await pool.fetchrow("SELECT rate_per_s, burst FROM channels WHERE id = $1", CHANNEL)
    return row["rate_per_s"], row["burst"]


async def test_a_burst_then_429_with_retry_after_then_one_per_interval(api, clock):
    await set_limit(api, 0.5, 3)  # one every 2 s, 3 at once
    for _ in range(3):
        assert (await probe(api))[0] == 404
    resp = await api.client.post(
        "/v1/claims",
        data=orjson.dumps(PROBE),
        headers=signed(api, orjson.dumps(PROBE)),
    )
    assert resp.status == 429
    assert resp.headers["Retry-After"] == "2"
    body = await resp.json()
    assert body["error"]["code"] == "rate_limited"
    assert body["error"]["retry_after_s"] == 2
    assert "rate limit" in body["error"]["message"]
    # Refused requests take nothing: after one interval exactly one more goes through.
    for _ in range(5):
        assert (await probe(api))[0] == 429
    clock.advance(1.9)
    assert (await probe(api))[0] == 429
    clock.advance(0.1)
    assert (await probe(api))[0] == 404
    assert (await probe(api))[0] == 429
    # Idle long enough, the whole burst is back.
    clock.advance(6)
    assert [(await probe(api))[0] for _ in range(4)] == [404, 404, 404, 429]


def signed(api: Api, body: bytes) -> dict[str, str]:
    return sign(api, "POST", "/v1/claims", body)


async def test_two_app_instances_share_one_budget(api, aiohttp_client, clock, settings):
    await set_limit(api, 0.01, 4)
    other = Api(await aiohttp_client(create_app(settings, clock)), clock)  # loads it at start
    answers = [(await probe(a))[0] for a in (api, other, api, other)]
    assert answers == [404, 404, 404, 404]
    assert (await probe(other))[0] == 429
    assert (await probe(api))[0] == 429


async def test_concurrent_requests_get_exactly_the_burst(redis, keys, clock):
    """100 requests at once against a burst of 5, over many connections: 5 pass."""
    limiter = RateLimiter(redis, keys, Scripts(redis).rate_limit, clock)
    limit = RateLimit(1.0, 5)

    async def one() -> bool:
        try:
            await limiter.take("burst-test", limit)
            return True
        except RateLimited:
            return False

    results = await asyncio.gather(*(one() for _ in range(100)))
    assert results.count(True) == 5
    assert 0 < await redis.pttl(keys.rate_limit("burst-test")) <= 5000


async def test_two_processes_drawing_at_once_share_the_burst(redis, keys, clock, settings):
    """Two limiters on their own Redis connections (two API processes), 50 requests each at
    once, in batches: 7 pass in all."""
    second = await open_redis(settings)
    try:
        limiters = [
            RateLimiter(r, keys, Scripts(r).rate_limit, clock, batch_max=8) for r in (redis, second)
        ]
        limit = RateLimit(1.0, 7)

        async def one(limiter: RateLimiter) -> bool:
            try:
                await limiter.take("shared", limit)
                return True
            except RateLimited:
                return False

        results = await asyncio.gather(*(one(limiters[i % 2]) for i in range(100)))
        assert results.count(True) == 7
    finally:
        await second.aclose()


async def test_channels_in_one_batch_each_keep_their_own_bucket(redis, keys, clock):
    limiter = RateLimiter(redis, keys, Scripts(redis).rate_limit, clock)
    limits = {"a": RateLimit(1.0, 2), "b": RateLimit(1.0, 3), "c": RateLimit(0.5, 1)}

    async def one(channel: str) -> tuple[str, int]:
        try:
            await limiter.take(channel, limits[channel])
            return channel, 0
        except RateLimited as exc:
            return channel, exc.details["retry_after_s"]

    results = await asyncio.gather(*(one(c) for c in "abc" * 5))
    passed = {c: sum(1 for ch, wait in results if ch == c and wait == 0) for c in "abc"}
    assert passed == {"a": 2, "b": 3, "c": 1}
    assert {wait for ch, wait in results if ch == "c" and wait} == {2}
    assert {wait for ch, wait in results if ch != "c" and wait} == {1}


async def test_an_emptied_script_cache_is_survived(tmp_path, clock):
    """After SCRIPT FLUSH (a restart, a failover) the next take reloads the script (a server
    of the test's own: the shared one's cache is not ours to flush)."""
    with ScratchRedis(tmp_path) as server:
        client = Redis.from_url(server.url(), decode_responses=True)
        try:
            limiter = RateLimiter(client, Keys("qyt"), Scripts(client).rate_limit, clock)
            limit = RateLimit(1.0, 2)
            await limiter.take("app", limit)
            await client.script_flush()
            await limiter.take("app", limit)
            with pytest.raises(RateLimited):
                await limiter.take("app", limit)
        finally:
            await client.aclose()


async def test_redis_away_fails_the_take_and_the_next_one_is_decided(tmp_path, clock):
    with ScratchRedis(tmp_path) as server:
        client = Redis.from_url(server.url(), decode_responses=True, socket_timeout=1)
        try:
            limiter = RateLimiter(client, Keys("qyt"), Scripts(client).rate_limit, clock)
            limit = RateLimit(1.0, 5)
            await limiter.take("app", limit)
            server.stop()
            # The middleware answers a Redis connection error 503 unavailable.
            with pytest.raises((RedisConnectionError, OSError)):
                await limiter.take("app", limit)
            server.start()
            await until(lambda: ping(client), what="scratch redis back")
            await limiter.take("app", limit)  # nothing stuck in the limiter
        finally:
            await client.aclose()


async def ping(client: Redis) -> bool:
    try:
        return bool(await client.ping())
    except (RedisConnectionError, OSError):
        return False


async def test_a_limit_changed_through_the_api_takes_effect_without_restart(
    api, aiohttp_client, clock, settings
):
    """Another API process (an app instance beside the one that took the change) enforces a new
    limit within the refresh interval, and lifts it again the same way."""
    other = Api(await aiohttp_client(create_app(settings, clock)), clock)
    for _ in range(20):
        assert (await probe(other))[0] == 404
    await set_limit(api, 0.01, 1)

    async def enforced() -> bool:
        return (await probe(other))[0] == 429

    await until(enforced, timeout=settings.channel_refresh_s * 10, what="the limit in force")
    status, body = await api.admin("admin", "PUT", LIMIT, {"per_second": None, "burst": None})
    assert (status, body["rate_limit"]) == (200, None), body

    async def lifted() -> bool:
        return (await probe(other))[0] == 404

    await until(lifted, timeout=settings.channel_refresh_s * 10, what="the limit lifted")


async def test_unlimited_channels_are_unaffected(api, redis, keys):
    await set_limit(api, 0.01, 1)
    assert (await probe(api))[0] == 404
    assert (await probe(api))[0] == 429
    for _ in range(50):
        assert (await probe(api, "wechat", "wechat-secret"))[0] == 404
    assert not await redis.exists(keys.rate_limit("wechat"))


async def test_only_a_good_signature_spends_the_budget(api):
    await set_limit(api, 0.01, 2)
    for _ in range(10):
        status, body = await api.channel("POST", "/v1/claims", PROBE, secret="not-the-secret")
        assert (status, body["error"]["code"]) == (401, "unauthorized")
    assert [(await probe(api))[0] for _ in range(3)] == [404, 404, 429]


@pytest.mark.parametrize(
    "body",
    [
        {"per_second": 0, "burst": 1},
        {"per_second": -1, "burst": 1},
        {"per_second": 200_000, "burst": 1},
        {"per_second": "5", "burst": 5},
        {"per_second": True, "burst": 5},
        {"per_second": 5, "burst": 0},
        {"per_second": 5, "burst": 1.5},
        {"per_second": 5, "burst": 2_000_000},
        {"per_second": 5},
        {"per_second": 5, "burst": None},
        {"per_second": None, "burst": 5},
        {},
        [5, 5],
    ],
)
async def test_a_bad_limit_body_is_400_and_changes_nothing(api, pool, body):
    await set_limit(api, 10, 20)
    audited = await pool.fetchval("SELECT count(*) FROM audit_log")
    status, reply = await api.admin("admin", "PUT", LIMIT, body)
    assert (status, reply["error"]["code"]) == (400, "invalid_request"), reply
    assert await limit_row(pool) == (10, 20)
    assert await pool.fetchval("SELECT count(*) FROM audit_log") == audited


async def test_a_body_that_is_not_json_is_400(api, pool):
    token = await api.login("admin")
    resp = await api.client.put(
        LIMIT, data=b"{per_second: 5", headers={"Authorization": f"Bearer {token}"}
    )
    assert resp.status == 400
    assert (await resp.json())["error"]["code"] == "invalid_request"
    assert await limit_row(pool) == (None, None)


async def test_only_head_office_admins_set_limits_and_each_change_is_audited(api, pool):
    for username in ("marketer", "approver", "sz-admin"):
        status, body = await api.admin(username, "PUT", LIMIT, {"per_second": 1, "burst": 1})
        assert (status, body["error"]["code"]) == (403, "forbidden"), (username, body)
    status, body = await api.admin(
        "admin", "PUT", "/admin/v1/channels/nobody/rate-limit", {"per_second": 1, "burst": 1}
    )
    assert (status, body["error"]["code"]) == (404, "not_found")
    assert await limit_row(pool) == (None, None)
    await set_limit(api, 200, 400)
    await set_limit(api, 2.5, 5)
    rows = await pool.fetch(
        "SELECT actor, target, detail::text AS detail FROM audit_log"
        " WHERE action = 'channel.rate_limit' ORDER BY id"
    )
    assert [(r["actor"], r["target"]) for r in rows] == [("admin", f"channel:{CHANNEL}")] * 2
    assert [orjson.loads(r["detail"]) for r in rows] == [
        {"before": None, "after": {"per_second": 200.0, "burst": 400}},
        {"before": {"per_second": 200.0, "burst": 400}, "after": {"per_second": 2.5, "burst": 5}},
    ]


async def test_the_channel_list_shows_limits_and_no_secret(api, pool):
    await set_limit(api, 2.5, 5)
    status, listed = await api.admin("marketer", "GET", "/admin/v1/channels")
    assert status == 200, listed
    assert listed["default_rate_limit"] is None
    by_id = {c["id"]: c for c in listed["channels"]}
    assert by_id[CHANNEL]["rate_limit"] == {"per_second": 2.5, "burst": 5}
    assert by_id["wechat"]["rate_limit"] is None
    assert by_id[CHANNEL]["scopes"] == ["claims"]
    text = orjson.dumps(listed).decode()
    for sealed in await pool.fetch("SELECT secret_sealed FROM channels"):
        assert sealed["secret_sealed"] not in text
    assert 'secret"' not in text and "test-channel-secret" not in text
    status, body = await api.admin("sz-marketer", "GET", "/admin/v1/channels")
    assert (status, body["error"]["code"]) == (403, "forbidden")


async def test_the_settings_default_limits_channels_without_their_own(
    api, aiohttp_client, clock, pool
):
    await set_limit(api, 1000, 1000)  # `app` has its own, far above the default
    settings = settings_for_tests(channel_rate_per_s=0.01, channel_rate_burst=2)
    limited = Api(await aiohttp_client(create_app(settings, clock)), clock)
    assert [(await probe(limited, "wechat", "wechat-secret"))[0] for _ in range(3)] == [
        404,
        404,
        429,
    ]
    assert all([(await probe(limited))[0] == 404 for _ in range(10)])
    await sign_in(limited, pool, "admin")
    status, listed = await limited.admin("admin", "GET", "/admin/v1/channels")
    assert status == 200, listed
    assert listed["default_rate_limit"] == {"per_second": 0.01, "burst": 2}


async def test_requests_are_counted_per_channel_and_outcome(api):
    labels = {"channel": CHANNEL, "outcome": "rate_limited"}
    allowed = {"channel": CHANNEL, "outcome": "allowed"}
    refused_before = await metric(api.client, REQUESTS, labels) or 0.0
    allowed_before = await metric(api.client, REQUESTS, allowed) or 0.0
    await set_limit(api, 0.01, 2)
    assert [(await probe(api))[0] for _ in range(5)] == [404, 404, 429, 429, 429]
    assert await metric(api.client, REQUESTS, labels) == refused_before + 3
    assert await metric(api.client, REQUESTS, allowed) == allowed_before + 2


def test_the_default_limit_from_the_settings():
    assert default_limit(settings_for_tests()) is None
    assert default_limit(settings_for_tests(channel_rate_per_s=2.5)) == RateLimit(2.5, 3)
    assert default_limit(
        settings_for_tests(channel_rate_per_s=10, channel_rate_burst=50)
    ) == RateLimit(10.0, 50)
    for bad in ({"channel_rate_per_s": 1e9}, {"channel_rate_per_s": 1, "channel_rate_burst": -2}):
        with pytest.raises(StartupError, match="channel_rate_per_s"):
            default_limit(settings_for_tests(**bad))

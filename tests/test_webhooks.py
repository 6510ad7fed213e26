"""Notifications reach the bank's webhook (a real HTTP server here): signed so the bank can check
them, retried with a growing backoff while the receiver is down, marked failed after the last
attempt (about a day with the defaults), redriven on demand, swept once delivered, recorded only
by the attempt that holds them, and stock.low sent once per reward."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import re
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web
from prometheus_client import REGISTRY

from quanyi.cli.main import build_parser
from quanyi.core.errors import StartupError
from quanyi.core.settings import Settings
from quanyi.notifications.outbox import enqueue
from quanyi.notifications.signing import DEMO_WEBHOOK_SECRET, signature, verify
from quanyi.notifications.webhook import WebhookConfig, WebhookSender, redacted
from quanyi.runtime import Stores
from quanyi.stores.scripts import Scripts
from quanyi.web.app import create_app
from tests.support.factories import act, grant_many, reward
from tests.support.scratch import free_port
from tests.support.settings import settings_for_tests
from tests.support.waiting import until

SECRET = DEMO_WEBHOOK_SECRET


class Receiver:
    """The bank's end: records every request; answers `statuses` in turn, then 200."""

    def __init__(self, statuses: list[int] | None = None) -> None:
        self.statuses = list(statuses or [])
        self.requests: list[tuple[dict[str, str], bytes]] = []
        self.app = web.Application()
        self.app.router.add_post("/hook", self.handle)

    async def handle(self, request: web.Request) -> web.Response:
        self.requests.append((dict(request.headers), await request.read()))
        return web.Response(status=self.statuses.pop(0) if self.statuses else 200)


def sender(pool: Any, clock: Any, url: str, **config: Any) -> WebhookSender:
    config.setdefault("backoff_s", 10.0)
    config.setdefault("backoff_max_s", 25.0)
    return WebhookSender(pool, WebhookConfig(url=url, secret=SECRET, **config), clock)


async def queue_one(pool: Any, clock: Any, key: str = "stock.low:c1:r1") -> str:
    delivery_id = await enqueue(
        pool, "stock.low", key, {"campaign_id": "c1", "reward_id": "r1"}, clock()
    )
    assert delivery_id
    return delivery_id


async def row(pool: Any, delivery_id: str) -> Any:
    return await pool.fetchrow("SELECT * FROM notifications WHERE id = $1", delivery_id)


def count(kind: str, outcome: str) -> float:
    value = REGISTRY.get_sample_value(
        "quanyi_webhook_deliveries_total", {"kind": kind, "outcome": outcome}
    )
    return value or 0.0


async def test_the_signature_verifies_with_the_secret_only(pool, clock, aiohttp_server):
    receiver = Receiver()
    server = await aiohttp_server(receiver.app)
    delivery_id = await queue_one(pool, clock)
    webhooks = sender(pool, clock, str(server.make_url("/hook")))
    try:
        assert await webhooks.deliver_due() == 1
    finally:
        await webhooks.aclose()

    [(headers, body)] = receiver.requests
    assert verify(SECRET, headers, body, clock())
    # As the README tells the bank to check it, by hand: timestamp, delivery id, body.
    timestamp = headers["X-Quanyi-Timestamp"]
    signed = f"{timestamp}.{delivery_id}.".encode() + body
    expected = hmac.new(SECRET.encode(), signed, hashlib.sha256)
    assert headers["X-Quanyi-Signature"] == f"v1={expected.hexdigest()}"
    assert not verify("another-secret", headers, body, clock())
    assert not verify(SECRET, headers, body.replace(b"c1", b"c2"), clock())
    assert not verify(SECRET, headers, body, clock() + 301)  # replayed too late
    # Replayed under another delivery id, to pass the receiver's dedupe: refused.
    assert not verify(SECRET, {**headers, "X-Quanyi-Delivery": "01OTHER"}, body, clock())
    sent = orjson.loads(body)
    assert (sent["id"], sent["kind"], sent["data"]) == (
        delivery_id,
        "stock.low",
        {"campaign_id": "c1", "reward_id": "r1"},
    )
    assert headers["X-Quanyi-Delivery"] == delivery_id
    assert headers["X-Quanyi-Event"] == "stock.low"
    assert (await row(pool, delivery_id))["delivered_at"] is not None


async def test_a_receiver_down_is_retried_with_backoff_then_delivered(pool, clock, aiohttp_server):
    port = free_port()  # nothing listens there yet
    delivery_id = await queue_one(pool, clock)
    webhooks = sender(pool, clock, f"http://127.0.0.1:{port}/hook")
    retried = count("stock.low", "retried")
    try:
        assert await webhooks.deliver_due() == 1
        first = await row(pool, delivery_id)
        assert first["attempts"] == 1 and first["delivered_at"] is None
        assert "ClientConnectorError" in first["last_error"]
        assert first["next_attempt_at"] == datetime.fromtimestamp(clock() + 10, UTC)

        assert await webhooks.deliver_due() == 0  # not due yet
        clock.advance(9.9)
        assert await webhooks.deliver_due() == 0
        clock.advance(0.1)
        assert await webhooks.deliver_due() == 1  # attempt 2, refused again: waits twice as long
        second = await row(pool, delivery_id)
        assert second["next_attempt_at"] == datetime.fromtimestamp(clock() + 20, UTC)

        receiver = Receiver()
        await aiohttp_server(receiver.app, port=port)
        clock.advance(19)
        assert await webhooks.deliver_due() == 0
        clock.advance(1)
        assert await webhooks.deliver_due() == 1
    finally:
        await webhooks.aclose()

    done = await row(pool, delivery_id)
    assert (done["attempts"], done["last_error"]) == (3, None)
    assert done["delivered_at"] is not None
    [(headers, _)] = receiver.requests
    assert headers["X-Quanyi-Delivery"] == delivery_id
    assert count("stock.low", "retried") - retried == 2


async def test_a_receiver_failing_every_attempt_marks_it_failed(pool, clock, aiohttp_server):
    receiver = Receiver([500] * 10)
    server = await aiohttp_server(receiver.app)
    delivery_id = await queue_one(pool, clock)
    failed = count("stock.low", "failed")
    webhooks = sender(pool, clock, str(server.make_url("/hook")), max_attempts=3)
    try:
        for _ in range(3):
            assert await webhooks.deliver_due() == 1
            clock.advance(25)  # the cap: every backoff is over
        assert await webhooks.deliver_due() == 0
        clock.advance(86400)
        assert await webhooks.deliver_due() == 0
    finally:
        await webhooks.aclose()

    gave_up = await row(pool, delivery_id)
    assert (gave_up["attempts"], gave_up["last_error"]) == (3, "HTTP 500")
    assert gave_up["failed_at"] is not None and gave_up["delivered_at"] is None
    # Every attempt was the same notification: one delivery id, one body.
    assert {h["X-Quanyi-Delivery"] for h, _ in receiver.requests} == {delivery_id}
    assert len({body for _, body in receiver.requests}) == 1
    assert len(receiver.requests) == 3
    assert count("stock.low", "failed") - failed == 1
    assert REGISTRY.get_sample_value("quanyi_notifications_queued") == 0


async def test_nothing_is_sent_or_lost_without_a_url(pool, clock):
    delivery_id = await queue_one(pool, clock)
    webhooks = sender(pool, clock, "")
    assert await webhooks.deliver_due() == 0
    kept = await row(pool, delivery_id)
    assert (kept["attempts"], kept["delivered_at"]) == (0, None)
    assert REGISTRY.get_sample_value("quanyi_notifications_queued") == 1


async def test_stock_low_is_sent_once(
    signed_in, pool, redis, keys, settings, clock, coffee, aiohttp_server
):
    api = signed_in
    await api.create_campaign(rewards=[reward(stock=20)])
    stores = Stores(settings, clock, keys, redis, pool, Scripts(redis))
    schedulers = [stores.scheduler() for _ in range(4)]

    await grant_many(api, "c1", 18)  # 2 left: 10 %, not below
    assert (await schedulers[0].tick()).stock_low == []
    await grant_many(api, "c1", 1, first=18)  # 1 left
    # Several schedulers at once: one of them queues it.
    ticks = await asyncio.gather(*(s.tick() for s in schedulers))
    assert [low for t in ticks for low in t.stock_low] == [("c1", "r1")]
    for scheduler in schedulers:
        assert (await scheduler.tick()).stock_low == []

    receiver = Receiver()
    server = await aiohttp_server(receiver.app)
    webhooks = sender(pool, clock, str(server.make_url("/hook")))
    try:
        while await webhooks.deliver_due():
            pass
    finally:
        await webhooks.aclose()
    sent = [orjson.loads(body) for _, body in receiver.requests]
    low = [s["data"] for s in sent if s["kind"] == "stock.low"]
    assert low == [
        {
            "campaign_id": "c1",
            "reward_id": "r1",
            "right_id": "coffee",
            "stock": 20,
            "remaining": 1,
            "threshold_percent": 10,
        }
    ]
    assert [s["kind"] for s in sent].count("campaign.started") == 1


def test_the_secret_is_never_shown(settings):
    configured = settings.replace(webhook_url="https://bank.example/hook", webhook_secret=SECRET)
    assert SECRET not in repr(configured)
    assert SECRET not in repr(WebhookConfig.from_settings(configured))


def test_a_url_without_its_secret_stops_the_start(settings):
    with pytest.raises(StartupError, match="QUANYI_WEBHOOK_SECRET"):
        WebhookConfig.from_settings(settings.replace(webhook_url="https://bank.example/hook"))


async def test_quanyi_run_tells_the_bank_of_a_campaign_start_and_end(
    signed_in, aiohttp_client, aiohttp_server, clock, c1
):
    receiver = Receiver()
    server = await aiohttp_server(receiver.app)
    settings = settings_for_tests(
        webhook_url=str(server.make_url("/hook")),
        webhook_secret=SECRET,
        schedule_every_s=0.05,
        webhook_poll_s=0.05,
    )
    # Another process of the service on the same stores, with every worker (`quanyi run`).
    client = await aiohttp_client(create_app(settings, clock, workers=True))

    async def told(kind: str) -> bool:
        return any(orjson.loads(body)["kind"] == kind for _, body in receiver.requests)

    await until(lambda: told("campaign.started"), what="campaign.started at the webhook")
    status, body = await act(signed_in, "marketer", "c1", "end")
    assert status == 200, body
    await until(lambda: told("campaign.ended"), what="campaign.ended at the webhook")
    assert all(verify(SECRET, h, b, clock()) for h, b in receiver.requests)
    resp = await client.get("/readyz")
    checks = (await resp.json())["checks"]
    assert (checks["schedule_worker"], checks["webhook_worker"]) == ("ok", "ok")


def readme_verify():
    """The receiver's snippet of README "Webhooks", run as the bank would run it."""
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    section = readme[readme.index("## Webhooks") :]
    code = re.search(r"```python\n(.*?)```", section, re.S)
    assert code, "README Webhooks has no python snippet"
    namespace: dict[str, Any] = {}
    exec(code.group(1), namespace)
    return namespace["verify"]


def signed(secret: str = SECRET, at: int | None = None, delivery_id: str = "01DELIVERY") -> tuple:
    body = b'{"id": "01DELIVERY", "kind": "stock.low"}'
    ts = int(time.time()) if at is None else at
    headers = {
        "X-Quanyi-Delivery": delivery_id,
        "X-Quanyi-Timestamp": str(ts),
        "X-Quanyi-Signature": signature(secret, ts, delivery_id, body),
    }
    return headers, body


def test_verify_and_the_readme_snippet_agree_on_every_case():
    snippet = readme_verify()
    good, body = signed()
    now = int(time.time())
    cases = {
        "good": (good, body, True),
        "header names in any case": ({k.lower(): v for k, v in good.items()}, body, True),
        "upper case": ({k.upper(): v for k, v in good.items()}, body, True),
        "no headers": ({}, body, False),
        "another body": (good, body + b" ", False),
        "another delivery id": ({**good, "X-Quanyi-Delivery": "01OTHER"}, body, False),
        "non-ASCII signature": ({**good, "X-Quanyi-Signature": "v1=é" + "0" * 63}, body, False),
        "non-ASCII delivery id": ({**good, "X-Quanyi-Delivery": "01DELIVERYé"}, body, False),
        # Arabic-Indic digits: int() takes them, a timestamp check must not.
        "Unicode digits": (
            {
                **good,
                "X-Quanyi-Timestamp": str(now).translate(str.maketrans("0123456789", "٠١٢٣٤٥٦٧٨٩")),
            },
            body,
            False,
        ),
        "a sign": ({**good, "X-Quanyi-Timestamp": f"+{now}"}, body, False),
        "thousands of digits": ({**good, "X-Quanyi-Timestamp": "9" * 5000}, body, False),
        "too old": (signed(at=now - 301)[0], body, False),
        "too new": (signed(at=now + 301)[0], body, False),
        "just in the window": (signed(at=now - 290)[0], body, True),
        "another secret": (signed("another-secret")[0], body, False),
    }
    for name, (headers, sent, wanted) in cases.items():
        assert verify(SECRET, headers, sent, time.time()) is wanted, name
        assert snippet(SECRET.encode(), headers, sent) is wanted, name


def test_a_timestamp_outside_the_window_is_refused_before_the_signature_is_computed(monkeypatch):
    headers, body = signed(at=int(time.time()) - 1000)
    computed = []
    real_new = hmac.new
    monkeypatch.setattr(hmac, "new", lambda *a, **k: computed.append(a) or real_new(*a, **k))
    assert not verify(SECRET, headers, body, time.time())
    assert computed == []


async def test_two_secrets_while_rotating_sign_each_request_twice(pool, clock, aiohttp_server):
    receiver = Receiver()
    server = await aiohttp_server(receiver.app)
    await queue_one(pool, clock)
    webhooks = WebhookSender(
        pool, WebhookConfig(url=str(server.make_url("/hook")), secret="new-one,old-one"), clock
    )
    try:
        assert await webhooks.deliver_due() == 1
    finally:
        await webhooks.aclose()
    [(headers, body)] = receiver.requests
    assert re.fullmatch(r"v1=[0-9a-f]{64},v1=[0-9a-f]{64}", headers["X-Quanyi-Signature"])
    assert verify("new-one", headers, body, clock())
    assert verify("old-one", headers, body, clock())
    assert readme_verify()(b"old-one", headers, body) is verify(
        "old-one", headers, body, time.time()
    )
    assert not verify("new-one,old-one", headers, body, clock())
    assert not verify("third-one", headers, body, clock())


async def test_a_sender_whose_lease_ran_out_changes_nothing(pool, clock, aiohttp_server):
    """Sender A's attempt hangs past its lease; B takes the next attempt and delivers it; A's
    late failure must not put it back to retry nor mark it failed."""
    first_in, answer_first = asyncio.Event(), asyncio.Event()
    seen: list[int] = []

    async def handle(request: web.Request) -> web.Response:
        seen.append(len(seen))
        if len(seen) == 1:
            first_in.set()
            await answer_first.wait()
            return web.Response(status=503)
        return web.Response(status=200)

    app = web.Application()
    app.router.add_post("/hook", handle)
    server = await aiohttp_server(app)
    url = str(server.make_url("/hook"))
    delivery_id = await queue_one(pool, clock)
    a = sender(pool, clock, url, timeout_s=30.0, max_attempts=2)
    b = sender(pool, clock, url, timeout_s=30.0, max_attempts=2)
    try:
        late = asyncio.create_task(a.deliver_due())
        await asyncio.wait_for(first_in.wait(), 10)
        clock.advance(a._config.lease_s + 1)  # A's lease is over: B may take it
        assert await b.deliver_due() == 1
        delivered = await row(pool, delivery_id)
        assert (delivered["attempts"], delivered["delivered_at"] is not None) == (2, True)
        answer_first.set()
        assert await late == 1
    finally:
        await a.aclose()
        await b.aclose()
    after = await row(pool, delivery_id)
    assert after["delivered_at"] == delivered["delivered_at"]
    assert (after["failed_at"], after["last_error"]) == (None, None)
    assert after["next_attempt_at"] == delivered["next_attempt_at"]


async def test_a_failed_notification_is_redriven(pool, clock, aiohttp_server):
    receiver = Receiver([500, 500])
    server = await aiohttp_server(receiver.app)
    delivery_id = await queue_one(pool, clock)
    webhooks = sender(pool, clock, str(server.make_url("/hook")), max_attempts=2)
    try:
        for _ in range(2):
            assert await webhooks.deliver_due() == 1
            clock.advance(25)
        assert (await row(pool, delivery_id))["failed_at"] is not None
        assert await webhooks.deliver_due() == 0
        assert await webhooks.redrive(["01NOSUCH"]) == []
        assert await webhooks.redrive() == [delivery_id]
        assert await webhooks.redrive() == []  # no longer failed
        assert await webhooks.deliver_due() == 1
    finally:
        await webhooks.aclose()
    done = await row(pool, delivery_id)
    assert (done["attempts"], done["failed_at"], done["last_error"]) == (1, None, None)
    assert done["delivered_at"] is not None
    assert len(receiver.requests) == 3


async def test_the_sweep_deletes_delivered_notifications_past_the_retention(
    signed_in, pool, clock, c1
):
    async def queue(campaign_id: str) -> str:
        key = f"stock.low:{campaign_id}:r1"
        queued = await enqueue(pool, "stock.low", key, {"campaign_id": campaign_id}, clock())
        assert queued
        return queued

    old_done = await queue("c9")  # of no live campaign
    old_live = await queue("c1")  # c1 is live: its key keeps stock.low once
    recent = await queue("c8")
    waiting = await queue("c7")  # never delivered
    now = datetime.fromtimestamp(clock(), UTC)
    for delivery_id, age in ((old_done, 31), (old_live, 31), (recent, 29)):
        await pool.execute(
            "UPDATE notifications SET delivered_at = $2 WHERE id = $1",
            delivery_id,
            now - timedelta(days=age),
        )
    webhooks = sender(pool, clock, "", retention_days=30)
    assert await webhooks.sweep() == 1
    left = {r["id"] for r in await pool.fetch("SELECT id FROM notifications")}
    assert left == {old_live, recent, waiting}


async def test_a_big_answer_is_not_read(pool, clock, aiohttp_server):
    async def endless(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(status=200)
        await resp.prepare(request)
        with contextlib.suppress(Exception):
            for _ in range(10_000):  # 640 MB, slowly: reading it would outlast the timeout
                await resp.write(b"x" * 65536)
                await asyncio.sleep(0.01)
        return resp

    app = web.Application()
    app.router.add_post("/hook", endless)
    server = await aiohttp_server(app)
    delivery_id = await queue_one(pool, clock)
    webhooks = sender(pool, clock, str(server.make_url("/hook")), timeout_s=2.0)
    try:
        assert await webhooks.deliver_due() == 1
    finally:
        await webhooks.aclose()
    done = await row(pool, delivery_id)
    assert (done["delivered_at"] is not None, done["last_error"]) == (True, None)


def test_the_url_is_shown_without_its_credentials_and_must_be_https(settings):
    url = "https://bank:hunter2@bank.example/hook?token=s3cret#frag"
    assert redacted(url) == "https://bank.example/hook"
    shown = repr(
        WebhookConfig.from_settings(settings.replace(webhook_url=url, webhook_secret=SECRET))
    )
    assert "hunter2" not in shown and "s3cret" not in shown and "bank.example/hook" in shown
    for refused in (
        "http://bank.example/hook?token=s3cret",
        "ftp://bank.example/x",
        "bank.example",
    ):
        with pytest.raises(StartupError) as why:
            WebhookConfig.from_settings(
                settings.replace(webhook_url=refused, webhook_secret=SECRET)
            )
        assert "s3cret" not in str(why.value)
    for allowed in ("http://127.0.0.1:9/hook", "http://[::1]:9/hook", "http://localhost/hook"):
        assert (
            WebhookConfig.from_settings(
                settings.replace(webhook_url=allowed, webhook_secret=SECRET)
            ).url
            == allowed
        )


def test_the_defaults_keep_trying_for_about_a_day(settings):
    config = WebhookConfig.from_settings(Settings())
    waited = sum(config.backoff(n) for n in range(1, config.max_attempts))
    assert 20 * 3600 <= waited <= 30 * 3600, waited / 3600


def test_settings_refuse_no_attempt_at_all():
    for name, bad in (("webhook_max_attempts", "0"), ("webhook_poll_s", "0")):
        with pytest.raises(ValueError, match=name):
            Settings.from_mapping({name: bad})


async def test_quanyi_webhook_redrive(pool, clock, settings, capsys):
    delivery_id = await queue_one(pool, clock)
    await pool.execute(
        "UPDATE notifications SET attempts = 35, failed_at = now(), last_error = 'HTTP 500'"
    )
    args = build_parser(["webhook"]).parse_args(["webhook", "redrive", "--id", delivery_id])
    assert await args.handler(settings, args) == 0
    assert capsys.readouterr().out.splitlines() == [delivery_id, "1 notification(s) queued again"]
    again = await row(pool, delivery_id)
    assert (again["attempts"], again["failed_at"], again["last_error"]) == (0, None, "HTTP 500")
    with pytest.raises(SystemExit):  # one of --id or --all is needed
        build_parser(["webhook"]).parse_args(["webhook", "redrive"])

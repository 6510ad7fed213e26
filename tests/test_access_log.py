"""The access log of the server as `quanyi serve` builds it: one JSON line per request, saying
who and what, never a token, a signature or an unknown query key."""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request
from aiohttp.web import Response

from quanyi.access.signing import signed_headers
from quanyi.core.settings import Settings
from quanyi.web.access_log import AccessLogWriter, JsonAccessLogger, access_log_options
from quanyi.web.app import create_app
from quanyi.web.middleware import JsonErrorsRunner
from tests.support.clients import sign_in
from tests.support.settings import CHANNEL, CHANNEL_SECRET


@pytest.fixture
def written() -> io.BytesIO:
    return io.BytesIO()


@pytest.fixture
async def served(pool, redis, settings, clock, written) -> AsyncIterator[tuple[str, int]]:
    """The API served as `quanyi serve` serves it, its access log written to `written`."""
    runner = JsonErrorsRunner(
        create_app(settings, clock),
        handle_signals=False,
        **access_log_options(settings, AccessLogWriter(written)),
    )
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield runner.addresses[0][:2]
    await runner.cleanup()


async def access_lines(buffer: io.BytesIO) -> list[dict[str, Any]]:
    """The lines written so far, once the writer's pending lines went out."""
    await asyncio.sleep(0.3)  # past the writer's flush interval (0.2 s)
    return [orjson.loads(line) for line in buffer.getvalue().splitlines()]


async def test_a_claim_and_a_staff_request_each_write_one_line(api, pool, served, written):
    await api.create_right()
    await api.create_campaign()
    await sign_in(api, pool, "marketer")
    token = await api.login("marketer")
    base = f"http://{served[0]}:{served[1]}"
    written.seek(0)
    written.truncate()

    claim = orjson.dumps({"request_id": "al-1", "campaign_id": "c1", "customer_id": "C42"})
    signed = signed_headers(CHANNEL, CHANNEL_SECRET, "POST", "/v1/claims", int(api.clock()), claim)
    query = "/admin/v1/campaigns?token=leaked-in-query&day=2026-12-01"
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{base}/v1/claims", data=claim, headers=signed) as resp:
            assert resp.status == 201, await resp.text()
        async with http.get(f"{base}{query}", headers={"Authorization": f"Bearer {token}"}) as resp:
            assert resp.status == 200, await resp.text()

    lines = await access_lines(written)
    assert len(lines) == 2, lines
    claimed, listed = lines
    assert {k: claimed[k] for k in ("method", "path", "status", "channel")} == {
        "method": "POST",
        "path": "/v1/claims",
        "status": 201,
        "channel": CHANNEL,
    }
    assert "staff" not in claimed
    assert {k: listed[k] for k in ("method", "path", "status", "staff")} == {
        "method": "GET",
        "path": "/admin/v1/campaigns?day=2026-12-01",  # the unknown key is left out
        "status": 200,
        "staff": "marketer",
    }
    assert "channel" not in listed
    for line in lines:
        assert isinstance(line["ms"], float) and 0 <= line["ms"] < 10_000, line
        assert line["logger"] == "quanyi.access" and line["level"] == "info"
        assert isinstance(line["bytes"], int) and line["bytes"] > 0
    written = orjson.dumps(lines).decode()
    for secret in (token, signed["X-Signature"], "leaked-in-query", CHANNEL_SECRET):
        assert secret not in written


async def test_card_numbers_and_odd_channel_ids_are_not_written(api, served, written):
    base = f"http://{served[0]}:{served[1]}"
    path = "/v1/customers/4111111111111111/grants?limit=4111111111111111"
    async with aiohttp.ClientSession() as http:
        for channel in ("app\u2028x", "4111111111111111"):
            headers = {"X-Channel-Id": channel, "X-Timestamp": "1", "X-Signature": "00"}
            async with http.get(f"{base}{path}", headers=headers) as resp:
                assert resp.status == 401
    lines = await access_lines(written)
    assert [line["channel"] for line in lines] == ["?", "?"], lines
    assert "4111111111111111" not in orjson.dumps(lines).decode()
    assert lines[0]["path"].startswith("/v1/customers/411111")


@pytest.mark.parametrize("raw", ["0", "false", "off"])
def test_the_access_log_can_be_turned_off(raw):
    assert Settings.from_env({}).access_log is True
    settings = Settings.from_env({"QUANYI_ACCESS_LOG": raw})
    assert settings.access_log is False
    assert access_log_options(settings) == {"access_log": None}


async def test_lines_are_gathered_and_written_together():
    """A burst of lines is written once the flush interval passed (or the buffer filled), each
    a whole JSON line; nothing is left behind at shutdown."""
    stream = io.BytesIO()
    writer = AccessLogWriter(stream, flush_s=0.05, max_bytes=4096)
    logger = JsonAccessLogger(writer, "")
    request = make_mocked_request("POST", "/v1/claims", headers={"X-Channel-Id": CHANNEL})
    response = Response(status=201, body=b"{}")
    for _ in range(10):
        logger.log(request, response, 0.0042)
    assert stream.getvalue() == b""  # gathered, not written line by line
    await asyncio.sleep(0.1)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 10 and all(orjson.loads(line)["status"] == 201 for line in lines)
    for _ in range(100):  # past max_bytes: written at once, without waiting
        logger.log(request, response, 0.0042)
    assert len(stream.getvalue().splitlines()) > 10
    writer.flush()
    assert len(stream.getvalue().splitlines()) == 110

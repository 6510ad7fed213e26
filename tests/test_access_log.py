"""The access log of the server as `quanyi serve` builds it: one JSON line per request, saying
who and what, never a token, a signature or an unknown query key."""

from __future__ import annotations

import logging
import timeit
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp.test_utils import make_mocked_request
from aiohttp.web import Response

from access.signing import signed_headers
from quanyi.access_log import ACCESS_LOGGER, JsonAccessLogger, access_log_options
from quanyi.logs import JsonFormatter
from quanyi.settings import Settings
from tests import test_http_errors
from tests.conftest import CHANNEL, CHANNEL_SECRET
from tests.helpers import sign_in

served = test_http_errors.served  # fixture: the API as `quanyi serve` serves it


def access_lines(caplog: Any) -> list[dict[str, Any]]:
    """The access log as it is written: each record through the service's JSON formatter."""
    formatter = JsonFormatter()
    return [orjson.loads(formatter.format(r)) for r in caplog.records if r.name == ACCESS_LOGGER]


async def test_a_claim_and_a_staff_request_each_write_one_line(api, pool, served, caplog):
    await api.create_right()
    await api.create_campaign()
    await sign_in(api, pool, "marketer")
    token = api._tokens["marketer"]
    base = f"http://{served[0]}:{served[1]}"
    caplog.set_level(logging.INFO, logger=ACCESS_LOGGER)
    caplog.clear()

    claim = orjson.dumps({"request_id": "al-1", "campaign_id": "c1", "customer_id": "C42"})
    signed = signed_headers(CHANNEL, CHANNEL_SECRET, "POST", "/v1/claims", int(api.clock()), claim)
    query = "/admin/v1/campaigns?token=leaked-in-query&day=2026-12-01"
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{base}/v1/claims", data=claim, headers=signed) as resp:
            assert resp.status == 201, await resp.text()
        async with http.get(f"{base}{query}", headers={"Authorization": f"Bearer {token}"}) as resp:
            assert resp.status == 200, await resp.text()

    lines = access_lines(caplog)
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
        assert line["logger"] == ACCESS_LOGGER and line["level"] == "info"
        assert isinstance(line["bytes"], int) and line["bytes"] > 0
    written = orjson.dumps(lines).decode()
    for secret in (token, signed["X-Signature"], "leaked-in-query", CHANNEL_SECRET):
        assert secret not in written


async def test_card_numbers_and_odd_channel_ids_are_not_written(api, served, caplog):
    caplog.set_level(logging.INFO, logger=ACCESS_LOGGER)
    base = f"http://{served[0]}:{served[1]}"
    path = "/v1/customers/4111111111111111/grants?limit=4111111111111111"
    async with aiohttp.ClientSession() as http:
        for channel in ("app\u2028x", "4111111111111111"):
            headers = {"X-Channel-Id": channel, "X-Timestamp": "1", "X-Signature": "00"}
            async with http.get(f"{base}{path}", headers=headers) as resp:
                assert resp.status == 401
    lines = access_lines(caplog)
    assert [line["channel"] for line in lines] == ["?", "?"], lines
    assert "4111111111111111" not in orjson.dumps(lines).decode()
    assert lines[0]["path"].startswith("/v1/customers/411111")


@pytest.mark.parametrize("raw", ["0", "false", "off"])
def test_the_access_log_can_be_turned_off(raw):
    assert Settings.from_env({}).access_log is True
    settings = Settings.from_env({"QUANYI_ACCESS_LOG": raw})
    assert settings.access_log is False
    assert access_log_options(settings) == {"access_log": None}


def test_a_line_costs_little(caplog):
    """Building the line for a claim, measured (the figure is printed; the bound is loose)."""
    logger = JsonAccessLogger(logging.getLogger("quanyi.access.bench"), "")
    request = make_mocked_request(
        "POST", "/v1/claims", headers={"X-Channel-Id": CHANNEL, "X-Signature": "ab" * 32}
    )
    response = Response(status=201, body=b"{}")
    n = 20_000
    per_line = timeit.timeit(lambda: logger.log(request, response, 0.0042), number=n) / n
    print(f"access log: {per_line * 1e6:.1f} us a line (record built, handlers included)")
    assert per_line < 200e-6

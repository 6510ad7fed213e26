"""HTTP that aiohttp cannot parse, sent on a raw socket to the server as `quanyi serve` builds it:
every answer is our JSON error, and none echoes what was sent."""

from __future__ import annotations

import asyncio

import orjson
from aiohttp import web
from aiohttp.http_exceptions import TransferEncodingError
from aiohttp.web_protocol import RequestPayloadError

from quanyi.web.middleware import errors_middleware

SECRET = "tok-3f9a1c55e2d84b7a"


async def exchange(address: tuple[str, int], raw: bytes) -> tuple[int, dict[str, str], bytes]:
    """Sends raw bytes, reads until the server closes; the first response's status, headers
    (lower-case names) and body."""
    reader, writer = await asyncio.open_connection(*address)
    try:
        writer.write(raw)
        await writer.drain()
        data = await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
    head, _, rest = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", len(rest)))
    return int(status_line.split()[1]), headers, rest[:length]


MALFORMED = {
    "space-in-method": b"GE T /healthz HTTP/1.1\r\nHost: x\r\n\r\n",
    "not-http-at-all": b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"
    + SECRET.encode()
    + b"\r\n\r\n",
    "bad-version": b"GET /healthz HTTP/9.Z\r\nHost: x\r\n\r\n",
    "space-in-header-name": f"GET /healthz HTTP/1.1\r\nHost: x\r\nX Token: {SECRET}\r\n\r\n".encode(),
    "control-char-in-header": (
        f"GET /healthz HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {SECRET}\x01\r\n\r\n".encode()
    ),
    "header-without-colon": f"GET /healthz HTTP/1.1\r\nHost: x\r\n{SECRET}\r\n\r\n".encode(),
    "header-too-long": (
        f"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Token: {SECRET}{'A' * 9000}\r\n\r\n".encode()
    ),
    "request-line-too-long": f"GET /{SECRET}{'a' * 9000} HTTP/1.1\r\nHost: x\r\n\r\n".encode(),
    "bad-content-length": (
        f"POST /v1/claims HTTP/1.1\r\nHost: x\r\nContent-Length: {SECRET}\r\n\r\n".encode()
    ),
    "length-and-chunked": (
        b"POST /v1/claims HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
    ),
    "bad-chunk-size": (
        b"POST /v1/claims HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
        b"Content-Type: application/json\r\n\r\n" + SECRET.encode() + b"\r\n{}\r\n0\r\n\r\n"
    ),
    "chunk-longer-than-said": (
        b"POST /v1/claims HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
        b"Content-Type: application/json\r\n\r\n2\r\n{}XX" + SECRET.encode() + b"\r\n0\r\n\r\n"
    ),
}


async def test_malformed_http_gets_our_json_error_quoting_nothing(served, caplog):
    caplog.set_level("DEBUG")
    problems = []
    for case, raw in MALFORMED.items():
        status, headers, body = await exchange(served, raw)
        try:
            error = orjson.loads(body)["error"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            error = {}
        if (
            status != 400
            or not headers.get("content-type", "").startswith("application/json")
            or error.get("code") != "invalid_request"
            or not error.get("message", "").startswith("malformed HTTP")
            or SECRET.encode() in body
        ):
            problems.append((case, status, headers.get("content-type"), body[:300]))
    assert problems == []

    # Said in the log, without what was sent (a header value may be a live token).
    lines = [r.getMessage() + str(r.exc_info or "") for r in caplog.records]
    assert any("malformed HTTP" in line for line in lines), lines
    assert [line for line in lines if SECRET in line] == []


async def test_well_formed_requests_are_still_served_with_json(served):
    status, _, body = await exchange(
        served, b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    assert (status, orjson.loads(body)) == (200, {"status": "ok"})
    status, headers, body = await exchange(
        served, b"GET /nowhere HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    assert status == 404 and headers["content-type"].startswith("application/json"), body
    assert orjson.loads(body)["error"]["code"] == "not_found", body


async def test_a_body_that_breaks_off_while_read_is_our_json_400(aiohttp_client):
    """With aiohttp's pure-Python parser (or a chunk split across packets), a bad chunk reaches
    the handler as an exception from request.read(): still a 400, not a 500."""

    async def reads(request: web.Request) -> web.Response:
        raise {"payload": RequestPayloadError("bad"), "chunk": TransferEncodingError("bad")}[
            request.match_info["kind"]
        ]

    app = web.Application(middlewares=[errors_middleware])
    app.router.add_post("/{kind}", reads)
    client = await aiohttp_client(app)
    for kind in ("payload", "chunk"):
        resp = await client.post(f"/{kind}", data=b"{}")
        error = (await resp.json())["error"]
        assert resp.status == 400 and error["code"] == "invalid_request", error
        assert error["message"].startswith("malformed HTTP: bad body"), error


async def test_a_client_that_hangs_up_mid_body_is_not_reported_as_a_database_outage(served, caplog):
    """aiohttp raises ConnectionResetError (an OSError, like PostgreSQL's connection errors)
    when the client closes while its body is read: that is logged as the client leaving."""
    caplog.set_level("INFO")
    _reader, writer = await asyncio.open_connection(*served)
    writer.write(
        b"POST /admin/v1/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b'Content-Length: 1000\r\n\r\n{"username": '
    )
    await writer.drain()
    await asyncio.sleep(0.2)  # the handler is reading the body now
    writer.close()

    async def logged() -> bool:
        return any("client closed the connection" in r.getMessage() for r in caplog.records)

    for _ in range(100):
        if await logged():
            break
        await asyncio.sleep(0.05)
    assert await logged()
    assert not [r for r in caplog.records if "postgresql unreachable" in r.getMessage()]

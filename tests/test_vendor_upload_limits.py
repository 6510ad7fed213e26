"""Vendor endpoints under hostile or heavy input: who sent a request, whether it is fresh and
how large it says it is are checked before a byte of its body is read; a multi-megabyte
statement is parsed without stalling the event loop; redemptions are counted in /metrics."""

from __future__ import annotations

import asyncio
import csv
import io
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from quanyi.core.ids import new_grant_id
from quanyi.vendors.api import STATEMENT_MAX_BYTES
from quanyi.vendors.callbacks import CALLBACK_MAX_BYTES
from quanyi.vendors.upload_slots import PER_PROCESS, upload_slots
from tests.support.factories import register_vendor
from tests.support.vendors import SIM, redeem, statement, today, upload, vendor_headers
from tests.support.waiting import until

ANSWER_WITHIN_S = 5.0


async def headers_only(api: Any, path: str, headers: dict[str, str]) -> tuple[int, Any]:
    """Sends a request's line and headers and never its body; returns the status and JSON
    body of the answer, which must come while the body is still missing."""
    status, _fields, body = await answered_unread(api, path, headers)
    return status, body


async def answered_unread(
    api: Any, path: str, headers: dict[str, str]
) -> tuple[int, dict[str, str], Any]:
    """headers_only, with the response's header fields."""
    server = api.client.server
    reader, writer = await asyncio.open_connection(server.host, server.port)
    try:
        writer.write(request_head(api, path, headers))
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), ANSWER_WITHIN_S)
        status = int(head.split(b" ", 2)[1])
        fields = dict(
            line.split(": ", 1) for line in head.decode().split("\r\n")[1:] if ": " in line
        )
        assert fields["Content-Type"].startswith("application/json"), head
        body = await asyncio.wait_for(
            reader.readexactly(int(fields["Content-Length"])), ANSWER_WITHIN_S
        )
        return status, fields, orjson.loads(body)
    finally:
        writer.close()


def request_head(api: Any, path: str, headers: dict[str, str]) -> bytes:
    server = api.client.server
    lines = [f"POST {path} HTTP/1.1", f"Host: {server.host}:{server.port}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _headers(api: Any, length: int, *, signature: str | None = "c2lnbmF0dXJl", age_s: int = 0):
    headers = {
        "Content-Type": "text/csv",
        "Content-Length": str(length),
        "X-Vendor-Timestamp": str(int(api.clock()) - age_s),
    }
    if signature is not None:
        headers["X-Vendor-Signature"] = signature
    return headers


REFUSED_UNREAD = {
    # (endpoint, vendor, declared length, header options) -> (status, code)
    "statement from an unknown vendor": (
        "statements",
        "ghost",
        STATEMENT_MAX_BYTES,
        {},
        (401, "unauthorized"),
    ),
    "unsigned statement": (
        "statements",
        SIM,
        STATEMENT_MAX_BYTES,
        {"signature": None},
        (401, "unauthorized"),
    ),
    "stale statement": (
        "statements",
        SIM,
        STATEMENT_MAX_BYTES,
        {"age_s": 301},
        (401, "unauthorized"),
    ),
    "statement over 16 MiB": (
        "statements",
        SIM,
        STATEMENT_MAX_BYTES + 1,
        {},
        (413, "payload_too_large"),
    ),
    "callback from an unknown vendor": (
        "redemptions",
        "ghost",
        CALLBACK_MAX_BYTES,
        {},
        (401, "unauthorized"),
    ),
    "unsigned callback": (
        "redemptions",
        SIM,
        CALLBACK_MAX_BYTES,
        {"signature": None},
        (401, "unauthorized"),
    ),
    "callback of a megabyte": ("redemptions", SIM, 1024 * 1024, {}, (413, "payload_too_large")),
}


@pytest.mark.parametrize("case", list(REFUSED_UNREAD))
async def test_a_refused_upload_is_answered_before_its_body_is_sent(api, pool, sim, case):
    endpoint, vendor_id, length, options, expected = REFUSED_UNREAD[case]
    path = f"/v1/vendors/{vendor_id}/{endpoint}?day={today(api)}"
    status, body = await headers_only(api, path, _headers(api, length, **options))
    assert (status, body["error"]["code"]) == expected, body
    assert await pool.fetchval("SELECT count(*) FROM statements") == 0
    assert await pool.fetchval("SELECT count(*) FROM redemptions") == 0


async def test_a_large_signed_statement_does_not_stall_the_event_loop(api, pool, key_pairs, sim):
    """An 8 MiB statement (160k rows) is reconciled while a ticker on the same loop notes its
    longest wait. Parsed on the loop in one go, that wait is at least the parse time; in chunks
    with yields, it stays a fraction of it."""
    ms = int(api.clock() * 1000)
    rows, size, i = [], 0, 0
    while size < 8 * 1024 * 1024:
        rows.append((new_grant_id(ms), f"SIM-{i:012d}", "issued"))
        size += 58
        i += 1
    text = statement(*rows)
    raw = text.encode()
    started = time.perf_counter()
    parsed = [
        {k: (v or "").strip() for k, v in row.items() if k}
        for row in csv.DictReader(io.StringIO(text))
    ]
    parse_s = time.perf_counter() - started
    assert len(parsed) == len(rows)

    longest = 0.0
    stop = asyncio.Event()

    async def ticker() -> None:
        nonlocal longest
        loop = asyncio.get_running_loop()
        while not stop.is_set():
            before = loop.time()
            await asyncio.sleep(0.002)
            longest = max(longest, loop.time() - before)

    ticking = asyncio.create_task(ticker())
    timestamp = str(int(api.clock()))
    resp = await api.client.post(
        f"/v1/vendors/{SIM}/statements?day={today(api)}",
        data=raw,
        headers=vendor_headers(
            key_pairs.vendor_private, timestamp, raw, **{"Content-Type": "text/csv"}
        ),
    )
    stop.set()  # before the test client itself parses the 16 MB report
    await ticking
    assert resp.status == 201, await resp.text()
    report = await resp.json()
    assert report["rows"] == len(rows)
    assert report["summary"]["missing_ours"] == len(rows)
    assert longest < parse_s / 2, (longest, parse_s)


async def redemptions_counted(api: Any) -> dict[str, float]:
    resp = await api.client.get("/metrics")
    assert resp.status == 200
    counts: dict[str, float] = {}
    for family in text_string_to_metric_families(await resp.text()):
        for sample in family.samples:
            if sample.name == "quanyi_redemptions_total" and sample.labels["vendor"] == SIM:
                counts[sample.labels["outcome"]] = sample.value
    return counts


async def test_redemptions_are_counted_by_outcome(api, key_pairs, fulfilled):
    g1, g2 = await fulfilled(2)
    before = await redemptions_counted(api)

    status, body = await redeem(api, key_pairs, "m-rd-1", g1["grant_id"])
    assert status == 200, body
    status, body = await redeem(api, key_pairs, "m-rd-1", g1["grant_id"])  # the vendor retries
    assert (status, body["replayed"]) == (200, True), body
    status, body = await redeem(api, key_pairs, "m-rd-2", g1["grant_id"])  # already redeemed
    assert status == 409, body
    status, body = await redeem(api, key_pairs, "m-rd-3", new_grant_id(int(api.clock() * 1000)))
    assert status == 409, body
    status, body = await redeem(api, key_pairs, "m-rd-4", g2["grant_id"])
    assert status == 200, body

    after = await redemptions_counted(api)
    moved = {k: after.get(k, 0) - before.get(k, 0) for k in ("applied", "replayed", "refused")}
    assert moved == {"applied": 2, "replayed": 1, "refused": 2}


# --- statement uploads in flight ------------------------------------------------------------


@asynccontextmanager
async def slow_upload(api: Any, path: str, headers: dict[str, str]) -> AsyncIterator[None]:
    """An upload that declares 16 MiB and trickles a kilobyte every 50 ms for as long as the
    block runs; the block starts once the server holds its upload slot. Then it hangs up."""
    server = api.client.server
    _reader, writer = await asyncio.open_connection(server.host, server.port)
    writer.write(request_head(api, path, {**headers, "Content-Length": str(STATEMENT_MAX_BYTES)}))

    async def trickle() -> None:
        while True:
            writer.write(b"x" * 1024)
            await writer.drain()
            await asyncio.sleep(0.05)

    sending = asyncio.create_task(trickle())
    try:
        yield
    finally:
        sending.cancel()
        writer.close()


def staff_headers(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", "Content-Type": "text/csv"}


async def holding(api: Any, *vendor_ids: str) -> None:
    slots = upload_slots(api.client.server.app)
    await until(
        lambda: _true(set(vendor_ids) <= slots.in_flight), timeout=5, what="the upload slots"
    )


async def released(api: Any) -> None:
    slots = upload_slots(api.client.server.app)
    await until(lambda: _true(not slots.in_flight), timeout=5, what="the slots to come back")


async def _true(value: bool) -> bool:
    return value


def assert_refused(answer: tuple[int, dict[str, str], Any], scope: str) -> None:
    status, fields, body = answer
    assert (status, body["error"]["code"], body["error"]["scope"]) == (
        429,
        "too_many_requests",
        scope,
    ), body
    assert fields["Retry-After"] == str(body["error"]["retry_after_s"])


async def test_a_second_statement_of_a_vendor_is_refused_at_once_while_one_uploads(
    api, pool, key_pairs, sim
):
    """One upload per vendor at a time, staff and vendor uploads alike: the second is refused
    before a byte of its body is read, and the slot comes back when the first is over."""
    path = f"/v1/vendors/{SIM}/statements?day={today(api)}"
    staff_path = f"/admin/v1/vendors/{SIM}/statements?day={today(api)}"
    token = await api.login("approver")
    async with slow_upload(api, path, _headers(api, STATEMENT_MAX_BYTES)):
        await holding(api, SIM)
        assert_refused(await answered_unread(api, path, _headers(api, 1024)), "vendor")
        assert_refused(
            await answered_unread(
                api, staff_path, {**staff_headers(token), "Content-Length": "1024"}
            ),
            "vendor",
        )
    await released(api)
    async with slow_upload(api, staff_path, staff_headers(token)):
        await holding(api, SIM)
        assert_refused(await answered_unread(api, path, _headers(api, 1024)), "vendor")
    await released(api)

    # Over: a statement goes through again.
    raw = statement().encode()
    timestamp = str(int(api.clock()))
    resp = await api.client.post(
        path, data=raw, headers=vendor_headers(key_pairs.vendor_private, timestamp, raw)
    )
    assert resp.status == 201, await resp.text()
    assert await pool.fetchval("SELECT count(*) FROM statements") == 1


async def test_statement_uploads_are_capped_per_process(api, pool, key_pairs, our_key_file, sim):
    """Two vendors uploading at once fill the process: a third vendor's upload is refused at
    once, from the vendor and from staff, and taken once a slot is free."""
    assert PER_PROCESS == 2
    for vendor_id in ("v2", "v3"):
        await register_vendor(api, vendor_id, "https://v.example", key_pairs, our_key_file)
    day = today(api)
    token = await api.login("approver")
    async with (
        slow_upload(api, f"/v1/vendors/{SIM}/statements?day={day}", _headers(api, 0)),
        slow_upload(api, f"/admin/v1/vendors/v2/statements?day={day}", staff_headers(token)),
    ):
        await holding(api, SIM, "v2")
        assert_refused(
            await answered_unread(api, f"/v1/vendors/v3/statements?day={day}", _headers(api, 1024)),
            "process",
        )
        assert_refused(
            await answered_unread(
                api,
                f"/admin/v1/vendors/v3/statements?day={day}",
                {**staff_headers(token), "Content-Length": "1024"},
            ),
            "process",
        )
    await released(api)
    status, report = await upload(api, day, statement(), vendor_id="v3")
    assert status == 201, report
    assert await pool.fetchval("SELECT count(*) FROM statements") == 1


async def test_a_refused_stranger_takes_no_upload_slot(api, sim):
    """Checks that need no body still come first: a stale or unsigned upload is 401 whether
    or not a slot is free, and never holds one."""
    path = f"/v1/vendors/{SIM}/statements?day={today(api)}"
    for options in ({"age_s": 301}, {"signature": None}):
        status, body = await headers_only(api, path, _headers(api, STATEMENT_MAX_BYTES, **options))
        assert (status, body["error"]["code"]) == (401, "unauthorized"), body
    assert upload_slots(api.client.server.app).in_flight == frozenset()

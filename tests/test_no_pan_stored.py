"""No card number is stored or logged: hostile requests go through the real app, then every
PostgreSQL table, every Redis key of the run and every log line is scanned for a PAN.

Card numbers in ids are refused with 400 naming the field; in free text and in stored JSON
they are masked to first six and last four (`411111******1111`)."""

from __future__ import annotations

import io
import logging
import re
import unicodedata
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from redis.asyncio import Redis

from quanyi.core.logs import json_handler
from quanyi.core.pan import id_has_pan, mask_pans, masked_json_text
from quanyi.ledger.worker import LedgerWorker
from tests.support.clients import send
from tests.support.settings import TEST_PREFIX, TEST_REDIS_URL
from tests.support.vendors import SIM, post_signed, statement, upload


def _luhn(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        n = int(ch) * (2 if i % 2 else 1)
        total += n - 9 if n > 9 else n
    return total % 10 == 0


def with_check_digit(body: str) -> str:
    """`body` plus the digit that makes it pass the Luhn check."""
    for d in "0123456789":
        if _luhn(body + d):
            return body + d
    raise AssertionError("unreachable")


UNIONPAY_19 = with_check_digit("621700123456789012")
# A PAN in every form an id can carry it: the separators ids allow, leading zeros, a prefix.
CARD_IDS = [
    "4111111111111111",
    "4111.1111.1111.1111",
    "4111:1111:1111:1111",
    "4111_1111_1111_1111",
    "4111-1111-1111-1111",
    "000004111111111111111",
    "5555-5555.5555:4444",
    "378282246310005",
    UNIONPAY_19,
    "cust:4111111111111111",
    "2-4111-1111-1111-1111",
]
FREE_TEXT_PANS = (
    "customer read out 4111 1111 1111 1111, then 5555-5555-5555-4444 and 4111/1111/1111/1111"
    f" and {UNIONPAY_19}"
)


# Card numbers as people and spreadsheets write them: full-width and Arabic-Indic digits,
# commas, pipes, no-break and ideographic spaces.
HOSTILE_FORMS = (
    "４１１１１１１１１１１１１１１１, 4111,1111,1111,1111, 5555|5555|5555|4444,"
    " 4111\u00a01111\u00a01111\u00a01111, ٥٥٥٥٥٥٥٥٥٥٥٥٤٤٤٤, 4111\u30001111\u30001111\u30001111"
)


# --- the scanner: written on its own, stricter than quanyi/core/pan.py --------------------

# Any digit of any script counts (NFKC first: full-width, superscripts, circled digits; then
# every remaining Unicode digit). Between two digits of a number: up to three characters that
# are neither letters nor digits, whatever they are. Exempt only what is clearly no card:
# Unix times in s, ms and µs (10, 13 or 16 digits starting 17-20), ISO dates and date-times,
# UUIDs and grant ids (ULIDs).
_EXEMPT = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}(?:[T ][0-9]{2}:[0-9]{2}(?::[0-9]{2}(?:[.,][0-9]+)?)?)?"
    r"|[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
    r"|(?<![0-9A-Za-z])[0-7][0-9A-HJKMNP-TV-Z]{25}(?![0-9A-Za-z])"
)
_NUMBER_RUN = re.compile(r"[0-9]+(?:[\W_]{1,3}[0-9]+)*")


def _unicode_digits_to_ascii(text: str) -> str:
    text = unicodedata.normalize("NFKC", text)
    if text.isascii():
        return text
    return "".join(
        str(unicodedata.digit(c)) if c.isdigit() and unicodedata.digit(c, None) is not None else c
        for c in text
    )


def _unix_time(digits: str) -> bool:
    return len(digits) in (10, 13, 16) and digits[:2] in ("17", "18", "19", "20")


def pans_in(text: str) -> list[str]:
    text = _EXEMPT.sub("x", _unicode_digits_to_ascii(text))
    found = []
    for run in _NUMBER_RUN.finditer(text):
        groups = re.findall(r"[0-9]+", run.group())
        for i in range(len(groups)):
            digits = ""
            for group in groups[i:]:
                if _unix_time(group):
                    break
                digits = (digits + group).lstrip("0")
                if len(digits) > 19:
                    break
                if 13 <= len(digits) and not _unix_time(digits) and _luhn(digits):
                    found.append(digits)
    return found


def test_the_scanner_finds_what_it_must_and_passes_timestamps():
    for pan in CARD_IDS:
        assert pans_in(f"x {pan} y"), pan
    assert pans_in(FREE_TEXT_PANS)
    assert len(pans_in(HOSTILE_FORMS)) >= 6
    assert pans_in('{"pan": 4111111111111111}')
    assert pans_in('["4111", "1111", "1111", "1111"]') == []  # four characters between
    assert pans_in("4111#1111*1111~1111") and pans_in("4111\n1111\n1111\n1111")
    assert pans_in("④①①①①①①①①①①①①①①①")
    assert pans_in(with_check_digit("100000000000000"))  # starting with 1 is no exemption
    assert not pans_in("411111******1111 1795606932123-0 2026-12-01 08:32:03.123456+00")
    assert not pans_in("1795606932.123456 2026-12-01|2026-12-31 01JDXQ7ZK3M4N5P6Q7R8S9T0VW")
    assert not pans_in("4111111111111112 C1001 q17 0.5")


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        ("card 4111 1111 1111 1111.", "card 411111******1111."),
        ("4111.1111.1111.1111", "411111******1111"),
        ("000004111111111111111", "411111******1111"),
        ("qty 2 4111-1111-1111-1111", "qty 2 411111******1111"),
        (f"x{UNIONPAY_19}y", f"x{UNIONPAY_19[:6]}*********{UNIONPAY_19[-4:]}y"),
        # Left alone: not Luhn-valid, a Unix time in ms, a date-time, a UUID, too long.
        ("4111111111111112", "4111111111111112"),
        ("at 1795606932123-0", "at 1795606932123-0"),
        ("2026-12-01 08:32:03.12345+00", "2026-12-01 08:32:03.12345+00"),
        ("ff4e4735-48e9-4711-8196-959018200000", "ff4e4735-48e9-4711-8196-959018200000"),
        ("41111111111111111111", "41111111111111111111"),
    ],
)
def test_free_text_keeps_the_first_six_and_last_four_digits(text, masked):
    assert mask_pans(text) == masked


def test_stored_json_is_masked_numbers_and_keys_included():
    raw = b'{"card": 4111111111111111, "4111111111111111": ["5555 5555 5555 4444"], "n": 7}'
    assert orjson.loads(masked_json_text(raw)) == {
        "card": "411111******1111",
        "411111******1111": ["555555******4444"],
        "n": 7,
    }
    untouched = b'{"a": 1,  "b": "C1001"}'
    assert masked_json_text(untouched) == untouched.decode()


@pytest.mark.parametrize("value", CARD_IDS)
def test_every_card_id_form_is_seen(value):
    assert id_has_pan(value)


@pytest.mark.parametrize("value", ["C1001", "q1", "4111111111111112", "cust-1795606932123"])
def test_ordinary_ids_pass(value):
    assert not id_has_pan(value)


async def database_texts(pool: Any) -> Iterator[tuple[str, str]]:
    """(where, text) for every value of every table: each column cast to text, bytea read as
    its bytes (its hex form would be digits by chance)."""
    columns = await pool.fetch(
        "SELECT table_name, column_name, data_type FROM information_schema.columns"
        " WHERE table_schema = 'public' ORDER BY table_name, ordinal_position"
    )
    tables: dict[str, list[tuple[str, str]]] = {}
    for c in columns:
        tables.setdefault(c["table_name"], []).append((c["column_name"], c["data_type"]))
    assert {"channels", "grants", "audit_log", "redemptions", "statements"} <= set(tables)
    out = []
    for table, cols in tables.items():
        select = ", ".join(
            f'"{name}"' if kind == "bytea" else f'"{name}"::text AS "{name}"' for name, kind in cols
        )
        for row in await pool.fetch(f'SELECT {select} FROM "{table}"'):
            for name, value in row.items():
                if value is None:
                    continue
                text = value.decode("latin-1") if isinstance(value, bytes) else value
                out.append((f"{table}.{name}", text))
    return out


async def redis_texts() -> list[tuple[str, str]]:
    """(key, text) for every key of this run and everything it holds, whatever its type."""
    raw = Redis.from_url(TEST_REDIS_URL)
    out: list[tuple[str, str]] = []

    def add(key: bytes, *parts: Any) -> None:
        for part in parts:
            text = part.decode("latin-1") if isinstance(part, bytes) else str(part)
            out.append((key.decode("latin-1"), text))

    try:
        async for key in raw.scan_iter(match=f"{TEST_PREFIX}:*", count=1000):
            add(key, key)
            kind = (await raw.type(key)).decode()
            if kind == "string":
                add(key, await raw.get(key))
            elif kind == "hash":
                for field, value in (await raw.hgetall(key)).items():
                    add(key, field, value)
            elif kind == "set":
                add(key, *await raw.smembers(key))
            elif kind == "list":
                add(key, *await raw.lrange(key, 0, -1))
            elif kind == "zset":
                for member, score in await raw.zrange(key, 0, -1, withscores=True):
                    add(key, member, repr(score))
            elif kind == "stream":
                for entry_id, fields in await raw.xrange(key):
                    add(key, entry_id, *[x for kv in fields.items() for x in kv])
            else:
                raise AssertionError(f"{key!r}: a {kind} the scan cannot read")
    finally:
        await raw.aclose()
    return out


@pytest.fixture
def captured_logs(caplog) -> Iterator[io.StringIO]:
    """Every log record at DEBUG: caplog's records, and the JSON lines our handler writes."""
    caplog.set_level(logging.DEBUG)
    stream = io.StringIO()
    handler = json_handler(stream)
    handler.setLevel(logging.DEBUG)
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield stream
    finally:
        root.removeHandler(handler)


@pytest.fixture
def fulfil(sim, fulfilled):
    """A running simulated vendor `sim` fulfils reward r1 of approved campaign c1."""
    return fulfilled


def refused(status: int, body: Any, field: str) -> None:
    assert status == 400, body
    assert body["error"]["code"] == "invalid_request", body
    assert field in body["error"]["fields"], body
    assert "card number" in body["error"]["fields"][field], body


# --- the hostile suite --------------------------------------------------------------------


async def hostile_requests(
    api: Any, pool: Any, redis: Any, keys: Any, key_pairs: Any, settings: Any, fulfil: Any
) -> None:
    # Claims: a PAN in any id field is refused, naming the field.
    for card in CARD_IDS:
        for field in ("customer_id", "request_id", "campaign_id", "reward_id"):
            body = {"request_id": "h1", "campaign_id": "c1", "customer_id": "C1", "reward_id": "r1"}
            body[field] = card
            status, reply = await api.claim(**body)
            refused(status, reply, field)
    status, reply = await api.channel("GET", "/v1/customers/4111.1111.1111.1111/grants")
    assert status == 400, reply
    for card in ("４１１１１１１１１１１１１１１１", "4111,1111,1111,1111", "4111|1111|1111|1111"):
        status, reply = await api.claim(
            request_id="h1", campaign_id="c1", customer_id=card, reward_id="r1"
        )
        assert status == 400, reply
    logging.getLogger("quanyi.hostile").warning("said %s", HOSTILE_FORMS)

    # A grant of our own, revoked by its channel with a card number in the reason.
    status, grant = await api.claim(request_id="ok-1", campaign_id="c1", customer_id="C1001")
    assert status == 201, grant
    status, reply = await api.channel(
        "POST",
        f"/v1/grants/{grant['grant_id']}/revoke",
        {"reason": f"{FREE_TEXT_PANS} {HOSTILE_FORMS}"},
    )
    assert status == 200, reply

    # Staff: names keep their text with the card number masked; ids holding one are refused.
    status, right = await api.admin(
        "marketer",
        "POST",
        "/admin/v1/rights",
        {
            "id": "pan-right",
            "name": f"coffee for {HOSTILE_FORMS} {FREE_TEXT_PANS}"[:200],
            "kind": "voucher",
            "face_value": 100,
            "unit_cost": 50,
        },
    )
    assert status == 201, right
    assert "411111******1111" in right["name"]
    for card in CARD_IDS[:6]:
        status, reply = await api.admin(
            "marketer",
            "POST",
            "/admin/v1/rights",
            {"id": card, "name": "x", "kind": "voucher", "face_value": 1, "unit_cost": 1},
        )
        refused(status, reply, "id")
    # In a path: refused before any look-up, and never repeated in the answer.
    for method, path, field in (
        ("PUT", "/admin/v1/rights/{}", "right_id"),
        ("GET", "/admin/v1/campaigns/{}", "campaign_id"),
        ("PUT", "/admin/v1/campaigns/{}", "campaign_id"),
        ("GET", "/admin/v1/vendors/{}", "vendor_id"),
    ):
        for card in CARD_IDS[:3]:
            body = {"name": "x", "kind": "voucher", "face_value": 1, "unit_cost": 1}
            status, reply = await api.admin("admin", method, path.format(card), body)
            refused(status, reply, field)
            assert card not in orjson.dumps(reply).decode(), reply
    now = datetime.fromtimestamp(api.clock(), UTC)
    status, reply = await api.admin(
        "marketer",
        "POST",
        "/admin/v1/campaigns",
        {
            "id": "c-pan",
            "name": f"campaign for {FREE_TEXT_PANS}"[:200],
            "branch": "HQ",
            "starts_at": now.isoformat(),
            "ends_at": now.replace(year=now.year + 1).isoformat(),
            "channels": ["app", "4111_1111_1111_1111"],
            "rewards": [
                {"id": "4111.1111.1111.1111", "right_id": "pan-right", "stock": 1},
            ],
        },
    )
    assert status == 400, reply
    assert {"channels", "rewards[0].id"} <= set(reply["error"]["fields"]), reply

    # Staff revoke a grant with a card number in the reason (audited).
    status, other = await api.claim(request_id="ok-2", campaign_id="c1", customer_id="C1002")
    assert status == 201, other
    status, reply = await api.admin(
        "marketer",
        "POST",
        f"/admin/v1/grants/{other['grant_id']}/revoke",
        {"reason": f"{HOSTILE_FORMS} {FREE_TEXT_PANS}"},
    )
    assert status == 200, reply

    # A login whose username and password are card numbers.
    resp = await api.client.post(
        "/admin/v1/login", json={"username": CARD_IDS[1], "password": CARD_IDS[0]}
    )
    assert resp.status in (400, 401), await resp.text()
    for username in ("４１１１１１１１１１１１１１１１", "4111|1111|1111|1111", HOSTILE_FORMS):
        resp = await api.client.post(
            "/admin/v1/login", json={"username": username, "password": "x"}
        )
        assert resp.status in (400, 401), await resp.text()

    # Vendor callbacks: the stored body has its card numbers masked, JSON numbers included.
    [done] = await fulfil(1)
    callback = f"/v1/vendors/{SIM}/redemptions"
    stamp = datetime.now(UTC).isoformat(timespec="seconds")
    raw = orjson.dumps(
        {
            "redemption_id": "rd-1",
            "grant_id": done["grant_id"],
            "redeemed_at": stamp,
            "note": FREE_TEXT_PANS,
            "said": HOSTILE_FORMS,
            "card": 4111111111111111,
            "4111111111111111": ["5555 5555 5555 4444"],
        }
    )
    status, reply = await post_signed(api, callback, raw, key_pairs.vendor_private)
    assert status == 200, reply
    raw = orjson.dumps(
        {"redemption_id": "rd-2", "grant_id": "4111-1111-1111-1111", "redeemed_at": stamp}
    )
    status, reply = await post_signed(api, callback, raw, key_pairs.vendor_private)
    assert status == 409, reply
    raw = orjson.dumps(
        {"redemption_id": "rd-3", "code": "5555 5555 5555 4444", "redeemed_at": stamp}
    )
    status, reply = await post_signed(api, callback, raw, key_pairs.vendor_private)
    assert status == 409, reply
    raw = orjson.dumps({"redemption_id": CARD_IDS[2], "grant_id": "x", "redeemed_at": stamp})
    status, reply = await post_signed(api, callback, raw, key_pairs.vendor_private)
    refused(status, reply, "redemption_id")

    # A statement whose cells are card numbers.
    day = datetime.now(UTC).astimezone(settings.zone).date()
    csv = statement(
        ("4111111111111111", "5555-5555-5555-4444", "issued"),
        ("", f"{UNIONPAY_19}", "redeemed"),
        (done["grant_id"], "4111 1111 1111 1111", "redeemed"),
        ("４１１１１１１１１１１１１１１１", "5555|5555|5555|4444", "issued"),
        ("", "4111\u00a01111\u00a01111\u00a01111", "redeemed"),
    )
    status, report = await upload(api, day.isoformat(), csv)
    assert status == 201, report

    # Malformed headers: a card number as the channel id, as a bearer token.
    status, reply = await api.claim(request_id="h2", campaign_id="c1", customer_id="C1")
    assert status == 201, reply
    status, reply = await send(
        api,
        "POST",
        "/v1/claims",
        b"{}",
        headers={"X-Channel-Id": CARD_IDS[0], "X-Timestamp": "1", "X-Signature": "00"},
    )
    assert status == 401, reply
    resp = await api.client.get(
        "/admin/v1/rights?card=4111111111111111",
        headers={"Authorization": f"Bearer {CARD_IDS[3]}"},
    )
    assert resp.status == 401

    # Everything reaches the ledger, so the tables hold what Redis held.
    await LedgerWorker(redis, pool, keys).drain()


async def test_hostile_requests_leave_no_card_number_in_storage_or_logs(
    api, pool, redis, keys, key_pairs, settings, fulfil, captured_logs, caplog
):
    await hostile_requests(api, pool, redis, keys, key_pairs, settings, fulfil)

    places = [*await database_texts(pool), *await redis_texts()]
    for record in caplog.records:
        places.append((f"log {record.name}", record.getMessage()))
        places.append((f"log {record.name} exc", record.exc_text or ""))
    places += [("json log", line) for line in captured_logs.getvalue().splitlines()]
    found = [(where, text[:200]) for where, text in places if pans_in(text)]
    assert not found, found
    # The suite did reach storage: masked text is there.
    reasons = await pool.fetchval(
        "SELECT count(*) FROM audit_log WHERE detail::text LIKE '%******%'"
    )
    assert reasons >= 1
    body = await pool.fetchval("SELECT body::text FROM redemptions WHERE redemption_id = 'rd-1'")
    assert "411111******1111" in body and "555555******4444" in body


# A card number in a path value that breaks the id rules: never looked up, never repeated.
PATH_CARDS = {
    "spaces": "4111 1111 1111 1111",
    "slashes": "4111/1111/1111/1111",
    "zero-width-prefix": "\u200b4111111111111111",
    "trailing-newline": "4111111111111111\n",
}
# (who calls, method, path with {} for the value, the statuses it may answer)
PATH_ROUTES = [
    ("channel", "GET", "/v1/customers/{}/offers", (400,)),
    ("channel", "GET", "/v1/customers/{}/progress?campaign_id=c1", (400,)),
    ("channel", "GET", "/v1/grants/{}", (400,)),
    ("staff", "GET", "/admin/v1/campaigns/{}", (404,)),
    ("staff", "POST", "/admin/v1/campaigns/c1/{}", (404,)),
    ("staff", "GET", "/admin/v1/audiences/{}", (404,)),
    ("staff", "GET", "/admin/v1/vendors/{}", (404,)),
    ("staff", "POST", "/admin/v1/grants/{}/revoke", (404,)),
]


@pytest.mark.parametrize("form", list(PATH_CARDS))
async def test_a_bad_path_value_is_never_repeated(signed_in, form):
    from urllib.parse import quote

    api = signed_in
    value = PATH_CARDS[form]
    for caller, method, template, statuses in PATH_ROUTES:
        path = template.format(quote(value, safe=""))
        if caller == "channel":
            status, body = await api.channel(method, path)
        else:
            status, body = await api.admin("admin", method, path)
        text = orjson.dumps(body).decode()
        where = f"{method} {template} ({form})"
        # A value with a slash may find no route at all: still a 404 repeating nothing.
        assert status in statuses or (form == "slashes" and status == 404), (where, body)
        assert "1111" not in text and "4111" not in text, (where, text)
        if status == 400 and "customer" in template:
            error = body["error"]
            assert "customer_id" in error["message"], (where, error)
            assert set(error["fields"]) == {"customer_id"}, (where, error)

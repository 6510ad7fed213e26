"""Channel credential rotation: a new secret, shown once; the old one keeps signing for its grace
period (claims flowing through the rotation all succeed), then stops; head-office admins only,
audited without the secret; a rotation on the command line reaches the running API within the
channel refresh interval."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import pytest

from quanyi.access.channels import ChannelDirectory, rotate_secret
from quanyi.access.secret_box import secret_box
from quanyi.cli.channels import CommandLineActor
from tests.support.cli import quanyi
from tests.support.clients import Api
from tests.support.settings import CHANNEL, CHANNEL_SECRET
from tests.support.waiting import until

pytestmark = pytest.mark.usefixtures("signed_in")

ROTATE = f"/admin/v1/channels/{CHANNEL}/rotate"
DAY_S = 86400
# A claim for a campaign that does not exist: signed, verified, rate-limited and only then
# looked up, so 404 means "the signature was accepted", 401 that it was not.
PROBE = {"request_id": "probe", "campaign_id": "nope", "customer_id": "C1"}


async def probe(api: Api, secret: str) -> int:
    status, body = await api.channel("POST", "/v1/claims", PROBE, secret=secret)
    assert status in (401, 404), body
    return status


async def sealed_row(pool) -> dict[str, Any]:
    row = await pool.fetchrow(
        "SELECT t::text AS text, secret_sealed, previous_secret_sealed,"
        " extract(epoch FROM previous_until)::float8 AS previous_until"
        " FROM channels t WHERE id = $1",
        CHANNEL,
    )
    return dict(row)


def secret_of(stdout: str) -> str:
    found = re.search(r"shown once, keep it safe\):\n(\S+)\n?\Z", stdout)
    assert found, stdout
    return found.group(1)


async def test_both_secrets_sign_during_the_grace_period_then_only_the_new(api, pool, clock):
    status, reply = await api.admin("admin", "POST", ROTATE, {"grace_s": 3600})
    assert status == 200, reply
    new = reply["secret"]
    assert new != CHANNEL_SECRET and len(new) >= 40
    assert reply["channel_id"] == CHANNEL
    assert reply["active_within_s"] == 0.2  # the test settings' channel_refresh_s
    assert await probe(api, CHANNEL_SECRET) == 404
    assert await probe(api, new) == 404
    assert await probe(api, "never-a-secret") == 401

    clock.advance(3599)
    assert await probe(api, CHANNEL_SECRET) == 404
    clock.advance(2)
    assert await probe(api, CHANNEL_SECRET) == 401  # the grace period is over
    assert await probe(api, new) == 404

    # Once past its grace the old secret is not kept, even sealed.
    async def dropped() -> bool:
        return (await sealed_row(pool))["previous_secret_sealed"] is None

    await until(dropped, what="the expired secret dropped")
    row = await sealed_row(pool)
    assert row["previous_until"] is None
    assert new not in row["text"] and CHANNEL_SECRET not in row["text"]


async def test_the_new_secret_is_shown_once_and_never_stored_nor_logged(api, pool, caplog):
    caplog.set_level(logging.DEBUG)
    resp = await api.client.post(
        ROTATE, json={}, headers={"Authorization": f"Bearer {await api.login('admin')}"}
    )
    assert resp.status == 200
    assert resp.headers["Cache-Control"] == "no-store"
    reply = await resp.json()
    secret = reply["secret"]
    row = await sealed_row(pool)
    assert row["secret_sealed"].startswith("v1:") and row["previous_secret_sealed"].startswith(
        "v1:"
    )
    assert secret not in row["text"]
    # The default grace period: 24 h from the app clock.
    assert row["previous_until"] == pytest.approx(api.clock() + DAY_S, abs=1)
    assert secret not in caplog.text
    status, listed = await api.admin("admin", "GET", "/admin/v1/channels")
    assert status == 200, listed
    assert secret not in orjson.dumps(listed).decode()
    assert row["secret_sealed"] not in orjson.dumps(listed).decode()
    entry = next(c for c in listed["channels"] if c["id"] == CHANNEL)
    assert entry["rotated_at"] is not None and entry["previous_secret_until"] is not None
    audit = await pool.fetchrow(
        "SELECT actor, branch, detail::text AS detail FROM audit_log WHERE action = $1",
        "channel.rotate",
    )
    assert (audit["actor"], audit["branch"]) == ("admin", "HQ")
    assert orjson.loads(audit["detail"])["grace_s"] == DAY_S
    assert secret not in audit["detail"] and row["secret_sealed"] not in audit["detail"]


async def test_only_head_office_admins_rotate_and_a_bad_body_changes_nothing(api, pool):
    before = await sealed_row(pool)
    for username in ("marketer", "approver", "sz-admin"):
        status, body = await api.admin(username, "POST", ROTATE, {})
        assert (status, body["error"]["code"]) == (403, "forbidden"), (username, body)
    for bad in ({"grace_s": -1}, {"grace_s": 31 * DAY_S}, {"grace_s": "24h"}, {"grace_s": 1.5}):
        status, body = await api.admin("admin", "POST", ROTATE, bad)
        assert status == 400, (bad, body)
        assert body["error"]["fields"].keys() == {"grace_s"}, body
    status, body = await api.admin("admin", "POST", "/admin/v1/channels/nobody/rotate", {})
    assert (status, body["error"]["code"]) == (404, "not_found")
    assert await sealed_row(pool) == before
    assert (
        await pool.fetchval("SELECT count(*) FROM audit_log WHERE action = 'channel.rotate'") == 0
    )
    assert await probe(api, CHANNEL_SECRET) == 404


async def test_grace_zero_stops_the_old_secret_at_once(api):
    status, reply = await api.admin("admin", "POST", ROTATE, {"grace_s": 0})
    assert status == 200, reply
    assert await probe(api, CHANNEL_SECRET) == 401
    assert await probe(api, reply["secret"]) == 404


async def test_a_second_rotation_ends_the_first_old_secret(api):
    _, first = await api.admin("admin", "POST", ROTATE, {})
    _, second = await api.admin("admin", "POST", ROTATE, {})
    assert await probe(api, CHANNEL_SECRET) == 401  # two secrets at most sign at once
    assert await probe(api, first["secret"]) == 404
    assert await probe(api, second["secret"]) == 404


async def test_a_rotation_while_claims_flow_fails_none_of_them(api, pool, clock):
    """Callers keep signing with the old secret through a rotation made by another process
    (the command line), switch to the new one once the API has it, and no claim fails; after
    the grace period only the new secret signs."""
    await api.create_right()
    await api.create_campaign(
        rewards=[{"id": "r1", "right_id": "coffee", "stock": 100_000, "per_customer_limit": 1}]
    )
    secret = CHANNEL_SECRET
    answers: list[tuple[int, str]] = []
    stop = asyncio.Event()
    sent = 0

    async def caller(n: int) -> None:
        nonlocal sent
        while not stop.is_set():
            sent += 1
            body = {"request_id": f"q{n}-{sent}", "campaign_id": "c1", "customer_id": f"c{sent}"}
            status, reply = await api.channel("POST", "/v1/claims", body, secret=secret)
            answers.append((status, orjson.dumps(reply).decode()))

    callers = [asyncio.create_task(caller(n)) for n in range(8)]
    try:
        await until(at_least(answers, 40), what="claims under way")
        # Its settings as the API under test has them: the refresh it promises is the API's.
        rotate = ("channel", "rotate", "--id", CHANNEL, "--grace", "1h")
        done = await asyncio.to_thread(quanyi, *rotate, QUANYI_CHANNEL_REFRESH_S="0.2")
        assert done.returncode == 0, done.stderr
        new = secret_of(done.stdout)
        assert "within 0.2 s" in done.stdout
        # The API process learns of it on its next refresh; callers switch then.
        await until(lambda: probe_ok(api, new), what="the new secret accepted")
        at_switch = len(answers)
        secret = new
        await until(at_least(answers, at_switch + 40), what="claims with the new secret")
    finally:
        stop.set()
        await asyncio.gather(*callers)
    failed = [a for a in answers if a[0] != 201]
    assert failed == [], failed[:3]
    assert len(answers) >= 80

    # The command's clock is the system's, a few seconds ahead of the test's frozen one.
    clock.advance(3600 + 60)
    assert await probe(api, CHANNEL_SECRET) == 401
    assert await probe(api, new) == 404


async def probe_ok(api: Api, secret: str) -> bool:
    return await probe(api, secret) == 404


def at_least(answers: list[Any], n: int) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return len(answers) >= n

    return check


async def test_the_command_prints_the_secret_once_and_audits_who_ran_it(api, pool):
    done = quanyi("channel", "rotate", "--id", CHANNEL, "--grace", "90s")
    assert done.returncode == 0, done.stderr
    secret = secret_of(done.stdout)
    assert done.stdout.count(secret) == 1 and secret not in done.stderr
    row = await sealed_row(pool)
    assert secret not in row["text"]
    audit = await pool.fetchrow(
        "SELECT actor, detail::text AS detail FROM audit_log WHERE action = 'channel.rotate'"
    )
    assert audit["actor"].startswith("cli:")
    assert orjson.loads(audit["detail"])["grace_s"] == 90
    assert secret not in audit["detail"]


@pytest.mark.parametrize("grace", ["soon", "-1h", "1w", "31d", "1.5h"])
async def test_the_command_refuses_a_bad_grace_and_changes_nothing(api, pool, grace):
    before = await sealed_row(pool)
    done = quanyi("channel", "rotate", "--id", CHANNEL, "--grace", grace)
    assert done.returncode == 2, done.stdout
    assert "--grace" in done.stderr
    assert await sealed_row(pool) == before


async def test_the_command_says_so_for_an_unknown_channel(api, pool):
    done = quanyi("channel", "rotate", "--id", "nobody")
    assert done.returncode == 1
    assert "no active channel nobody" in done.stderr
    assert await pool.fetchval("SELECT count(*) FROM audit_log") == 0


async def test_a_directory_without_the_rotation_refreshes_into_it(pool, clock, settings):
    """Another process's directory (not the one that rotated) accepts the new secret after its
    next refresh, and still the old one."""
    box = secret_box(settings)
    directory = ChannelDirectory(pool, clock, settings.signature_window_s, box)
    await directory.refresh()
    secret, until_s = await rotate_secret(
        pool, CHANNEL, box, grace_s=60, now=clock(), actor=CommandLineActor("cli:test")
    )
    known = directory.known(CHANNEL)
    assert known is not None and known.secret == CHANNEL_SECRET and known.previous is None
    await directory.refresh()
    known = directory.known(CHANNEL)
    assert known is not None
    assert (known.secret, known.previous, known.previous_until) == (
        secret,
        CHANNEL_SECRET,
        pytest.approx(until_s),
    )

"""Rotating the secrets key: the new key named, the old one beside it while the secrets are
sealed again (`quanyi channel rekey`), then the old one gone; H5 sessions across the switch."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator

import pytest

from quanyi.access.channels import ChannelDirectory, create_channel, rekey_secrets, rotate_secret
from quanyi.access.secret_box import SecretBox, parse_key
from quanyi.cli.channels import CommandLineActor
from quanyi.core.errors import SecretsKeyError, Unauthorized
from quanyi.issuance.h5 import SessionTokens, previous_session_key, session_key
from quanyi.web.app import create_app
from tests.support.cli import quanyi
from tests.support.clients import Api
from tests.support.settings import settings_for_tests

ACTOR = CommandLineActor("cli:ops")


@pytest.fixture
def keys() -> Iterator[tuple[str, str]]:
    """Two key references, the old and the new, in this process's environment (and so in the
    commands it starts)."""
    old, new = f"QUANYI_TEST_OLD_KEY_{os.getpid()}", f"QUANYI_TEST_NEW_KEY_{os.getpid()}"
    os.environ[old], os.environ[new] = secrets.token_hex(32), secrets.token_hex(32)
    yield f"env:{old}", f"env:{new}"
    del os.environ[old], os.environ[new]


def box_of(reference: str, previous: str | None = None) -> SecretBox:
    key = parse_key(os.environ[reference.removeprefix("env:")])
    return SecretBox(key, None if previous is None else box_key(previous))


def box_key(reference: str) -> bytes:
    return parse_key(os.environ[reference.removeprefix("env:")])


async def sealed_rows(pool) -> dict[str, tuple[str, str | None]]:
    rows = await pool.fetch("SELECT id, secret_sealed, previous_secret_sealed FROM channels")
    return {r["id"]: (r["secret_sealed"], r["previous_secret_sealed"]) for r in rows}


def test_a_box_rolling_to_a_new_key_opens_what_either_sealed_and_seals_under_the_new(keys):
    old, new = keys
    under_old = box_of(old).seal("s3cret", "app")
    rolling = box_of(new, previous=old)
    assert rolling.rolling and not box_of(new).rolling
    assert rolling.open_with_key(under_old, "app") == ("s3cret", False)
    resealed = rolling.seal("s3cret", "app")
    assert rolling.open_with_key(resealed, "app") == ("s3cret", True)
    assert box_of(new).open(resealed, "app") == "s3cret"
    with pytest.raises(SecretsKeyError, match="does not open"):
        box_of(new).open(under_old, "app")
    with pytest.raises(SecretsKeyError, match="does not open"):
        box_of(old).open(resealed, "app")
    # Still bound to its channel under the previous key.
    with pytest.raises(SecretsKeyError, match="other"):
        rolling.open(under_old, "other")


async def test_rekey_seals_every_secret_again_so_the_old_key_can_go(pool, clock, keys):
    old, new = keys
    before = box_of(old)
    await create_channel(pool, "app", "secret-of-app", box=before)
    await create_channel(pool, "wechat", "secret-of-wechat", box=before)
    await create_channel(pool, "partner", "secret-of-partner", box=before)
    # app rotated an hour ago: its old secret still signs, sealed under the old key too.
    rotated, _ = await rotate_secret(pool, "app", before, grace_s=3600, now=clock(), actor=ACTOR)
    await pool.execute("UPDATE channels SET disabled = true WHERE id = 'partner'")
    # A channel the new key sealed already is left as it is.
    await create_channel(pool, "h5", "secret-of-h5", box=box_of(new))
    untouched = (await sealed_rows(pool))["h5"]

    rekeyed = await rekey_secrets(pool, box_of(new, previous=old), actor=ACTOR)

    assert sorted(rekeyed) == ["app", "partner", "wechat"]
    after, rows = box_of(new), await sealed_rows(pool)
    assert rows["h5"] == untouched
    assert after.open(rows["app"][0], "app") == rotated
    assert after.open(rows["app"][1], "app") == "secret-of-app"
    assert after.open(rows["wechat"][0], "wechat") == "secret-of-wechat"
    assert after.open(rows["partner"][0], "partner") == "secret-of-partner"
    # The directory of a process that knows only the new key loads every channel, the
    # rotated-out secret with it.
    directory = ChannelDirectory(pool, clock, 300, after)
    await directory.refresh()
    audit = await pool.fetch(
        "SELECT actor, action, target, detail::text AS detail FROM audit_log"
        " WHERE action = 'channel.rekey'"
    )
    assert [(a["actor"], a["target"]) for a in audit] == [("cli:ops", "channels")]
    assert "secret-of" not in audit[0]["detail"] and rotated not in audit[0]["detail"]
    # Done once: a second run finds nothing to seal and writes no audit row.
    assert await rekey_secrets(pool, box_of(new, previous=old), actor=ACTOR) == []
    assert await pool.fetchval("SELECT count(*) FROM audit_log WHERE action = 'channel.rekey'") == 1


async def test_rekey_changes_nothing_when_a_secret_opens_under_neither_key(pool, keys):
    old, new = keys
    await create_channel(pool, "app", "secret-of-app", box=box_of(old))
    third = SecretBox(secrets.token_bytes(32))
    await create_channel(pool, "lost", "secret-of-lost", box=third)
    before = await sealed_rows(pool)
    with pytest.raises(SecretsKeyError, match="lost: its stored secret"):
        await rekey_secrets(pool, box_of(new, previous=old), actor=ACTOR)
    assert await sealed_rows(pool) == before


async def test_the_api_signs_on_through_the_whole_rotation(
    aiohttp_client, pool, redis, clock, keys
):
    old, new = keys
    await create_channel(pool, "app", "secret-of-app", box=box_of(old))

    async def claim_status(secrets_key: str, previous: str = "") -> int:
        settings = settings_for_tests(secrets_key=secrets_key, secrets_key_previous=previous)
        client = await aiohttp_client(create_app(settings, clock))
        status, _body = await Api(client, clock).channel(
            "GET", "/v1/grants/01M8RCDMCHBN07VV6GSBHXFX3R", channel="app", secret="secret-of-app"
        )
        await client.close()
        return status

    # 1. Every process restarted with the new key and the old one beside it.
    assert await claim_status(new, old) == 404  # authenticated, then not found
    # 2. quanyi channel rekey (refused while the old key is not named).
    refused = quanyi("channel", "rekey", QUANYI_SECRETS_KEY=new)
    assert refused.returncode == 2 and "QUANYI_SECRETS_KEY_PREVIOUS" in refused.stderr
    done = quanyi("channel", "rekey", QUANYI_SECRETS_KEY=new, QUANYI_SECRETS_KEY_PREVIOUS=old)
    assert done.returncode == 0, done.stderr
    assert "1 channel secret(s) sealed again" in done.stdout and "app" in done.stdout
    # 3. The old key gone: the new one alone opens every secret.
    assert await claim_status(new) == 404
    box_of(new).open((await sealed_rows(pool))["app"][0], "app")


def test_h5_sessions_opened_before_the_switch_stay_open_until_they_expire(clock, keys):
    old, new = keys
    before = settings_for_tests(secrets_key=old)
    during = settings_for_tests(secrets_key=new, secrets_key_previous=old)
    after = settings_for_tests(secrets_key=new)
    opened_before, _ = SessionTokens(session_key(before), clock, 900).issue("app", "cust-1")
    rolling = SessionTokens(session_key(during), clock, 900, previous_session_key(during))
    assert rolling.check(opened_before).customer_id == "cust-1"
    # New sessions are signed with the new key alone.
    opened_during, _ = rolling.issue("app", "cust-2")
    assert SessionTokens(session_key(after), clock, 900).check(opened_during).customer_id == (
        "cust-2"
    )
    with pytest.raises(Unauthorized):
        SessionTokens(session_key(before), clock, 900).check(opened_during)
    # Once the previous key is gone, its tokens are refused.
    assert previous_session_key(after) is None
    with pytest.raises(Unauthorized):
        SessionTokens(session_key(after), clock, 900).check(opened_before)


def test_an_h5_session_key_of_its_own_rotates_with_its_own_previous_key(clock, keys):
    old, new = keys
    during = settings_for_tests(h5_session_key=new, h5_session_key_previous=old)
    assert session_key(during) == box_key(new) and previous_session_key(during) == box_key(old)
    # The secrets key's previous key is not the session key's: not accepted for tokens.
    own = settings_for_tests(h5_session_key=new, secrets_key_previous=old)
    assert previous_session_key(own) is None

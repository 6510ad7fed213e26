"""Secrets stay secret: channel secrets are sealed at rest (AES-GCM under QUANYI_SECRETS_KEY),
and no log line or error message carries a password, a bearer token or a card number."""

from __future__ import annotations

import asyncio
import base64
import io
import logging
import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
from aiohttp import web

from quanyi.access.channels import ChannelDirectory, create_channel
from quanyi.access.secret_box import SecretBox, parse_key, read_key, secret_box
from quanyi.core.errors import SecretsKeyError, StartupError
from quanyi.core.logs import install_redaction, json_handler
from quanyi.core.settings import Settings
from quanyi.stores.db import open_pool
from quanyi.stores.redis import open_redis
from quanyi.web.app import create_app
from tests.support.clients import Api
from tests.support.settings import (
    CHANNEL,
    CHANNEL_SECRET,
    SECRETS_KEY_ENV,
    TEST_DATABASE_URL,
    TEST_PREFIX,
    TEST_REDIS_URL,
    settings_for_tests,
)

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "tok-7Qx2Lm9Pz4Vb8Rc1Wd6Ye3"


# --- channel secrets at rest --------------------------------------------------------------


async def test_the_channels_table_holds_no_plaintext_secret_and_signatures_verify(api, pool):
    status, grant = await api.claim(request_id="q1", campaign_id="nope", customer_id="C1")
    assert status == 404, grant  # signed, verified, then looked up: the secret opened
    rows = await pool.fetch("SELECT t::text AS row, secret, secret_sealed FROM channels t")
    assert len(rows) == 2
    for row in rows:
        assert CHANNEL_SECRET not in row["row"] and "wechat-secret" not in row["row"]
        assert row["secret"] is None
        assert row["secret_sealed"].startswith("v1:")


async def test_a_wrong_secret_still_fails_to_sign(api):
    status, body = await api.channel(
        "POST", "/v1/claims", {"request_id": "q"}, secret="not-the-secret"
    )
    assert status == 401, body


async def test_the_api_refuses_to_start_under_another_key(pool, redis, clock):
    await create_channel(pool, CHANNEL, CHANNEL_SECRET, box=secret_box(settings_for_tests()))
    variable = f"QUANYI_TEST_OTHER_KEY_{os.getpid()}"
    os.environ[variable] = secrets.token_hex(32)
    try:
        runner = web.AppRunner(create_app(settings_for_tests(secrets_key=f"env:{variable}"), clock))
        with pytest.raises(StartupError) as refused:
            await runner.setup()
        await runner.cleanup()
    finally:
        del os.environ[variable]
    message = str(refused.value)
    assert f"channel {CHANNEL}" in message
    assert "does not open with the key QUANYI_SECRETS_KEY names" in message


async def test_a_secret_written_in_clear_is_sealed_at_start(aiohttp_client, pool, redis, clock):
    # What a version before migration 0005 stored.
    await pool.execute(
        "INSERT INTO channels (id, name, secret) VALUES ('legacy', 'legacy', 'legacy-secret')"
    )
    client = await aiohttp_client(create_app(settings_for_tests(), clock))
    row = await pool.fetchrow("SELECT secret, secret_sealed FROM channels WHERE id = 'legacy'")
    assert row["secret"] is None
    assert secret_box(settings_for_tests()).open(row["secret_sealed"], "legacy") == "legacy-secret"
    status, body = await Api(client, clock).channel(
        "GET", "/v1/grants/01M8RCDMCHBN07VV6GSBHXFX3R", channel="legacy", secret="legacy-secret"
    )
    assert status == 404, body  # authenticated with the sealed secret, then not found


async def test_a_sealed_secret_moved_to_another_channel_does_not_open(pool, clock):
    box = secret_box(settings_for_tests())
    await create_channel(pool, "a", "secret-of-a", box=box)
    await create_channel(pool, "b", "secret-of-b", box=box)
    await pool.execute(
        "UPDATE channels SET secret_sealed = (SELECT secret_sealed FROM channels WHERE id = 'a')"
        " WHERE id = 'b'"
    )
    with pytest.raises(SecretsKeyError, match="channel b"):
        await ChannelDirectory(pool, clock, 300, box).refresh()


def test_keys_are_read_from_a_file_or_the_environment_in_hex_or_base64(tmp_path, monkeypatch):
    key = secrets.token_bytes(32)
    (tmp_path / "hex").write_text(key.hex() + "\n")
    (tmp_path / "b64").write_text(base64.b64encode(key).decode())
    monkeypatch.setenv("QUANYI_TEST_KEY_URLSAFE", base64.urlsafe_b64encode(key).decode())
    assert read_key(f"file:{tmp_path / 'hex'}") == key
    assert read_key(f"file:{tmp_path / 'b64'}") == key
    assert read_key("env:QUANYI_TEST_KEY_URLSAFE") == key
    sealed = SecretBox(key).seal("s3cret", "app")
    assert "s3cret" not in sealed and SecretBox(key).open(sealed, "app") == "s3cret"


@pytest.mark.parametrize(
    ("reference", "message"),
    [
        ("file:/nonexistent/quanyi.key", "cannot read /nonexistent/quanyi.key"),
        ("env:QUANYI_TEST_NO_SUCH_VARIABLE", "QUANYI_TEST_NO_SUCH_VARIABLE is not set"),
        ("0123456789abcdef" * 4, "must be file:PATH or env:VARIABLE"),
    ],
)
def test_a_bad_key_reference_is_refused_clearly(reference, message):
    with pytest.raises(SecretsKeyError, match=message):
        read_key(reference)


@pytest.mark.parametrize(
    "text", ["abcd", "00" * 31, "zz" * 32, base64.b64encode(b"x" * 16).decode()]
)
def test_a_key_that_is_not_32_bytes_is_refused(text):
    with pytest.raises(SecretsKeyError, match="32 random bytes"):
        parse_key(text)


async def test_channel_create_stores_the_secret_sealed(pool):
    env = {
        **os.environ,
        "QUANYI_DATABASE_URL": TEST_DATABASE_URL,
        "QUANYI_REDIS_URL": TEST_REDIS_URL,
        "QUANYI_KEY_PREFIX": TEST_PREFIX,
        "QUANYI_SECRETS_KEY": f"env:{SECRETS_KEY_ENV}",
        "QUANYI_LOG_LEVEL": "WARNING",
    }
    done = subprocess.run(
        [sys.executable, "-m", "quanyi.cli", "channel", "create", "--id", "wechat-h5"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    printed = done.stdout.strip().splitlines()[-1]  # the generated secret, shown once
    row = await pool.fetchrow("SELECT t::text AS row, secret_sealed FROM channels t")
    assert printed not in row["row"]
    assert secret_box(settings_for_tests()).open(row["secret_sealed"], "wechat-h5") == printed


# --- credentials in logs and errors -------------------------------------------------------


async def test_a_startup_error_masks_the_database_password():
    url = "postgresql://quanyi:hunter2-db-password@127.0.0.1:1/quanyi"
    with pytest.raises(StartupError) as refused:
        await open_pool(Settings(database_url=url))
    assert "hunter2-db-password" not in str(refused.value)
    assert "postgresql://quanyi:***@127.0.0.1:1/quanyi" in str(refused.value)


async def test_a_startup_error_masks_the_redis_password():
    with pytest.raises(StartupError) as refused:
        await open_redis(Settings(redis_url="redis://:hunter2-redis@127.0.0.1:1/0"))
    assert "hunter2-redis" not in str(refused.value)
    assert "redis://:***@127.0.0.1:1/0" in str(refused.value)


def test_the_cli_prints_a_startup_error_without_the_password():
    env = {
        **os.environ,
        "QUANYI_DATABASE_URL": "postgresql://quanyi:hunter2-db-password@127.0.0.1:1/quanyi",
        "QUANYI_REDIS_URL": TEST_REDIS_URL,
        "QUANYI_KEY_PREFIX": TEST_PREFIX,
        "QUANYI_SECRETS_KEY": f"env:{SECRETS_KEY_ENV}",
    }
    done = subprocess.run(
        [sys.executable, "-m", "quanyi.cli", "demo"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1, done.stderr
    assert "postgresql://quanyi:***@127.0.0.1:1/quanyi is unreachable" in done.stderr
    assert "hunter2" not in done.stderr + done.stdout


@pytest.fixture
def logs(caplog):
    """caplog's records and our JSON handler's lines, at DEBUG, with redaction installed as
    the service installs it."""
    install_redaction()
    caplog.set_level(logging.DEBUG)
    stream = io.StringIO()
    handler = json_handler(stream)
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield lambda: "\n".join(
            [r.getMessage() + (r.exc_text or "") + str(r.exc_info) for r in caplog.records]
            + [stream.getvalue()]
        )
    finally:
        root.removeHandler(handler)


def test_log_records_mask_tokens_passwords_and_card_numbers(logs):
    log = logging.getLogger("quanyi.test")
    log.warning("bad header Authorization: Bearer %s", TOKEN)
    log.info("connecting to %s", "postgresql://quanyi:hunter2-db-password@db:5432/quanyi")
    log.info("header %r", {"Authorization": f"Bearer {TOKEN}"})
    log.info("card %s in %s", "4111-1111-1111-1111", {"customer_id": "4111.1111.1111.1111"})
    try:
        raise ValueError(f"token={TOKEN} and card 4111111111111111 dsn password=hunter2-kv")
    except ValueError:
        log.exception("failed with Bearer %s", TOKEN)
    text = logs()
    for secret in (TOKEN, "hunter2", "4111111111111111", "4111-1111-1111-1111"):
        assert secret not in text
    assert "postgresql://quanyi:***@db:5432/quanyi" in text
    assert "411111******1111" in text


async def test_a_malformed_authorization_header_is_not_logged_with_its_token(
    pool, redis, settings, clock, logs
):
    # aiohttp's own handling of a request it cannot parse: it logs the parse error, whose text
    # quotes the offending header line.
    runner = web.AppRunner(create_app(settings, clock), access_log=None, handle_signals=False)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        reader, writer = await asyncio.open_connection(*runner.addresses[0][:2])
        writer.write(
            f"GET /healthz HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\x01\r\n"
            "Connection: close\r\n\r\n".encode()
        )
        await writer.drain()
        await asyncio.wait_for(reader.read(), 10)
        writer.close()
    finally:
        await runner.cleanup()
    text = logs()
    assert "Error handling request" in text  # the parse error was logged
    assert TOKEN not in text

"""`quanyi events send` against the API served on a port: five purchases through the command
grant a goal's reward, a file goes in batches with repeats, reversals and bad lines judged one
by one, and the secret never shows."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
from typing import Any

import asyncpg
import pytest

from quanyi.access.channels import EVENTS, create_channel
from quanyi.access.secret_box import secret_box
from quanyi.core.settings import Settings
from tests.support.cli import quanyi
from tests.support.clients import Api, closed_port, stock_granted
from tests.support.factories import reward

pytestmark = pytest.mark.usefixtures("signed_in")

CORE, CORE_SECRET = "core", "core-secret-for-the-cli-test"
FIVE_OF_100 = {"window": "month", "count": 5, "min_amount": 10_000}


@pytest.fixture
async def core(api: Api, pool: asyncpg.Pool, settings: Settings) -> str:
    """The card system's channel (events only), made before the API is served."""
    await create_channel(pool, CORE, CORE_SECRET, box=secret_box(settings), scopes=(EVENTS,))
    return CORE


@pytest.fixture
async def goal(api: Api) -> None:
    """Campaign g1: reward r1 granted automatically on 5 purchases of at least 100 yuan."""
    await api.create_right("lounge", 3_000)
    await api.create_campaign(
        "g1", [reward("r1", "lounge", stock=10, goal=FIVE_OF_100, grant="auto", claw_back=True)]
    )


def send(served: tuple[str, int], *argv: str, **env: str) -> subprocess.CompletedProcess[str]:
    url = f"http://{served[0]}:{served[1]}"
    return quanyi("events", "send", "--channel", CORE, "--url", url, *argv, COLUMNS="200", **env)


def granted_ids(stdout: str) -> list[str]:
    return re.findall(r"^granted (\S+) \(event (\S+)\)$", stdout, re.M)


def counts(stdout: str) -> list[int]:
    """The summary table's row: accepted, duplicate, rejected, held, grants made, revoked."""
    rows = [line for line in stdout.splitlines() if re.search(r"│\s*\d", line)]
    assert len(rows) == 1, stdout
    return [int(n) for n in re.findall(r"\d+", rows[0])]


async def customer_grants(api: Api, customer: str) -> list[dict[str, Any]]:
    status, body = await api.channel("GET", f"/v1/customers/{customer}/grants")
    assert status == 200, body
    grants: list[dict[str, Any]] = body["grants"]
    return grants


async def test_five_purchases_sent_by_the_command_grant_the_reward(api, core, goal, served):
    argv = ["--customer", "cust-1", "--amount", "12000", "--mcc", "5812", "--id-prefix", "tx"]
    four = await asyncio.to_thread(send, served, *argv, "--count", "4", "--secret", CORE_SECRET)
    assert four.returncode == 0, four.stderr
    assert counts(four.stdout) == [4, 0, 0, 0, 0, 0]
    assert await stock_granted(api, "g1") == 0

    # The same four again and a fifth: the repeats count once, the fifth reaches the goal.
    five = await asyncio.to_thread(
        send, served, *argv, "--count", "5", "--secret-env", "CORE_SECRET", CORE_SECRET=CORE_SECRET
    )
    assert five.returncode == 0, five.stderr
    assert counts(five.stdout) == [1, 4, 0, 0, 1, 0]
    [(grant_id, event_id)] = granted_ids(five.stdout)
    assert event_id == "tx-5"
    assert await stock_granted(api, "g1") == 1
    [grant] = await customer_grants(api, "cust-1")
    assert grant["grant_id"] == grant_id
    assert grant["channel_id"] == "goal" and grant["campaign_id"] == "g1"
    assert CORE_SECRET not in four.stdout + four.stderr + five.stdout + five.stderr


async def test_a_file_goes_in_batches_each_event_judged_on_its_own(
    api, core, goal, served, tmp_path
):
    lines: list[Any] = [
        {"event_id": f"f-{i}", "customer_id": "cust-2", "amount": 15_000, "mcc": "5411"}
        for i in range(5)
    ]
    lines += [
        {"event_id": "f-0", "customer_id": "cust-2", "amount": 15_000, "mcc": "5411"},  # repeat
        {"event_id": "f-bad", "customer_id": "4111111111111111", "amount": 1, "mcc": "5411"},
        {
            "event_id": "rf-1",
            "customer_id": "cust-2",
            "amount": 15_000,
            "mcc": "5411",
            "reversal_of": "f-3",
        },
    ]
    path = tmp_path / "events.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines) + "not json\n")
    done = await asyncio.to_thread(
        send, served, "--file", str(path), "--batch-size", "3", "--secret", CORE_SECRET
    )
    assert done.returncode == 1, done.stderr  # some events were rejected
    # 5 purchases and the refund accepted; the repeat a duplicate; the card number and the
    # line that is not JSON rejected; the goal granted, then clawed back by the refund.
    assert counts(done.stdout) == [6, 1, 2, 0, 1, 1]
    assert "4111111111111111" not in done.stdout + done.stderr
    assert re.search(r"^revoked \S+ \(event rf-1\)$", done.stdout, re.M), done.stdout
    assert await stock_granted(api, "g1") == 0
    [grant] = await customer_grants(api, "cust-2")
    assert grant["status"] == "revoked"


async def test_a_csv_file_fills_in_ids_and_times(api, core, goal, served, tmp_path):
    path = tmp_path / "events.csv"
    path.write_text("customer_id,amount,mcc\n" + "cust-3,10000,5812\n" * 5)
    done = await asyncio.to_thread(send, served, "--file", str(path), "--secret", CORE_SECRET)
    assert done.returncode == 0, done.stderr
    assert counts(done.stdout) == [5, 0, 0, 0, 1, 0]
    assert await stock_granted(api, "g1") == 1


async def test_a_channel_without_the_events_scope_is_one_line_and_exit_1(api, goal, served):
    done = await asyncio.to_thread(
        quanyi,
        "events",
        "send",
        "--channel",
        "app",
        "--secret",
        "test-channel-secret",
        "--url",
        f"http://{served[0]}:{served[1]}",
        "--customer",
        "cust-1",
        "--amount",
        "12000",
        "--mcc",
        "5812",
    )
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("quanyi: "), done.stderr
    assert "403 forbidden" in lines[0]
    assert "test-channel-secret" not in done.stdout + done.stderr


def test_no_secret_or_no_event_is_a_usage_error():
    argv = [
        "events",
        "send",
        "--channel",
        CORE,
        "--customer",
        "c",
        "--amount",
        "1",
        "--mcc",
        "5812",
    ]
    done = quanyi(*argv, "--secret-env", "NO_SUCH_SECRET_VAR")
    assert done.returncode == 2
    assert done.stderr == "quanyi: give --secret or set NO_SUCH_SECRET_VAR\n"
    done = quanyi("events", "send", "--channel", CORE, "--secret", "s", "--customer", "c")
    assert done.returncode == 2
    assert done.stderr == "quanyi: give --file, or --amount, --mcc\n"


def test_an_unreachable_api_is_one_line_and_exit_1():
    port = closed_port()
    argv = ["--customer", "c", "--amount", "1", "--mcc", "5812", "--secret", "s"]
    done = quanyi("events", "send", "--channel", CORE, "--url", f"http://127.0.0.1:{port}", *argv)
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(f"quanyi: cannot reach http://127.0.0.1:{port}"), done.stderr

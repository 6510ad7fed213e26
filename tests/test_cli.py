"""The `quanyi` command: help that gives every option's default, one line and exit code 1 for a
failure an operator can expect (never a traceback), 2 for a usage error, and commands that do
what they say on the test stores."""

from __future__ import annotations

import argparse
import asyncio
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from quanyi.cli.main import build_parser, main
from quanyi.ledger.worker import LedgerWorker
from tests.support.cli import cli_env, quanyi
from tests.support.clients import claim, closed_port
from tests.support.scratch import free_port

ROOT = Path(__file__).resolve().parent.parent


def commands(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    """Every command that runs something (`serve`, `vendor create`, ...) with its parser."""
    groups = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not groups:
        yield path, parser
    for group in groups:
        for name, sub in group.choices.items():
            yield from commands(sub, (*path, name))


ALL_COMMANDS = [path for path, _ in commands(build_parser())]


def test_every_command_is_there():
    assert {" ".join(path) for path in ALL_COMMANDS} == {
        "migrate",
        "serve",
        "worker",
        "run",
        "staff create",
        "staff role",
        "staff move",
        "staff disable",
        "staff enable",
        "staff reset-password",
        "staff list",
        "branch create",
        "branch list",
        "channel create",
        "channel rotate",
        "channel rekey",
        "demo",
        "vendor-sim",
        "vendor keygen",
        "vendor create",
        "vendor list",
        "vendor import-codes",
        "dlq list",
        "dlq redrive",
        "statement import",
        "audience create",
        "audience import",
        "issuance create",
        "issuance approve",
        "issuance status",
        "claim",
        "grant",
        "events send",
        "audit verify",
        "rebuild-redis",
        "reconcile",
        "webhook redrive",
        "reports rebuild",
        "export",
    }


@pytest.mark.parametrize("path", ALL_COMMANDS, ids=" ".join)
def test_help_gives_every_option_with_its_default(path, capsys):
    with pytest.raises(SystemExit) as done:
        main([*path, "--help"])
    assert done.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    options = text[text.index("options:") :]
    parser = dict(commands(build_parser()))[path]
    entries = [a for a in parser._actions if a.option_strings and a.dest != "help"]
    # Each option's entry runs from its name to the next option's name.
    starts, at = [], 0
    for action in entries:
        match = re.compile(rf" {re.escape(action.option_strings[-1])}\b").search(options, at)
        assert match, f"{action.option_strings[-1]} is not in the help of quanyi {' '.join(path)}"
        starts.append(match.start())
        at = match.end()
    ends = [*starts[1:], len(options)][: len(starts)]
    for action, start, end in zip(entries, starts, ends, strict=True):
        entry = options[start:end]
        assert "(default: " in entry or "(required)" in entry, entry
        if action.default not in (None, False, [], argparse.SUPPRESS) and not action.required:
            assert f"(default: {action.default})" in entry, entry


def test_help_says_where_a_default_comes_from(capsys):
    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--workers WORKERS API processes sharing the port (default: 1)" in text
    assert "(default: QUANYI_HTTP_HOST, else 127.0.0.1)" in text
    assert "(default: QUANYI_HTTP_PORT, else 8080)" in text


def test_an_unknown_command_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as done:
        main(["no-such-command"])
    assert done.value.code == 2
    assert "invalid choice: 'no-such-command'" in capsys.readouterr().err


def test_a_group_without_its_action_prints_its_help_and_exits_2(capsys):
    assert main(["vendor"]) == 2
    out = capsys.readouterr().out
    assert "usage: quanyi vendor" in out and "import-codes" in out
    assert main([]) == 2
    assert "usage: quanyi" in capsys.readouterr().out


def test_python_m_quanyi_cli_runs_the_command():
    done = quanyi("no-such-command")
    assert done.returncode == 2
    assert "invalid choice: 'no-such-command'" in done.stderr
    assert "Traceback" not in done.stderr


def one_line(done: subprocess.CompletedProcess[str]) -> str:
    """The whole of stderr, which must be a single `quanyi: ...` line."""
    assert "Traceback" not in done.stderr, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("quanyi: "), done.stderr
    return lines[0]


@pytest.mark.parametrize(
    ("argv", "stdin"),
    [
        (["reconcile"], ""),
        (["worker", "ledger"], ""),
        (
            [
                "staff",
                "create",
                "--username",
                "u1",
                "--role",
                "admin",
                "--branch",
                "HQ",
                "--password-stdin",
            ],
            "long-enough-password\n",
        ),
    ],
    ids=lambda v: " ".join(v) if isinstance(v, list) else None,
)
def test_an_unreachable_redis_is_one_line_and_exit_1(argv, stdin):
    port = closed_port()
    done = quanyi(*argv, stdin=stdin, QUANYI_REDIS_URL=f"redis://127.0.0.1:{port}/0")
    assert done.returncode == 1, done.stderr
    assert one_line(done).startswith(f"quanyi: redis at redis://127.0.0.1:{port}/0 is unreachable")


def test_a_bad_setting_is_one_line_and_exit_1():
    done = quanyi("reconcile", QUANYI_HTTP_PORT="eighty")
    assert done.returncode == 1
    assert one_line(done) == "quanyi: settings: setting http_port: 'eighty' is not a valid int"


def test_a_file_that_cannot_be_read_is_a_usage_error(tmp_path):
    missing = tmp_path / "statement.csv"
    done = quanyi(
        "statement", "import", "--vendor", "v", "--day", "2026-12-01", "--file", str(missing)
    )
    assert done.returncode == 2
    assert f"argument --file: {missing}: no such file or directory" in done.stderr
    assert "Traceback" not in done.stderr


async def test_staff_create_makes_an_account_that_can_log_in(api):
    argv = ["staff", "create", "--username", "cli-admin", "--role", "admin", "--branch", "HQ"]
    done = await asyncio.to_thread(quanyi, *argv, "--password-stdin", stdin="cli-password-1\n")
    assert done.returncode == 0, done.stderr
    assert done.stdout == "staff cli-admin created (admin, branch HQ)\n"
    resp = await api.client.post(
        "/admin/v1/login", json={"username": "cli-admin", "password": "cli-password-1"}
    )
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["token"]


async def test_a_refused_request_is_one_line_with_the_fields_it_names(api):
    argv = ["staff", "create", "--username", "cli-short", "--role", "admin", "--branch", "HQ"]
    done = await asyncio.to_thread(quanyi, *argv, "--password-stdin", stdin="short\n")
    assert done.returncode == 1
    assert one_line(done) == "quanyi: password too short (password: at least 8 characters)"


async def test_reconcile_finds_the_stores_in_agreement(api, pool, redis, keys):
    await api.create_right()
    await api.create_campaign()
    for i in range(3):
        status, _ = await claim(api, f"q{i}", f"cust-{i}")
        assert status == 201
    await LedgerWorker(redis, pool, keys).drain()
    done = await asyncio.to_thread(quanyi, "reconcile", COLUMNS="160")
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.rstrip().endswith("in agreement")
    assert "DRIFT" not in done.stdout

    await redis.hincrby(keys.campaign("c1"), "r:r1:granted", 1)  # a lost revoke, say
    done = await asyncio.to_thread(quanyi, "reconcile", COLUMNS="160")
    assert done.returncode == 1
    assert "DRIFT" in done.stdout and "1 checks drift" in done.stdout


def start_serve(port: int, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as err:
        return subprocess.Popen(
            [sys.executable, "-m", "quanyi.cli", "serve", "--workers", "2", "--port", str(port)],
            cwd=ROOT,
            env=cli_env(QUANYI_HTTP_HOST="127.0.0.1", QUANYI_ACCESS_LOG="off"),
            stdout=subprocess.DEVNULL,
            stderr=err,
        )


def tail(log: Path, chars: int | None = 2000) -> str:
    text = log.read_text()
    return text if chars is None else text[-chars:]


async def test_serve_with_two_processes_reports_the_metrics_of_both(database, redis, tmp_path):
    """`serve --workers 2`: both processes answer on one port, /metrics of either counts the
    requests of both, and SIGINT stops them all cleanly."""
    port, log = free_port(), tmp_path / "serve.log"
    proc = start_serve(port, log)
    base = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as session:
            await _until_healthy(session, base, proc, log)
            # A new connection for each request: the kernel spreads them over both processes.
            for _ in range(20):
                async with aiohttp.ClientSession() as fresh:
                    async with fresh.post(f"{base}/v1/claims", data=b"{}") as resp:
                        assert resp.status == 401
            async with session.get(f"{base}/metrics") as resp:
                metrics = await resp.text()
        errors = re.findall(r"^quanyi_http_errors_total\{[^}]*\} (\S+)$", metrics, re.M)
        assert sum(float(n) for n in errors) == 20, metrics
    finally:
        proc.send_signal(signal.SIGINT)
        await asyncio.to_thread(proc.wait, 30)
    assert proc.returncode == 0, tail(log)
    assert "Traceback" not in tail(log, None), tail(log)


async def _until_healthy(
    session: aiohttp.ClientSession, base: str, proc: subprocess.Popen[bytes], log: Path
) -> None:
    for _ in range(300):
        if proc.poll() is not None:
            raise AssertionError(f"quanyi serve exited: {tail(log)}")
        try:
            async with session.get(f"{base}/healthz") as resp:
                if resp.status == 200:
                    return
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.1)
    raise AssertionError("quanyi serve --workers 2 did not answer within 30 s")


def test_help_and_a_mistyped_command_import_none_of_the_service():
    """Only the module of the command that runs is imported: `quanyi --help` stays quick."""
    script = (
        "import sys\n"
        "from quanyi.cli.main import main\n"
        "for argv in (['--help'], ['sevre']):\n"
        "    try:\n"
        "        main(argv)\n"
        "    except SystemExit:\n"
        "        pass\n"
        "print(sorted(m for m in sys.modules if m.startswith(('quanyi.runtime', 'quanyi.cli.'))))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == "['quanyi.cli.command', 'quanyi.cli.main']"

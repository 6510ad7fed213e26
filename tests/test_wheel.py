"""The installed product is the checkout: the wheel, installed into a fresh venv outside the
repository, migrates, takes a claim, writes it to the ledger and fulfils it."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
import zipfile
from pathlib import Path

import asyncpg
import pytest
from redis.asyncio import Redis

ROOT = Path(__file__).resolve().parent.parent
PG = "postgresql://127.0.0.1:5432"
REDIS_URL = "redis://127.0.0.1:6379/0"
# Names the old layout installed at the top of site-packages, where they clash with anyone's.
GENERIC_NAMES = {"access", "campaigns", "inventory", "issuance", "ledger", "vendors", "lua"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(args: list[str | Path], **kwargs) -> subprocess.CompletedProcess:
    done = subprocess.run(
        [str(a) for a in args], capture_output=True, text=True, timeout=300, **kwargs
    )
    assert done.returncode == 0, f"{args}: {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Built from a copy of what git would commit (links kept as links): no build/ left over
    from an earlier build, nothing untracked, can slip in."""
    source = tmp_path_factory.mktemp("source")
    listed = _run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT)
    for name in filter(None, listed.stdout.split("\0")):
        origin, copy = ROOT / name, source / name
        if not origin.is_symlink() and not origin.exists():
            continue  # deleted in the working tree, not committed yet
        copy.parent.mkdir(parents=True, exist_ok=True)
        if origin.is_symlink():
            copy.symlink_to(os.readlink(origin))
        else:
            shutil.copy2(origin, copy)
    dist = tmp_path_factory.mktemp("dist")
    _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", dist, source])
    (found,) = dist.glob("quanyi-*.whl")
    return found


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory, wheel: Path) -> Path:
    """A fresh venv holding the wheel and its dependencies, and nothing of the checkout."""
    home = tmp_path_factory.mktemp("venv")
    _run([sys.executable, "-m", "venv", home])
    _run([home / "bin" / "pip", "install", "-q", wheel], env={**os.environ, "PIP_NO_INPUT": "1"})
    return home


def test_the_wheel_holds_one_package_with_its_scripts_and_sql(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/", 1)[0] for n in names if not n.split("/", 1)[0].endswith(".dist-info")}
    assert top == {"quanyi"}, top
    for lua in ("claim", "transition", "assign_code", "lease_due"):
        assert f"quanyi/lua/{lua}.lua" in names
    assert any(n.startswith("quanyi/stores/migrations/0001_") for n in names)
    for domain in ("access", "campaigns", "issuance", "ledger", "vendors"):
        assert f"quanyi/{domain}/queries.sql" in names, domain


def test_only_quanyi_lands_in_site_packages(venv: Path) -> None:
    (site,) = venv.glob("lib/python*/site-packages")
    assert (site / "quanyi" / "lua" / "claim.lua").is_file()
    assert not GENERIC_NAMES & {p.name for p in site.iterdir()}


def _wait_ready(url: str, proc: subprocess.Popen, log: Path, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"quanyi run exited:\n{log.read_text()[-3000:]}"
        try:
            with urllib.request.urlopen(url, timeout=2) as reply:
                if json.load(reply)["status"] == "ready":
                    return
        except OSError:
            pass
        time.sleep(0.3)
    raise AssertionError(f"not ready in {timeout_s} s:\n{log.read_text()[-3000:]}")


def test_the_installed_service_claims_records_and_fulfils(venv: Path, tmp_path: Path) -> None:
    tag = uuid.uuid4().hex[:10]
    database = f"quanyi_wheel_{tag}"
    port = _free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("QUANYI_")},
        "QUANYI_DATABASE_URL": f"{PG}/{database}",
        "QUANYI_REDIS_URL": REDIS_URL,
        "QUANYI_KEY_PREFIX": f"qyw{tag}",
        "QUANYI_HTTP_PORT": str(port),
        "QUANYI_WORKER_METRICS_PORT": "0",
        "QUANYI_IDEMPOTENCY_BUCKETS": "64",
        "PYTHONPATH": "",
    }
    quanyi = venv / "bin" / "quanyi"
    work = tmp_path / "work"  # outside the checkout: nothing of it is importable from here
    work.mkdir()
    proc = None
    log = tmp_path / "run.log"
    try:
        migrated = _run([quanyi, "migrate"], env=env, cwd=work)
        assert "0001_" in migrated.stdout
        _run([quanyi, "demo"], env=env, cwd=work)
        with log.open("w") as out:
            proc = subprocess.Popen(
                [quanyi, "run"], env=env, cwd=work, stdout=out, stderr=subprocess.STDOUT
            )
        _wait_ready(f"http://127.0.0.1:{port}/readyz", proc, log)
        claimed = _run(
            [
                quanyi, "claim", "--channel", "demo-app",
                "--secret", "demo-channel-secret-not-for-production",
                "--campaign", "demo-coffee-week", "--customer", "C-WHEEL-1", "--wait-ms", "800",
            ],
            env=env,
            cwd=work,
        )  # fmt: skip
        status, _, body = claimed.stdout.strip().partition(" ")
        assert status == "201", claimed.stdout
        grant_id = json.loads(body)["grant_id"]

        row, events = asyncio.run(_recorded(database, grant_id))
        assert row is not None and row["customer_id"] == "C-WHEEL-1", "the ledger has the grant"
        assert "fulfilled" in events, f"fulfilled by the installed worker: {events}"
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=30)
        asyncio.run(_drop(database, f"qyw{tag}"))


async def _recorded(database: str, grant_id: str) -> tuple[asyncpg.Record | None, list[str]]:
    """The grant's ledger row and events, once the fulfilment is among them (or 30 s passed)."""
    conn = await asyncpg.connect(f"{PG}/{database}")
    try:
        deadline = time.monotonic() + 30
        events: list[str] = []
        while time.monotonic() < deadline:
            rows = await conn.fetch("SELECT event FROM grant_events WHERE grant_id = $1", grant_id)
            events = [r["event"] for r in rows]
            if "fulfilled" in events:
                break
            await asyncio.sleep(0.2)
        return await conn.fetchrow("SELECT * FROM grants WHERE grant_id = $1", grant_id), events
    finally:
        await conn.close()


async def _drop(database: str, prefix: str) -> None:
    conn = await asyncpg.connect(f"{PG}/postgres")
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
    finally:
        await conn.close()
    redis = Redis.from_url(REDIS_URL)
    try:
        async for key in redis.scan_iter(match=f"{prefix}*", count=1000):
            await redis.delete(key)
    finally:
        await redis.aclose()

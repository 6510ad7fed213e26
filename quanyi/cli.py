"""`quanyi`: migrate, serve, run workers, manage staff and channels, load demo data."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
import tempfile
import threading
from collections.abc import Awaitable, Callable
from typing import Any

log = logging.getLogger("quanyi")


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return 2
    if getattr(args, "workers", 1) > 1 and "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
        # Must be set before prometheus_client is first imported: each process writes its own
        # metric files there and /metrics on any process reports them all.
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="quanyi-metrics-")
    from quanyi.logs import setup_logging
    from quanyi.settings import Settings

    setup_logging(os.environ.get("QUANYI_LOG_LEVEL", "INFO"))
    settings = Settings.from_env()
    try:
        return args.handler(settings, args) or 0
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        from quanyi.app import StartupError
        from quanyi.errors import QuanyiError

        if isinstance(exc, StartupError | QuanyiError):
            print(f"quanyi: {exc}", file=sys.stderr)
            return 1
        raise


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="quanyi", description=__doc__)
    sub = p.add_subparsers(metavar="COMMAND")

    def command(name: str, handler: Callable[..., Any], help: str) -> argparse.ArgumentParser:
        c = sub.add_parser(name, help=help, description=help)
        c.set_defaults(handler=handler)
        return c

    command("migrate", _migrate, "create the database when missing and apply migrations")
    serve = command("serve", _serve, "run the HTTP API")
    serve.add_argument("--workers", type=int, default=1, help="API processes sharing the port")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    worker = command("worker", _worker, "run a background worker")
    worker.add_argument("kind", choices=["ledger"])
    worker.add_argument("--consumer", help="consumer name in the outbox group")
    run = command("run", _run, "migrate, then run the API and every worker in one process")
    run.add_argument("--host")
    run.add_argument("--port", type=int)

    staff = sub.add_parser("staff", help="manage staff accounts").add_subparsers(metavar="ACTION")
    create = staff.add_parser("create", help="create a staff account")
    create.set_defaults(handler=_staff_create)
    create.add_argument("--username", required=True)
    create.add_argument("--role", required=True, choices=["marketer", "approver", "admin"])
    create.add_argument("--branch", required=True, help="branch code; HQ is head office")
    create.add_argument(
        "--password-stdin",
        action="store_true",
        required=True,
        help="read the password from standard input",
    )

    channel = sub.add_parser("channel", help="manage channels").add_subparsers(metavar="ACTION")
    ch_create = channel.add_parser("create", help="register a channel and print its secret")
    ch_create.set_defaults(handler=_channel_create)
    ch_create.add_argument("--id", required=True)
    ch_create.add_argument(
        "--secret", help="the shared secret; generated and printed once if omitted"
    )

    command("demo", _demo, "load DEMO staff, channel, rights and an approved campaign")
    claim = command("claim", _claim, "send one signed claim to a running API, as a channel would")
    claim.add_argument("--campaign", required=True)
    claim.add_argument("--customer", required=True)
    claim.add_argument("--reward")
    claim.add_argument("--request-id", help="defaults to a fresh random id")
    claim.add_argument("--channel", required=True)
    claim.add_argument("--secret", help="the channel secret; else QUANYI_CHANNEL_SECRET")
    claim.add_argument("--url", help="API base URL; defaults to the configured host and port")
    return p


def _uvloop_run(coro: Awaitable[Any]) -> Any:
    import uvloop

    return uvloop.run(coro)  # type: ignore[arg-type]


async def _stores(settings: Any) -> tuple[Any, Any, Any]:
    from inventory.keys import Keys
    from quanyi.app import open_pool, open_redis

    redis = await open_redis(settings)
    pool = await open_pool(settings)
    return redis, pool, Keys(settings.key_prefix)


def _migrate(settings: Any, args: argparse.Namespace) -> int:
    from quanyi.db import migrate

    applied = _uvloop_run(migrate(settings.database_url))
    print(f"migrations applied: {', '.join(applied) if applied else 'none (up to date)'}")
    return 0


async def _serve_app(settings: Any, app: Any, host: str, port: int, reuse_port: bool) -> None:
    from aiohttp import web

    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port, reuse_port=reuse_port, backlog=2048)
    await site.start()
    log.info("listening on http://%s:%d", host, port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("shutting down")
    await runner.cleanup()


def _serve(settings: Any, args: argparse.Namespace, workers: bool = False) -> int:
    from quanyi.app import create_app

    host = args.host or settings.http_host
    port = args.port or settings.http_port
    processes = getattr(args, "workers", 1)
    if processes <= 1:
        _uvloop_run(_serve_app(settings, create_app(settings, workers=workers), host, port, False))
        return 0
    import multiprocessing

    def child() -> None:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent relays Ctrl-C as SIGTERM
        _uvloop_run(_serve_app(settings, create_app(settings), host, port, True))

    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=child, name=f"quanyi-api-{i}") for i in range(processes)]
    for proc in procs:
        proc.start()
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    while not stop.is_set() and all(proc.is_alive() for proc in procs):
        stop.wait(0.5)
    for proc in procs:
        proc.terminate()  # each child shuts down cleanly on SIGTERM
    for proc in procs:
        proc.join(15)
    return 0 if stop.is_set() else 1


def _run(settings: Any, args: argparse.Namespace) -> int:
    _migrate(settings, args)
    print(
        f"quanyi: API on http://{args.host or settings.http_host}:{args.port or settings.http_port}"
        " (claims /v1/claims, admin /admin/v1, /metrics, /readyz); ledger worker running. Ctrl-C stops."
    )
    return _serve(settings, args, workers=True)


def _worker(settings: Any, args: argparse.Namespace) -> int:
    from prometheus_client import start_http_server

    from ledger.worker import LedgerWorker
    from quanyi.app import close_pool

    async def work() -> None:
        redis, pool, keys = await _stores(settings)
        worker = LedgerWorker(
            redis,
            pool,
            keys,
            consumer=args.consumer,
            batch_size=settings.ledger_batch_size,
            block_ms=settings.ledger_block_ms,
            reclaim_idle_ms=settings.ledger_reclaim_idle_ms,
        )
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, worker.stop)
        try:
            await worker.run()
        finally:
            await close_pool(pool)
            await redis.aclose()

    if settings.worker_metrics_port:
        start_http_server(settings.worker_metrics_port, addr=settings.http_host)
    _uvloop_run(work())
    return 0


def _staff_create(settings: Any, args: argparse.Namespace) -> int:
    from access.staff import create_staff
    from quanyi.db import create_pool

    password = sys.stdin.readline().rstrip("\n")

    async def create() -> None:
        pool = await create_pool(settings.database_url)
        try:
            await create_staff(pool, args.username, password, args.role, args.branch)
        finally:
            await pool.close()

    _uvloop_run(create())
    print(f"staff {args.username} created ({args.role}, branch {args.branch})")
    return 0


def _channel_create(settings: Any, args: argparse.Namespace) -> int:
    from access.channels import create_channel
    from quanyi.db import create_pool
    from quanyi.validation import IDENT

    if not IDENT.match(args.id):
        print("quanyi: channel id: 1-64 letters, digits, _ . : -", file=sys.stderr)
        return 2

    async def create() -> str:
        pool = await create_pool(settings.database_url)
        try:
            return await create_channel(pool, args.id, args.secret)
        finally:
            await pool.close()

    secret = _uvloop_run(create())
    if args.secret:
        print(f"channel {args.id} created")
    else:
        print(f"channel {args.id} created; its secret (shown once, keep it safe):\n{secret}")
    return 0


def _demo(settings: Any, args: argparse.Namespace) -> int:
    from quanyi.app import close_pool
    from quanyi.demo import DEMO_CHANNEL, DEMO_CHANNEL_SECRET, DEMO_PASSWORD, load_demo

    async def load() -> list[str]:
        redis, pool, keys = await _stores(settings)
        try:
            return await load_demo(pool, redis, keys)
        finally:
            await close_pool(pool)
            await redis.aclose()

    created = _uvloop_run(load())
    print("DEMO data " + ("loaded: " + ", ".join(created) if created else "already present"))
    print(f"  DEMO staff demo-marketer / demo-approver / demo-admin, password {DEMO_PASSWORD}")
    print(f"  DEMO channel {DEMO_CHANNEL}, secret {DEMO_CHANNEL_SECRET}")
    return 0


def _claim(settings: Any, args: argparse.Namespace) -> int:
    import time
    import uuid

    import aiohttp
    import orjson

    from access.signing import signed_headers

    secret = args.secret or os.environ.get("QUANYI_CHANNEL_SECRET")
    if not secret:
        print("quanyi: give --secret or set QUANYI_CHANNEL_SECRET", file=sys.stderr)
        return 2
    body = {
        "request_id": args.request_id or uuid.uuid4().hex,
        "campaign_id": args.campaign,
        "customer_id": args.customer,
    }
    if args.reward:
        body["reward_id"] = args.reward
    data = orjson.dumps(body)
    base = args.url or f"http://{settings.http_host}:{settings.http_port}"
    headers = signed_headers(args.channel, secret, "POST", "/v1/claims", int(time.time()), data)
    headers["Content-Type"] = "application/json"

    async def send() -> tuple[int, bytes]:
        async with aiohttp.ClientSession() as session:
            async with session.post(base + "/v1/claims", data=data, headers=headers) as resp:
                return resp.status, await resp.read()

    try:
        status, reply = _uvloop_run(send())
    except (aiohttp.ClientError, OSError) as exc:
        print(f"quanyi: cannot reach {base}: {exc}", file=sys.stderr)
        return 1
    print(status, reply.decode())
    return 0 if status < 400 else 1


if __name__ == "__main__":
    sys.exit(main())

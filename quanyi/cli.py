"""`quanyi`: migrate, serve, run workers, manage staff and channels, load demo data."""

from __future__ import annotations

import argparse
import asyncio
import atexit
import logging
import os
import shutil
import signal
import socket
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
        metrics_dir = tempfile.mkdtemp(prefix="quanyi-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
        atexit.register(shutil.rmtree, metrics_dir, True)
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
    worker.add_argument("kind", choices=["ledger", "fulfil"])
    worker.add_argument("--consumer", help="consumer name in the outbox group")
    run = command("run", _run, "migrate, then run the API and every worker in one process")
    run.add_argument("--host")
    run.add_argument("--port", type=int)
    run.add_argument(
        "--demo-vendor-sim",
        action="store_true",
        help="also run the DEMO simulated vendor on 127.0.0.1:8099 (see quanyi demo)",
    )

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

    sim = command("vendor-sim", _vendor_sim, "run the simulated vendor (a real HTTP server)")
    sim.add_argument("--host", default="127.0.0.1")
    sim.add_argument("--port", type=int, default=8099)
    sim.add_argument("--latency-ms", type=float, default=20.0)
    sim.add_argument("--jitter-ms", type=float, default=0.0)
    sim.add_argument("--error-rate", type=float, default=0.0)
    sim.add_argument("--timeout-rate", type=float, default=0.0)
    sim.add_argument(
        "--key-file", help="the vendor's private key (PEM): signs responses and callbacks"
    )

    vendor = sub.add_parser("vendor", help="manage vendors").add_subparsers(metavar="ACTION")
    keygen = vendor.add_parser(
        "keygen", help="make an RSA key pair: private.pem (0600), public.pem"
    )
    keygen.set_defaults(handler=_vendor_keygen)
    keygen.add_argument("--out", required=True, help="folder to write the pair to")
    v_create = vendor.add_parser("create", help="register a vendor")
    v_create.set_defaults(handler=_vendor_create)
    v_create.add_argument("--id", required=True)
    v_create.add_argument("--name", required=True)
    v_create.add_argument(
        "--adapter", required=True, choices=["http", "points", "codepool", "simulated"]
    )
    v_create.add_argument("--base-url")
    v_create.add_argument("--timeout-ms", type=int)
    v_create.add_argument("--max-in-flight", type=int)
    v_create.add_argument("--max-attempts", type=int)
    v_create.add_argument(
        "--public-key-file",
        action="append",
        default=[],
        help="the vendor's public key (PEM); twice while rotating",
    )
    v_create.add_argument("--signing-key", help="our private key: file:PATH or env:VARIABLE")
    v_list = vendor.add_parser("list", help="list vendors")
    v_list.set_defaults(handler=_vendor_list)
    codes = vendor.add_parser("import-codes", help="load voucher codes (CSV) into a code pool")
    codes.set_defaults(handler=_vendor_import_codes)
    codes.add_argument("--vendor", required=True)
    codes.add_argument("--right", required=True)
    codes.add_argument("--file", required=True)

    dlq = sub.add_parser("dlq", help="grants whose fulfilment failed").add_subparsers(
        metavar="ACTION"
    )
    dlq_list = dlq.add_parser("list", help="list dead-lettered fulfilments")
    dlq_list.set_defaults(handler=_dlq_list)
    dlq_list.add_argument("--limit", type=int, default=100)
    dlq_redrive = dlq.add_parser("redrive", help="put failed grants back for fulfilment")
    dlq_redrive.set_defaults(handler=_dlq_redrive)
    which = dlq_redrive.add_mutually_exclusive_group(required=True)
    which.add_argument("--all", action="store_true")
    which.add_argument("--grant", action="append", help="a grant id; repeat for more")

    statement = sub.add_parser("statement", help="vendor statements").add_subparsers(
        metavar="ACTION"
    )
    st_import = statement.add_parser("import", help="reconcile a vendor's daily statement (CSV)")
    st_import.set_defaults(handler=_statement_import)
    st_import.add_argument("--vendor", required=True)
    st_import.add_argument("--day", required=True, help="YYYY-MM-DD, local day")
    st_import.add_argument("--file", required=True)
    claim = command("claim", _claim, "send one signed claim to a running API, as a channel would")
    claim.add_argument("--campaign", required=True)
    claim.add_argument("--customer", required=True)
    claim.add_argument("--reward")
    claim.add_argument("--request-id", help="defaults to a fresh random id")
    claim.add_argument("--wait-ms", type=int, help="wait up to this long for the vendor (<= 800)")
    claim.add_argument("--channel", required=True)
    claim.add_argument("--secret", help="the channel secret; else QUANYI_CHANNEL_SECRET")
    claim.add_argument("--url", help="API base URL; defaults to the configured host and port")
    grant = command("grant", _grant, "read one grant (status, code, timeline), as a channel would")
    grant.add_argument("grant_id")
    grant.add_argument("--channel", required=True)
    grant.add_argument("--secret", help="the channel secret; else QUANYI_CHANNEL_SECRET")
    grant.add_argument("--url", help="API base URL; defaults to the configured host and port")
    rebuild = command(
        "rebuild-redis", _rebuild_redis, "restore Redis from the ledger after Redis lost its data"
    )
    rebuild.add_argument(
        "--quiet-s",
        type=float,
        default=10.0,
        help="refuse unless the newest outbox entry is at least this old (default 10)",
    )
    rebuild.add_argument(
        "--force", action="store_true", help="run even while claims flow (may lose some)"
    )
    command("reconcile", _reconcile, "compare Redis, the outbox, the ledger and vendor outcomes")
    return p


def _uvloop_run(coro: Awaitable[Any]) -> Any:
    import uvloop

    return uvloop.run(coro)  # type: ignore[arg-type]


async def _stores(settings: Any) -> tuple[Any, Any, Any]:
    from inventory.keys import Keys
    from quanyi.app import open_pool, open_redis

    redis = await open_redis(settings)
    try:
        pool = await open_pool(settings)
    except BaseException:
        await redis.aclose()
        raise
    return redis, pool, Keys(settings.key_prefix, settings.idempotency_buckets)


def _migrate(settings: Any, args: argparse.Namespace) -> int:
    from quanyi.db import migrate

    applied = _uvloop_run(migrate(settings.database_url))
    print(f"migrations applied: {', '.join(applied) if applied else 'none (up to date)'}")
    return 0


def _listen(host: str, port: int, reuse_port: bool) -> socket.socket:
    """A listening socket, made before anything else starts: a port that is taken fails here,
    at once and in one line, instead of after the workers started."""
    from quanyi.app import StartupError

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        sock = socket.create_server(
            (host, port), family=family, backlog=2048, reuse_port=reuse_port
        )
    except OSError as exc:
        raise StartupError(f"cannot listen on {host}:{port}: {_reason(exc)}") from None
    sock.setblocking(False)
    return sock


def _reason(exc: OSError) -> str:
    """`address already in use`, without the details socket.create_server adds."""
    if exc.errno and exc.errno > 0:
        return os.strerror(exc.errno).lower()
    return "the host name does not resolve" if exc.errno else str(exc).lower()


async def _serve_app(
    settings: Any,
    app: Any,
    host: str,
    port: int,
    reuse_port: bool,
    beside: tuple[Any, str, int] | None = None,
    banner: str | None = None,
) -> None:
    """Serve `app` until SIGINT or SIGTERM; `beside`, another (app, host, port) alongside;
    `banner` is printed once everything listens."""
    from aiohttp import web

    from quanyi.web import app_runner

    sites = [(app, host, port, reuse_port), *([(*beside, False)] if beside else [])]
    sockets: list[socket.socket] = []
    runners = []
    try:
        for _one, one_host, one_port, reuse in sites:
            sockets.append(_listen(one_host, one_port, reuse))
        for (one, one_host, one_port, _reuse), sock in zip(sites, sockets, strict=True):
            runner = app_runner(one, settings)  # our JSON for every error, the access log
            runners.append(runner)
            await runner.setup()
            await web.SockSite(runner, sock, backlog=2048).start()
            log.info("listening on http://%s:%d", one_host, one_port)
        if banner:
            print(banner, flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        log.info("shutting down")
    finally:
        for runner in reversed(runners):
            await runner.cleanup()
        for sock in sockets:
            sock.close()


def _serve(
    settings: Any,
    args: argparse.Namespace,
    workers: bool = False,
    beside: Any = None,
    banner: str | None = None,
) -> int:
    from quanyi.app import StartupError, create_app

    host = args.host or settings.http_host
    port = args.port or settings.http_port
    processes = getattr(args, "workers", 1)
    if processes <= 1:
        app = create_app(settings, workers=workers)
        _uvloop_run(_serve_app(settings, app, host, port, False, beside, banner))
        return 0
    import multiprocessing

    # The children share the port (SO_REUSEPORT): find out here, once, whether it is free.
    _listen(host, port, True).close()

    def child() -> None:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent relays Ctrl-C as SIGTERM
        try:
            _uvloop_run(_serve_app(settings, create_app(settings), host, port, True))
        except StartupError as exc:
            print(f"quanyi: {exc}", file=sys.stderr)
            sys.exit(1)

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
    beside = None
    banner: list[str] = []  # printed once everything listens
    if args.demo_vendor_sim:
        from quanyi.demo import DEMO_VENDOR, demo_keys
        from vendors.simulator import SimulatorConfig, create_simulator

        keys = demo_keys()
        sim = create_simulator(
            SimulatorConfig(
                private_key_pem=keys["vendor_private"].read_text(),
                client_public_key_pem=keys["ours_public"].read_text(),
            )
        )
        beside = (sim, "127.0.0.1", 8099)
        banner.append(
            f"quanyi: DEMO simulated vendor {DEMO_VENDOR} on http://127.0.0.1:8099 (/_sim/stats)"
        )
    banner.append(
        f"quanyi: API on http://{args.host or settings.http_host}:{args.port or settings.http_port}"
        " (claims /v1/claims, admin /admin/v1, /metrics, /readyz);"
        " ledger and fulfilment workers running. Ctrl-C stops."
    )
    return _serve(settings, args, workers=True, beside=beside, banner="\n".join(banner))


def _worker(settings: Any, args: argparse.Namespace) -> int:
    from prometheus_client import start_http_server

    from ledger.worker import LedgerWorker
    from quanyi.app import close_pool
    from quanyi.clock import system_clock
    from quanyi.supervisor import Supervisor
    from vendors.fulfil import FulfilmentWorker

    async def work() -> None:
        redis, pool, keys = await _stores(settings)

        def make() -> LedgerWorker | FulfilmentWorker:
            if args.kind == "ledger":
                return LedgerWorker(
                    redis,
                    pool,
                    keys,
                    consumer=args.consumer,
                    batch_size=settings.ledger_batch_size,
                    block_ms=settings.ledger_block_ms,
                    reclaim_idle_ms=settings.ledger_reclaim_idle_ms,
                    linger_ms=settings.ledger_linger_ms,
                )
            return FulfilmentWorker(
                redis,
                pool,
                keys,
                settings,
                system_clock,
                consumer=args.consumer,
                reclaim_idle_ms=settings.ledger_reclaim_idle_ms,
            )

        # A worker that dies is restarted, and said so on quanyi_worker_up{worker}.
        supervisor = Supervisor(args.kind, make)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, supervisor.stop)
        try:
            await supervisor.run()
        finally:
            await close_pool(pool)
            await redis.aclose()

    # Each kind has its own port, so both workers can run on one host.
    port = settings.worker_metrics_port
    if port:
        port += 0 if args.kind == "ledger" else 1
        try:
            start_http_server(port, addr=settings.http_host)
        except OSError as exc:
            from quanyi.app import StartupError

            raise StartupError(
                f"cannot listen on {settings.http_host}:{port} (metrics): {_reason(exc)}"
            ) from None
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
    from access.secret_box import secret_box
    from quanyi.db import create_pool
    from quanyi.validation import IDENT, looks_like_card_number

    if not IDENT.match(args.id) or looks_like_card_number(args.id):
        print("quanyi: channel id: 1-64 letters, digits, _ . : -, no card number", file=sys.stderr)
        return 2
    box = secret_box(settings)  # sealed at rest: refuses to run without a usable key

    async def create() -> str:
        pool = await create_pool(settings.database_url)
        try:
            return await create_channel(pool, args.id, args.secret, box=box)
        finally:
            await pool.close()

    secret = _uvloop_run(create())
    if args.secret:
        print(f"channel {args.id} created")
    else:
        print(f"channel {args.id} created; its secret (shown once, keep it safe):\n{secret}")
    return 0


def _demo(settings: Any, args: argparse.Namespace) -> int:
    from access.secret_box import secret_box
    from quanyi.app import close_pool
    from quanyi.demo import DEMO_CHANNEL, DEMO_CHANNEL_SECRET, DEMO_PASSWORD, load_demo

    async def load() -> list[str]:
        redis, pool, keys = await _stores(settings)
        try:
            return await load_demo(pool, redis, keys, secret_box(settings))
        finally:
            await close_pool(pool)
            await redis.aclose()

    created = _uvloop_run(load())
    print("DEMO data " + ("loaded: " + ", ".join(created) if created else "already present"))
    print(f"  DEMO staff demo-marketer / demo-approver / demo-admin, password {DEMO_PASSWORD}")
    print(f"  DEMO channel {DEMO_CHANNEL}, secret {DEMO_CHANNEL_SECRET}")
    return 0


def _claim(settings: Any, args: argparse.Namespace) -> int:
    import uuid

    body: dict[str, Any] = {
        "request_id": args.request_id or uuid.uuid4().hex,
        "campaign_id": args.campaign,
        "customer_id": args.customer,
    }
    if args.reward:
        body["reward_id"] = args.reward
    if args.wait_ms:
        body["wait_ms"] = args.wait_ms
    return _channel_call(settings, args, "POST", "/v1/claims", body)


def _grant(settings: Any, args: argparse.Namespace) -> int:
    return _channel_call(settings, args, "GET", f"/v1/grants/{args.grant_id}", None)


def _channel_call(
    settings: Any, args: argparse.Namespace, method: str, path: str, body: Any
) -> int:
    """One signed request, as a channel sends it; prints the status and the reply."""
    import time

    import aiohttp
    import orjson

    from access.signing import signed_headers

    secret = args.secret or os.environ.get("QUANYI_CHANNEL_SECRET")
    if not secret:
        print("quanyi: give --secret or set QUANYI_CHANNEL_SECRET", file=sys.stderr)
        return 2
    data = orjson.dumps(body) if body is not None else b""
    base = args.url or f"http://{settings.http_host}:{settings.http_port}"
    headers = signed_headers(args.channel, secret, method, path, int(time.time()), data)
    headers["Content-Type"] = "application/json"

    async def send() -> tuple[int, bytes]:
        async with aiohttp.ClientSession() as session:
            async with session.request(method, base + path, data=data, headers=headers) as resp:
                return resp.status, await resp.read()

    try:
        status, reply = _uvloop_run(send())
    except (aiohttp.ClientError, OSError) as exc:
        print(f"quanyi: cannot reach {base}: {exc}", file=sys.stderr)
        return 1
    print(status, reply.decode())
    return 0 if status < 400 else 1


def _with_stores(settings: Any, job: Callable[..., Awaitable[Any]]) -> Any:
    """Run `job(pool, redis, keys)` with the stores open, closing them after."""
    from quanyi.app import close_pool

    async def run() -> Any:
        redis, pool, keys = await _stores(settings)
        try:
            return await job(pool, redis, keys)
        finally:
            await close_pool(pool)
            await redis.aclose()

    return _uvloop_run(run())


def _vendor_sim(settings: Any, args: argparse.Namespace) -> int:
    from pathlib import Path

    from vendors.simulator import SimulatorConfig, run_simulator

    config = SimulatorConfig(
        latency_ms=args.latency_ms,
        jitter_ms=args.jitter_ms,
        error_rate=args.error_rate,
        timeout_rate=args.timeout_rate,
        private_key_pem=Path(args.key_file).read_text() if args.key_file else None,
    )
    print(
        f"vendor simulator on http://{args.host}:{args.port} (control: /_sim/stats, /_sim/config)"
    )
    _uvloop_run(run_simulator(args.host, args.port, config))
    return 0


def _vendor_keygen(settings: Any, args: argparse.Namespace) -> int:
    from pathlib import Path

    from vendors.commands import keygen

    private, public = keygen(Path(args.out))
    print(f"private key: {private} (keep it secret; register it as file:{private.resolve()})")
    print(f"public key:  {public} (give it to the other side)")
    return 0


def _vendor_create(settings: Any, args: argparse.Namespace) -> int:
    from pathlib import Path

    from vendors.commands import create_vendor

    body: dict[str, Any] = {"id": args.id, "name": args.name, "adapter": args.adapter}
    for name in ("base_url", "timeout_ms", "max_in_flight", "signing_key"):
        if getattr(args, name) is not None:
            body[name] = getattr(args, name)
    if args.max_attempts is not None:
        body["retry"] = {"max_attempts": args.max_attempts}
    body["public_keys"] = [Path(p).read_text() for p in args.public_key_file]
    vendor = _with_stores(settings, lambda pool, redis, keys: create_vendor(pool, body))
    print(f"vendor {vendor.id} created ({vendor.adapter})")
    return 0


def _vendor_list(settings: Any, args: argparse.Namespace) -> int:
    from vendors.commands import list_vendors

    for v in _with_stores(settings, lambda pool, redis, keys: list_vendors(pool)):
        print(
            f"{v.id}\t{v.adapter}\t{v.base_url or '-'}\tin-flight {v.max_in_flight}"
            f"\ttimeout {v.timeout_ms} ms\tattempts {v.max_attempts}\tkeys {len(v.public_keys)}"
        )
    return 0


def _vendor_import_codes(settings: Any, args: argparse.Namespace) -> int:
    from pathlib import Path

    from vendors.commands import import_codes

    result = _with_stores(
        settings,
        lambda pool, redis, keys: import_codes(
            pool, redis, keys, args.vendor, args.right, Path(args.file)
        ),
    )
    print(
        f"read {result['read']}, added {result['added']}, refused as duplicates "
        f"{result['duplicates']}; pool now holds {result['pool']} codes"
    )
    return 0


def _dlq_list(settings: Any, args: argparse.Namespace) -> int:
    from vendors.commands import dead_letters

    entries = _with_stores(
        settings, lambda pool, redis, keys: dead_letters(redis, keys, args.limit)
    )
    for e in entries:
        print(
            f"{e['id']}\t{e['grant_id']}\t{e['vendor_id']}\tattempts {e['attempts']}"
            f"\t{e['at']}\t{e['error']}"
        )
    print(f"{len(entries)} dead-lettered fulfilments")
    return 0


def _dlq_redrive(settings: Any, args: argparse.Namespace) -> int:
    from vendors.commands import redrive

    wanted = None if args.all else set(args.grant)
    results = _with_stores(
        settings, lambda pool, redis, keys: redrive(pool, redis, keys, settings, wanted)
    )
    for grant_id, outcome in results:
        print(f"{grant_id}\t{outcome}")
    print(f"{sum(1 for _, o in results if o == 'redriven')} of {len(results)} redriven")
    return 0


def _statement_import(settings: Any, args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from vendors.commands import cli_staff
    from vendors.statements import reconcile

    text = Path(args.file).read_text(encoding="utf-8-sig")
    report = _with_stores(
        settings,
        lambda pool, redis, keys: reconcile(
            pool, cli_staff(), args.vendor, args.day, text, settings.zone
        ),
    )
    print(json.dumps({"statement_id": report["statement_id"], "summary": report["summary"]}))
    for bucket in ("mismatched", "missing_ours", "missing_theirs"):
        for entry in report[bucket]:
            print(f"{bucket}\t{json.dumps(entry)}")
    return 0


def _rebuild_redis(settings: Any, args: argparse.Namespace) -> int:
    from rich.progress import Progress

    from ledger.rebuild import ClaimsFlowing, Rebuild, refuse_while_flowing
    from quanyi.clock import system_clock

    async def job(pool: Any, redis: Any, keys: Any) -> Any:
        if not args.force:
            await refuse_while_flowing(redis, keys, system_clock(), args.quiet_s)
        rebuild = Rebuild(pool, redis, keys, settings, system_clock)
        with Progress() as progress:
            task = progress.add_task("restoring redis", total=await rebuild.total())
            return await rebuild.run(lambda n: progress.advance(task, n))

    try:
        restored = _with_stores(settings, job)
    except ClaimsFlowing as exc:
        print(f"quanyi: refusing to rebuild: {exc}; stop the API or pass --force", file=sys.stderr)
        return 1
    for what, count in restored.items():
        print(f"restored {count} {what}")
    return 0


def _reconcile(settings: Any, args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from ledger.reconcile import Reconcile, drifted
    from quanyi.clock import system_clock

    findings = _with_stores(
        settings,
        lambda pool, redis, keys: Reconcile(pool, redis, keys, settings, system_clock).run(),
    )
    drift = drifted(findings)
    table = Table(title="drift" if drift else "reconciliation")
    for column in ("check", "subject", "redis", "ledger", ""):
        table.add_column(column)
    for f in findings:
        table.add_row(f.check, f.subject, str(f.redis), str(f.ledger), "ok" if f.ok else "DRIFT")
    console = Console()
    console.print(table)
    if drift:
        console.print(f"{len(drift)} checks drift")
        return 1
    console.print("in agreement")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""`quanyi serve`, `quanyi run` and `quanyi worker`: the API and the workers, each until SIGINT
or SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import atexit
import contextlib
import functools
import gc
import logging
import multiprocessing
import os
import shutil
import signal
import socket
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass

import uvloop
from aiohttp import web
from prometheus_client import start_http_server

from quanyi.cli.command import Commands, add_command, start_logging
from quanyi.cli.demo import DEMO_VENDOR, DEMO_VENDOR_HOST, DEMO_VENDOR_PORT, demo_keys
from quanyi.cli.store import apply_migrations
from quanyi.core.errors import StartupError
from quanyi.core.settings import Settings
from quanyi.core.supervisor import Supervisor, Worker
from quanyi.runtime import open_stores
from quanyi.vendors.simulator import SimulatorConfig, create_simulator
from quanyi.web.app import create_app
from quanyi.web.middleware import app_runner

log = logging.getLogger("quanyi")

BACKLOG = 2048
# Worker kinds, each with its metrics port: QUANYI_WORKER_METRICS_PORT plus this.
WORKER_KINDS = {"ledger": 0, "fulfil": 1, "schedule": 2, "webhook": 3, "issuance": 4}
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def register(commands: Commands) -> None:
    serve = add_command(commands, "serve", serve_api)
    serve.add_argument("--workers", type=int, default=1, help="API processes sharing the port")
    _listen_options(serve)
    worker = add_command(commands, "worker", run_worker)
    worker.add_argument(
        "kind",
        choices=list(WORKER_KINDS),
        help="ledger: the outbox into the PostgreSQL ledger; fulfil: grants to their vendors;"
        " schedule: campaigns at their window's edges, stock watch; webhook: notifications to"
        " QUANYI_WEBHOOK_URL; issuance: approved bulk issuances",
    )
    worker.add_argument(
        "--consumer",
        help="consumer name in the outbox group (default: host name and process id)",
    )
    run = add_command(commands, "run", run_all)
    _listen_options(run)
    run.add_argument(
        "--demo-vendor-sim",
        action="store_true",
        help=f"also run the DEMO simulated vendor on {DEMO_VENDOR_HOST}:{DEMO_VENDOR_PORT}"
        " (see quanyi demo)",
    )


def _listen_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--host",
        help=f"address to listen on (default: QUANYI_HTTP_HOST, else {Settings.http_host})",
    )
    parser.add_argument(
        "--port",
        type=int,
        help=f"port to listen on (default: QUANYI_HTTP_PORT, else {Settings.http_port})",
    )


async def serve_api(settings: Settings, args: argparse.Namespace) -> int:
    host, port = args.host or settings.http_host, args.port or settings.http_port
    if args.workers > 1:
        return await _serve_processes(settings, host, port, args.workers)
    await serve_until_stopped(settings, [Site(create_app(settings), host, port)])
    return 0


async def run_all(settings: Settings, args: argparse.Namespace) -> int:
    await apply_migrations(settings)
    host, port = args.host or settings.http_host, args.port or settings.http_port
    sites = [Site(create_app(settings, workers=True), host, port)]
    banner = []  # printed once everything listens
    if args.demo_vendor_sim:
        keys = demo_keys()
        sim = create_simulator(
            SimulatorConfig(
                private_key_pem=keys["vendor_private"].read_text(),
                client_public_key_pem=keys["ours_public"].read_text(),
            )
        )
        sites.append(Site(sim, DEMO_VENDOR_HOST, DEMO_VENDOR_PORT))
        banner.append(
            f"quanyi: DEMO simulated vendor {DEMO_VENDOR} on"
            f" http://{DEMO_VENDOR_HOST}:{DEMO_VENDOR_PORT} (/_sim/stats)"
        )
    banner.append(
        f"quanyi: API on http://{host}:{port}"
        " (claims /v1/claims, admin /admin/v1, /metrics, /readyz);"
        " ledger, fulfilment, scheduler, webhook and issuance workers running. Ctrl-C stops."
    )
    await serve_until_stopped(settings, sites, "\n".join(banner))
    return 0


async def run_worker(settings: Settings, args: argparse.Namespace) -> int:
    _serve_worker_metrics(settings, args.kind)
    async with open_stores(settings) as stores:
        make: Callable[[], Worker]
        if args.kind == "schedule":
            make = stores.scheduler
        elif args.kind == "issuance":
            make = stores.issuance_worker
        elif args.kind == "webhook":
            stores.webhook_sender()  # a URL without its secret stops the start here
            make = stores.webhook_sender
        else:
            outbox = stores.ledger_worker if args.kind == "ledger" else stores.fulfilment_worker
            make = functools.partial(outbox, args.consumer)
        # A worker that dies is restarted, and said so on quanyi_worker_up{worker}.
        supervisor = Supervisor(args.kind, make)
        loop = asyncio.get_running_loop()
        for sig in STOP_SIGNALS:
            loop.add_signal_handler(sig, supervisor.stop)
        await supervisor.run()
    return 0


def _serve_worker_metrics(settings: Settings, kind: str) -> None:
    """Each kind has its own port, so both workers can run on one host (0: no metrics)."""
    port = settings.worker_metrics_port
    if not port:
        return
    port += WORKER_KINDS[kind]
    try:
        start_http_server(port, addr=settings.http_host)
    except OSError as exc:
        raise StartupError(
            f"cannot listen on {settings.http_host}:{port} (metrics): {_reason(exc)}"
        ) from None


@dataclass(frozen=True)
class Site:
    """An app and where it listens."""

    app: web.Application
    host: str
    port: int
    reuse_port: bool = False


async def serve_until_stopped(
    settings: Settings, sites: list[Site], banner: str | None = None
) -> None:
    """Serve each site until SIGINT or SIGTERM; `banner` is printed once all of them listen."""
    # Every socket first: a port that is taken fails before any app starts.
    sockets: list[socket.socket] = []
    runners: list[web.AppRunner] = []
    try:
        for site in sites:
            sockets.append(listen(site.host, site.port, site.reuse_port))
        for site, sock in zip(sites, sockets, strict=True):
            runner = app_runner(site.app, settings)  # our JSON for every error, the access log
            runners.append(runner)
            await runner.setup()
            await web.SockSite(runner, sock, backlog=BACKLOG).start()
            log.info("listening on http://%s:%d", site.host, site.port)
        # What start-up made (modules, schemas, routes, the stores' clients) lives as long as
        # the process: frozen out of the collector, a full collection no longer walks its ~85k
        # objects (~50-100 ms each on this machine under claims, a pause every few seconds).
        gc.freeze()
        if banner:
            print(banner, flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in STOP_SIGNALS:
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        log.info("shutting down")
    finally:
        for runner in reversed(runners):
            await runner.cleanup()
        for sock in sockets:
            sock.close()


def listen(host: str, port: int, reuse_port: bool) -> socket.socket:
    """A listening socket, made before anything else starts: a port that is taken fails here,
    at once and in one line, instead of after the workers started."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        sock = socket.create_server(
            (host, port), family=family, backlog=BACKLOG, reuse_port=reuse_port
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


async def _serve_processes(settings: Settings, host: str, port: int, processes: int) -> int:
    """`processes` API processes sharing the port (SO_REUSEPORT) until SIGINT or SIGTERM; 1
    when one of them ended by itself."""
    listen(host, port, reuse_port=True).close()  # whether the port is free, found out once
    _share_metrics()
    # Fresh processes, not forks of this one: prometheus_client reads the metrics folder when
    # first imported, and a fork of a running event loop is not safe.
    spawn = multiprocessing.get_context("spawn")
    procs = [
        spawn.Process(target=_serve_child, args=(settings, host, port), name=f"quanyi-api-{i}")
        for i in range(processes)
    ]
    # Ctrl-C reaches every process of the terminal: the children ignore it (an ignored signal
    # stays ignored in a new process, from its first instruction) and the parent relays it.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    for proc in procs:
        proc.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in STOP_SIGNALS:
        loop.add_signal_handler(sig, stop.set)
    while not stop.is_set() and all(proc.is_alive() for proc in procs):
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.5)
    for proc in procs:
        proc.terminate()  # each child shuts down cleanly on SIGTERM
    for proc in procs:
        await asyncio.to_thread(proc.join, 15)
    return 0 if stop.is_set() else 1


def _share_metrics() -> None:
    """The API processes write their metrics to files in one folder, so /metrics on any of
    them reports them all."""
    if "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
        folder = tempfile.mkdtemp(prefix="quanyi-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = folder
        atexit.register(shutil.rmtree, folder, True)


def _serve_child(settings: Settings, host: str, port: int) -> None:
    """One API process of `quanyi serve --workers N`."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent relays Ctrl-C as SIGTERM
    start_logging(settings.log_level)
    try:
        uvloop.run(serve_until_stopped(settings, [Site(create_app(settings), host, port, True)]))
    except StartupError as exc:
        print(f"quanyi: {exc}", file=sys.stderr)
        sys.exit(1)

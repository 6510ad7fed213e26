"""The shipped deploy files run for real: `quanyi serve` processes on ports of their own, and
Debian's nginx running deploy/nginx/ on a scratch port and directory in front of them.

    with api_process(port, tmp_path / "api.log") as proc:     # python -m quanyi.cli serve
        ...
    async with nginx(tmp_path, [port_a, port_b]) as (base, access_log):
        ...
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp

from tests.support.cli import ROOT, cli_env
from tests.support.scratch import free_port

NGINX_DIR = ROOT / "deploy" / "nginx"
UPSTREAM_SERVER = re.compile(r"^(\s*)server 127\.0\.0\.1:\d+( [^;]*)?;\n", re.MULTILINE)


def tool(name: str) -> str:
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")
    assert found, f"{name} is missing: `make test` installs it (deploy/tools.sh {name})"
    return found


def render_nginx(root: Path, listen_port: int, api_ports: list[int]) -> Path:
    """deploy/nginx/quanyi.conf with only what a scratch run must change: its upstream servers
    (their options kept), the port it listens on, its log files; quanyi-proxy.conf as shipped,
    beside it. Returns the main configuration that includes them, as Debian's nginx.conf does."""
    shipped = (NGINX_DIR / "quanyi.conf").read_text()
    servers = list(UPSTREAM_SERVER.finditer(shipped))
    assert servers, "no `server 127.0.0.1:PORT ...;` line in the upstream"
    indent, options = servers[0].group(1), servers[0].group(2) or ""
    lines = "".join(f"{indent}server 127.0.0.1:{port}{options};\n" for port in api_ports)
    text = shipped[: servers[0].start()] + lines + shipped[servers[-1].end() :]
    assert shipped.count("\n    listen 80;\n") == 1
    text = text.replace("\n    listen 80;\n", f"\n    listen 127.0.0.1:{listen_port};\n")
    assert shipped.count("/var/log/nginx/") == 2
    text = text.replace("/var/log/nginx/", f"{root}/")
    (root / "quanyi.conf").write_text(text)
    shutil.copy(NGINX_DIR / "quanyi-proxy.conf", root / "quanyi-proxy.conf")
    temp_paths = "".join(
        f"    {kind}_temp_path {root}/{kind};\n"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    main = root / "nginx.conf"
    main.write_text(
        f"error_log {root}/error.log warn;\n"
        "worker_processes 1;\n"
        "events { worker_connections 256; }\n"
        "http {\n"
        f"{temp_paths}"
        "    include quanyi.conf;\n"
        "}\n"
    )
    return main


@contextlib.asynccontextmanager
async def nginx(root: Path, api_ports: list[int]) -> AsyncIterator[tuple[str, Path]]:
    """nginx in the foreground on a free loopback port; yields its base URL and access log.
    Only this nginx is stopped on the way out."""
    proc, port = _start_nginx(root, api_ports)
    base = f"http://127.0.0.1:{port}"
    try:
        await _until_answering(f"{base}/healthz", proc, root / "error.log")
        yield base, root / "quanyi.access.log"
    finally:
        proc.send_signal(signal.SIGQUIT)  # nginx's graceful stop
        try:
            await asyncio.to_thread(proc.wait, 10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _start_nginx(root: Path, api_ports: list[int]) -> tuple[subprocess.Popen[bytes], int]:
    root.mkdir(parents=True, exist_ok=True)
    port = free_port()
    main = render_nginx(root, port, api_ports)
    argv = [tool("nginx"), "-p", f"{root}/", "-e", f"{root}/error.log", "-c", str(main)]
    checked = subprocess.run([*argv, "-t"], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stderr
    proc = subprocess.Popen(
        [*argv, "-g", f"daemon off; pid {root}/nginx.pid;"],
        stdout=subprocess.DEVNULL,
        stderr=(root / "nginx.stderr").open("wb"),
    )
    return proc, port


@contextlib.contextmanager
def api_process(port: int, log: Path, **env: str) -> Iterator[subprocess.Popen[bytes]]:
    """`quanyi serve --port PORT` on this run's test stores, its stderr (the access log
    included) in `log`; killed on the way out unless it ended already."""
    with log.open("ab") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "quanyi.cli", "serve", "--port", str(port)],
            cwd=ROOT,
            env=cli_env(QUANYI_HTTP_HOST="127.0.0.1", **env),
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


async def until_api_answers(port: int, proc: subprocess.Popen[bytes], log: Path) -> None:
    await _until_answering(f"http://127.0.0.1:{port}/healthz", proc, log)


async def _until_answering(url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    async with aiohttp.ClientSession() as session:
        for _ in range(300):
            if proc.poll() is not None:
                raise AssertionError(f"{url}: the process exited: {_tail(log)}")
            try:
                async with session.get(url) as resp:
                    if resp.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
    raise AssertionError(f"{url} did not answer within 30 s: {_tail(log)}")


def _tail(log: Path) -> str:
    return log.read_text()[-2000:] if log.exists() else "(no log)"

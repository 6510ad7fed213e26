"""The monitoring shipped in deploy/: the alert rules pass `promtool check rules` and their unit
tests, every metric the rules and the Grafana dashboards name is one the service exports, and a
real Prometheus (Debian's package) scrapes a running API's /metrics, loads the rules and answers
every dashboard query."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import shutil
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client.metrics import MetricWrapperBase

from quanyi.core import metrics
from tests.support.clients import Api, claim
from tests.support.scratch import free_port

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
RULES = DEPLOY / "prometheus" / "alerts.yml"
RULE_TESTS = DEPLOY / "prometheus" / "alerts_test.yml"
DASHBOARDS = sorted((DEPLOY / "grafana").glob("*.json"))
METRIC_NAME = re.compile(r"\b(quanyi_[a-z_]+)")
# What Grafana puts in a query before it reaches Prometheus.
GRAFANA_VARIABLES = {"$__rate_interval": "1m"}

pytestmark = pytest.mark.usefixtures("signed_in")


def tool(name: str) -> str:
    found = shutil.which(name)
    assert found, f"{name} is missing: `make test` installs Debian's prometheus package"
    return found


def dashboard_queries() -> list[tuple[str, str, str]]:
    """(dashboard, panel, expression) of every query of every dashboard."""
    queries = []
    for path in DASHBOARDS:
        board = json.loads(path.read_text())
        for panel in board["panels"]:
            for target in panel["targets"]:
                queries.append((path.name, panel["title"], target["expr"]))
    return queries


def exported_series() -> set[str]:
    """The names of the series the service's metrics can produce, as /metrics spells them."""
    names = set()
    for value in vars(metrics).values():
        if not isinstance(value, MetricWrapperBase):
            continue
        for family in value.describe():
            if family.type == "counter":
                names.add(f"{family.name}_total")
            elif family.type == "histogram":
                names.update(f"{family.name}_{s}" for s in ("bucket", "count", "sum"))
            else:
                names.add(family.name)
    return names


async def test_the_alert_rules_pass_promtool_check():
    result = subprocess.run(
        [tool("promtool"), "check", "rules", str(RULES)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"SUCCESS: \d+ rules found", result.stdout)


async def test_each_alert_fires_on_its_unit_test_series():
    """deploy/prometheus/alerts_test.yml: every alert raised by the series that should raise
    it, with its labels and text, and quiet on healthy ones."""
    result = subprocess.run(
        [tool("promtool"), "test", "rules", RULE_TESTS.name],
        capture_output=True,
        text=True,
        cwd=RULE_TESTS.parent,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    tested = set(re.findall(r"alertname: (\w+)", RULE_TESTS.read_text()))
    defined = set(re.findall(r"- alert: (\w+)", RULES.read_text()))
    assert tested == defined


async def test_every_metric_the_rules_and_dashboards_name_is_exported():
    exported = exported_series()
    named = {(RULES.name, m) for m in METRIC_NAME.findall(RULES.read_text())}
    named |= {
        (f"{board}: {panel}", m)
        for board, panel, e in dashboard_queries()
        for m in METRIC_NAME.findall(e)
    }
    unknown = sorted((where, m) for where, m in named if m not in exported)
    assert named and unknown == []


async def test_the_dashboards_are_grafana_dashboards_with_unique_ids():
    assert len(DASHBOARDS) >= 4
    uids = [json.loads(p.read_text())["uid"] for p in DASHBOARDS]
    assert len(set(uids)) == len(uids)
    for path in DASHBOARDS:
        board = json.loads(path.read_text())
        assert board["title"].startswith("Quanyi")
        assert [v["name"] for v in board["templating"]["list"]] == ["datasource"]
        for panel in board["panels"]:
            assert panel["datasource"]["uid"] == "${datasource}"
            assert panel["targets"], panel["title"]


@contextlib.asynccontextmanager
async def prometheus(tmp_path: Path, target: str) -> AsyncIterator[str]:
    """A Prometheus of its own (scratch port and directory) scraping `target` every second
    with the shipped rules loaded; only this process is stopped on the way out."""
    port = free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        f"rule_files: [{json.dumps(str(RULES))}]\n"
        "scrape_configs:\n"
        "  - job_name: quanyi\n"
        f"    static_configs: [{{targets: [{json.dumps(target)}]}}]\n"
    )
    proc = await asyncio.create_subprocess_exec(
        tool("prometheus"),
        f"--config.file={config}",
        f"--storage.tsdb.path={tmp_path / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        stdout=asyncio.subprocess.DEVNULL,
        stderr=(tmp_path / "prometheus.log").open("wb"),
    )
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), 10)
        except TimeoutError:
            proc.kill()
            await proc.wait()


async def query(http: aiohttp.ClientSession, url: str, expr: str) -> dict[str, Any]:
    async with http.get(f"{url}/api/v1/query", params={"query": expr}) as resp:
        return await resp.json()


async def eventually(probe: Any, timeout_s: float = 30.0) -> Any:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        try:
            found = await probe()
        except aiohttp.ClientError:
            found = None
        if found:
            return found
        assert asyncio.get_running_loop().time() < deadline, "Prometheus never got there"
        await asyncio.sleep(0.5)


async def test_a_real_prometheus_scrapes_the_api_and_answers_every_dashboard_query(
    api: Api, c1: Any, tmp_path: Path
):
    status, _ = await claim(api, "r-1", "C0001")
    assert status == 201
    server = api.client.server
    async with prometheus(tmp_path, f"{server.host}:{server.port}") as url:
        async with aiohttp.ClientSession() as http:

            async def scraped() -> Any:
                up = await query(http, url, 'up{job="quanyi"}')
                return [r for r in up["data"]["result"] if r["value"][1] == "1"]

            await eventually(scraped)

            async def granted() -> Any:
                found = await query(
                    http, url, 'quanyi_claim_duration_seconds_count{outcome="granted"}'
                )
                return found["data"]["result"]

            [series] = await eventually(granted)
            assert float(series["value"][1]) >= 1

            async def stock_share() -> Any:
                found = await query(
                    http, url, 'quanyi_stock_remaining{campaign="c1"} / quanyi_stock_total'
                )
                return found["data"]["result"]

            # c1's reward r1 has a stock of 100 and granted one: what QuanyiStockLow divides.
            [share] = await eventually(stock_share)
            assert (share["metric"]["reward"], float(share["value"][1])) == ("r1", 0.99)

            async with http.get(f"{url}/api/v1/rules") as resp:
                groups = (await resp.json())["data"]["groups"]
            rules = [r for g in groups for r in g["rules"]]
            assert {r["name"] for r in rules} == set(
                re.findall(r"- alert: (\w+)", RULES.read_text())
            )
            assert {r["health"] for r in rules} <= {"ok", "unknown"}

            for board, panel, expr in dashboard_queries():
                for variable, value in GRAFANA_VARIABLES.items():
                    expr = expr.replace(variable, value)
                answer = await query(http, url, expr)
                assert answer["status"] == "success", (board, panel, answer)

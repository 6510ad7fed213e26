"""The staff console's pictures in README (docs/console-*.png), taken of the DEMO data:

    .venv/bin/python -m tests.support.console_screenshots

`quanyi demo`'s data is loaded into this run's own test database and Redis prefix (never the
service's), a few more DEMO campaigns are made through the admin API, and customers are offered
and claim them through the channel API over the last two weeks (the API runs, with its workers,
on a clock that walks through those days). Then Debian's chromium logs in as demo staff and
takes the dashboard, the campaign list and a pending campaign with its dry run. The database and
the keys are dropped at the end. Chinese needs a CJK font (Debian: fonts-wqy-microhei).
"""

from __future__ import annotations

import asyncio
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import orjson
from aiohttp import web
from redis.asyncio import Redis

from quanyi.access.secret_box import secret_box
from quanyi.access.signing import signed_headers
from quanyi.cli.demo import DEMO_CHANNEL, DEMO_CHANNEL_SECRET, DEMO_PASSWORD, load_demo
from quanyi.stores.db import migrate
from quanyi.stores.keys import Keys
from quanyi.web.app import create_app
from quanyi.web.middleware import app_runner
from tests.support.browser import chromium, new_page
from tests.support.clock import FakeClock
from tests.support.settings import (
    TEST_DATABASE_URL,
    TEST_PREFIX,
    TEST_REDIS_URL,
    settings_for_tests,
)
from tests.support.stores import delete_test_keys, drop_test_database

DOCS = Path(__file__).resolve().parents[2] / "docs"
DAYS = 14
DAY_S = 86_400.0
# (id, name, branch, maker, stock, claims a day at most)
CAMPAIGNS = (
    ("demo-dining-fortnight", "DEMO 餐饮双周礼：刷卡享咖啡", "HQ", "demo-marketer", 3000, 90),
    ("demo-new-card", "DEMO 新卡首刷礼", "SZ", "demo-sz-marketer", 1500, 45),
    ("demo-weekend-latte", "DEMO 周末拿铁（限量）", "HQ", "demo-marketer", 200, 30),
)
PENDING = "demo-spring-spend"


class Demo:
    """The API on a walking clock, seen as the DEMO channel and DEMO staff see it."""

    def __init__(self, base: str, clock: FakeClock, http: aiohttp.ClientSession) -> None:
        self.base, self.clock, self.http = base, clock, http
        self.tokens: dict[str, str] = {}  # emptied when the clock jumps: sessions expire

    async def staff(self, user: str, method: str, path: str, body: Any = None) -> Any:
        if user not in self.tokens:
            login = {"username": user, "password": DEMO_PASSWORD}
            async with self.http.post(f"{self.base}/admin/v1/login", json=login) as resp:
                self.tokens[user] = (await resp.json())["token"]
        token = self.tokens[user]
        async with self.http.request(
            method, self.base + path, json=body, headers={"Authorization": f"Bearer {token}"}
        ) as resp:
            reply = await resp.json()
            assert resp.status < 300, (path, resp.status, reply)
            return reply

    async def channel(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        data = b"" if body is None else orjson.dumps(body)
        headers = signed_headers(
            DEMO_CHANNEL, DEMO_CHANNEL_SECRET, method, path, int(self.clock()), data
        )
        headers["Content-Type"] = "application/json"
        async with self.http.request(method, self.base + path, data=data, headers=headers) as r:
            return r.status, await r.json()


def window(clock: FakeClock, days: float) -> dict[str, str]:
    def at(t: float) -> str:
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))

    return {"starts_at": at(clock() - 3600), "ends_at": at(clock() + days * DAY_S)}


async def campaigns(demo: Demo) -> None:
    for campaign_id, name, branch, maker, stock, _ in CAMPAIGNS:
        reward = {"id": "coffee", "right_id": "demo-coffee", "stock": stock}
        body = {"id": campaign_id, "name": name, "branch": branch, "channels": [DEMO_CHANNEL]}
        body |= window(demo.clock, 45) | {"rewards": [reward | {"per_customer_limit": 1}]}
        await demo.staff(maker, "POST", "/admin/v1/campaigns", body)
        await demo.staff(maker, "POST", f"/admin/v1/campaigns/{campaign_id}/submit")
        await demo.staff("demo-approver", "POST", f"/admin/v1/campaigns/{campaign_id}/approve")


async def two_weeks_of_claims(demo: Demo) -> None:
    rng = random.Random(7)
    customer = 0
    for day in range(DAYS):
        demo.clock.now = START + day * DAY_S
        for campaign_id, *_, most in CAMPAIGNS:
            for _ in range(rng.randint(most // 3, most)):
                customer += 1
                who = f"C{100000 + customer}"
                await demo.channel("GET", f"/v1/customers/{who}/offers")
                if rng.random() < 0.7:  # some customers see the offer and leave it
                    body = {"request_id": f"shot-{customer}", "campaign_id": campaign_id}
                    await demo.channel("POST", "/v1/claims", body | {"customer_id": who})
        await asyncio.sleep(1.2)  # the offers seen are counted once a second


async def pending_campaign(demo: Demo) -> None:
    goal = {"window": "month", "count": 3, "min_amount": 5000}
    reward = {"id": "coffee", "right_id": "demo-coffee", "stock": 800, "per_customer_limit": 1}
    body = {"id": PENDING, "name": "DEMO 当月消费满 3 笔（每笔 50 元起）送咖啡", "branch": "HQ"}
    body |= {"channels": [DEMO_CHANNEL], "budget": 1_000_000} | window(demo.clock, 30)
    body["rewards"] = [reward | {"goal": goal}]
    await demo.staff("demo-marketer", "POST", "/admin/v1/campaigns", body)
    await demo.staff("demo-marketer", "POST", f"/admin/v1/campaigns/{PENDING}/submit")


def past_transactions(path: Path, clock: FakeClock) -> None:
    rng = random.Random(11)
    lines = ["customer_id,amount,mcc,occurred_at"]
    for _ in range(1500):
        # within the campaign's window (it opens now): a sample of what its first days may bring
        moment = clock() + 3600 + rng.random() * 8 * DAY_S
        at = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(moment))
        lines.append(f"C{200000 + rng.randint(0, 400)},{rng.choice([3000, 6800, 12000])},5812,{at}")
    path.write_text("\n".join(lines) + "\n")


async def drained(demo: Demo) -> None:
    for _ in range(120):
        ids = [c[0] for c in CAMPAIGNS]
        lags = [
            (await demo.staff("demo-admin", "GET", f"/admin/v1/campaigns/{i}"))["ledger_lag"]
            for i in ids
        ]
        if all(lag["entries"] == 0 for lag in lags):
            return
        await asyncio.sleep(0.5)
    raise RuntimeError("the ledger did not catch up")


async def pictures(base: str, csv: Path) -> None:
    async with chromium() as browser:
        page = await new_page(browser, base)
        await page.goto("/console/login")
        await page.locator("input[name=username]").fill("demo-approver")
        await page.locator("input[name=password]").fill(DEMO_PASSWORD)
        await page.get_by_test_id("login").click()
        await page.wait_for_url("**/console/dashboard")
        await page.get_by_test_id("funnel-campaign").click()
        await page.get_by_role("option", name="demo-dining-fortnight").click()
        await page.wait_for_timeout(1500)  # the charts' animations
        await page.screenshot(path=DOCS / "console-dashboard.png", full_page=True)
        await page.goto("/console/campaigns")
        await page.get_by_test_id(f"campaign-{PENDING}").wait_for()
        await page.wait_for_timeout(800)  # the status tags' entrance
        await page.screenshot(path=DOCS / "console-campaigns.png", full_page=True)
        await page.goto(f"/console/campaigns/{PENDING}")
        await page.get_by_test_id("dry-file").set_input_files(csv)
        await page.get_by_test_id("dry-run").click()
        await page.get_by_test_id("forecast").wait_for()
        await page.wait_for_timeout(800)
        await page.screenshot(path=DOCS / "console-campaign.png", full_page=True)


# The first day's claims; the last day's end a few hours before now.
START = time.time() - (DAYS - 1) * DAY_S - 4 * 3600


async def main() -> int:
    fonts = subprocess.run(["fc-list", ":lang=zh"], capture_output=True, text=True).stdout
    if not fonts.strip():
        print("no Chinese font: apt-get install fonts-wqy-microhei", file=sys.stderr)
        return 1
    DOCS.mkdir(exist_ok=True)
    settings = settings_for_tests()
    await drop_test_database()
    await migrate(TEST_DATABASE_URL)
    clock = FakeClock(START)
    redis = Redis.from_url(TEST_REDIS_URL, decode_responses=True)
    await delete_test_keys(redis)
    pool = await asyncpg.create_pool(TEST_DATABASE_URL, min_size=1, max_size=2)
    runner = app_runner(create_app(settings, clock, workers=True), settings)
    try:
        await load_demo(pool, redis, Keys(TEST_PREFIX), secret_box(settings))
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        host, port = runner.addresses[0][:2]
        base = f"http://{host}:{port}"
        async with aiohttp.ClientSession() as http:
            demo = Demo(base, clock, http)
            await campaigns(demo)
            await two_weeks_of_claims(demo)
            clock.now = time.time()
            demo.tokens.clear()
            await pending_campaign(demo)
            await drained(demo)
        with tempfile.TemporaryDirectory() as scratch:
            csv = Path(scratch) / "past-transactions.csv"
            past_transactions(csv, clock)
            await pictures(base, csv)
    finally:
        await runner.cleanup()
        await pool.close()
        await delete_test_keys(redis)
        await redis.aclose()
        await drop_test_database()
    print(f"screenshots in {DOCS}")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))

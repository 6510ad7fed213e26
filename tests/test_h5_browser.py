"""The customer H5 page in a real browser: Debian's chromium, headless, at a phone's viewport
(375 x 812), driven by Playwright against the app served on a real port. The channel asks for a
session, the customer opens its URL, sees an offer and a goal's progress, claims, and finds the
right under 我的权益 with its code and expiry once the vendor fulfilled it; an altered or
expired token shows the page that says so, and no data."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from playwright.async_api import Browser, Page, expect

from quanyi.core.clock import LocalPeriods
from quanyi.ledger.worker import LedgerWorker
from quanyi.stores.keys import PROGRESS_BUCKETS, customer_bucket, progress_value
from quanyi.web.h5_static import H5_DIR
from tests.support.browser import TIMEOUT_MS, chromium, page_errors, sources_hash
from tests.support.clients import Api
from tests.support.factories import reward
from tests.support.waiting import running

pytestmark = pytest.mark.usefixtures("signed_in")

PHONE = {"width": 375, "height": 812}
ENDED = "会话已过期，请从 App 重新进入"


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with chromium() as launched:
        yield launched


@pytest.fixture
async def phone(browser: Browser) -> AsyncIterator[Page]:
    """A phone-sized page in a fresh context; no script error nor console error (a refused
    resource, a Content-Security-Policy violation) may happen on it."""
    context = await browser.new_context(
        viewport=PHONE, device_scale_factor=2, is_mobile=True, has_touch=True, locale="zh-CN"
    )
    context.set_default_timeout(TIMEOUT_MS)
    page = await context.new_page()
    errors = page_errors(page)
    logged: list[str] = []
    page.on("console", lambda m: logged.append(m.text) if m.type == "error" else None)
    yield page
    await context.close()
    assert errors == []
    # A 401 the page asked for (an altered or expired token) is the only error it may log.
    assert [m for m in logged if "401" not in m] == []


async def session_url(api: Api, customer: str = "cust-1") -> str:
    status, body = await api.channel("POST", "/v1/h5/sessions", {"customer_id": customer})
    assert status == 201, body
    return body["url"]


async def goal_campaign(api: Api, redis: Any, keys: Any, settings: Any) -> None:
    """Campaign c2: a lounge for 3 card payments this month, cust-1 one payment along."""
    await api.create_campaign(
        "c2",
        [reward(right_id="lounge", goal={"window": "month", "count": 3}, grant="claim")],
        name="月度消费礼",
    )
    period, _ = LocalPeriods(settings.zone).period("month", api.clock())
    await redis.hset(
        keys.progress("c2", customer_bucket("cust-1", PROGRESS_BUCKETS)),
        f"r1|cust-1|{period}",
        progress_value(1, 20_000, None),
    )


async def test_a_customer_opens_the_page_claims_and_finds_the_right(
    api, sim, served, phone, make_worker, redis, pool, keys, settings, capfd
):
    await goal_campaign(api, redis, keys, settings)
    host, port = served
    url = await session_url(api)
    await phone.goto(f"http://{host}:{port}{url}")

    offer = phone.locator('[data-test=offer][data-campaign="c1"]')
    await expect(offer).to_contain_text("campaign c1")
    # The token left the address bar (and so the history) at once.
    assert "t=" not in phone.url
    goal = phone.locator('[data-test=offer][data-campaign="c2"]')
    await expect(goal.locator("[data-test=progress]")).to_contain_text("本月消费 1 / 3 笔")
    await expect(goal.locator("[data-test=claim]")).to_be_disabled()
    await expect(goal.locator("[data-test=claim]")).to_have_text("消费目标未达成")
    # A phone's width: nothing wider than the screen.
    assert await phone.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]

    await offer.locator("[data-test=claim]").click()
    await expect(phone.locator("[data-test=toast]")).to_contain_text("领取成功")
    await expect(offer.locator("[data-test=claim]")).to_have_text("已达领取上限")

    await phone.locator("[data-test=tab-rights]").click()
    right = phone.locator('[data-test=right][data-campaign="c1"]')
    await expect(right).to_contain_text("campaign c1")
    await expect(right).to_contain_text("发放中")

    async with running(make_worker()):
        status, rights = await api.channel("GET", "/v1/customers/cust-1/grants")
        assert status == 200 and len(rights["grants"]) == 1, rights
        grant_id = rights["grants"][0]["grant_id"]
        for _ in range(100):
            _, grant = await api.channel("GET", f"/v1/grants/{grant_id}")
            if grant["status"] == "fulfilled":
                break
            await phone.wait_for_timeout(100)
        assert grant["status"] == "fulfilled", grant
    await LedgerWorker(redis, pool, keys).drain()

    await phone.get_by_role("button", name="刷新").click()
    await expect(right.locator("[data-test=code]")).to_contain_text(grant["code"])
    await expect(right.locator("[data-test=expires]")).to_contain_text("有效期至")
    await expect(right).to_contain_text("可使用")
    assert await phone.locator("[data-test=right]").count() == 1
    # The access log said who asked for what, never the token.
    logged = capfd.readouterr().err
    assert '"path":"/h5/"' in logged and '"path":"/h5/api/claims"' in logged
    assert url.partition("t=")[2] not in logged


async def test_an_altered_token_shows_the_ended_page_and_no_data(api, c1, served, phone):
    host, port = served
    url = await session_url(api)
    altered = url[:-1] + ("A" if not url.endswith("A") else "B")
    await phone.goto(f"http://{host}:{port}{altered}")
    await expect(phone.locator("[data-test=session-ended]")).to_contain_text(ENDED)
    assert await phone.locator("[data-test=offer]").count() == 0
    assert "campaign c1" not in await phone.content()


async def test_an_expired_session_shows_the_ended_page(api, c1, served, phone, clock):
    host, port = served
    await phone.goto(f"http://{host}:{port}{await session_url(api)}")
    await expect(phone.locator("[data-test=offer]")).to_have_count(1)
    clock.advance(15 * 60)
    await phone.reload()  # the token is kept for the tab, not the URL
    await expect(phone.locator("[data-test=session-ended]")).to_contain_text(ENDED)
    assert await phone.locator("[data-test=offer]").count() == 0


async def test_no_token_shows_the_ended_page(served, phone, pool, redis):
    host, port = served
    await phone.goto(f"http://{host}:{port}/h5/")
    await expect(phone.locator("[data-test=session-ended]")).to_contain_text(ENDED)


def test_the_committed_build_is_of_the_current_sources():
    """What frontend/stamp.js stamps: a change to the page without its build fails."""
    built = (H5_DIR / "sources.sha256").read_text().strip()
    assert built == sources_hash("h5", "vite.h5.config.js", "stamp.js"), (
        "frontend/h5 changed since the build: npm run build:h5"
    )

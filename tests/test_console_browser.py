"""The staff console in a real browser (Debian's chromium, headless) against the real API on a
real port: a marketer creates and submits a campaign, an approver approves it, a claim through
the channel API moves the dashboard's figures, and a branch marketer sees only its branch."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser, Page, expect

from quanyi.campaigns.issuance_worker import IssuanceWorker
from quanyi.issuance.bulk_claims import BulkClaims
from quanyi.ledger.worker import LedgerWorker
from quanyi.web.console import CONSOLE_DIR
from tests.support.browser import chromium, new_page, page_errors, sources_hash
from tests.support.clients import sign_in
from tests.support.factories import register_vendor, reward, setup_vendor
from tests.support.settings import PASSWORD
from tests.support.vendors import sim_config
from tests.support.waiting import all_in, running, until


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with chromium() as launched:
        yield launched


@pytest.fixture
async def console(served: tuple[str, int], api: Any, pool: Any) -> str:
    """The console's base URL, the API behind it holding staff, channels and right `coffee`."""
    await sign_in(api, pool)
    await api.create_right()
    host, port = served
    return f"http://{host}:{port}"


async def log_in(browser: Browser, base: str, username: str) -> Page:
    page = await new_page(browser, base)
    await page.goto("/console/")
    await expect(page).to_have_url(re.compile(r"/console/login"))
    await page.locator("input[name=username]").fill(username)
    await page.locator("input[name=password]").fill(PASSWORD)
    await page.get_by_test_id("login").click()
    await expect(page).to_have_url(re.compile(r"/console/dashboard"))
    await expect(page.get_by_test_id("who")).to_contain_text(username)
    return page


async def issued_total(page: Page) -> int:
    """The dashboard's issued figure, once its reports have answered."""
    total = page.get_by_test_id("total-issued")
    await expect(total).to_have_text(re.compile(r"^\d+$"))
    return int(await total.inner_text())


async def log_out(page: Page) -> None:
    await page.get_by_test_id("logout").click()
    await expect(page).to_have_url(re.compile(r"/console/login"))
    await page.context.close()


async def test_campaign_from_draft_to_a_claim_on_the_dashboard(
    browser: Browser, console: str, api: Any, redis: Any, pool: Any, keys: Any, clock: Any
) -> None:
    marketer = await log_in(browser, console, "marketer")
    errors = page_errors(marketer)
    issued_before = await issued_total(marketer)

    await marketer.get_by_role("menuitem", name="活动").click()
    await marketer.get_by_test_id("new-campaign").click()
    await expect(marketer).to_have_url(re.compile(r"/console/campaigns/new"))
    await marketer.get_by_test_id("campaign-id").fill("web-coffee")
    await marketer.get_by_test_id("campaign-name").fill("网页咖啡周")
    await marketer.get_by_test_id("reward-stock-0").locator("input").fill("50")
    # The right and the channels come filled in from the catalog and the channel list.
    await expect(marketer.get_by_test_id("reward-right-0")).to_contain_text("coffee")
    await expect(marketer.get_by_test_id("campaign-channels")).to_contain_text("app")
    await marketer.get_by_test_id("save").click()

    await expect(marketer).to_have_url(re.compile(r"/console/campaigns/web-coffee$"))
    await expect(marketer.get_by_test_id("status")).to_have_attribute("data-status", "draft")
    await marketer.get_by_test_id("action-submit").click()
    await expect(marketer.get_by_test_id("status")).to_have_attribute("data-status", "pending")
    # A maker cannot approve: the API refuses and the page says so.
    await marketer.get_by_test_id("action-approve").click()
    await expect(marketer.get_by_test_id("message")).to_contain_text("批准")
    await expect(marketer.get_by_test_id("message")).to_have_class(re.compile("el-alert--error"))
    await expect(marketer.get_by_test_id("status")).to_have_attribute("data-status", "pending")
    assert errors == []
    await log_out(marketer)

    approver = await log_in(browser, console, "approver")
    await approver.get_by_role("menuitem", name="待审批").click()
    await approver.get_by_test_id("campaign-web-coffee").click()
    await expect(approver).to_have_url(re.compile(r"/console/campaigns/web-coffee$"))
    await approver.get_by_test_id("action-approve").click()
    await expect(approver.get_by_test_id("status")).to_have_attribute("data-status", "approved")
    status, body = await api.admin("approver", "GET", "/admin/v1/campaigns/web-coffee")
    assert (status, body["status"], body["approved_by"]) == (200, "approved", "approver")
    assert body["rewards"][0]["stock"] == 50 and body["channels"] == ["app", "wechat"]

    # The campaign's window opened when the editor was loaded; the API's clock moves past it.
    clock.advance(120)
    status, grant = await api.claim(
        request_id="web-1", campaign_id="web-coffee", customer_id="C9001"
    )
    assert status == 201, grant
    await LedgerWorker(redis, pool, keys).drain()

    await approver.get_by_role("menuitem", name="数据看板").click()
    await approver.get_by_test_id("refresh").click()
    await expect(approver.get_by_test_id("total-issued")).to_have_text(str(issued_before + 1))
    await expect(approver.get_by_test_id("top-campaigns")).to_contain_text("web-coffee")
    await approver.get_by_role("menuitem", name="活动").click()
    await expect(approver.get_by_test_id("granted-web-coffee")).to_have_text("1")
    await approver.context.close()


async def test_a_branch_marketer_sees_its_branch_only(
    browser: Browser, console: str, api: Any
) -> None:
    await api.create_campaign("hq-only", approve=False)
    await api.create_campaign("sz-spring", approve=False, branch="SZ")
    page = await log_in(browser, console, "sz-marketer")
    await expect(page.get_by_test_id("who")).to_contain_text("SZ")
    await page.get_by_role("menuitem", name="活动").click()
    await expect(page.get_by_test_id("campaign-sz-spring")).to_be_visible()
    await expect(page.get_by_test_id("campaigns")).not_to_contain_text("hq-only")
    # Typing the address of the head-office campaign shows the API's refusal, not the campaign.
    await page.goto("/console/campaigns/hq-only")
    await expect(page.get_by_role("alert")).to_be_visible()
    await expect(page.get_by_test_id("rewards")).to_have_count(0)


async def test_english_is_one_click_away_and_stays(browser: Browser, console: str) -> None:
    page = await log_in(browser, console, "marketer")
    await expect(page.get_by_role("menuitem", name="数据看板")).to_be_visible()
    await page.get_by_test_id("lang").get_by_text("English").click()
    await expect(page.get_by_role("menuitem", name="Dashboard")).to_be_visible()
    await page.reload()
    await expect(page.get_by_role("menuitem", name="Campaigns")).to_be_visible()


async def test_the_console_is_served_from_the_package(console: str, api: Any) -> None:
    """index.html at /console/ and at any route of the app, naming assets that exist and are
    served with a long cache; the built files are in the package (committed, no node needed)."""
    index = (CONSOLE_DIR / "index.html").read_text()
    assets = re.findall(r'/console/assets/([^"]+)', index)
    assert any(a.endswith(".js") for a in assets) and any(a.endswith(".css") for a in assets)
    client = api.client
    for path in ("/console/", "/console/campaigns/x", "/console/dashboard"):
        resp = await client.get(path)
        assert resp.status == 200 and "no-cache" in resp.headers["Cache-Control"]
        assert await resp.text() == index
        assert "script-src 'self'" in resp.headers["Content-Security-Policy"]
    for name in assets:
        resp = await client.get(f"/console/assets/{name}")
        assert resp.status == 200, name
        assert "immutable" in resp.headers["Cache-Control"]
        assert (CONSOLE_DIR / "assets" / name).read_bytes() == await resp.read()
    resp = await client.get("/console", allow_redirects=False)
    assert (resp.status, resp.headers["Location"]) == (302, "/console/")
    for missing in ("/console/assets/nothing.js", "/console/assets/..%2Findex.html"):
        assert (await client.get(missing)).status == 404


def test_the_committed_build_is_of_the_sources() -> None:
    """The build names the hash of the sources it was made from (frontend/stamp.js): a
    change to frontend/ without `make console` would serve what the sources no longer say."""
    built = (CONSOLE_DIR / "sources.sha256").read_text().strip()
    assert built == sources_hash("index.html", "vite.config.js", "stamp.js", "src"), (
        "frontend/ changed since the build: run `make console`"
    )


def transactions(now: float, *rows: tuple[str, int]) -> str:
    """CSV of card transactions an hour into the campaign's window, (customer, amount) each."""
    at = datetime.fromtimestamp(now + 3600, UTC).isoformat()
    lines = [f"{customer},{amount},5812,{at}" for customer, amount in rows]
    return "customer_id,amount,mcc,occurred_at\n" + "\n".join(lines) + "\n"


async def test_the_approver_sees_the_dry_run_then_rejects(
    browser: Browser, console: str, api: Any, tmp_path: Path
) -> None:
    goal = {"window": "campaign", "count": 2}
    await api.create_campaign("goal-c", [reward(goal=goal)], approve=False)
    status, body = await api.admin("marketer", "POST", "/admin/v1/campaigns/goal-c/submit")
    assert status == 200, body
    csv = tmp_path / "past.csv"
    csv.write_text(transactions(api.clock(), ("A1", 5000), ("A1", 7000), ("B1", 9000)))

    page = await log_in(browser, console, "approver")
    await page.goto("/console/campaigns/goal-c")
    await page.get_by_test_id("dry-file").set_input_files(csv)
    await page.get_by_test_id("dry-run").click()
    # A1 bought twice and reaches the goal; B1 once and does not.
    await expect(page.get_by_test_id("forecast-grants")).to_have_text("1")
    await expect(page.get_by_test_id("forecast-customers")).to_have_text("2")
    await page.get_by_test_id("action-reject").click()
    await expect(page.get_by_test_id("status")).to_have_attribute("data-status", "rejected")
    status, body = await api.admin("approver", "GET", "/admin/v1/campaigns/goal-c")
    assert body["status"] == "rejected"


async def test_pause_resume_and_end_a_running_campaign(
    browser: Browser, console: str, api: Any
) -> None:
    await api.create_campaign("c1")
    page = await log_in(browser, console, "marketer")
    await page.goto("/console/campaigns/c1")
    for action, state in (("pause", "paused"), ("resume", "approved"), ("end", "ended")):
        await page.get_by_test_id(f"action-{action}").click()
        await expect(page.get_by_test_id("status")).to_have_attribute("data-status", state)
        status, body = await api.admin("marketer", "GET", "/admin/v1/campaigns/c1")
        assert (status, body["status"]) == (200, state)
    await expect(page.get_by_test_id("action-resume")).to_have_count(0)


async def test_a_grant_revoked_from_the_console(browser: Browser, console: str, api: Any) -> None:
    await api.create_campaign("c1")
    status, grant = await api.claim(request_id="q1", campaign_id="c1", customer_id="C1")
    assert status == 201, grant
    page = await log_in(browser, console, "marketer")
    await page.get_by_role("menuitem", name="权益发放").click()
    await page.get_by_test_id("grant-id").fill(grant["grant_id"])
    await page.get_by_test_id("grant-reason").fill("客户投诉")
    await page.get_by_test_id("revoke").click()
    await page.get_by_role("button", name=re.compile("确定|OK")).click()
    await expect(page.get_by_test_id("message")).to_contain_text("已撤销")
    status, view = await api.channel("GET", f"/v1/grants/{grant['grant_id']}")
    assert (status, view["status"]) == (200, "revoked")


async def test_an_audience_imported_with_its_progress(
    browser: Browser, console: str, api: Any, tmp_path: Path
) -> None:
    members = tmp_path / "vip.csv"
    members.write_text("customer_id\nC1\nC2\nC3\n4111111111111111\n")
    page = await log_in(browser, console, "marketer")
    await page.get_by_role("menuitem", name="客群").click()
    await page.get_by_test_id("aud-new-id").fill("vip")
    await page.get_by_test_id("aud-new-name").fill("十二月贵宾")
    await page.get_by_test_id("aud-create").click()
    await expect(page.get_by_test_id("aud-members")).to_have_text("0")
    await page.get_by_test_id("aud-file").set_input_files(members)
    await page.get_by_test_id("aud-upload").click()
    # Three members; the card number is rejected by its line and kept nowhere.
    await expect(page.get_by_test_id("aud-result")).to_contain_text("导入 3 人，拒绝 1 行")
    await expect(page.get_by_test_id("aud-members")).to_have_text("3")
    await expect(page.get_by_role("progressbar")).to_have_attribute("aria-valuenow", "100")
    status, body = await api.admin("marketer", "GET", "/admin/v1/audiences/vip")
    assert (status, body["members"], body["branch"]) == (200, 3, "HQ")


async def test_the_audit_log_and_the_vendors_as_head_office_admin(
    browser: Browser, console: str, api: Any, key_pairs: Any, our_key_file: str
) -> None:
    await api.create_campaign("c1")
    await register_vendor(api, "lounge-co", "https://lounge.example/api", key_pairs, our_key_file)
    page = await log_in(browser, console, "admin")
    await page.get_by_role("menuitem", name="审计日志").click()
    audit = page.get_by_test_id("audit")
    await expect(audit).to_contain_text("campaign.approve")
    await expect(audit).to_contain_text("campaign:c1")
    await page.get_by_placeholder("动作").fill("right")
    await page.get_by_test_id("search").click()
    await expect(audit).to_contain_text("right.admit")
    await expect(audit).not_to_contain_text("campaign.approve")
    await page.get_by_role("menuitem", name="供应商").click()
    await expect(page.get_by_test_id("vendors")).to_contain_text("lounge-co")
    await expect(page.get_by_test_id("vendors")).to_contain_text("active")


async def test_a_marketer_is_refused_the_audit_log(browser: Browser, console: str) -> None:
    """The console shows the API's answer: a marketer may not read the audit log."""
    page = await log_in(browser, console, "marketer")
    await page.get_by_role("menuitem", name="审计日志").click()
    await expect(page.get_by_role("alert")).to_be_visible()
    await expect(page.get_by_test_id("audit")).not_to_contain_text("campaign")


async def test_a_right_proposed_by_a_marketer_and_admitted_by_the_approver(
    browser: Browser, console: str, api: Any
) -> None:
    page = await log_in(browser, console, "marketer")
    await page.get_by_role("menuitem", name="权益目录").click()
    await page.get_by_test_id("new-right").click()
    await page.get_by_test_id("right-id").fill("movie")
    await page.get_by_test_id("right-name").fill("电影票")
    await page.get_by_test_id("right-face").locator("input").fill("40")
    await page.get_by_test_id("right-cost").locator("input").fill("25.5")
    await page.get_by_test_id("right-save").click()
    await expect(page.get_by_test_id("right-state-movie")).to_have_text("待准入")
    # Whoever proposed a right may not admit it: the API says no, the page shows it.
    await page.get_by_test_id("right-admit-movie").click()
    await expect(page.get_by_test_id("message")).to_be_visible()
    await expect(page.get_by_test_id("right-state-movie")).to_have_text("待准入")
    await log_out(page)

    page = await log_in(browser, console, "approver")
    await page.get_by_role("menuitem", name="权益目录").click()
    await page.get_by_test_id("right-admit-movie").click()
    await expect(page.get_by_test_id("right-state-movie")).to_have_text("已准入")
    status, body = await api.admin("approver", "GET", "/admin/v1/rights")
    assert status == 200, body
    (movie,) = [r for r in body["rights"] if r["id"] == "movie"]
    assert (movie["state"], movie["face_value"], movie["unit_cost"]) == ("admitted", 4000, 2550)
    assert movie["proposed_by"] == "marketer" and movie["admitted_by"] == "approver"


async def test_a_new_account_sets_its_password_first(
    browser: Browser, console: str, api: Any
) -> None:
    account = {"username": "gz-new", "password": "first-pass-1", "role": "marketer"}
    status, body = await api.admin("admin", "POST", "/admin/v1/staff", account | {"branch": "GZ"})
    assert status == 201, body
    page = await new_page(browser, console)
    await page.goto("/console/login")
    await page.locator("input[name=username]").fill("gz-new")
    await page.locator("input[name=password]").fill("first-pass-1")
    await page.get_by_test_id("login").click()
    await page.locator("input[name=new-password]").fill("second-pass-2")
    await page.locator("input[name=new-password-again]").fill("second-pass-2")
    await page.get_by_test_id("set-password").click()
    await expect(page).to_have_url(re.compile(r"/console/dashboard"))
    await expect(page.get_by_test_id("who")).to_contain_text("GZ")
    await expect(page.get_by_test_id("total-issued")).to_have_text("0")
    resp = await api.client.post(
        "/admin/v1/login", json={"username": "gz-new", "password": "second-pass-2"}
    )
    assert resp.status == 200 and not (await resp.json())["must_change_password"]


async def test_a_revision_of_a_running_campaign_drafted_and_approved(
    browser: Browser, console: str, api: Any
) -> None:
    await api.create_campaign("c1")  # reward r1, stock 100
    page = await log_in(browser, console, "marketer")
    await page.goto("/console/campaigns/c1")
    await page.get_by_test_id("revision-stock-r1").locator("input").fill("150")
    await page.get_by_test_id("revision-create").click()
    await expect(page.get_by_test_id("revisions")).to_contain_text("150")
    status, body = await api.admin("marketer", "GET", "/admin/v1/campaigns/c1/revisions")
    (revision,) = body["revisions"]
    rid = revision["id"]
    await page.get_by_test_id(f"revision-submit-{rid}").click()
    await expect(page.get_by_test_id(f"revision-status-{rid}")).to_have_text("待审批")
    await log_out(page)

    page = await log_in(browser, console, "approver")
    await page.goto("/console/campaigns/c1")
    await page.get_by_test_id(f"revision-approve-{rid}").click()
    await expect(page.get_by_test_id(f"revision-status-{rid}")).to_have_text("已生效")
    status, body = await api.admin("approver", "GET", "/admin/v1/campaigns/c1")
    assert (status, body["rewards"][0]["stock"]) == (200, 150)


async def test_the_operator_sees_an_open_circuit_and_redrives_a_dead_letter(
    browser: Browser,
    console: str,
    api: Any,
    start_sim: Any,
    key_pairs: Any,
    our_key_file: str,
    worker_factory: Any,
) -> None:
    sim = await start_sim(error_rate=1)
    await setup_vendor(
        api,
        key_pairs,
        our_key_file,
        sim,
        vendor_id="broken",
        right_id="lounge",
        retry={"max_attempts": 3, "backoff_base_ms": 10, "backoff_max_ms": 20},
    )
    status, grant = await api.claim(request_id="q1", campaign_id="c1", customer_id="C1")
    assert status == 201, grant
    grant_id = grant["grant_id"]
    # Its third failure both opens the circuit and dead-letters the grant.
    async with running(worker_factory(breaker_threshold=3)):
        await until(all_in(api, [grant_id], "failed"), timeout=15, what="the grant failed")
        page = await log_in(browser, console, "operator")
        errors = page_errors(page)
        await page.get_by_role("menuitem", name="供应商").click()
        await expect(page.get_by_test_id("circuit-broken")).to_have_text("已熔断")
        dead = page.get_by_test_id("dead-letters")
        await expect(dead).to_contain_text(grant_id)
        await expect(dead).to_contain_text("HTTP 500")

        await sim_config(sim, error_rate=0)
        await page.get_by_test_id(f"redrive-{grant_id}").click()
        await expect(page.get_by_test_id("message")).to_contain_text("已重投 1 个")
        await expect(dead).not_to_contain_text(grant_id)
        await until(all_in(api, [grant_id], "fulfilled"), timeout=15, what="the redriven grant")
        await page.get_by_test_id("refresh").click()
        await expect(page.get_by_test_id("circuit-broken")).to_have_text("正常")
        assert errors == []


async def test_a_marketer_looks_a_grant_up_by_customer_and_revokes_it(
    browser: Browser, console: str, api: Any
) -> None:
    await api.create_campaign("c1")
    status, grant = await api.claim(request_id="q1", campaign_id="c1", customer_id="C7")
    assert status == 201, grant
    grant_id = grant["grant_id"]
    page = await log_in(browser, console, "marketer")
    errors = page_errors(page)
    await page.get_by_role("menuitem", name="权益发放").click()
    await page.get_by_test_id("lookup-customer").fill("C7")
    await page.get_by_test_id("lookup-by-customer").click()
    await expect(page.get_by_test_id("found")).to_contain_text(grant_id)
    await expect(page.get_by_test_id(f"status-{grant_id}")).to_have_text(
        "fulfilled"
    )  # no vendor: born fulfilled
    await page.get_by_test_id("grant-reason").fill("客户投诉")
    await page.get_by_test_id(f"revoke-{grant_id}").click()
    await page.get_by_role("button", name=re.compile("确定|OK")).click()
    await expect(page.get_by_test_id("message")).to_contain_text("已撤销")
    await expect(page.get_by_test_id(f"status-{grant_id}")).to_have_text("revoked")
    status, view = await api.channel("GET", f"/v1/grants/{grant_id}")
    assert (status, view["status"]) == (200, "revoked")
    # Another customer's number finds nothing.
    await page.get_by_test_id("lookup-customer").fill("C8")
    await page.get_by_test_id("lookup-by-customer").click()
    await expect(page.get_by_test_id("found")).to_contain_text("没有找到发放记录")
    assert errors == []


@contextlib.asynccontextmanager
async def issuance_worker(redis: Any, pool: Any, keys: Any, settings: Any, clock: Any) -> Any:
    """The issuance worker as the runtime builds it (runtime.Stores.issuance_worker), running in
    the background for the block on the API's own clock."""
    claims = BulkClaims(redis, keys, settings, clock)

    async def issue(campaign_id: str, reward_id: str, requests: Any) -> list[str]:
        return await claims.decide_many("bulk", campaign_id, reward_id, requests)

    worker = IssuanceWorker(pool, redis, keys, issue, every_s=0.2)
    task = asyncio.create_task(worker.run())
    try:
        yield worker
    finally:
        worker.stop()
        await asyncio.wait_for(task, 15)


async def import_audience(api: Any, audience_id: str, members: int) -> None:
    body = {"id": audience_id, "name": "十二月贵宾", "branch": "HQ"}
    status, made = await api.admin("marketer", "POST", "/admin/v1/audiences", body)
    assert status == 201, made
    csv = "customer_id\n" + "".join(f"B{i}\n" for i in range(members))
    resp = await api.client.put(
        f"/admin/v1/audiences/{audience_id}/members",
        data=csv.encode(),
        headers={
            "Authorization": f"Bearer {await api.login('marketer')}",
            "Content-Type": "text/csv",
        },
    )
    assert resp.status == 200, await resp.text()


async def job_buttons(page: Page) -> list[str]:
    """The actions the job view offers, by test id."""
    buttons = await page.get_by_test_id("job").locator("button[data-testid^=job-]").all()
    return sorted([str(await b.get_attribute("data-testid")) for b in buttons])


async def test_a_bulk_issuance_created_approved_paused_resumed_and_done(
    browser: Browser,
    console: str,
    api: Any,
    redis: Any,
    pool: Any,
    keys: Any,
    settings: Any,
    clock: Any,
) -> None:
    await api.create_campaign("c1", [reward(stock=15)])
    await import_audience(api, "vip", 20)
    marketer = await log_in(browser, console, "marketer")
    errors = page_errors(marketer)
    await marketer.get_by_role("menuitem", name="批量发放").click()
    await expect(marketer).to_have_url(re.compile(r"/console/issuances$"))
    await marketer.get_by_test_id("job-new-id").fill("bulk-1")
    await marketer.get_by_test_id("job-campaign").click()
    await marketer.get_by_role("option", name=re.compile(r"^c1 ·")).click()
    # The campaign's claimed reward comes picked; the audience is looked up by its id.
    await expect(marketer.get_by_test_id("job-reward")).to_contain_text("r1")
    await marketer.get_by_test_id("job-audience").fill("vip")
    await marketer.get_by_test_id("job-audience").press("Enter")
    await expect(marketer.get_by_test_id("job-audience-found")).to_contain_text("人数 20")
    await marketer.get_by_test_id("job-create").click()
    await expect(marketer).to_have_url(re.compile(r"/console/issuances/bulk-1$"))
    state = marketer.get_by_test_id("job-state")
    await expect(state).to_have_attribute("data-state", "pending_approval")
    await expect(state).to_have_text("待审批")
    # The maker may cancel it, not approve it.
    assert await job_buttons(marketer) == ["job-cancel"]
    assert errors == []
    await log_out(marketer)

    approver = await log_in(browser, console, "approver")
    errors = page_errors(approver)
    await approver.get_by_role("menuitem", name="批量发放").click()
    await approver.get_by_test_id("job-bulk-1").click()
    await expect(approver).to_have_url(re.compile(r"/console/issuances/bulk-1$"))
    state = approver.get_by_test_id("job-state")
    await expect(state).to_have_attribute("data-state", "pending_approval")
    assert await job_buttons(approver) == ["job-approve", "job-cancel"]
    await approver.get_by_test_id("job-approve").click()
    # No worker runs yet: the job waits at 0 of its 20 frozen members.
    await expect(state).to_have_attribute("data-state", "running")
    await expect(approver.get_by_test_id("job-total")).to_have_text("20")
    assert await job_buttons(approver) == ["job-cancel", "job-pause"]
    await approver.get_by_test_id("job-pause").click()
    await expect(state).to_have_attribute("data-state", "paused")
    assert await job_buttons(approver) == ["job-cancel", "job-resume"]
    status, body = await api.admin("approver", "GET", "/admin/v1/issuances/bulk-1")
    assert (status, body["state"], body["issued"]) == (200, "paused", 0), body

    async with issuance_worker(redis, pool, keys, settings, clock):
        await approver.get_by_test_id("job-resume").click()
        # The page reads the job every second while it runs, until it is done.
        await expect(state).to_have_attribute("data-state", "done")
    await expect(state).to_have_text("已完成")
    await expect(approver.get_by_test_id("job-issued")).to_have_text("15")
    await expect(approver.get_by_test_id("job-skipped")).to_have_text("5")
    await expect(approver.get_by_test_id("skipped-out_of_stock")).to_have_text("5")
    await expect(approver.get_by_test_id("job-skipped-reasons")).to_contain_text("库存不足")
    await expect(approver.get_by_test_id("job-failed")).to_have_text("0")
    await expect(approver.get_by_test_id("job-counts")).to_contain_text("已处理 20 / 20 人")
    progress = approver.get_by_test_id("job").get_by_role("progressbar")
    await expect(progress).to_have_attribute("aria-valuenow", "100")
    assert await job_buttons(approver) == []
    status, body = await api.admin("approver", "GET", "/admin/v1/issuances/bulk-1")
    assert (body["state"], body["issued"], body["skipped"]) == (
        "done",
        15,
        {"out_of_stock": 5},
    )
    jobs = approver.get_by_test_id("jobs")
    await expect(jobs).to_contain_text("20 / 20")
    # The list filtered by state: the job is among the done ones, not the running ones.
    await approver.get_by_test_id("filter-state").click()
    await approver.get_by_role("option", name="发放中").click()
    await expect(jobs).not_to_contain_text("bulk-1")
    await approver.get_by_test_id("filter-state").click()
    await approver.get_by_role("option", name="已完成").click()
    await expect(jobs).to_contain_text("bulk-1")
    assert errors == []


async def test_a_pending_bulk_issuance_cancelled_in_english(
    browser: Browser, console: str, api: Any
) -> None:
    await api.create_campaign("c1", [reward(stock=15)])
    await import_audience(api, "vip", 3)
    body = {"id": "bulk-2", "reward_id": "r1", "audience_id": "vip"}
    status, made = await api.admin("marketer", "POST", "/admin/v1/campaigns/c1/issuances", body)
    assert status == 201, made
    page = await log_in(browser, console, "approver")
    errors = page_errors(page)
    await page.get_by_test_id("lang").get_by_text("English").click()
    await page.get_by_role("menuitem", name="Bulk issuance").click()
    await page.get_by_test_id("job-bulk-2").click()
    state = page.get_by_test_id("job-state")
    await expect(state).to_have_text("pending approval")
    await page.get_by_test_id("job-cancel").click()
    await expect(state).to_have_attribute("data-state", "cancelled")
    await expect(state).to_have_text("cancelled")
    assert await job_buttons(page) == []
    status, made = await api.admin("approver", "GET", "/admin/v1/issuances/bulk-2")
    assert (status, made["state"], made["issued"]) == (200, "cancelled", 0), made
    assert errors == []

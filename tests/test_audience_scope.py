"""Branch scope of the audiences a campaign's rewards name: branch staff (SZ) may name only
their branch's audiences, in a new campaign or an edit, and may not simulate a campaign whose
rewards count a head-office audience (the forecast would tell who is in it). Head office acts
on every branch: it may name an SZ audience in any campaign."""

from __future__ import annotations

from typing import Any

import pytest

from tests.support.clients import Api, assert_error
from tests.support.factories import campaign_of_branch, reward

pytestmark = pytest.mark.usefixtures("signed_in", "coffee")

CSV = "text/csv"


async def audience(api: Api, audience_id: str, branch: str, members: list[str]) -> None:
    body = {"id": audience_id, "name": f"segment {audience_id}", "branch": branch}
    status, made = await api.admin("admin", "POST", "/admin/v1/audiences", body)
    assert status == 201, made
    token = await api.login("marketer")
    resp = await api.client.put(
        f"/admin/v1/audiences/{audience_id}/members",
        data="\n".join(["customer_id", *members]).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": CSV},
    )
    assert resp.status == 200, await resp.text()


def sz_campaign(api: Api, campaign_id: str, audience_id: str | None) -> dict[str, Any]:
    extra = {"audience_id": audience_id} if audience_id else {}
    return {
        **campaign_of_branch(api, campaign_id, "SZ"),
        "rewards": [{**reward(stock=10), **extra}],
    }


async def campaign_count(pool: Any) -> int:
    count: int = await pool.fetchval("SELECT count(*) FROM campaigns")
    return count


async def simulate(api: Api, user: str, campaign_id: str, query: str = "") -> tuple[int, Any]:
    token = await api.login(user)
    resp = await api.client.post(
        f"/admin/v1/campaigns/{campaign_id}/simulate{query}",
        data=b"customer_id,amount,mcc,occurred_at\nhq-1,100,5411,2026-01-01T00:00:00+08:00\n",
        headers={"Authorization": f"Bearer {token}", "Content-Type": CSV},
    )
    return resp.status, await resp.json()


async def test_branch_staff_may_not_name_a_head_office_audience(api, pool):
    await audience(api, "hq-vip", "HQ", ["hq-1"])
    body = sz_campaign(api, "sz-c1", "hq-vip")
    status, answer = await api.admin("sz-marketer", "POST", "/admin/v1/campaigns", body)
    assert_error(status, answer, 403, "forbidden")
    assert "hq-1" not in str(answer)
    assert await campaign_count(pool) == 0
    audited = await pool.fetchval("SELECT count(*) FROM audit_log WHERE action LIKE 'campaign.%'")
    assert audited == 0


async def test_branch_staff_may_not_edit_in_a_head_office_audience(api, pool):
    await audience(api, "hq-vip", "HQ", ["hq-1"])
    status, made = await api.admin(
        "sz-marketer", "POST", "/admin/v1/campaigns", sz_campaign(api, "sz-c1", None)
    )
    assert status == 201, made
    change = {k: v for k, v in sz_campaign(api, "sz-c1", "hq-vip").items() if k != "id"}
    status, answer = await api.admin("sz-marketer", "PUT", "/admin/v1/campaigns/sz-c1", change)
    assert_error(status, answer, 403, "forbidden")
    status, seen = await api.admin("sz-marketer", "GET", "/admin/v1/campaigns/sz-c1")
    assert status == 200, seen
    assert (seen["version"], seen["rewards"][0]["audience_id"]) == (made["version"], None)


async def test_branch_staff_name_their_own_audience_and_head_office_any(api):
    await audience(api, "sz-vip", "SZ", ["sz-1"])
    status, made = await api.admin(
        "sz-marketer", "POST", "/admin/v1/campaigns", sz_campaign(api, "sz-c1", "sz-vip")
    )
    assert status == 201, made
    # Head office's subtree holds SZ: its staff may name an SZ audience, in an HQ campaign too.
    hq = {**campaign_of_branch(api, "hq-c1", "HQ"), "rewards": [reward(audience_id="sz-vip")]}
    status, made = await api.admin("marketer", "POST", "/admin/v1/campaigns", hq)
    assert status == 201, made
    status, made = await api.admin(
        "marketer", "POST", "/admin/v1/campaigns", sz_campaign(api, "sz-c2", "sz-vip")
    )
    assert status == 201, made


async def test_branch_staff_may_not_simulate_a_head_office_audience(api, pool):
    """Head office makes an SZ campaign counting its own audience: SZ staff may see the
    campaign, but not learn who is in the audience from its dry run."""
    await audience(api, "hq-vip", "HQ", ["hq-1"])
    body = sz_campaign(api, "sz-c1", "hq-vip")
    status, made = await api.admin("marketer", "POST", "/admin/v1/campaigns", body)
    assert status == 201, made
    for user in ("sz-marketer", "sz-approver"):
        status, answer = await simulate(api, user, "sz-c1")
        assert_error(status, answer, 403, "forbidden")
    status, answer = await simulate(api, "marketer", "sz-c1")
    assert status == 200, answer
    # The audience of the query is checked as before.
    status, made = await api.admin(
        "sz-marketer", "POST", "/admin/v1/campaigns", sz_campaign(api, "sz-c2", None)
    )
    assert status == 201, made
    status, answer = await simulate(api, "sz-marketer", "sz-c2", "?audience_id=hq-vip")
    assert_error(status, answer, 403, "forbidden")
    audited = await pool.fetch(
        "SELECT actor FROM audit_log WHERE action = 'campaign.simulate' ORDER BY id"
    )
    assert [r["actor"] for r in audited] == ["marketer"]

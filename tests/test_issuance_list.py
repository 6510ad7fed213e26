"""The list of bulk issuances (GET /admin/v1/issuances): newest first, filtered by campaign and
state, bounded, and only the jobs of campaigns in the caller's branch subtree."""

from __future__ import annotations

from typing import Any

import pytest

from tests.support.clients import Api

pytestmark = pytest.mark.usefixtures("signed_in")


async def audience(api: Api, audience_id: str, branch: str) -> None:
    body = {"id": audience_id, "name": f"segment {audience_id}", "branch": branch}
    status, made = await api.admin("marketer", "POST", "/admin/v1/audiences", body)
    assert status == 201, made


async def job(api: Api, job_id: str, campaign_id: str, audience_id: str) -> dict[str, Any]:
    body = {"id": job_id, "reward_id": "r1", "audience_id": audience_id}
    path = f"/admin/v1/campaigns/{campaign_id}/issuances"
    status, made = await api.admin("marketer", "POST", path, body)
    assert status == 201, made
    return made


async def listed(api: Api, user: str, query: str = "") -> list[str]:
    status, body = await api.admin(user, "GET", f"/admin/v1/issuances{query}")
    assert status == 200, body
    return [j["id"] for j in body["issuances"]]


@pytest.fixture
async def jobs(api: Api) -> None:
    """hq-1 and hq-2 on head office's campaign hq (hq-2 approved: running), sz-1 on SZ's."""
    await api.create_right()
    await api.create_campaign("hq")
    await api.create_campaign("sz", branch="SZ")
    await audience(api, "aud-hq", "HQ")
    await audience(api, "aud-sz", "SZ")
    await job(api, "hq-1", "hq", "aud-hq")
    await job(api, "sz-1", "sz", "aud-sz")
    await job(api, "hq-2", "hq", "aud-hq")
    status, body = await api.admin("approver", "POST", "/admin/v1/issuances/hq-2/approve")
    assert (status, body["state"]) == (200, "running"), body


@pytest.mark.usefixtures("jobs")
async def test_jobs_newest_first_with_their_progress_and_filters(api: Api) -> None:
    status, body = await api.admin("marketer", "GET", "/admin/v1/issuances")
    assert status == 200, body
    assert [j["id"] for j in body["issuances"]] == ["hq-2", "sz-1", "hq-1"]
    newest = body["issuances"][0]
    # Each job as GET of one answers it.
    status, one = await api.admin("marketer", "GET", "/admin/v1/issuances/hq-2")
    assert status == 200 and newest == one
    assert newest["state"] == "running" and [a["approver"] for a in newest["approvals"]] == [
        "approver"
    ]
    assert await listed(api, "auditor", "?campaign_id=hq") == ["hq-2", "hq-1"]
    assert await listed(api, "approver", "?state=pending_approval") == ["sz-1", "hq-1"]
    assert await listed(api, "marketer", "?campaign_id=hq&state=running") == ["hq-2"]
    assert await listed(api, "marketer", "?state=done") == []
    assert await listed(api, "marketer", "?limit=2") == ["hq-2", "sz-1"]
    assert await listed(api, "marketer", "?campaign_id=nothing") == []


@pytest.mark.usefixtures("jobs")
async def test_a_branch_marketer_sees_its_branch_jobs_only(api: Api) -> None:
    assert await listed(api, "sz-marketer") == ["sz-1"]
    assert await listed(api, "sz-approver", "?campaign_id=hq") == []
    assert await listed(api, "marketer") == ["hq-2", "sz-1", "hq-1"]
    status, body = await api.admin("operator", "GET", "/admin/v1/issuances")
    assert (status, body["error"]["code"]) == (403, "forbidden"), body


@pytest.mark.usefixtures("jobs")
async def test_a_bad_query_is_a_typed_400(api: Api) -> None:
    for query, field in (
        ("?state=finished", "state"),
        ("?limit=0", "limit"),
        ("?limit=201", "limit"),
        ("?limit=ten", "limit"),
        ("?campaign_id=", "campaign_id"),
        ("?campaign_id=a%20b", "campaign_id"),
    ):
        status, body = await api.admin("marketer", "GET", f"/admin/v1/issuances{query}")
        assert (status, body["error"]["code"]) == (400, "invalid_request"), (query, body)
        assert field in str(body["error"]), (query, body)

"""Staff revoking grants: a grant of their own branch, with an audit row; the refusals."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from quanyi.core.ids import new_grant_id
from tests.support.clients import assert_error
from tests.support.stores import audit_rows

pytestmark = [pytest.mark.usefixtures("signed_in"), pytest.mark.cluster_too]


# --- staff revoking grants ----------------------------------------------------------------


async def _grant(api: Any, campaign_id: str, customer_id: str) -> str:
    status, grant = await api.claim(
        request_id=f"q-{campaign_id}-{customer_id}",
        campaign_id=campaign_id,
        customer_id=customer_id,
    )
    assert status == 201, grant
    return grant["grant_id"]


async def test_staff_revoke_a_grant_of_their_branch_with_an_audit_row(api, pool):
    await api.create_right()
    await api.create_campaign("c1")  # HQ
    await api.create_campaign("sz1", branch="SZ")
    hq_grant = await _grant(api, "c1", "cust-1")
    sz_grant = await _grant(api, "sz1", "cust-1")

    # Branch staff may not touch a head-office campaign's grants.
    status, body = await api.admin(
        "sz-marketer", "POST", f"/admin/v1/grants/{hq_grant}/revoke", {"reason": "mine"}
    )
    assert_error(status, body, 403, "forbidden")
    status, grant = await api.channel("GET", f"/v1/grants/{hq_grant}")
    assert grant["status"] == "fulfilled"
    assert await audit_rows(pool, f"grant:{hq_grant}") == []

    # Head office may.
    status, revoked = await api.admin(
        "marketer", "POST", f"/admin/v1/grants/{hq_grant}/revoke", {"reason": "customer complaint"}
    )
    assert status == 200, revoked
    assert revoked["grant_id"] == hq_grant and revoked["status"] == "revoked"
    assert revoked["timeline"][-1]["actor"] == "staff:marketer"
    assert "granted_at_ms" not in revoked and "unit_cost" not in revoked
    status, grant = await api.channel("GET", f"/v1/grants/{hq_grant}")
    assert grant["status"] == "revoked"
    assert await audit_rows(pool, f"grant:{hq_grant}") == [
        ("marketer", "HQ", "grant.revoke", f"grant:{hq_grant}")
    ]
    detail = await pool.fetchval(
        "SELECT detail FROM audit_log WHERE action = 'grant.revoke' AND target = $1",
        f"grant:{hq_grant}",
    )
    assert orjson.loads(detail) == {"campaign": "c1", "reason": "customer complaint"}

    # A revoked grant gave its stock back: the customer can claim again (limit 1).
    await _grant(api, "c1", "cust-1-again")

    # Branch staff on their own branch's campaign; a body is optional.
    token = await api.login("sz-marketer")
    resp = await api.client.post(
        f"/admin/v1/grants/{sz_grant}/revoke", headers={"Authorization": f"Bearer {token}"}
    )
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["status"] == "revoked"
    assert await audit_rows(pool, f"grant:{sz_grant}") == [
        ("sz-marketer", "SZ", "grant.revoke", f"grant:{sz_grant}")
    ]


async def test_staff_revoke_refusals(api, pool):
    await api.create_right()
    await api.create_campaign("c1")
    grant_id = await _grant(api, "c1", "cust-1")
    path = f"/admin/v1/grants/{grant_id}/revoke"

    resp = await api.client.post(path)
    assert resp.status == 401, await resp.text()

    unknown = new_grant_id(int(api.clock() * 1000))
    status, body = await api.admin("marketer", "POST", f"/admin/v1/grants/{unknown}/revoke")
    assert_error(status, body, 404, "grant_not_found")
    status, body = await api.admin("marketer", "POST", "/admin/v1/grants/not-a-grant/revoke")
    assert_error(status, body, 404, "grant_not_found")

    status, body = await api.admin("marketer", "POST", path, {"reason": 42})
    error = assert_error(status, body, 400, "invalid_request")
    assert "reason" in error["fields"]

    status, grant = await api.channel("GET", f"/v1/grants/{grant_id}")
    assert grant["status"] == "fulfilled"
    assert [r for r in await audit_rows(pool) if r[2] == "grant.revoke"] == []

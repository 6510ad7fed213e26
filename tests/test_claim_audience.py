"""Claims of a reward kept for an audience (客群): members have it, others are refused with
`409 not_eligible` reason `audience`; and a new version of the members imported while claims
run swaps at once: each claim is judged by one version or the other, never by none."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests.support.clients import Api
from tests.support.factories import reward

pytestmark = [pytest.mark.usefixtures("signed_in"), pytest.mark.cluster_too]

REFUSED = {"code": "not_eligible", "reason": "audience"}


async def new_audience(api: Api, audience_id: str = "vip") -> None:
    body = {"id": audience_id, "name": "VIP customers", "branch": "HQ"}
    status, created = await api.admin("marketer", "POST", "/admin/v1/audiences", body)
    assert status == 201, created


async def put_members(api: Api, members: list[str], audience_id: str = "vip") -> dict[str, Any]:
    token = await api.login("marketer")
    resp = await api.client.put(
        f"/admin/v1/audiences/{audience_id}/members",
        data="\n".join(["customer_id", *members]).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "text/csv"},
    )
    body: dict[str, Any] = await resp.json()
    assert resp.status == 200, body
    return body


async def vip_campaign(api: Api, stock: int = 1_000) -> None:
    await api.create_right()
    await api.create_campaign("c1", [reward("r1", "coffee", stock=stock, audience_id="vip")])


async def claim(api: Api, request_id: str, customer: str) -> tuple[int, Any]:
    return await api.claim(request_id=request_id, campaign_id="c1", customer_id=customer)


def refusal(body: Any) -> dict[str, Any]:
    """The error without its message."""
    return {k: v for k, v in body["error"].items() if k != "message"}


async def test_a_member_has_it_and_a_non_member_is_refused(api: Api) -> None:
    await new_audience(api)
    await put_members(api, ["cust-1", "cust-2"])
    await vip_campaign(api)
    status, body = await claim(api, "q1", "cust-1")
    assert status == 201, body
    status, body = await claim(api, "q2", "cust-9")
    assert status == 409, body
    assert refusal(body) == REFUSED and body["error"]["message"]
    assert await stock_of(api) == 1


async def test_an_audience_never_imported_has_no_members(api: Api) -> None:
    await new_audience(api)
    await vip_campaign(api)
    status, body = await claim(api, "q1", "cust-1")
    assert (status, refusal(body)) == (409, REFUSED)


async def stock_of(api: Api) -> int:
    status, body = await api.admin("marketer", "GET", "/admin/v1/campaigns/c1")
    assert status == 200, body
    granted: int = body["rewards"][0]["granted"]
    return granted


def version_of(customer: str, status: int) -> int | None:
    """Which version of the members a claim's answer was judged by (None: by either)."""
    if customer.startswith("a-"):  # in version 1 only
        return 1 if status == 201 else 2
    if customer.startswith("b-"):  # in version 2 only
        return 2 if status == 201 else 1
    return None


async def test_members_swapped_while_claims_run(api: Api) -> None:
    """Waves of claims by members of version 1 only, of both versions, of version 2 only and
    of neither run while version 2 is imported, and two waves more once it is."""
    most = 400  # waves at most; each customer claims once
    only_v1 = [f"a-{i}" for i in range(most * 5)]
    both = [f"ab-{i}" for i in range(most * 5)]
    only_v2 = [f"b-{i}" for i in range(most * 5)]
    await new_audience(api)
    await put_members(api, [*only_v1, *both])
    await vip_campaign(api, stock=10 * most * 5)
    # Version 2 is large enough that its import overlaps waves of claims.
    padding = [f"pad-{i:05d}" for i in range(20_000)]
    swap = asyncio.create_task(put_members(api, [*both, *only_v2, *padding]))

    waves: list[list[tuple[str, int, Any]]] = []
    after = 0
    while after < 2:
        assert len(waves) < most, "the import did not end"
        done = swap.done()
        n = len(waves)
        who = [f"{p}-{i}" for i in range(n * 5, n * 5 + 5) for p in ("a", "ab", "b", "n")]
        answers = await asyncio.gather(*(claim(api, f"q-{c}", c) for c in who))
        waves.append([(c, s, b) for c, (s, b) in zip(who, answers, strict=True)])
        after += done
    imported = await swap
    assert (imported["version"], imported["members"]) == (2, 24_000)

    granted = 0
    seen: list[set[int | None]] = []
    for wave in waves:
        versions: set[int | None] = set()
        for customer, status, body in wave:
            assert status in (201, 409), (customer, body)  # never a 5xx
            if status == 409:
                assert refusal(body) == REFUSED, (customer, body)
            if customer.startswith("n-"):
                assert status == 409, (customer, body)  # in neither version
            elif customer.startswith("ab-"):
                assert status == 201, (customer, body)  # in every version: never refused
            versions.add(version_of(customer, status))
            granted += status == 201
        versions.discard(None)
        seen.append(versions)
    # Once a claim was judged by version 2, no later wave is judged by version 1.
    first_v2 = next(i for i, v in enumerate(seen) if 2 in v)
    assert all(v == {2} for v in seen[first_v2 + 1 :]), seen
    assert seen[-1] == seen[-2] == {2}  # after the swap
    assert await stock_of(api) == granted

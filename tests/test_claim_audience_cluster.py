"""A reward kept for an audience, claimed many at a time: on a Redis Cluster the membership is read
ahead of claim.lua once per audience for all claims of a bulk call or of a claim batch
(issuance/claim_calls.py read_members), never once per claim, and members still have it,
others are refused (`not_eligible`, audience) and a member's replay still replays."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from quanyi.core.errors import NotEligible
from quanyi.issuance.bulk_claims import BulkClaims
from quanyi.issuance.claims import Claim, ClaimService
from quanyi.stores.scripts import Scripts
from tests.support.clients import Api
from tests.support.factories import CHANNEL, reward

pytestmark = [pytest.mark.usefixtures("signed_in"), pytest.mark.cluster_too]

MEMBERS = [f"cust-{i}" for i in range(0, 20, 2)]  # the even ones
OTHERS = [f"cust-{i}" for i in range(1, 20, 2)]


async def vip_reward(api: Api) -> None:
    body = {"id": "vip", "name": "VIP customers", "branch": "HQ"}
    status, made = await api.admin("marketer", "POST", "/admin/v1/audiences", body)
    assert status == 201, made
    token = await api.login("marketer")
    resp = await api.client.put(
        "/admin/v1/audiences/vip/members",
        data="\n".join(["customer_id", *MEMBERS]).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "text/csv"},
    )
    assert resp.status == 200, await resp.text()
    await api.create_right()
    await api.create_campaign("c1", [reward("r1", "coffee", stock=1_000, audience_id="vip")])


def counted(scripts: Scripts) -> dict[str, list[list[Any]]]:
    """The customers of each audience_members.lua and audience_has.lua call, as the real
    scripts run them."""
    seen: dict[str, list[list[Any]]] = {"audience_members": [], "audience_has": []}
    for name in seen:
        script = getattr(scripts, name)

        async def call(*, keys: Any, args: Any, _script: Any = script, _name: str = name) -> Any:
            seen[_name].append(list(args))
            return await _script(keys=keys, args=args)

        setattr(scripts, name, call)
    return seen


async def test_a_bulk_call_reads_the_membership_of_all_its_customers_at_once(
    api, redis, keys, settings, clock, redis_mode
) -> None:
    await vip_reward(api)
    scripts = Scripts(redis)
    seen = counted(scripts)
    claims = BulkClaims(redis, keys, settings, clock, scripts=scripts)
    customers = [f"cust-{i}" for i in range(20)]
    requests = [(f"b1/{c}", c) for c in customers]
    expected = ["granted" if c in MEMBERS else "not_eligible" for c in customers]
    assert await claims.decide_many(CHANNEL, "c1", "r1", requests, per_call=8) == expected
    # Again: the members' requests replay, the others are refused again.
    again = ["replayed" if c in MEMBERS else "not_eligible" for c in customers]
    assert await claims.decide_many(CHANNEL, "c1", "r1", requests, per_call=8) == again
    assert seen["audience_has"] == []
    if redis_mode == "cluster":
        # 20 claims in calls of 8, 8 and 4: one read a call, of all its customers.
        asked = [customers[:8], customers[8:16], customers[16:]]
        assert seen["audience_members"] == asked + asked
    else:
        # A single Redis: claim.lua reads membership itself.
        assert seen["audience_members"] == []
    granted = await redis.hget(keys.campaign("c1"), "r:r1:granted")
    assert int(granted) == len(MEMBERS)


async def test_claims_of_one_batch_read_the_membership_once_per_audience(
    api, redis, keys, settings, clock, redis_mode
) -> None:
    await vip_reward(api)
    scripts = Scripts(redis)
    seen = counted(scripts)
    service = ClaimService(redis, keys, settings, clock, scripts=scripts)
    await service.start()
    try:
        customers = [f"cust-{i}" for i in range(20)]

        async def claim_all() -> list[Any]:
            return await asyncio.gather(
                *(service.claim(Claim(CHANNEL, f"q-{c}", "c1", c, "r1")) for c in customers),
                return_exceptions=True,
            )

        first = await claim_all()
        replays = await claim_all()
    finally:
        await service.close()
    for c, grant, replay in zip(customers, first, replays, strict=True):
        if c in MEMBERS:
            assert not isinstance(grant, BaseException), grant
            assert not grant.replayed and grant.customer_id == c
            assert not isinstance(replay, BaseException), replay
            assert replay.replayed and replay.grant_id == grant.grant_id
        else:
            for refused in (grant, replay):
                assert isinstance(refused, NotEligible), refused
                assert refused.details["reason"] == "audience"
    assert seen["audience_has"] == []
    asked = [c for call in seen["audience_members"] for c in call]
    if redis_mode == "cluster":
        # Every claim's membership read once, in calls of whole batches, not one per claim.
        assert sorted(asked) == sorted(customers + customers)
        assert len(seen["audience_members"]) < len(customers)
    else:
        assert asked == []

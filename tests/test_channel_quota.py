"""Per-channel stock quotas on a reward (README "Channel quotas"): checked in the claim's atomic
step, given back with the stock, moved only against what each channel granted, rebuilt from the
ledger."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import pytest

from quanyi.core.errors import InvalidRequest
from quanyi.inventory.channel_quota import ChannelQuotas
from quanyi.issuance.api import LIFECYCLE
from quanyi.ledger.rebuild import Rebuild
from quanyi.ledger.reconcile import Reconcile, drifted
from quanyi.ledger.worker import LedgerWorker
from tests.support.clients import assert_error
from tests.support.events import add_card_channel, event, goal_campaign, send
from tests.support.factories import campaign_body, reward

WECHAT, WECHAT_SECRET = "wechat", "wechat-secret"
CHANNELS = ["app", WECHAT]


async def quota_campaign(
    api: Any, quota: dict[str, int], stock: int, channels: list[str] | None = None, **extra: Any
) -> dict[str, Any]:
    await api.create_right()
    return await api.create_campaign(
        rewards=[reward(stock=stock, channel_quota=quota, **extra)],
        channels=channels or CHANNELS,
    )


async def claim_as(api: Any, channel: str, request_id: str, customer: str) -> tuple[int, Any]:
    secret = WECHAT_SECRET if channel == WECHAT else None
    body = {"request_id": request_id, "campaign_id": "c1", "customer_id": customer}
    if secret is None:
        return await api.channel("POST", "/v1/claims", body)
    return await api.channel("POST", "/v1/claims", body, channel=channel, secret=secret)


async def view(api: Any) -> dict[str, Any]:
    status, body = await api.admin("marketer", "GET", "/admin/v1/campaigns/c1")
    assert status == 200, body
    return body["rewards"][0]


async def test_concurrent_claims_from_two_channels_stay_within_each_quota_and_the_stock(api):
    # 10 reserved for app, 6 for wechat, 4 for anyone else: 30 claims from each channel.
    await quota_campaign(api, {"app": 10, WECHAT: 6}, stock=20, channels=[*CHANNELS, "h5"])
    replies = await asyncio.gather(
        *(claim_as(api, ch, f"{ch}-{i}", f"{ch}-cust-{i}") for ch in CHANNELS for i in range(30))
    )
    granted = Counter(body["channel_id"] for status, body in replies if status == 201)
    assert granted == {"app": 10, WECHAT: 6}
    refused = [body["error"] for status, body in replies if status != 201]
    assert len(refused) == 44
    assert all((e["code"], e["scope"]) == ("out_of_stock", "channel") for e in refused)
    shown = await view(api)
    assert (shown["granted"], shown["remaining"]) == (16, 4)
    assert shown["channel_quota"] == {"app": 10, WECHAT: 6}
    assert shown["channel_granted"] == {"app": 10, WECHAT: 6, "h5": 0, "goal": 0}


async def test_unnamed_channels_share_what_the_quotas_leave_and_the_total_is_never_oversold(
    api, pool, redis, keys
):
    # app reserves 3 of 5; wechat, not named, shares the other 2.
    await quota_campaign(api, {"app": 3}, stock=5)
    replies = await asyncio.gather(
        *(claim_as(api, ch, f"{ch}-{i}", f"{ch}-cust-{i}") for ch in CHANNELS for i in range(8))
    )
    granted = Counter(body["channel_id"] for status, body in replies if status == 201)
    assert granted == {"app": 3, WECHAT: 2}
    assert int(await redis.hget(keys.campaign("c1"), "r:r1:granted")) == 5
    await LedgerWorker(redis, pool, keys).drain()
    assert await pool.fetchval("SELECT count(*) FROM grants WHERE campaign_id = 'c1'") == 5
    # The stock is gone: the refusal says so before it speaks of channels.
    status, body = await claim_as(api, "app", "app-late", "late")
    assert assert_error(status, body, 409, "out_of_stock")["scope"] == "total"


async def test_the_refusal_names_the_channel_scope(api):
    await quota_campaign(api, {"app": 1, WECHAT: 1}, stock=2)
    assert (await claim_as(api, "app", "a1", "c-1"))[0] == 201
    status, body = await claim_as(api, "app", "a2", "c-2")
    error = assert_error(status, body, 409, "out_of_stock")
    assert error["scope"] == "channel" and "app" in error["message"]
    # The other channel's reservation is untouched.
    assert (await claim_as(api, WECHAT, "w1", "c-2"))[0] == 201


async def test_a_revoke_gives_the_channels_quota_back(api, redis, keys):
    await quota_campaign(api, {"app": 1}, stock=3)
    status, first = await claim_as(api, "app", "a1", "c-1")
    assert status == 201
    assert (await claim_as(api, "app", "a2", "c-2"))[0] == 409
    status, _ = await api.channel("POST", f"/v1/grants/{first['grant_id']}/revoke", {})
    assert status == 200
    # Revoking again gives nothing back twice.
    status, _ = await api.channel("POST", f"/v1/grants/{first['grant_id']}/revoke", {})
    assert status == 200
    fields = await redis.hmget(keys.campaign("c1"), ["r:r1:qg:app", "r:r1:qfg", "r:r1:granted"])
    assert [int(v) for v in fields] == [0, 0, 0]
    assert (await claim_as(api, "app", "a2", "c-2"))[0] == 201
    assert (await claim_as(api, "app", "a3", "c-3"))[0] == 409


@pytest.mark.parametrize(
    ("quota", "field", "says"),
    [
        ({"app": 5, "h5": 1}, "rewards[0].channel_quota.h5", "not a channel of the campaign"),
        ({"app": 8, WECHAT: 3}, "rewards[0].channel_quota", "more than the stock"),
        ({"app": -1}, "rewards[0].channel_quota.app", "an integer from 1"),
        ({"app": 0}, "rewards[0].channel_quota.app", "an integer from 1"),
        ({"app": "5"}, "rewards[0].channel_quota.app", "an integer from 1"),
        ({}, "rewards[0].channel_quota", "name at least one channel"),
        ({"goal": 1}, "rewards[0].channel_quota.goal", "goal grants share"),
    ],
)
async def test_invalid_quotas_are_refused_and_nothing_is_stored(api, pool, quota, field, says):
    await api.create_right()
    channels = [*CHANNELS, "goal"] if "goal" in quota else CHANNELS
    body = campaign_body(
        api.clock(), rewards=[reward(stock=10, channel_quota=quota)], channels=channels
    )
    status, answer = await api.admin("marketer", "POST", "/admin/v1/campaigns", body)
    error = assert_error(status, answer, 400, "invalid_request")
    assert says in error["fields"][field], error
    assert await pool.fetchval("SELECT count(*) FROM campaigns") == 0


async def test_an_edit_of_a_draft_is_checked_and_carries_the_quota(api, pool):
    await api.create_right()
    await api.create_campaign(approve=False, channels=CHANNELS)
    bad = campaign_body(api.clock(), rewards=[reward(stock=4, channel_quota={"app": 5})])
    del bad["id"]
    bad["channels"] = CHANNELS
    status, answer = await api.admin("marketer", "PUT", "/admin/v1/campaigns/c1", bad)
    assert assert_error(status, answer, 400, "invalid_request")["fields"] == {
        "rewards[0].channel_quota": "the quotas add up to 5, more than the stock of 4"
    }
    assert await pool.fetchval("SELECT channel_quota FROM rewards") is None
    bad["rewards"][0]["channel_quota"] = {"app": 3}
    status, answer = await api.admin("marketer", "PUT", "/admin/v1/campaigns/c1", bad)
    assert status == 200, answer
    assert (await view(api))["channel_quota"] == {"app": 3}


async def test_moving_quota_on_a_live_campaign_is_checked_against_what_each_channel_granted(
    api, redis, keys
):
    await quota_campaign(api, {"app": 4, WECHAT: 2}, stock=8)
    for i in range(3):
        assert (await claim_as(api, "app", f"a{i}", f"c-{i}"))[0] == 201
    assert (await claim_as(api, WECHAT, "w0", "c-w"))[0] == 201
    quotas = ChannelQuotas(redis, keys)
    before = await redis.hgetall(keys.campaign("c1"))
    refusals = [
        ({"app": 2, WECHAT: 4}, "channel_quota.app", "below the 3 this channel granted"),
        ({"app": 5, WECHAT: 4}, "channel_quota", "add up to 9, more than the stock"),
    ]
    for quota, field, says in refusals:
        with pytest.raises(InvalidRequest) as refused:
            await quotas.move("c1", "r1", 8, quota)
        assert says in refused.value.details["fields"][field]
    assert await redis.hgetall(keys.campaign("c1")) == before
    # Head office moves one of app's unused units to wechat.
    await quotas.move("c1", "r1", 8, {"app": 3, WECHAT: 3})
    assert (await claim_as(api, "app", "a9", "c-9"))[0] == 409
    for i in range(2):
        assert (await claim_as(api, WECHAT, f"w{i + 1}", f"cw-{i}"))[0] == 201
    assert (await claim_as(api, WECHAT, "w9", "cw-9"))[0] == 409
    # Dropping wechat's name moves its grants to the shared remainder (8 - 3 = 5, 3 taken).
    await quotas.move("c1", "r1", 8, {"app": 3})
    fields = await redis.hmget(keys.campaign("c1"), ["r:r1:q:wechat", "r:r1:qsum", "r:r1:qfg"])
    assert fields == [None, "3", "3"]
    assert (await claim_as(api, WECHAT, "w10", "cw-10"))[0] == 201
    assert (await quotas.granted("c1", "r1", ["app", WECHAT, "goal"])) == {
        "app": 3,
        WECHAT: 4,
        "goal": 0,
    }


async def test_a_move_that_would_break_a_reservation_is_refused(api, redis, keys):
    # wechat (not named) took 3 of the 4 left unreserved; reserving 3 more for app than the
    # 2 it has would need more than the 3 units still in stock.
    await quota_campaign(api, {"app": 2}, stock=6)
    for i in range(3):
        assert (await claim_as(api, WECHAT, f"w{i}", f"c-{i}"))[0] == 201
    with pytest.raises(InvalidRequest) as refused:
        await ChannelQuotas(redis, keys).move("c1", "r1", 6, {"app": 4})
    fields = refused.value.details["fields"]
    assert "more than the 3 left in stock" in fields["channel_quota"]


async def test_a_reward_without_quotas_cannot_be_given_them_live(api, redis, keys):
    await api.create_right()
    await api.create_campaign(channels=CHANNELS)
    with pytest.raises(InvalidRequest) as refused:
        await ChannelQuotas(redis, keys).move("c1", "r1", 100, {"app": 10})
    fields = refused.value.details["fields"]
    assert "without channel quotas" in fields["channel_quota"]


async def test_rewards_without_quotas_behave_as_before(api, redis, keys):
    await api.create_right()
    await api.create_campaign(rewards=[reward(stock=3)], channels=CHANNELS)
    replies = await asyncio.gather(
        *(claim_as(api, ch, f"{ch}-{i}", f"{ch}-cust-{i}") for ch in CHANNELS for i in range(4))
    )
    assert sum(1 for status, _ in replies if status == 201) == 3
    assert {b["error"]["scope"] for s, b in replies if s != 201} == {"total"}
    held = await redis.hkeys(keys.campaign("c1"))
    assert not [f for f in held if f.startswith("r:r1:q")]
    shown = await view(api)
    assert shown["channel_quota"] is None and "channel_granted" not in shown


async def test_the_redis_rebuild_restores_the_per_channel_counters(
    api, pool, redis, keys, settings, clock
):
    await quota_campaign(api, {"app": 3, WECHAT: 1}, stock=6, channels=[*CHANNELS, "h5"])
    grants, statuses = [], []
    for ch, n in (("app", 3), (WECHAT, 2)):
        for i in range(n):
            status, body = await claim_as(api, ch, f"{ch}-{i}", f"{ch}-c-{i}")
            grants.append(body)
            statuses.append(status)
    assert statuses == [201, 201, 201, 201, 409]  # wechat's second is over its quota
    status, _ = await api.channel("POST", f"/v1/grants/{grants[0]['grant_id']}/revoke", {})
    assert status == 200
    # Before the ledger has them, the outbox accounts for each channel's difference.
    assert drifted(await Reconcile(pool, redis, keys, settings, clock).run()) == []
    await LedgerWorker(redis, pool, keys).drain()
    key = keys.campaign("c1")
    wanted = ["r:r1:qg:app", "r:r1:qg:wechat", "r:r1:qg:h5", "r:r1:qg:goal", "r:r1:qfg"]
    before = await redis.hmget(key, wanted)
    assert before == ["2", "1", "0", "0", "0"]
    assert drifted(await Reconcile(pool, redis, keys, settings, clock).run()) == []
    # Counters lost (and wrong) in Redis: the rebuild sets them to the ledger's figures.
    await redis.hset(key, mapping={"r:r1:qg:app": 0, "r:r1:qg:wechat": 7})
    found = drifted(await Reconcile(pool, redis, keys, settings, clock).run())
    assert {f.subject for f in found} == {"c1/r1/app", "c1/r1/wechat"}
    await Rebuild(pool, redis, keys, settings, clock).run()
    assert await redis.hmget(key, wanted) == before
    assert drifted(await Reconcile(pool, redis, keys, settings, clock).run()) == []
    # And the quotas hold after it: app has one left, wechat none.
    assert (await claim_as(api, "app", "app-9", "app-c-9"))[0] == 201
    assert (await claim_as(api, "app", "app-10", "app-c-10"))[0] == 409
    assert (await claim_as(api, WECHAT, "w-9", "w-c-9"))[0] == 409


async def test_goal_grants_share_only_what_the_quotas_leave_and_a_claw_back_returns_it(
    api, pool, redis, keys, settings
):
    await add_card_channel(api, pool, settings)
    # 3 in stock, 2 reserved for app: goal grants share the last one.
    await goal_campaign(api, stock=3, claw_back=True, channel_quota={"app": 2})
    first = await send(api, *(event(api, f"a-{i}", "cust-1") for i in range(5)))
    assert len(first[-1]["granted"]) == 1
    second = await send(api, *(event(api, f"b-{i}", "cust-2") for i in range(5)))
    assert not any("granted" in r for r in second)
    key = keys.campaign("g1")
    assert await redis.hmget(key, ["r:r1:qg:goal", "r:r1:qfg", "r:r1:qg:app"]) == ["1", "1", "0"]
    # A reversal claws cust-1's grant back, and with it the shared unit: cust-2's next counts.
    refund = (await send(api, event(api, "rf-1", "cust-1", reversal_of="a-2")))[0]
    assert len(refund["revoked"]) == 1
    assert await redis.hmget(key, ["r:r1:qg:goal", "r:r1:qfg"]) == ["0", "0"]
    again = (await send(api, event(api, "b-5", "cust-2")))[0]
    assert len(again["granted"]) == 1


async def test_a_failure_returns_the_channels_quota_and_a_redrive_takes_it_only_if_still_free(
    api, redis, keys
):
    await quota_campaign(api, {"app": 1}, stock=3)
    lifecycle = api.client.server.app[LIFECYCLE]
    status, first = await claim_as(api, "app", "a1", "c-1")
    assert status == 201
    failed = await lifecycle.move(first["grant_id"], "failed", "system:fulfilment")
    assert failed.applied
    assert await redis.hget(keys.campaign("c1"), "r:r1:qg:app") == "0"
    # The returned quota goes to the next app claim; the failed grant cannot take it again.
    assert (await claim_as(api, "app", "a2", "c-2"))[0] == 201
    redrive = await lifecycle.move(first["grant_id"], "redriven", "staff:operator")
    assert (redrive.outcome, redrive.before) == ("refused", "out_of_stock")
    status, second = await claim_as(api, "app", "a2", "c-2")  # a replay
    await lifecycle.move(second["grant_id"], "revoked", "staff:operator")
    redrive = await lifecycle.move(first["grant_id"], "redriven", "staff:operator")
    assert redrive.applied
    fields = await redis.hmget(keys.campaign("c1"), ["r:r1:qg:app", "r:r1:granted"])
    assert fields == ["1", "1"]


async def offers_on(api: Any, channel: str, customer: str) -> dict[str, Any]:
    kwargs: dict[str, Any] = {}
    if channel == WECHAT:
        kwargs = {"channel": WECHAT, "secret": WECHAT_SECRET}
    status, body = await api.channel("GET", f"/v1/customers/{customer}/offers", **kwargs)
    assert status == 200, body
    (offer,) = body["offers"]
    return offer


async def test_offers_say_out_of_stock_on_the_channel_whose_quota_is_used_up(api):
    await quota_campaign(api, {"app": 1, WECHAT: 2}, stock=5)
    assert (await offers_on(api, "app", "c-9"))["claimable"] is True
    assert (await claim_as(api, "app", "a1", "c-1"))[0] == 201
    # app's one is taken: out_of_stock there, though 4 are in stock; wechat still has its 2.
    offer = await offers_on(api, "app", "c-9")
    assert (offer["claimable"], offer["reason"]) == (False, "out_of_stock")
    assert offer["remaining_for_customer"] == 0
    offer = await offers_on(api, WECHAT, "c-9")
    assert (offer["claimable"], offer["remaining_for_customer"]) == (True, 1)
    # As the claims decide it.
    status, body = await claim_as(api, "app", "a2", "c-9")
    assert assert_error(status, body, 409, "out_of_stock")["scope"] == "channel"
    assert (await claim_as(api, WECHAT, "w1", "c-9"))[0] == 201


async def test_offers_on_a_channel_the_quotas_do_not_name_follow_what_they_leave(api):
    # app reserves 2 of 3: wechat, not named, shares the one left, and takes it.
    await quota_campaign(api, {"app": 2}, stock=3)
    assert (await claim_as(api, WECHAT, "w1", "c-1"))[0] == 201
    offer = await offers_on(api, WECHAT, "c-9")
    assert (offer["claimable"], offer["reason"]) == (False, "out_of_stock")
    offer = await offers_on(api, "app", "c-9")
    assert offer["claimable"] is True and "reason" not in offer

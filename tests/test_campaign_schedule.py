"""Campaigns follow the clock: the scheduler moves an approved campaign's phase at both edges of
its window with nobody reading it, ends it at ends_at through the `end` action (Redis refuses
claims, the final figures are written), notifies each edge once however many schedulers run,
keeps going through a PostgreSQL or Redis that fails for a while, and past a campaign that fails
every tick; a failure after Redis took an ending is healed by the next tick."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import orjson
import pytest
from prometheus_client import REGISTRY
from redis.asyncio import Redis

from quanyi.campaigns.ending import queries as schedule_queries
from quanyi.campaigns.schedule import CampaignScheduler
from quanyi.campaigns.service import CampaignService
from quanyi.core.settings import Settings
from quanyi.runtime import Stores
from quanyi.stores.scripts import Scripts
from tests.support.clients import error_code
from tests.support.factories import act, grant_many, reward
from tests.support.scratch import ScratchRedis
from tests.support.stores import audit_rows, campaign_status
from tests.support.waiting import until

pytestmark = pytest.mark.usefixtures("signed_in")

START_IN_S, LENGTH_S = 60, 60


def window(clock: Any) -> dict[str, str]:
    """A window opening a minute after the clock's now (whole seconds: the clock, moved by
    exactly that much, is then at the edge or past it, never a rounding short of it)."""
    start = datetime.fromtimestamp(int(clock()), UTC) + timedelta(seconds=START_IN_S)
    return {
        "starts_at": start.isoformat(),
        "ends_at": (start + timedelta(seconds=LENGTH_S)).isoformat(),
    }


async def later_campaign(
    api: Any, campaign_id: str = "c1", stock: int = 100, **fields: Any
) -> None:
    """An approved campaign of right `coffee` (unit cost 100) on `window`."""
    await api.create_campaign(campaign_id, [reward(stock=stock)], **window(api.clock), **fields)


@contextlib.asynccontextmanager
async def poisoned(pool: asyncpg.Pool, campaign_id: str) -> AsyncIterator[None]:
    """Writing the figures at the end of `campaign_id` fails, every time (bad data, a bug):
    after Redis took the ending, before its commit. A real PostgreSQL error, not a store away."""
    await pool.execute(
        "CREATE FUNCTION poison() RETURNS trigger LANGUAGE plpgsql AS"
        " $$ BEGIN RAISE EXCEPTION 'poisoned campaign %', NEW.campaign_id; END $$"
    )
    await pool.execute(
        "CREATE TRIGGER poison BEFORE INSERT ON campaign_results FOR EACH ROW"
        f" WHEN (NEW.campaign_id = '{campaign_id}') EXECUTE FUNCTION poison()"
    )
    try:
        yield
    finally:
        await pool.execute("DROP TRIGGER poison ON campaign_results")
        await pool.execute("DROP FUNCTION poison()")


def failures(step: str) -> float:
    value = REGISTRY.get_sample_value("quanyi_schedule_failures_total", {"step": step})
    return value or 0.0


async def redis_state(redis: Redis, keys: Any, campaign_id: str = "c1") -> str | None:
    return await redis.hget(keys.campaign(campaign_id), "state")


def scheduler_of(settings, clock, keys, redis, pool) -> CampaignScheduler:
    """The scheduler as `quanyi run` builds it (quanyi.runtime.Stores)."""
    return Stores(settings, clock, keys, redis, pool, Scripts(redis)).scheduler()


async def phase(pool: asyncpg.Pool, campaign_id: str = "c1") -> str | None:
    return await pool.fetchval("SELECT phase FROM campaigns WHERE id = $1", campaign_id)


async def notifications(pool: asyncpg.Pool) -> list[tuple[str, dict[str, Any]]]:
    rows = await pool.fetch(
        "SELECT kind, payload::text AS p FROM notifications ORDER BY created_at, id"
    )
    return [(r["kind"], orjson.loads(r["p"])) for r in rows]


async def test_phase_moves_at_both_edges_without_any_read(
    api, pool, redis, keys, settings, clock, coffee
):
    await later_campaign(api)
    scheduler = scheduler_of(settings, clock, keys, redis, pool)
    assert await phase(pool) is None  # approved, not yet seen by the scheduler

    await scheduler.tick()
    assert await phase(pool) == "scheduled"
    assert await notifications(pool) == []

    clock.advance(START_IN_S)
    assert (await scheduler.tick()).running == ["c1"]
    assert await phase(pool) == "running"
    [(kind, started)] = await notifications(pool)
    assert (kind, started["campaign_id"], started["status"]) == (
        "campaign.started",
        "c1",
        "approved",
    )
    # RFC 3339 in UTC, as every time the APIs show.
    assert started["starts_at"].endswith(".000Z") and started["ends_at"].endswith(".000Z")
    status, grant = await api.claim(request_id="q1", campaign_id="c1", customer_id="cust-1")
    assert status == 201, grant

    clock.advance(LENGTH_S)
    assert (await scheduler.tick()).ended == ["c1"]
    assert (await campaign_status(pool), await phase(pool)) == ("ended", "ended")
    # Ended as staff end it: the same action, audited under the schedule's name.
    assert ("(schedule)", "HQ", "campaign.end", "campaign:c1") in await audit_rows(
        pool, "campaign:c1"
    )
    kinds = [k for k, _ in await notifications(pool)]
    assert kinds == ["campaign.started", "campaign.ended"]
    ended = (await notifications(pool))[1][1]
    assert (ended["reason"], ended["ended_by"], ended["spent"]) == ("schedule", "(schedule)", 100)
    assert [(r["reward_id"], r["granted"], r["cost"]) for r in ended["rewards"]] == [("r1", 1, 100)]

    status, view = await api.admin("marketer", "GET", "/admin/v1/campaigns/c1")
    assert status == 200, view
    assert (view["status"], view["phase"]) == ("ended", "ended")
    assert [(r["reward_id"], r["granted"], r["cost"]) for r in view["results"]] == [("r1", 1, 100)]


async def test_end_at_ends_at_refuses_claims_and_releases_the_budget_reservation(
    api, pool, redis, keys, settings, clock, coffee
):
    year = str(
        datetime.fromtimestamp(int(clock()) + START_IN_S, UTC).astimezone(settings.zone).year
    )
    status, body = await api.admin(
        "admin",
        "POST",
        "/admin/v1/branches/HQ/budget/allocations",
        {"period": year, "amount": 5000},
    )
    assert status == 200, body
    await later_campaign(api, budget=1000)
    scheduler = scheduler_of(settings, clock, keys, redis, pool)
    clock.advance(START_IN_S)
    await scheduler.tick()
    status, grant = await api.claim(request_id="q0", campaign_id="c1", customer_id="cust-0")
    assert status == 201, grant
    clock.advance(LENGTH_S)
    assert (await scheduler.tick()).ended == ["c1"]

    assert await redis.hget(keys.campaign("c1"), "state") == "ended"
    assert not await redis.sismember(keys.live_campaigns, "c1")
    # The reservation is closed: the one grant's 100 charged, the other 900 back to the branch.
    reservation = await pool.fetchrow(
        "SELECT amount, charged, released_at FROM budget_reservations WHERE campaign_id = 'c1'"
    )
    assert (reservation["amount"], reservation["charged"]) == (1000, 100)
    assert reservation["released_at"] is not None
    released = await pool.fetchrow(
        "SELECT amount, actor FROM budget_movements WHERE kind = 'release' AND campaign_id = 'c1'"
    )
    assert tuple(released) == (-900, "(schedule)")
    # The state refuses it, not only the window: a claim signed a second before ends_at (the
    # window still open) is refused all the same, with the code staff's `end` gives.
    clock.advance(-1)
    status, body = await api.claim(request_id="q1", campaign_id="c1", customer_id="cust-1")
    assert error_code(status, body) == (409, "campaign_not_active")
    assert body["error"]["state"] == "ended"


async def test_a_campaign_approved_inside_its_window_starts_at_the_next_tick(
    api, pool, redis, keys, settings, clock, c1
):
    scheduler = scheduler_of(settings, clock, keys, redis, pool)
    assert (await scheduler.tick()).running == ["c1"]
    assert await phase(pool) == "running"
    assert [k for k, _ in await notifications(pool)] == ["campaign.started"]
    await scheduler.tick()
    assert [k for k, _ in await notifications(pool)] == ["campaign.started"]


async def test_staff_ending_writes_the_figures_and_notifies_once(
    api, pool, redis, keys, settings, clock, c1
):
    status, grant = await api.claim(request_id="q1", campaign_id="c1", customer_id="cust-1")
    assert status == 201, grant
    status, body = await act(api, "marketer", "c1", "end")
    assert status == 200, body
    assert (body["phase"], [(r["reward_id"], r["granted"]) for r in body["results"]]) == (
        "ended",
        [("r1", 1)],
    )
    [(kind, ended)] = await notifications(pool)
    assert (kind, ended["reason"], ended["ended_by"]) == ("campaign.ended", "staff", "marketer")
    # The scheduler finds nothing left to do.
    clock.advance(31 * 86400)
    done = await scheduler_of(settings, clock, keys, redis, pool).tick()
    assert (done.running, done.ended) == ([], [])
    assert len(await notifications(pool)) == 1


async def test_two_schedulers_at_once_notify_each_edge_once(
    api, pool, redis, keys, settings, clock, coffee, database
):
    ids = [f"c{i}" for i in range(6)]
    for campaign_id in ids:
        await later_campaign(api, campaign_id)
    other_pool = await asyncpg.create_pool(database, min_size=1, max_size=4)
    try:
        a = scheduler_of(settings, clock, keys, redis, pool)
        b = scheduler_of(settings, clock, keys, redis, other_pool)
        for edge, step in (("scheduled", 0), ("running", START_IN_S), ("ended", LENGTH_S)):
            clock.advance(step)
            ticks = await asyncio.gather(*(s.tick() for s in (a, b, a, b)))
            # Each campaign moved by one of the four ticks, once.
            assert sorted(c for t in ticks for c in getattr(t, edge)) == ids
    finally:
        await other_pool.close()

    sent = [(kind, n["campaign_id"]) for kind, n in await notifications(pool)]
    assert sorted(sent) == sorted(
        [("campaign.started", c) for c in ids] + [("campaign.ended", c) for c in ids]
    )
    ends = [r for r in await audit_rows(pool) if r[2] == "campaign.end"]
    assert sorted(r[3] for r in ends) == [f"campaign:{c}" for c in ids]
    assert await pool.fetchval("SELECT count(*) FROM campaign_results") == len(ids)


async def test_a_postgresql_connection_lost_mid_tick_does_not_stop_the_loop(
    api, pool, redis, keys, settings, clock, coffee, database, caplog
):
    await later_campaign(api)
    own_pool = await asyncpg.create_pool(
        database, min_size=1, max_size=2, server_settings={"application_name": "qy-sched-test"}
    )
    scheduler = CampaignScheduler(
        own_pool, redis, keys, CampaignService(own_pool, redis, keys), clock, every_s=0.05
    )
    task = asyncio.create_task(scheduler.run())
    try:
        await until(lambda: _phase_is(pool, "scheduled"), what="scheduled")
        async with pool.acquire() as locker, locker.transaction():
            # The next tick waits on the table; its connection is then cut under it.
            await locker.execute("LOCK TABLE campaigns IN ACCESS EXCLUSIVE MODE")
            clock.advance(START_IN_S)

            async def waiting() -> bool:
                return bool(
                    await pool.fetchval(
                        "SELECT count(*) FROM pg_stat_activity WHERE application_name ="
                        " 'qy-sched-test' AND wait_event_type = 'Lock'"
                    )
                )

            await until(waiting, what="the scheduler waiting on the lock")
            await pool.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE application_name = 'qy-sched-test'"
            )
        await until(lambda: _phase_is(pool, "running"), what="running after the cut")
        assert not task.done()
        assert any("schedule put off" in r.getMessage() for r in caplog.records)
    finally:
        scheduler.stop()
        await asyncio.wait_for(task, 10)
        await own_pool.close()


async def test_redis_away_does_not_stop_the_loop(
    api, pool, keys, settings, clock, coffee, tmp_path, caplog
):
    await later_campaign(api)
    with ScratchRedis(tmp_path) as scratch:
        own_redis = Redis.from_url(scratch.url(0), decode_responses=True)
        service = CampaignService(pool, own_redis, keys)
        await service.publish_all()  # this Redis holds the campaign as the shared one does
        scheduler = CampaignScheduler(pool, own_redis, keys, service, clock, every_s=0.05)
        caplog.set_level(logging.WARNING)
        task = asyncio.create_task(scheduler.run())
        try:
            await until(lambda: _phase_is(pool, "scheduled"), what="scheduled")
            scratch.stop()
            clock.advance(START_IN_S + LENGTH_S)

            async def warned() -> bool:
                return any("schedule put off" in r.getMessage() for r in caplog.records)

            await until(warned, what="a tick failing on redis")
            # Not ended while Redis could not take it: PostgreSQL and Redis still agree.
            assert await campaign_status(pool) == "approved"
            scratch.start()
            await until(lambda: _status_is(pool, "ended"), what="ended once redis is back")
            assert await own_redis.hget(keys.campaign("c1"), "state") == "ended"
            assert not task.done()
            assert [k for k, _ in await notifications(pool)] == ["campaign.ended"]
        finally:
            scheduler.stop()
            await asyncio.wait_for(task, 10)
            await own_redis.aclose()


async def _phase_is(pool: asyncpg.Pool, wanted: str) -> bool:
    return await phase(pool) == wanted


async def _status_is(pool: asyncpg.Pool, wanted: str) -> bool:
    return await campaign_status(pool) == wanted


async def test_a_campaign_failing_every_tick_holds_up_no_other_nor_the_stock_watch(
    api, pool, redis, keys, settings, clock, coffee, caplog
):
    # c0 ends first (due campaigns are taken soonest end first) and fails every time.
    await api.create_campaign("c0", [reward()], **window(clock))
    await later_campaign(api, "c1")
    await api.create_campaign("c2", [reward(stock=10)])  # open for 30 days
    await grant_many(api, "c2", 10)
    scheduler = scheduler_of(settings, clock, keys, redis, pool)
    clock.advance(START_IN_S + LENGTH_S)
    before = failures("end")
    async with poisoned(pool, "c0"):
        for _ in range(2):
            done = await scheduler.tick()
            assert "c0" not in done.ended
        assert await campaign_status(pool, "c0") == "approved"
    assert done.ended == []  # c1 ended at the first tick
    assert await campaign_status(pool, "c1") == "ended"
    assert failures("end") - before == 2
    logged = [r for r in caplog.records if "campaign c0 not moved" in r.getMessage()]
    assert len(logged) == 2 and all(r.exc_info or r.exc_text for r in logged)  # with traceback
    # The watch ran all the same: stock.low for c2, and c0's Redis state (ended by the failed
    # ending) published again from PostgreSQL.
    kinds = [
        (k, n.get("reward_id")) for k, n in await notifications(pool) if n["campaign_id"] == "c2"
    ]
    assert ("stock.low", "r1") in kinds
    assert done.healed == ["c0"]
    assert await redis_state(redis, keys, "c0") == "active"
    # Once the data is mended, the next tick ends it.
    assert (await scheduler.tick()).ended == ["c0"]
    assert await redis_state(redis, keys, "c0") == "ended"


async def test_a_failure_after_redis_took_the_end_is_healed_by_the_next_tick(
    api, pool, redis, keys, settings, clock, c1
):
    async with poisoned(pool, "c1"):
        status, body = await act(api, "marketer", "c1", "end")
        assert status == 500, body
    # Redis took the ending, PostgreSQL rolled it back: claims refused on an approved campaign.
    assert (await campaign_status(pool), await redis_state(redis, keys)) == ("approved", "ended")
    status, body = await api.claim(request_id="q1", campaign_id="c1", customer_id="cust-1")
    assert error_code(status, body) == (409, "campaign_not_active")

    done = await scheduler_of(settings, clock, keys, redis, pool).tick()
    assert done.healed == ["c1"]
    assert await redis_state(redis, keys) == "active"
    assert await redis.sismember(keys.live_campaigns, "c1")
    status, grant = await api.claim(request_id="q1", campaign_id="c1", customer_id="cust-1")
    assert status == 201, grant
    assert (await scheduler_of(settings, clock, keys, redis, pool).tick()).healed == []
    assert [k for k, _ in await notifications(pool)] == ["campaign.started"]


async def test_a_window_extended_while_the_end_waits_for_the_lock_is_not_ended(
    api, pool, redis, keys, settings, clock, coffee
):
    await later_campaign(api)
    scheduler = scheduler_of(settings, clock, keys, redis, pool)
    clock.advance(START_IN_S)
    await scheduler.tick()
    clock.advance(LENGTH_S)
    async with pool.acquire() as reviser, reviser.transaction():
        # As a revision does: the campaign locked, its window extended, then committed.
        await reviser.execute("SELECT 1 FROM campaigns WHERE id = 'c1' FOR UPDATE")
        tick = asyncio.create_task(scheduler.tick())

        async def waiting() -> bool:
            return bool(
                await pool.fetchval(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                    " AND wait_event_type = 'Lock'"
                )
            )

        await until(waiting, what="the ending waiting on the campaign's lock")
        await reviser.execute(
            "UPDATE campaigns SET ends_at = ends_at + interval '1 day' WHERE id = 'c1'"
        )
    done = await tick
    assert done.ended == []
    assert (await campaign_status(pool), await phase(pool)) == ("approved", "running")
    assert await redis_state(redis, keys) == "active"
    assert [k for k, _ in await notifications(pool)] == ["campaign.started"]


async def test_staff_end_racing_the_scheduler_ends_it_once(
    api, pool, redis, keys, settings, clock, coffee
):
    await later_campaign(api)
    scheduler = scheduler_of(settings, clock, keys, redis, pool)
    clock.advance(START_IN_S + LENGTH_S)
    (status, body), done = await asyncio.gather(act(api, "marketer", "c1", "end"), scheduler.tick())
    # Exactly one of them ended it; the other found it ended.
    assert (status == 200) != (done.ended == ["c1"]), (status, body, done)
    assert await campaign_status(pool) == "ended"
    ended = [n for k, n in await notifications(pool) if k == "campaign.ended"]
    assert len(ended) == 1
    assert ended[0]["reason"] == ("staff" if status == 200 else "schedule")
    assert await pool.fetchval("SELECT count(*) FROM campaign_results") == 1
    ends = [r for r in await audit_rows(pool, "campaign:c1") if r[2] == "campaign.end"]
    assert len(ends) == 1


async def test_the_watch_reads_only_rewards_not_told_of_yet(
    api, pool, redis, keys, settings, clock, coffee
):
    await api.create_campaign("c1", [reward(stock=10)])
    await api.create_campaign("c2", [reward(stock=10)])
    await grant_many(api, "c1", 10)
    scheduler = scheduler_of(settings, clock, keys, redis, pool)
    assert (await scheduler.tick()).stock_low == [("c1", "r1")]
    # c1's state is still compared with Redis's; its reward, told of, is read no more.
    watched = await pool.fetch(schedule_queries.live_watch)
    assert [(r["campaign_id"], r["reward_id"]) for r in watched] == [("c1", None), ("c2", "r1")]


def test_settings_refuse_a_scheduler_that_never_waits():
    for bad in ("0", "-1", "nan"):
        with pytest.raises(ValueError, match="schedule_every_s"):
            Settings.from_mapping({"schedule_every_s": bad})

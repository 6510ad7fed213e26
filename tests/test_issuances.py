"""Bulk issuance: a reward to every member of an audience, approved by someone else, through the
claim path (channel "bulk"), resumable after its worker is killed, never issuing anyone twice."""

from __future__ import annotations

import asyncio
import functools
import json
import os
import signal
import subprocess
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from quanyi.campaigns.issuance_worker import LANE_BUCKETS, IssuanceWorker, lanes_for
from quanyi.core.errors import Unavailable
from quanyi.issuance.bulk_claims import BulkClaims
from quanyi.ledger.worker import LedgerWorker
from quanyi.stores.keys import part_ids, part_of
from tests.support.cli import ROOT, cli_env, quanyi, store_env
from tests.support.clients import Api
from tests.support.factories import reward
from tests.support.waiting import until

pytestmark = [pytest.mark.usefixtures("signed_in"), pytest.mark.cluster_too]


async def audience(api: Api, members: int, audience_id: str = "vip") -> None:
    body = {"id": audience_id, "name": "VIP customers", "branch": "HQ"}
    status, made = await api.admin("marketer", "POST", "/admin/v1/audiences", body)
    assert status == 201, made
    csv = "customer_id\r\n" + "".join(f"cust-{i}\r\n" for i in range(members))
    token = await api.login("marketer")
    resp = await api.client.put(
        f"/admin/v1/audiences/{audience_id}/members",
        data=csv.encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "text/csv"},
    )
    assert resp.status == 200, await resp.text()


async def job(
    api: Api,
    job_id: str = "j1",
    *,
    approve: bool = True,
    campaign_id: str = "c1",
    maker: str = "marketer",
) -> dict[str, Any]:
    body = {"id": job_id, "reward_id": "r1", "audience_id": "vip"}
    status, made = await api.admin(
        maker, "POST", f"/admin/v1/campaigns/{campaign_id}/issuances", body
    )
    assert status == 201, made
    assert made["state"] == "pending_approval"
    if approve:
        status, made = await api.admin("approver", "POST", f"/admin/v1/issuances/{job_id}/approve")
        assert status == 200, made
        assert made["state"] == "running"
    return made


async def status_of(api: Api, job_id: str = "j1") -> dict[str, Any]:
    status, body = await api.admin("auditor", "GET", f"/admin/v1/issuances/{job_id}")
    assert status == 200, body
    return body


Hook = Callable[[int], Awaitable[None]]


def make_worker(
    redis,
    pool,
    keys,
    settings,
    clock,
    *,
    hook: Hook | None = None,
    buckets_per_batch: int = 8,
    lane_buckets: int = LANE_BUCKETS,
) -> IssuanceWorker:
    """The worker as the runtime builds it, with `hook(n)` awaited before the n-th bulk call
    (one batch of buckets)."""
    claims = BulkClaims(redis, keys, settings, clock)
    calls = 0

    async def issue(campaign_id: str, reward_id: str, requests: Any) -> list[str]:
        nonlocal calls
        calls += 1
        if hook is not None:
            await hook(calls)
        return await claims.decide_many("bulk", campaign_id, reward_id, requests)

    return IssuanceWorker(
        pool,
        redis,
        keys,
        issue,
        buckets_per_batch=buckets_per_batch,
        lane_buckets=lane_buckets,
    )


async def run_once(worker: IssuanceWorker) -> list[str]:
    """One tick of the worker."""
    return await worker.tick()


async def grants_per_customer(pool, campaign_id: str = "c1") -> dict[str, int]:
    rows = await pool.fetch(
        "SELECT customer_id, count(*) AS n FROM grants WHERE campaign_id = $1 GROUP BY 1",
        campaign_id,
    )
    return {r["customer_id"]: r["n"] for r in rows}


async def test_stock_100_audience_1000_issues_exactly_100(api, pool, redis, keys, settings, clock):
    await api.create_right()
    await api.create_campaign(rewards=[reward(stock=100)])
    await audience(api, 1000)
    await job(api)
    assert await run_once(make_worker(redis, pool, keys, settings, clock)) == ["j1"]
    done = await status_of(api)
    assert done["state"] == "done" and done["finished_at"] and done["started_at"]
    assert (done["total"], done["issued"], done["failed"]) == (1000, 100, 0)
    assert done["skipped"] == {"out_of_stock": 900}
    await LedgerWorker(redis, pool, keys).drain()
    channels = await pool.fetch("SELECT channel_id, count(*) AS n FROM grants GROUP BY 1")
    assert [(r["channel_id"], r["n"]) for r in channels] == [("bulk", 100)]
    assert set((await grants_per_customer(pool)).values()) == {1}
    # Done: the channel may claim no more, and the frozen member list is gone.
    assert not await redis.hexists(keys.campaign("c1"), "ch:bulk")
    assert not [k async for k in redis.scan_iter(match=f"{keys.prefix}:aud:*:job:*")]


async def test_a_split_campaign_issues_exactly_its_stock(api, pool, redis, keys, settings, clock):
    """Stock 100 in 4 parts, 1,000 members: each member's claim in their part, dry parts refilled
    from the others, so exactly the stock is issued, as to an unsplit campaign."""
    await api.create_right()
    await api.create_campaign(rewards=[reward(stock=100)], stock_parts=4)
    await audience(api, 1000)
    await job(api)
    assert await run_once(make_worker(redis, pool, keys, settings, clock)) == ["j1"]
    done = await status_of(api)
    assert done["state"] == "done"
    assert (done["total"], done["issued"], done["failed"]) == (1000, 100, 0)
    assert done["skipped"] == {"out_of_stock": 900}
    parts = [keys.campaign(p) for p in part_ids("c1", 4)]
    held = [await redis.hmget(p, ["r:r1:stock", "r:r1:granted", "ch:bulk"]) for p in parts]
    assert sum(int(g) for _, g, _ in held) == 100
    assert sum(int(s) for s, _, _ in held) == 100
    assert all(int(g) <= int(s) for s, g, _ in held)
    assert [b for _, _, b in held] == [None] * 4  # done: no part lets the channel claim
    await LedgerWorker(redis, pool, keys).drain()
    per_customer = await grants_per_customer(pool)
    assert sum(per_customer.values()) == 100 and set(per_customer.values()) == {1}
    # Members of every part were issued, not only those of the parts that started full.
    assert {part_of("c1", 4, c) for c in per_customer} == set(part_ids("c1", 4))


async def test_the_creator_may_not_approve_and_bodies_are_checked(api):
    await api.create_right()
    await api.create_campaign()
    await audience(api, 10)
    await job(api, approve=False, maker="admin")
    status, body = await api.admin("admin", "POST", "/admin/v1/issuances/j1/approve")
    assert (status, body["error"]["code"]) == (403, "maker_may_not_approve"), body
    status, body = await api.admin("marketer", "POST", "/admin/v1/issuances/j1/approve")
    assert (status, body["error"]["code"]) == (403, "forbidden"), body
    assert (await status_of(api))["state"] == "pending_approval"
    status, body = await api.admin("approver", "POST", "/admin/v1/issuances/j1/approve")
    assert (status, body["state"]) == (200, "running"), body
    path = "/admin/v1/campaigns/c1/issuances"
    for bad in ({}, {"id": 5, "reward_id": "r1", "audience_id": "vip"}, {"id": "x y"}):
        status, body = await api.admin("marketer", "POST", path, bad)
        assert (status, body["error"]["code"]) == (400, "invalid_request"), body
    status, body = await api.admin(
        "marketer", "POST", path, {"id": "j2", "reward_id": "nope", "audience_id": "vip"}
    )
    assert (status, body["error"]["code"]) == (404, "reward_not_found"), body
    status, body = await api.admin(
        "marketer", "POST", path, {"id": "j2", "reward_id": "r1", "audience_id": "nope"}
    )
    assert status == 404, body
    status, body = await api.admin(
        "marketer",
        "POST",
        "/admin/v1/campaigns/nope/issuances",
        {"id": "j2", "reward_id": "r1", "audience_id": "vip"},
    )
    assert status == 404, body
    status, body = await api.admin(
        "marketer", "POST", path, {"id": "j1", "reward_id": "r1", "audience_id": "vip"}
    )
    assert (status, body["error"]["code"]) == (409, "already_exists"), body
    status, body = await api.admin("auditor", "GET", "/admin/v1/issuances/j2")
    assert status == 404, body  # nothing refused was made


async def test_dual_approval_above_the_threshold(aiohttp_client, api, pool, clock, settings):
    from dataclasses import replace

    from quanyi.web.app import create_app
    from tests.support.clients import Api as Client

    dual_settings = replace(settings, dual_approval_above=500)
    dual = Client(await aiohttp_client(create_app(dual_settings, clock)), clock)
    await api.create_right()  # unit cost 100
    await api.create_campaign()
    await audience(api, 10)  # 10 members x 100 fen = 1,000 fen: above 500
    made = await job(dual, approve=False)
    assert (made["money"], made["approvals_needed"]) == (1000, 2)
    status, body = await dual.admin("sz-approver", "POST", "/admin/v1/issuances/j1/approve")
    assert status == 403, body  # SZ may not act on head office's job
    status, body = await dual.admin("approver", "POST", "/admin/v1/issuances/j1/approve")
    assert (status, body["state"], len(body["approvals"])) == (202, "pending_approval", 1), body
    status, body = await dual.admin("approver", "POST", "/admin/v1/issuances/j1/approve")
    assert (status, body["error"]["code"]) == (409, "already_approved"), body
    status, body = await dual.admin("admin", "POST", "/admin/v1/issuances/j1/approve")
    assert (status, body["state"], len(body["approvals"])) == (200, "running", 2), body
    assert body["total"] == 10


async def test_pause_stops_resume_continues_cancel_ends(api, pool, redis, keys, settings, clock):
    await api.create_right()
    await api.create_campaign(rewards=[reward(stock=100_000)])
    await audience(api, 2000)  # 8 buckets
    await job(api)

    async def pause_at_first(n: int) -> None:
        if n == 1:
            status, body = await api.admin("marketer", "POST", "/admin/v1/issuances/j1/pause")
            assert status == 200, body

    await run_once(
        make_worker(redis, pool, keys, settings, clock, hook=pause_at_first, buckets_per_batch=2)
    )
    paused = await status_of(api)
    assert paused["state"] == "paused"
    # Paused mid-batch: the batch in flight still had its channel; nobody of it was refused.
    assert (paused["skipped"], paused["failed"]) == ({}, 0)
    # The batch in flight finished and was counted; nothing after it.
    assert 0 < paused["issued"] < 2000
    issued_at_pause = paused["issued"]
    assert await run_once(make_worker(redis, pool, keys, settings, clock)) == []
    assert (await status_of(api))["issued"] == issued_at_pause
    status, body = await api.admin("approver", "POST", "/admin/v1/issuances/j1/resume")
    assert (status, body["state"]) == (200, "running"), body

    async def cancel_at_first(n: int) -> None:
        if n == 1:
            status, body = await api.admin("marketer", "POST", "/admin/v1/issuances/j1/cancel")
            assert status == 200, body

    await run_once(
        make_worker(redis, pool, keys, settings, clock, hook=cancel_at_first, buckets_per_batch=2)
    )
    cancelled = await status_of(api)
    assert cancelled["state"] == "cancelled" and cancelled["finished_at"]
    assert issued_at_pause < cancelled["issued"] < 2000
    assert (cancelled["skipped"], cancelled["failed"]) == ({}, 0)
    assert not await redis.hexists(keys.campaign("c1"), "ch:bulk")
    status, body = await api.admin("marketer", "POST", "/admin/v1/issuances/j1/resume")
    assert (status, body["error"]["code"]) == (409, "invalid_transition"), body
    await LedgerWorker(redis, pool, keys).drain()
    per = await grants_per_customer(pool)
    assert len(per) == cancelled["issued"] and set(per.values()) == {1}


async def test_a_store_away_mid_batch_is_retried_and_nobody_is_issued_twice(
    api, pool, redis, keys, settings, clock
):
    await api.create_right()
    await api.create_campaign(rewards=[reward(stock=100_000)])
    await audience(api, 1000)
    await job(api)

    async def fail_once(n: int) -> None:
        if n == 3:  # 4 buckets a batch each: the third batch, after two checkpoints
            raise Unavailable("the rights store is unreachable; retry")

    with pytest.raises(Unavailable):
        await run_once(
            make_worker(redis, pool, keys, settings, clock, hook=fail_once, buckets_per_batch=1)
        )
    halfway = await status_of(api)
    assert (halfway["state"], halfway["total"]) == ("running", 1000)
    assert 0 < halfway["issued"] < 1000
    await run_once(make_worker(redis, pool, keys, settings, clock))
    done = await status_of(api)
    assert (done["state"], done["issued"], done["skipped"]) == ("done", 1000, {})
    await LedgerWorker(redis, pool, keys).drain()
    per = await grants_per_customer(pool)
    assert len(per) == 1000 and set(per.values()) == {1}


async def test_two_workers_at_once_never_double_issue(api, pool, redis, keys, settings, clock):
    await api.create_right()
    await api.create_campaign(rewards=[reward(stock=100_000)])
    await audience(api, 3000)  # 16 buckets: 8 lanes of 2 with lanes of at least 2 buckets
    await job(api)
    a = make_worker(redis, pool, keys, settings, clock, buckets_per_batch=1, lane_buckets=2)
    b = make_worker(redis, pool, keys, settings, clock, buckets_per_batch=1, lane_buckets=2)
    ran = await asyncio.gather(run_once(a), run_once(b))
    # Each ran the lanes it could lock; one of them (the last) finished the job.
    assert ["j1"] in ran
    lanes = await pool.fetch("SELECT * FROM issuance_lanes WHERE job_id = 'j1' ORDER BY lane")
    assert [(r["next_bucket"], r["end_bucket"]) for r in lanes] == [
        (2 * i + 2, 2 * i + 2) for i in range(8)
    ]
    done = await status_of(api)
    assert (done["state"], done["issued"], done["skipped"]) == ("done", 3000, {})
    await LedgerWorker(redis, pool, keys).drain()
    per = await grants_per_customer(pool)
    assert len(per) == 3000 and set(per.values()) == {1}


async def test_a_worker_killed_mid_job_is_resumed_by_another(
    api, pool, redis, keys, settings, clock
):
    await api.create_right()
    await api.create_campaign(rewards=[reward(stock=1_000_000)])
    await audience(api, 60_000)
    await job(api)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "quanyi.cli",
        "worker",
        "issuance",
        cwd=ROOT,
        env=cli_env(**store_env(settings)),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:

        async def started() -> bool:
            return (await status_of(api))["issued"] > 0

        await until(started, timeout=60, what="the worker's first checkpoint")
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()
    killed = await status_of(api)
    assert killed["state"] == "running" and 0 < killed["issued"] < 60_000, killed
    # 256 buckets: lanes side by side, each left at its own checkpoint.
    lanes = await pool.fetch("SELECT * FROM issuance_lanes WHERE job_id = 'j1' ORDER BY lane")
    assert len(lanes) == lanes_for(256) > 1
    assert lanes[-1]["end_bucket"] == 256
    await run_once(make_worker(redis, pool, keys, settings, clock))
    done = await status_of(api)
    assert (done["state"], done["issued"], done["failed"], done["skipped"]) == (
        "done",
        60_000,
        0,
        {},
    )
    await LedgerWorker(redis, pool, keys).drain()
    per = await grants_per_customer(pool)
    assert len(per) == 60_000 and set(per.values()) == {1}


async def test_an_import_during_the_job_does_not_change_whom_it_covers(
    api, pool, redis, keys, settings, clock
):
    await api.create_right()
    await api.create_campaign(rewards=[reward(stock=100_000)])
    await audience(api, 500)
    await job(api)
    # A new version: other customers; the old version's hashes are unlinked.
    token = await api.login("marketer")
    csv = "customer_id\r\n" + "".join(f"new-{i}\r\n" for i in range(700))
    resp = await api.client.put(
        "/admin/v1/audiences/vip/members",
        data=csv.encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "text/csv"},
    )
    assert resp.status == 200, await resp.text()
    await run_once(make_worker(redis, pool, keys, settings, clock))
    done = await status_of(api)
    assert (done["state"], done["total"], done["issued"]) == ("done", 500, 500)
    await LedgerWorker(redis, pool, keys).drain()
    assert set(await grants_per_customer(pool)) == {f"cust-{i}" for i in range(500)}


async def test_the_command_creates_approves_and_follows(api, pool, redis, keys, settings, clock):
    command = functools.partial(quanyi, **store_env(settings))
    await api.create_right()
    await api.create_campaign(rewards=[reward(stock=50)])
    await audience(api, 80)
    made = await asyncio.to_thread(
        command,
        "issuance",
        "create",
        "--id",
        "j1",
        "--campaign",
        "c1",
        "--reward",
        "r1",
        "--audience",
        "vip",
    )
    assert made.returncode == 0, made.stderr
    assert json.loads(made.stdout)["state"] == "pending_approval"
    refused = await asyncio.to_thread(
        command, "issuance", "approve", "--id", "j1", "--as", "marketer"
    )
    assert refused.returncode == 1 and "may not" in refused.stderr, refused.stderr
    approved = await asyncio.to_thread(
        command, "issuance", "approve", "--id", "j1", "--as", "approver"
    )
    assert approved.returncode == 0, approved.stderr
    assert json.loads(approved.stdout)["state"] == "running"
    follow = asyncio.create_task(
        asyncio.to_thread(command, "issuance", "status", "--id", "j1", "--follow", "--every", "0.1")
    )
    await run_once(make_worker(redis, pool, keys, settings, clock))
    followed = await follow
    assert followed.returncode == 0, followed.stderr
    done = json.loads(followed.stdout.strip().splitlines()[-1])
    assert (done["state"], done["issued"], done["skipped"]) == ("done", 50, {"out_of_stock": 30})


async def test_the_jobs_checkpoint_stays_the_low_water_mark_of_its_lanes(
    api, pool, redis, keys, settings, clock
):
    """The job row's next_bucket follows its lanes (the lowest lane's next bucket: everything
    below it is done), so a worker of the version before lanes that takes the job up resumes
    from a true checkpoint rather than from where the lanes were made."""
    await api.create_right()
    await api.create_campaign(rewards=[reward(stock=100_000)])
    await audience(api, 3000)  # 16 buckets: 8 lanes of 2
    await job(api)

    async def pause_at(n: int) -> None:
        if n == 5:
            status, body = await api.admin("marketer", "POST", "/admin/v1/issuances/j1/pause")
            assert status == 200, body

    worker = make_worker(
        redis, pool, keys, settings, clock, hook=pause_at, buckets_per_batch=1, lane_buckets=2
    )
    await run_once(worker)
    lanes = await pool.fetch("SELECT * FROM issuance_lanes WHERE job_id = 'j1' ORDER BY lane")
    assert len(lanes) == 8
    low = min(r["next_bucket"] for r in lanes)
    assert low >= 1  # the first lane did a batch at least before the pause
    job_row = await pool.fetchrow("SELECT next_bucket, state FROM issuance_jobs WHERE id = 'j1'")
    assert (job_row["state"], job_row["next_bucket"]) == ("paused", low)


async def test_a_lane_moved_on_after_it_was_listed_is_read_again_under_its_lock(
    api, pool, redis, keys, settings, clock
):
    """A worker lists the lanes left, and before it locks them another worker runs them to
    their end: it finds them done once it holds their locks and sends no claim again."""
    await api.create_right()
    await api.create_campaign(rewards=[reward(stock=100_000)])
    await audience(api, 1000)  # 4 buckets: one lane
    await job(api)
    late_calls: list[int] = []

    async def count(n: int) -> None:
        late_calls.append(n)

    other = make_worker(redis, pool, keys, settings, clock, buckets_per_batch=1)

    class ListsThenWaits(IssuanceWorker):
        async def _lanes_left(self, job_id: str) -> list[Any]:
            listed = await super()._lanes_left(job_id)
            assert [r["next_bucket"] for r in listed] == [0]
            # Meanwhile the other worker runs the lane (this one holds the job shared, so it
            # leaves the job itself to be finished by this one).
            assert await other.run_job(job_id) is True
            return listed

    made = make_worker(redis, pool, keys, settings, clock, hook=count, buckets_per_batch=1)
    late = ListsThenWaits(pool, redis, keys, made._issue, buckets_per_batch=1)
    assert await late.run_job("j1") is True  # it finished the job
    assert late_calls == []  # and claimed nobody again
    done = await status_of(api)
    assert (done["state"], done["issued"], done["skipped"]) == ("done", 1000, {})

"""A grant revoked while its vendor was issuing it: the vendor's issue is taken back, and its
outbox entry is acknowledged only after that, so a worker killed in between leaves the entry to
the next worker, which revokes at the vendor. Against the simulated vendor (a real HTTP server),
real Redis and real PostgreSQL."""

from __future__ import annotations

import orjson
import pytest

from quanyi.fulfilment.recorder import Recorder, revoked_meanwhile
from quanyi.issuance.lifecycle import grant_from_event
from quanyi.stores.outbox import FULFIL_GROUP
from tests.support.vendors import SIM, issue_at_vendor, sim_grant, sim_stats
from tests.support.waiting import running, until

pytestmark = pytest.mark.cluster_too


async def claim_and_take(api, redis, keys, consumer: str) -> tuple[str, str, dict]:
    """A grant of the vendor's right, its outbox entry read by `consumer` (then left pending)."""
    status, grant = await api.claim(request_id="q1", campaign_id="c1", customer_id="cust-1")
    assert status == 201, grant
    reply = await redis.xreadgroup(FULFIL_GROUP, consumer, {keys.of("c1").outbox: ">"}, count=10)
    (_stream, [(outbox_id, fields)]) = reply[0]
    event = orjson.loads(fields["g"])
    assert event["grant_id"] == grant["grant_id"]
    return grant["grant_id"], outbox_id, event


async def revoke(api, grant_id: str) -> None:
    status, body = await api.channel("POST", f"/v1/grants/{grant_id}/revoke", {"reason": "oops"})
    assert status == 200 and body["status"] == "revoked", body


async def pending_of(redis, keys, consumer: str) -> list[str]:
    held = await redis.xpending_range(keys.of("c1").outbox, FULFIL_GROUP, "-", "+", 100, consumer)
    return [h["message_id"] for h in held]


async def test_the_recorder_leaves_the_entry_of_a_grant_revoked_meanwhile_pending(
    api, redis, keys, sim, worker_factory
):
    grant_id, outbox_id, event = await claim_and_take(api, redis, keys, "w")
    await revoke(api, grant_id)
    recorder = Recorder(redis, keys, worker_factory().lifecycle)
    try:
        moved = await recorder.fulfilled(event, outbox_id, f"vendor:{SIM}", {"vendor_id": SIM})
    finally:
        await recorder.close()
    assert revoked_meanwhile(moved) and moved.state == "revoked"
    # Not acknowledged: the caller does, once the vendor revoke was tried.
    assert await pending_of(redis, keys, "w") == [outbox_id]


async def test_a_worker_killed_before_the_vendor_revoke_leaves_it_to_the_next_one(
    api, pool, redis, keys, sim, key_pairs, worker_factory
):
    """What the dead worker did: took the grant's entry and had the vendor issue it, slowly;
    meanwhile the grant was revoked, and the revocation's own entry was dealt with while the
    vendor had nothing to revoke yet. It recorded the fulfilment (refused: revoked) and was
    killed before it revoked at the vendor."""
    grant_id, outbox_id, event = await claim_and_take(api, redis, keys, "dead")
    await revoke(api, grant_id)
    [(revocation, _fields)] = await redis.xrange(keys.of("c1").outbox, f"({outbox_id}", "+")

    async with running(worker_factory()):  # takes the revocation only (the grant is "dead"'s)

        async def revocation_done() -> bool:
            groups = {g["name"]: g for g in await redis.xinfo_groups(keys.of("c1").outbox)}
            delivered = groups[FULFIL_GROUP]["last-delivered-id"] == revocation
            return (
                delivered
                and (await redis.xpending(keys.of("c1").outbox, FULFIL_GROUP))["pending"] == 1
            )

        await until(revocation_done, what="the revocation's entry dealt with")
    assert grant_id not in (await sim_stats(sim))["effects"]

    issued = await issue_at_vendor(pool, SIM, event, face_value=event.get("face_value", 0))
    assert issued.code
    moved = await worker_factory().lifecycle.move(
        grant_id, "fulfilled", f"vendor:{SIM}", {"vendor_id": SIM}, grant=grant_from_event(event)
    )
    assert revoked_meanwhile(moved)
    assert (await sim_grant(sim, key_pairs, grant_id))["state"] == "issued"
    assert await pending_of(redis, keys, "dead") == [outbox_id]

    async with running(worker_factory(reclaim_idle_ms=300)):

        async def taken_over() -> bool:
            return (await redis.xpending(keys.of("c1").outbox, FULFIL_GROUP))["pending"] == 0

        await until(taken_over, timeout=15, what="the dead worker's entry taken over")
    assert (await sim_grant(sim, key_pairs, grant_id))["state"] == "revoked"
    assert (await sim_stats(sim))["effects"] == {grant_id: 1}


async def test_a_grant_revoked_before_its_vendor_issued_it_is_revoked_there_and_acknowledged(
    api, redis, keys, sim, key_pairs, worker_factory
):
    status, grant = await api.claim(request_id="q1", campaign_id="c1", customer_id="cust-1")
    assert status == 201, grant
    grant_id = grant["grant_id"]
    await revoke(api, grant_id)
    async with running(worker_factory()):

        async def finished() -> bool:
            if grant_id not in (await sim_stats(sim))["effects"]:
                return False
            if (await redis.xpending(keys.of("c1").outbox, FULFIL_GROUP))["pending"]:
                return False
            return (await sim_grant(sim, key_pairs, grant_id))["state"] == "revoked"

        await until(finished, what="issued, revoked at the vendor and acknowledged")

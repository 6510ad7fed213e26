"""The ledger on several shards: an outbox entry id is unique in its own shard's stream only, so
two shards written in the same millisecond give out the same ids. A grant's events all come
from its campaign's shard: the ledger keys them by (grant id, outbox id)."""

from __future__ import annotations

from typing import Any

import pytest

from quanyi.ledger.worker import LedgerWorker
from tests.support.factories import grant_many

pytestmark = [pytest.mark.cluster_too, pytest.mark.usefixtures("signed_in", "coffee")]


async def ledger_state(pool: Any) -> tuple[list[tuple], list[tuple], list[tuple]]:
    events = await pool.fetch(
        "SELECT grant_id, event, outbox_id FROM grant_events ORDER BY grant_id, outbox_id"
    )
    status = await pool.fetch(
        "SELECT campaign_id, status, grants FROM report_status WHERE grants <> 0 ORDER BY 1, 2"
    )
    daily = await pool.fetch(
        "SELECT campaign_id, sum(issued)::int, sum(fulfilled)::int, sum(revoked)::int"
        " FROM report_daily GROUP BY 1 ORDER BY 1"
    )
    return (
        [tuple(r.values()) for r in events],
        [tuple(r.values()) for r in status],
        [tuple(r.values()) for r in daily],
    )


@pytest.mark.cluster_only("one outbox never repeats an entry id")
async def test_transitions_of_two_shards_with_the_same_outbox_id_are_each_written(
    api, redis, pool, keys, settings
):
    first = "ca"
    second = next(c for c in ("cb", "cc", "cd", "ce") if keys.of(c) != keys.of(first))
    for campaign_id in (first, second):
        await api.create_campaign(campaign_id)
    grants = {first: await grant_many(api, first, 2), second: await grant_many(api, second, 2)}
    worker = LedgerWorker(redis, pool, keys, tz=settings.tz)
    await worker.drain()  # the grants (born fulfilled: the coffee right is fulfilled in-house)

    shards = {c: keys.of(c) for c in grants}
    held = {c: len(await redis.xrange(shards[c].outbox)) for c in grants}
    for grant_ids in grants.values():
        for grant_id in grant_ids:
            status, body = await api.admin(
                "marketer", "POST", f"/admin/v1/grants/{grant_id}/revoke", {"reason": "test"}
            )
            assert status == 200, body
    # The revocations of both shards given the same entry ids, as two shards written in the
    # same millisecond would: each of one shard's has a twin in the other.
    revokes = {c: (await redis.xrange(shards[c].outbox))[held[c] :] for c in grants}
    assert all(len(found) == 2 for found in revokes.values())
    after_ms = max(int(found[-1][0].split("-")[0]) for found in revokes.values()) + 1
    rewritten: dict[str, list[tuple[str, dict]]] = {}
    for campaign_id, found in revokes.items():
        outbox = shards[campaign_id].outbox
        await redis.xdel(outbox, *(entry_id for entry_id, _ in found))
        rewritten[campaign_id] = []
        for seq, (_, fields) in enumerate(found):
            entry_id = await redis.xadd(outbox, fields, id=f"{after_ms}-{seq}")
            rewritten[campaign_id].append((entry_id, fields))
    assert [i for i, _ in rewritten[first]] == [i for i, _ in rewritten[second]]
    await worker.drain()

    events, status, daily = await ledger_state(pool)
    revoked = sorted(
        (grant_id, "revoked", entry_id)
        for c in grants
        for grant_id, (entry_id, _) in zip(grants[c], rewritten[c], strict=True)
    )
    assert sorted(e for e in events if e[1] == "revoked") == revoked
    assert len([e for e in events if e[1] == "fulfilled"]) == 4
    assert status == [(first, "revoked", 2), (second, "revoked", 2)]
    assert daily == [(first, 2, 2, 2), (second, 2, 2, 2)]
    for grant_ids in grants.values():
        assert await pool.fetchval(
            "SELECT array_agg(DISTINCT status) FROM grants WHERE grant_id = ANY($1)", grant_ids
        ) == ["revoked"]

    # Both shards' entries delivered again (a worker that died before acknowledging): nothing.
    for campaign_id, messages in rewritten.items():
        assert await worker._persist(messages, shards[campaign_id]) == 0
    assert await ledger_state(pool) == (events, status, daily)
    assert sum([await redis.xlen(s.outbox_dead) for s in keys.shards]) == 0

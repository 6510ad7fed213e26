"""The stock and budget counters of a campaign split into stock parts (inventory/stock_parts.py),
as `quanyi rebuild-redis` (rebuild.py) restores them from the ledger: each part its customers'
grants and spend, and the parts' stocks and budgets adding up to the campaign's."""

from __future__ import annotations

import asyncpg
from redis.asyncio import Redis
from redis.typing import EncodableT, FieldT

from quanyi.campaigns.revise_parts import forget_pending
from quanyi.inventory.hot_campaigns import HotCampaign
from quanyi.inventory.stock_parts import (
    MOVE_FIELD,
    RECEIVED_FIELD,
    counters_by_part,
    part_limits,
    read_parts,
)
from quanyi.stores.db import load_queries
from quanyi.stores.keys import Keys

queries = load_queries("quanyi.ledger", "recovery.sql")


async def restore_part_counters(
    pool: asyncpg.Pool, redis: Redis, keys: Keys, campaign: HotCampaign
) -> int:
    """A split campaign's parts: each its customers' grants and spend, and stock and budget
    as a publication from the ledger writes them (stock_parts.part_limits), so the parts
    add up to the campaign's whatever moves came before. A move left open is dropped: the
    stock it carried is in the parts again, and completing it would count it twice.
    Returns the number of fields written."""
    # Applied revisions are in the campaign's figures written below: their raises given too
    # would count twice.
    await forget_pending(pool, redis, keys, campaign.id, campaign.part_ids())
    rows = await pool.fetch(queries.live_customer_counts, campaign.id, None, None)
    by_part = counters_by_part(campaign.id, campaign.parts, rows)
    limits = part_limits({r.id: r.stock for r in campaign.rewards}, campaign.budget, by_part)
    # Every open move marked received in its receiver before the parts are written: a
    # process still between its take and its give (a refill, a reconcile) then adds
    # nothing to the stock rebuilt here.
    open_moves = dict(
        zip(
            by_part,
            await read_parts(redis, keys, campaign.id, campaign.parts),
            strict=True,
        )
    )
    for h in open_moves.values():
        for name, value in h.items():
            if name.startswith(MOVE_FIELD):
                receiver = keys.campaign(value.split("|")[0])
                move = name[len(MOVE_FIELD) :]
                await redis.hsetnx(receiver, RECEIVED_FIELD + move, 1)
    written = 0
    for pid, counters in by_part.items():
        key = keys.campaign(pid)
        mapping: dict[FieldT, EncodableT] = {
            f"r:{r.id}:granted": counters.granted.get(r.id, 0) for r in campaign.rewards
        }
        mapping["spent"] = counters.spent
        mapping.update(limits[pid])
        moves = [f for f in open_moves[pid] if f.startswith(MOVE_FIELD)]
        async with redis.pipeline(transaction=True) as pipe:
            if moves:
                pipe.hdel(key, *moves)
            pipe.hset(key, mapping=mapping)
            await pipe.execute()
        written += len(mapping)
    return written

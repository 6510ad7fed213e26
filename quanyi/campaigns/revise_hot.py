"""An applied revision written to Redis (campaigns/revisions.py applies it): lua/revise.lua on
the campaign's hash, or on each of its stock parts' (inventory/stock_parts.py), and the
counters that expire with the campaign kept until a later end.

revise.lua checks the new figures against the live counters and writes them, the new version
and the cached definition together; what it refuses is read by campaigns/revise_refusals.py.
"""

from __future__ import annotations

import secrets
from typing import Any

import orjson
from redis.asyncio import Redis

from quanyi.campaigns.model import Campaign
from quanyi.campaigns.revise_refusals import refusal
from quanyi.inventory.hot_campaigns import HotCampaign
from quanyi.stores.keys import EVENT_BUCKETS, PROGRESS_BUCKETS, Keys
from quanyi.stores.redis import as_text
from quanyi.stores.scripts import Scripts

# Counters whose expiry is extended in one pipeline round trip.
EXPIRE_CHUNK = 1000


async def revise_hot(keys: Keys, scripts: Scripts, campaign: Campaign) -> None:
    """revise.lua on every hash of the revised campaign (`campaign`: as it is after)."""
    hot = campaign.hot()
    # Part 0 last, as a publication writes them: it holds the definition processes load.
    for pid in reversed(hot.part_ids()):
        await _revise_part(keys, scripts, hot, pid)


async def _revise_part(keys: Keys, scripts: Scripts, hot: HotCampaign, pid: str) -> None:
    """revise.lua on one hash: the campaign's, or one of its stock parts', which keeps the
    stock and budget it holds (moves between the parts change them)."""
    split = hot.parts > 1
    budget: Any = "" if hot.budget is None else hot.budget
    args: list[Any] = [
        hot.version,
        hot.to_json() if pid == hot.id else "",
        secrets.token_hex(8),
        hot.ends_ms,
        "keep" if split and hot.budget is not None else budget,
        "\n".join(hot.channels),
        len(hot.rewards),
    ]
    for r in hot.rewards:
        quota = orjson.dumps(r.channel_quota).decode() if r.channel_quota else ""
        stock = "" if split else r.stock
        args += [r.id, stock, r.daily_stock or "", r.limit, r.daily_limit or "", quota]
    outcome, detail, figure, channel = await scripts.revise(
        keys=[
            keys.campaign(pid),
            keys.campaign_definition(pid),
            keys.of(pid).live_version,
            keys.of(pid).store_ready,
        ],
        args=args,
    )
    if outcome != "applied":
        raise refusal(outcome, as_text(detail), int(figure), as_text(channel))


async def keep_counters(
    redis: Redis, keys: Keys, before: Campaign, after: Campaign, retention_s: int
) -> None:
    """A later end keeps the counters that expire with the campaign (each customer's totals,
    goal progress, the events counted, final grant states) until the new end and its
    retention: a customer's limit must hold until then. Only ever extended, so a retry or
    a race with a claim's own EXPIREAT does no harm."""
    if after.ends_at <= before.ends_at:
        return
    until = int(after.ends_at.timestamp()) + retention_s
    hot = after.hot()
    names = []
    # Each part of a split campaign counts its own customers, in its own slot.
    for pid in hot.part_ids():
        names += [keys.customer_totals(pid, b) for b in range(hot.buckets)]
        names.append(keys.grant_states(pid))
    if hot.has_goals:
        names += [keys.progress(after.id, b) for b in range(PROGRESS_BUCKETS)]
        names += [keys.counted_events(after.id, b) for b in range(EVENT_BUCKETS)]
    for first in range(0, len(names), EXPIRE_CHUNK):
        async with redis.pipeline(transaction=False) as pipe:
            for name in names[first : first + EXPIRE_CHUNK]:
                pipe.expireat(name, until, gt=True)
            await pipe.execute()

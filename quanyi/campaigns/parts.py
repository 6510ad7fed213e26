"""Which campaigns are split into stock parts (inventory/stock_parts.py), for the readers of
their counters that start from PostgreSQL rows without the campaign's definition."""

from __future__ import annotations

import asyncpg

from quanyi.campaigns import queries


async def stock_parts_of(
    conn: asyncpg.Connection | asyncpg.Pool, campaign_ids: list[str]
) -> dict[str, int]:
    """The stock parts of those of these campaigns that are split, in one query (a campaign
    not named in the answer has one part: its own hash)."""
    if not campaign_ids:
        return {}
    rows = await conn.fetch(queries.split_campaigns, campaign_ids)
    return {r["id"]: r["stock_parts"] for r in rows}

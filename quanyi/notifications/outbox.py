"""Queueing a notification: a row of the `notifications` table, written with the change it
tells of (same connection, same transaction), once per dedupe key."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import asyncpg
import orjson

from quanyi.core.ids import new_ulid
from quanyi.notifications import queries

CAMPAIGN_STARTED = "campaign.started"
CAMPAIGN_ENDED = "campaign.ended"
STOCK_LOW = "stock.low"
KINDS = (CAMPAIGN_STARTED, CAMPAIGN_ENDED, STOCK_LOW)


async def enqueue(
    conn: asyncpg.Connection | asyncpg.Pool,
    kind: str,
    dedupe_key: str,
    payload: dict[str, Any],
    now: float | None = None,
) -> str | None:
    """Queue `payload` for the webhook; its delivery id, or None when `dedupe_key` was queued
    before (by this process or another). `now` (unix seconds, the caller's clock) dates it;
    None: PostgreSQL's transaction time, as the change it tells of is dated."""
    if kind not in KINDS:
        raise ValueError(f"unknown notification kind {kind!r}")
    if now is None:
        now = float(await conn.fetchval(queries.now))
    # A ULID: delivery ids sort by the time they were queued.
    delivery_id = new_ulid(int(now * 1000))
    return await conn.fetchval(
        queries.insert,
        delivery_id,
        kind,
        dedupe_key,
        orjson.dumps(payload).decode(),
        datetime.fromtimestamp(now, UTC),
    )


async def queued(conn: asyncpg.Connection | asyncpg.Pool, dedupe_keys: Iterable[str]) -> set[str]:
    """Which of these dedupe keys were queued already."""
    rows = await conn.fetch(queries.queued_keys, list(dedupe_keys))
    return {r["dedupe_key"] for r in rows}

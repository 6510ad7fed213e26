"""The report rollups recomputed from the ledger: what the ledger worker keeps up to date as it
writes (quanyi/ledger/queries.sql roll_up_grants, roll_up_events, move_status_counts), built
again from every grant and event: the daily rollups with the same two queries, page by page,
the status counts in one query.

For a ledger that held grants before the rollups existed, after a change of QUANYI_TZ, or to
check that the kept rollups agree with the rows (tests do)."""

from __future__ import annotations

from collections.abc import Callable

import asyncpg

from quanyi.ledger import queries

PAGE = 5000


async def rebuild_rollups(
    pool: asyncpg.Pool,
    tz: str,
    progress: Callable[[int], None] | None = None,
    page: int = PAGE,
) -> int:
    """Replaces every rollup row with what the ledger's grants and events add up to; returns
    the grants counted. `progress` is told how many grants each page counted.

    One transaction: reports read the old rollups until it commits. The ledger worker's writes
    wait for it (its rollup update needs the table the rebuild holds), so a grant is either in
    the snapshot the rebuild counts or written, and counted, after it: never both or neither."""
    counted = 0
    async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read"):
        # Before the first query: the snapshot is taken then, with every writer kept out. In
        # the order the ledger worker writes them (status counts, then days): no deadlock.
        await conn.execute("LOCK TABLE report_status, report_daily IN EXCLUSIVE MODE")
        await conn.execute("DELETE FROM report_daily")
        await conn.execute("DELETE FROM report_status")
        await conn.execute(queries.count_statuses)
        after = ""
        while True:
            ids = [r["grant_id"] for r in await conn.fetch(queries.grant_ids_after, after, page)]
            if not ids:
                return counted
            await conn.execute(queries.roll_up_grants, ids, tz)
            await conn.execute(queries.roll_up_events, ids, [], tz)
            counted += len(ids)
            after = ids[-1]
            if progress:
                progress(len(ids))

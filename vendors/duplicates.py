"""Grants the ledger refused: a new grant id for a (channel, request id) another grant already
holds in the ledger. Only a Redis data loss (the idempotency entry gone) makes one, and the
vendor must never issue it.

The fulfilment worker starts the grants of one outbox read together; their checks gather here
and go to PostgreSQL as one query, so a batch costs one look-up, not one per grant.
"""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg

from quanyi.vendors import queries


class DuplicateCheck:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        self._waiting: dict[str, tuple[dict[str, Any], asyncio.Future[str | None]]] = {}
        self._flush: asyncio.Task[None] | None = None

    async def holder(self, event: dict[str, Any]) -> str | None:
        """The other grant that holds this grant's (channel, request id) in the ledger, if any.
        Raises what PostgreSQL raised: without an answer, the grant is not issued now."""
        grant_id = event["grant_id"]
        held = self._waiting.get(grant_id)
        if held is None:
            held = (event, asyncio.get_running_loop().create_future())
            self._waiting[grant_id] = held
        if self._flush is None:
            self._flush = asyncio.create_task(self._look_up())
        return await held[1]

    async def _look_up(self) -> None:
        await asyncio.sleep(0)  # let the rest of the batch join
        batch, self._waiting, self._flush = self._waiting, {}, None
        events = [event for event, _ in batch.values()]
        try:
            rows = await self._pool.fetch(
                queries.request_holders,
                [e["grant_id"] for e in events],
                [e["channel_id"] for e in events],
                [e["request_id"] for e in events],
            )
        except asyncio.CancelledError:
            for _, future in batch.values():
                future.cancel()
            raise
        except Exception as exc:  # PostgreSQL away: each grant takes the worker's retry path
            for _, future in batch.values():
                if not future.done():
                    future.set_exception(exc)
            return
        holders = {r["grant_id"]: r["holder"] for r in rows}
        for grant_id, (_, future) in batch.items():
            if not future.done():
                future.set_result(holders.get(grant_id))

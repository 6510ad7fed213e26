"""Duplicates born fulfilled: a grant of a right with no vendor (fulfilled as it was granted,
quanyi/issuance/claim_calls.py `grant_event`) whose request id another grant already holds in the
ledger. Only a Redis data loss (the idempotency entry gone) makes one; the ledger sets it aside
(worker.py `_check_unwritten`) and writes none of its rows (batch.py).

No fulfilment worker looks at such a grant (it is done the moment it is granted), so the ledger
refuses it as the fulfilment worker refuses a duplicate of a grant for a vendor
(quanyi/fulfilment/fulfiller.py `_refuse_duplicate`): it fails through transition.lua, giving
back the stock, the customer's limit and the budget as its campaign gives them back on failure,
and Redis counts again what the ledger holds. transition.lua applies it once: a batch written
again after a crash finds it failed already and gives nothing back twice.
"""

from __future__ import annotations

import logging

import asyncpg

from quanyi.core.errors import StoreNotReady
from quanyi.issuance.lifecycle import GrantLifecycle, Move, grant_from_event
from quanyi.ledger import queries
from quanyi.ledger.entries import GrantEntry

log = logging.getLogger(__name__)

ACTOR = "system:ledger"


async def refuse_born_fulfilled(
    pool: asyncpg.Pool, lifecycle: GrantLifecycle, entries: list[GrantEntry]
) -> None:
    """Fail each of these duplicates born fulfilled, naming the grant that holds its request.
    Raises what Redis or PostgreSQL raised (StoreNotReady too): the batch stays pending and is
    written, and these refused, again."""
    if not entries:
        return
    rows = await pool.fetch(
        queries.request_holders,
        [e.grant_id for e in entries],
        [e.event["channel_id"] for e in entries],
        [e.event["request_id"] for e in entries],
    )
    holders = {r["grant_id"]: r["holder"] for r in rows}
    moves = []
    for e in entries:
        holder = holders.get(e.grant_id)
        error = (
            f"duplicate request: {e.event['channel_id']}/{e.event['request_id']} already belongs"
            f" to grant {holder or '(another)'} in the ledger; not issued"
        )
        log.error("ledger: grant %s refused: %s", e.grant_id, error)
        detail = {"vendor_id": "none", "error": error, "duplicate_of": holder}
        moves.append(Move(e.grant_id, "failed", ACTOR, detail, grant_from_event(e.event)))
    for e, moved in zip(entries, await lifecycle.move_many(moves), strict=True):
        if isinstance(moved, StoreNotReady):
            raise moved
        if isinstance(moved, Exception):
            # Its campaign cannot be read: what it took stays taken, for reconcile to show.
            log.error("ledger: duplicate %s could not be failed: %r", e.grant_id, moved)

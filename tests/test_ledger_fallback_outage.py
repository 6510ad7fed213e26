"""PostgreSQL dropping while the ledger writes a refused batch row by row: each row waits the
outage out, so the batch is written, its one bad row dead-lettered and nothing left pending,
rather than the batch thrown back to the reclaim. A scratch PostgreSQL of the test's own is
stopped at that moment; the machine's shared one is never touched."""

from __future__ import annotations

import asyncio
import logging
import threading

import asyncpg
import pytest

from quanyi.core import metrics
from quanyi.ledger.worker import LedgerWorker
from quanyi.stores.db import migrate
from quanyi.stores.outbox import LEDGER_GROUP, ensure_groups
from tests.support.scratch import ScratchPostgres
from tests.test_ledger_card_events import append, card_event, card_events

# Long enough for several of the worker's waits (0.5 s, then 1 s, ...) to meet the outage.
OUTAGE_S = 1.5


class StopPostgresOnFallback(logging.Handler):
    """Stops the scratch PostgreSQL as the worker turns to writing row by row (the moment the
    worker logs it, before its first row), and starts it again OUTAGE_S later."""

    def __init__(self, pg: ScratchPostgres) -> None:
        super().__init__(logging.ERROR)
        self.pg = pg
        self.stopped = threading.Event()
        self.restarted = threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if "writing row by row" not in record.getMessage() or self.stopped.is_set():
            return
        self.pg.stop("immediate")
        self.stopped.set()

        def start_again() -> None:
            self.pg.start()
            self.restarted.set()

        threading.Timer(OUTAGE_S, start_again).start()


@pytest.fixture
async def scratch_pool(tmp_path):
    with ScratchPostgres(tmp_path) as pg:
        admin = await asyncpg.connect(pg.url())
        await admin.execute("CREATE DATABASE quanyi")
        await admin.close()
        await migrate(pg.url("quanyi"))
        pool = await asyncpg.create_pool(pg.url("quanyi"), min_size=1, max_size=2)
        try:
            yield pg, pool
        finally:
            await pool.close()


async def test_rows_written_one_by_one_wait_out_postgresql_dropping(scratch_pool, redis, keys):
    pg, pool = scratch_pool
    await ensure_groups(redis, keys)
    good = await append(redis, keys, card_event("tx-1"))
    # Readable, but PostgreSQL refuses it (text may not hold a NUL): the batch is refused and
    # written row by row.
    refused = await append(redis, keys, card_event("tx-2", mcc="58\u000012"))
    also_good = await append(redis, keys, card_event("tx-3", customer_id="cust-3"))

    stopper = StopPostgresOnFallback(pg)
    ledger_log = logging.getLogger("quanyi.ledger.worker")
    ledger_log.addHandler(stopper)
    retries_before = metrics.LEDGER_RETRIES._value.get()
    try:
        await LedgerWorker(redis, pool, keys).drain()
    finally:
        ledger_log.removeHandler(stopper)
        await asyncio.to_thread(stopper.restarted.wait, 60)

    assert stopper.stopped.is_set(), "the batch was never refused, so the outage never came"
    assert metrics.LEDGER_RETRIES._value.get() > retries_before  # it did meet the outage
    rows = await card_events(pool)
    assert sorted(rows) == ["tx-1", "tx-3"]
    assert (rows["tx-1"]["outbox_id"], rows["tx-3"]["outbox_id"]) == (good, also_good)
    dead = {f["outbox_id"]: f for _id, f in await redis.xrange(keys.outbox_dead)}
    assert set(dead) == {refused}
    assert dead[refused]["error"].startswith("refused by postgresql"), dead[refused]
    # Written and acknowledged in this batch: nothing waits for a reclaim.
    assert (await redis.xpending(keys.outbox, LEDGER_GROUP))["pending"] == 0

"""Waiting for something that happens elsewhere (a worker, a server), never for ever."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

from quanyi.fulfilment.worker import FulfilmentWorker
from tests.support.clients import Api, statuses


async def until(
    predicate: Callable[[], Awaitable[bool]],
    timeout: float = 20.0,
    what: str = "condition",
    *,
    every: float = 0.05,
) -> None:
    """Returns once `predicate()` is true; fails the test after `timeout` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await predicate():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(every)


@contextlib.asynccontextmanager
async def running(worker: FulfilmentWorker) -> AsyncIterator[FulfilmentWorker]:
    """The fulfilment worker runs in the background for the block; stopped and awaited (15 s at most)
    on the way out."""
    task = asyncio.create_task(worker.run(grace_s=2))
    try:
        yield worker
    finally:
        worker.stop()
        await asyncio.wait_for(task, 15)


def all_in(api: Api, grant_ids: list[str], status: str) -> Callable[[], Awaitable[bool]]:
    """A predicate for `until`: every one of these grants is in `status`."""

    async def check() -> bool:
        seen = await statuses(api, grant_ids)
        return all(g["status"] == status for g in seen.values())

    return check

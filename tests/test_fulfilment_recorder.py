"""The fulfilment recorder (quanyi/fulfilment/recorder.py): an outcome handed in is always
recorded, however the flushes that run at the moment end.

The flushes' Redis calls are held on gates here, so the test decides in which loop turn each
flush ends; what is under test is the recorder's own scheduling, not Redis."""

from __future__ import annotations

import asyncio
from typing import Any

from quanyi.fulfilment.recorder import FLUSHES, Outcome, Recorder


class GatedRecorder(Recorder):
    """Each of the first FLUSHES flushes waits on a gate of its own, then resolves its batch;
    any later flush resolves its batch at once."""

    def __init__(self) -> None:
        super().__init__(None, None, None)  # type: ignore[arg-type]  # never reaches Redis
        self.gates: list[asyncio.Future[None]] = []

    async def _flush(self, batch: list[Outcome]) -> None:
        if len(self.gates) < FLUSHES:
            gate: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self.gates.append(gate)
            await gate
        for outcome in batch:
            outcome.future.set_result("recorded")  # type: ignore[arg-type]


def event(grant_id: str) -> dict[str, Any]:
    return {"grant_id": grant_id}


async def turns(n: int) -> None:
    for _ in range(n):
        await asyncio.sleep(0)


async def test_an_outcome_handed_in_as_every_flush_ends_is_recorded() -> None:
    """Every flush ends in one loop turn, and in that same turn, before the flushes' tasks are
    wholly done, another vendor answer comes in: it must start a flush of its own (or be taken
    by one), never wait for one that has already stopped looking."""
    assert FLUSHES == 2
    recorder = GatedRecorder()
    first = asyncio.create_task(recorder.fulfilled(event("a"), "1-0", "vendor:x", {}))
    await turns(1)  # the first flush takes a
    second = asyncio.create_task(recorder.fulfilled(event("b"), "2-0", "vendor:x", {}))
    await turns(2)  # the second flush takes b
    assert len(recorder.gates) == FLUSHES

    answer: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def late() -> Any:
        await answer
        return await recorder.fulfilled(event("c"), "3-0", "vendor:x", {})

    third = asyncio.create_task(late())
    await turns(1)

    def release() -> None:
        # One callback opens both gates and lets the answer in: both flushes find nothing left
        # and end in the turn in which c is handed in.
        for gate in recorder.gates:
            gate.set_result(None)
        answer.set_result(None)

    asyncio.get_running_loop().call_soon(release)
    assert await asyncio.gather(first, second) == ["recorded", "recorded"]
    # Bounded so a stranded outcome fails the test instead of hanging it.
    done, _ = await asyncio.wait({third}, timeout=5)
    assert done == {third}, f"c was never recorded; still waiting: {recorder._waiting}"
    assert third.result() == "recorded"
    assert recorder._waiting == []
    await recorder.close()

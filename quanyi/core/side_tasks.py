"""A worker's side tasks: housekeeping that runs beside its read loop, each job as its own named
asyncio task on its own timer, so a slow sweep never stalls consumption and one job's failure
never stops another, nor the worker.

A job that fails is logged and tried again after a growing pause (a store away is expected and
logged as a warning; anything else is a bug, logged with its traceback). Only stop() ends them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

log = logging.getLogger(__name__)

FAILURE_PAUSE_S = 0.5
FAILURE_PAUSE_MAX_S = 5.0


@dataclass(frozen=True)
class SideTask:
    """`job` run every `every_s` seconds, the first time `first_after_s` after the start."""

    name: str
    every_s: float
    job: Callable[[], Awaitable[object]]
    first_after_s: float = 0.0


class SideTasks:
    """The side tasks of one worker. `transient(exc)` says whether a failure is expected (a
    store away): those are logged without a traceback."""

    def __init__(self, transient: Callable[[BaseException], bool]) -> None:
        self._transient = transient
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._stopping = asyncio.Event()

    def start(self, specs: Iterable[SideTask]) -> None:
        self._stopping = asyncio.Event()  # a worker run again starts its side tasks again
        for spec in specs:
            if spec.name in self._tasks:
                raise ValueError(f"side task {spec.name} started twice")
            self._tasks[spec.name] = asyncio.create_task(self._loop(spec), name=spec.name)

    @property
    def running(self) -> list[str]:
        return [name for name, task in self._tasks.items() if not task.done()]

    async def stop(self, grace_s: float = 0.0) -> None:
        """Stop every side task and wait until each is gone: a job under way gets `grace_s` to
        finish, then it is cancelled. A job may be cut anywhere: what it left half done (an
        entry claimed, a retry leased) falls to the next run, here or in another worker."""
        self._stopping.set()
        tasks, self._tasks = list(self._tasks.values()), {}
        if tasks and grace_s > 0:
            await asyncio.wait(tasks, timeout=grace_s)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _loop(self, spec: SideTask) -> None:
        pause = spec.first_after_s
        failures = 0
        while not await self._stopped_after(pause):
            try:
                await spec.job()
                failures = 0
                pause = spec.every_s
            except Exception as exc:
                failures += 1
                pause = max(
                    spec.every_s, min(FAILURE_PAUSE_S * 2 ** (failures - 1), FAILURE_PAUSE_MAX_S)
                )
                if self._transient(exc):
                    log.warning("%s put off (%s); again in %.1f s", spec.name, exc, pause)
                else:
                    log.exception("%s failed; again in %.1f s", spec.name, pause)

    async def _stopped_after(self, seconds: float) -> bool:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)
        return self._stopping.is_set()

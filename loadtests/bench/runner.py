"""What every phase of a benchmark run shares: messages timed from the run's start, phases run
so that one that fails is recorded and said while the others still run, and pollers that sample
something in the background while the load runs."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import Self, TypeVar

from loadtests.bench.results import BenchError
from loadtests.procs import ChildError

T = TypeVar("T")


class PhaseRunner:
    """`failures`: phase name -> what went wrong, where the run's results keep it."""

    def __init__(self, failures: dict[str, str]) -> None:
        self.failures = failures
        self.started = time.monotonic()

    def say(self, message: str) -> None:
        print(f"[{time.monotonic() - self.started:5.0f}s] {message}", flush=True)

    async def phase(self, name: str, work: Callable[[], Awaitable[T]]) -> T | None:
        try:
            return await work()
        except Exception as exc:  # one broken phase must not hide the figures of the others
            detail = str(exc).strip()
            self.failures[name] = (
                detail
                if isinstance(exc, BenchError | ChildError)
                else f"{exc.__class__.__name__}: {detail}"
            )
            self.say(f"{name}: FAILED: {self.failures[name]}")
            return None


class Poller:
    """Runs `_poll` (a loop) in a task of its own from entering the block until leaving it."""

    task_name = "poller"
    _task: asyncio.Task | None = None

    async def __aenter__(self) -> Self:
        self._task = asyncio.create_task(self._poll(), name=self.task_name)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    async def _poll(self) -> None:
        raise NotImplementedError

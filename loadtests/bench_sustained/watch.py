"""The outbox while claims come in: its length and every consumer group's lag sampled at a fixed
interval, the lag at the end, and the rule that says whether the length stayed bounded."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Self

from redis.asyncio import Redis

from loadtests.bench.results import BenchError
from loadtests.bench.runner import Poller
from quanyi.stores.keys import Keys
from quanyi.stores.outbox import Lag, outbox_lag, stream_groups

# The boundedness rule. The ledger worker trims the outbox about once a second, and only below
# what every group acknowledged, so a healthy outbox saws between a little and about a second of
# claims: peaks, not single samples, are compared. The first third of the run is its start (the
# workers settling on the rate); the last third's peak may exceed the middle third's by a quarter,
# plus SLACK_ENTRIES so that an outbox wobbling near empty is not called growing. A group falling
# behind by d entries/s adds d x (duration / 3) between the two peaks.
GROWTH_ALLOWED = 1.25
SLACK_ENTRIES = 1_000
MIN_SAMPLES_PER_THIRD = 2
RULE = (
    f"bounded: the outbox's peak length in the last third of the run <= {GROWTH_ALLOWED:g} x its"
    f" peak in the middle third + {SLACK_ENTRIES:,} entries (the first third is the start)"
)


@dataclass(frozen=True)
class Sample:
    at_s: float  # from the start of the measured run
    length: int  # XLEN of the outbox (every shard's stream)
    lags: dict[str, Lag]  # group -> entries not acknowledged (all shards), oldest one's age


@dataclass(frozen=True)
class Boundedness:
    bounded: bool | None  # None: too few samples to judge
    middle_peak: int
    last_peak: int


def thirds(samples: list[Sample], duration_s: float) -> tuple[list[int], list[int], list[int]]:
    """The outbox lengths of the first, middle and last third of a run of `duration_s`."""
    parts: tuple[list[int], list[int], list[int]] = ([], [], [])
    for s in samples:
        index = min(max(int(3 * s.at_s / duration_s), 0), 2) if duration_s > 0 else 2
        parts[index].append(s.length)
    return parts


def boundedness(samples: list[Sample], duration_s: float) -> Boundedness:
    """RULE applied to the samples of one measured run."""
    _first, middle, last = thirds(samples, duration_s)
    middle_peak, last_peak = max(middle, default=0), max(last, default=0)
    if min(len(middle), len(last)) < MIN_SAMPLES_PER_THIRD:
        return Boundedness(None, middle_peak, last_peak)
    return Boundedness(
        last_peak <= GROWTH_ALLOWED * middle_peak + SLACK_ENTRIES, middle_peak, last_peak
    )


async def group_names(redis: Redis, keys: Keys) -> list[str]:
    """The outbox's consumer groups, whatever they are in the code under test: those of any
    shard's stream, in the order first seen (a shard with no claims yet may have no stream)."""
    names: dict[str, None] = {}
    for shard in keys.shards:
        names.update((str(g["name"]), None) for g in await stream_groups(redis, shard.outbox))
    return list(names)


async def lags(redis: Redis, keys: Keys) -> dict[str, Lag]:
    """Every group's lag as the service defines it (quanyi_outbox_lag_seconds): entries not yet
    delivered plus those pending, and the age of the oldest of them."""
    return {name: await outbox_lag(redis, keys, name) for name in await group_names(redis, keys)}


async def outbox_length(redis: Redis, keys: Keys) -> int:
    """XLEN of the outbox: summed over the shards' streams."""
    return sum([int(await redis.xlen(shard.outbox)) for shard in keys.shards])


@dataclass
class Watch(Poller):
    """Samples the outbox every `every_s` from its start until stopped."""

    redis: Redis
    keys: Keys
    every_s: float
    samples: list[Sample] = field(default_factory=list)
    _started: float = 0.0
    task_name = "outbox-watch"

    async def __aenter__(self) -> Self:
        self._started = time.monotonic()
        return await super().__aenter__()

    async def _poll(self) -> None:
        tick = self._started
        while True:
            at = time.monotonic() - self._started
            length = await outbox_length(self.redis, self.keys)
            self.samples.append(Sample(at, length, await lags(self.redis, self.keys)))
            tick += self.every_s
            await asyncio.sleep(max(tick - time.monotonic(), 0.0))

    def worst_lag_s(self) -> dict[str, float]:
        """Group -> the oldest unacknowledged entry's greatest age over the samples."""
        worst: dict[str, float] = {}
        for sample in self.samples:
            for name, lag in sample.lags.items():
                worst[name] = max(worst.get(name, 0.0), lag.seconds)
        return worst


async def drained(
    redis: Redis, keys: Keys, timeout_s: float, died: Callable[[], list[str]]
) -> float:
    """Seconds until every group has acknowledged every entry (seen twice in a row: a
    fulfilment appends entries of its own for the ledger). `died` names the children that
    exited, which fails the wait at once."""
    started = time.monotonic()
    clean = 0
    while clean < 2:
        if dead := died():
            raise BenchError(f"{', '.join(dead)} while the outbox drained")
        if time.monotonic() - started > timeout_s:
            behind = {n: lag.entries for n, lag in (await lags(redis, keys)).items() if lag.entries}
            raise BenchError(f"groups still behind after {timeout_s:.0f} s: {behind}")
        current = await lags(redis, keys)
        clean = clean + 1 if current and not any(lag.entries for lag in current.values()) else 0
        if clean < 2:
            await asyncio.sleep(0.1)
    return time.monotonic() - started

"""What the claim benchmark measured, phase by phase, and how a run is configured."""

from __future__ import annotations

from dataclasses import dataclass, field

from loadtests.drivers import WrkRun


class BenchError(RuntimeError):
    """A phase could not run; the others still do."""


@dataclass(frozen=True)
class Options:
    duration: int  # measured seconds of each wrk phase
    warmup: int
    threads: int
    connections: int
    lua_scale: float  # redis-benchmark request counts, relative to a 15 s run
    rowlock_s: int
    keep: bool


@dataclass(frozen=True)
class ApiRun:
    workers: int
    wrk: WrkRun
    granted: int
    claims_per_call: float | None
    grants_per_ledger_batch: float | None
    catch_up_s: float | None
    lag_max_s: float | None
    lag_p99_s: float | None
    lag_gauge_max_s: float | None
    # CPU per grant, from the start of the measured run until the ledger caught up
    api_cpu_us: float | None
    redis_cpu_us: float | None
    ledger_cpu_us: float | None
    postgres_cpu_us: float | None

    @property
    def replayed(self) -> int:
        return max(self.wrk.ok - self.granted, 0)


@dataclass(frozen=True)
class LuaRun:
    label: str
    calls_per_s: float
    claims_per_call: int
    granted: int
    expected: int
    redis_cpu_us: float | None  # Redis CPU per claim

    @property
    def claims_per_s(self) -> float:
        return self.calls_per_s * self.claims_per_call


@dataclass(frozen=True)
class RowLockRun:
    claims: int
    seconds: float
    p50_ms: float
    p99_ms: float
    errors: int

    @property
    def rps(self) -> float:
        return self.claims / self.seconds if self.seconds else 0.0


@dataclass(frozen=True)
class Settled:
    """Redis once the ledger has caught up and the outbox is trimmed as far as it may be."""

    used_memory: int
    held: dict[str, int]  # consumer group -> outbox entries it has not acknowledged
    grants: int
    keys: dict[str, tuple[int, int]]  # key family -> (keys, MEMORY USAGE bytes)

    def key_bytes(self, family: str | None = None, *, without: str | None = None) -> int:
        return sum(
            size
            for name, (_count, size) in self.keys.items()
            if (family is None or name == family) and name != without
        )


def per_grant(before: Settled, after: Settled, grown: int) -> float | None:
    grants = after.grants - before.grants
    return grown / grants if grants > 0 else None


@dataclass(frozen=True)
class MemoryRun:
    before: Settled
    after: Settled  # with the API and the worker stopped
    middle: Settled | None  # between the two API runs

    @property
    def grants(self) -> int:
        return self.after.grants - self.before.grants

    @property
    def per_grant(self) -> float | None:
        return per_grant(self.before, self.after, self.after.used_memory - self.before.used_memory)

    @property
    def per_grant_trimmed(self) -> float | None:
        """As if the outbox were trimmed: the grants' cost once every consumer caught up."""
        outbox = self.after.key_bytes("outbox") - self.before.key_bytes("outbox")
        grown = self.after.used_memory - self.before.used_memory - outbox
        return per_grant(self.before, self.after, grown)

    @property
    def keys_per_grant(self) -> float | None:
        return per_grant(self.before, self.after, self.after.key_bytes() - self.before.key_bytes())

    @property
    def marginal(self) -> float | None:
        """Key bytes per grant of the second API run alone, the outbox aside: what a grant costs
        once the buckets exist, as in a campaign under way."""
        if self.middle is None:
            return None
        grown = self.after.key_bytes(without="outbox") - self.middle.key_bytes(without="outbox")
        return per_grant(self.middle, self.after, grown)

    @property
    def judged(self) -> float | None:
        """Per grant once trimmed: when groups no worker serves hold the outbox, without it."""
        return self.per_grant_trimmed if self.after.held else self.per_grant


@dataclass
class Results:
    noop: WrkRun | None = None
    lua: list[LuaRun] = field(default_factory=list)
    api: dict[int, ApiRun] = field(default_factory=dict)
    memory: MemoryRun | None = None
    rowlock: RowLockRun | None = None
    failures: dict[str, str] = field(default_factory=dict)

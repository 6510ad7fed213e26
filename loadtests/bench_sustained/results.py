"""What the sustained benchmark measured, and how a run is configured."""

from __future__ import annotations

from dataclasses import dataclass, field

from loadtests.bench_sustained.profile import Profile
from loadtests.bench_sustained.watch import Boundedness, Sample
from loadtests.drivers import WrkRun
from quanyi.stores.outbox import Lag


@dataclass(frozen=True)
class Options:
    duration: int  # measured seconds of each sustained run
    warmup: int
    noop_s: int
    sample_every_s: float
    threads: int
    connections: int
    scenarios: tuple[str, ...]
    topologies: tuple[str, ...]
    max_rate: float | None  # claims/s the claim files hold; None: a share of the no-op's rate
    profile_s: int  # 0: no profile
    drain_timeout_s: float


@dataclass(frozen=True)
class Scenario:
    name: str
    label: str
    vendor: bool  # the right is fulfilled by the simulated vendor (at its default latency)


SCENARIOS = {
    "internal": Scenario("internal", "rights with no vendor (fulfilled internally)", False),
    "vendor": Scenario("vendor", "rights of the simulated vendor, default latency", True),
}
TOPOLOGIES = {
    "run": "quanyi run (API and workers, one process)",
    "serve": "quanyi serve + worker ledger + worker fulfil",
}


@dataclass(frozen=True)
class SustainedRun:
    scenario: str
    topology: str
    wrk: WrkRun
    granted: int  # grants Redis counted during the measured run
    end_lags: dict[str, Lag]  # consumer group -> its lag the moment the load stopped
    worst_lag_s: dict[str, float]  # consumer group -> oldest entry's greatest age while running
    samples: list[Sample]
    bounded: Boundedness
    drain_s: float  # from the end of the load until every group acknowledged everything
    ledger_rows: int
    # process -> CPU microseconds per claim, from the start of the load until drained
    cpu_us: dict[str, float | None]
    profiles: list[Profile] = field(default_factory=list)
    profile_error: str | None = None

    @property
    def claims_per_s(self) -> float:
        return self.granted / self.wrk.seconds if self.wrk.seconds else 0.0

    @property
    def replayed(self) -> int:
        """2xx answers beyond the grants: the claim file ran out and wrk started over."""
        return max(self.wrk.ok - self.granted, 0)

    @property
    def cpu_total_us(self) -> float | None:
        """None when any process could not be read: a partial sum would flatter the target."""
        values = list(self.cpu_us.values())
        return None if not values or None in values else sum(v for v in values if v is not None)

    @property
    def worst_age_s(self) -> float | None:
        worst = [lag.seconds for lag in self.end_lags.values()]
        worst += list(self.worst_lag_s.values())
        return max(worst, default=None)


@dataclass
class Results:
    noop: WrkRun | None = None
    runs: dict[tuple[str, str], SustainedRun] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)

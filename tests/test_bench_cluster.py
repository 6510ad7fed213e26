"""The cluster benchmark's pure parts: campaigns one per shard, commands per grant, the
masters' CPU shares, the hot campaign's id and the report's hot lines."""

from __future__ import annotations

from loadtests.bench_cluster.report import report
from loadtests.bench_cluster.runs import (
    HOT_TARGETS,
    TARGETS,
    HttpRun,
    Options,
    Results,
    Target,
    per_grant,
    shares,
)
from loadtests.bench_cluster.stores import campaign_ids, hot_campaign_id
from loadtests.drivers import WrkRun
from quanyi.stores.keys import part_ids, shard_of


def test_campaigns_fill_every_shard_once() -> None:
    ids = campaign_ids(16, 16)
    assert len(set(ids)) == 16
    assert sorted(shard_of(c, 16) for c in ids) == list(range(16))
    assert campaign_ids(16, 16) == ids  # the same ids in every run


def test_more_campaigns_than_shards_are_still_distinct() -> None:
    ids = campaign_ids(20, 16)
    assert len(set(ids)) == 20


def test_commands_per_grant_are_the_most_sent_growth() -> None:
    before = {"evalsha": 10, "hget": 5, "xadd": 0}
    after = {"evalsha": 110, "hget": 5, "xadd": 0, "multi": 200, "exec": 200, "a": 1, "b": 2}
    top = per_grant(before, after, 100)
    assert top == {"multi": 2.0, "exec": 2.0, "evalsha": 1.0, "b": 0.02, "a": 0.01}
    assert per_grant(before, after, 0) == {}


def test_master_shares_are_each_ones_part_of_the_cpu_used() -> None:
    assert shares([1.0, 2.0, 3.0], [4.0, 2.5, 3.5]) == (0.75, 0.125, 0.125)
    assert shares([1.0, 1.0], [1.0, 1.0]) == ()  # no CPU used: no share


def test_hot_campaign_parts_land_on_distinct_masters() -> None:
    # 16 shards over 3 masters, consecutive shards often on the same master
    masters_of_shards = [0, 0, 1, 1, 1, 2, 0, 0, 2, 2, 1, 1, 0, 2, 2, 0]
    hot = hot_campaign_id(masters_of_shards, 3)
    on = [masters_of_shards[shard_of(p, 16)] for p in part_ids(hot, 3)]
    assert sorted(on) == [0, 1, 2]
    assert hot_campaign_id(masters_of_shards, 3) == hot  # the same id in both hot runs
    assert hot_campaign_id([0] * 16, 3)  # one master: any id will do


def test_hot_campaign_takes_the_most_masters_when_none_has_all() -> None:
    # blocks of five or more: no three consecutive shards are on three masters
    masters_of_shards = [0] * 6 + [1] * 5 + [2] * 5
    hot = hot_campaign_id(masters_of_shards, 3)
    assert len({masters_of_shards[shard_of(p, 16)] for p in part_ids(hot, 3)}) == 2


def _run(target: Target, claims_per_s: float, shares_: tuple[float, ...]) -> HttpRun:
    wrk = WrkRun(
        requests=int(claims_per_s * 5),
        seconds=5.0,
        non_2xx=0,
        socket_errors=0,
        p50_ms=2.0,
        p99_ms=9.0,
        p999_ms=12.0,
        max_ms=20.0,
    )
    return HttpRun(target, 2, wrk, int(claims_per_s * 5), 30.0, 80.0, {}, shares_, (0, 1, 2))


def test_report_shows_the_hot_runs_and_their_ratio() -> None:
    one, split = HOT_TARGETS
    results = Results()
    results.http[(TARGETS[2], 2)] = _run(TARGETS[2], 1000.0, (0.3, 0.3, 0.4))
    results.http[(one, 2)] = _run(one, 1000.0, (0.96, 0.02, 0.02))
    results.http[(split, 2)] = _run(split, 1200.0, (0.34, 0.33, 0.33))
    results.checked[(split, 2)] = (6000, 6000)
    opts = Options(duration=5, warmup=1, api=(2,), connections=64, max_rate=1.0, micro_s=0)
    text = report(results, opts, "machine")
    lines = text.splitlines()
    assert (
        "hot campaign, 3 parts / 1 part: claims/s 1.20x, busiest master's share 0.96 -> 0.34"
        in lines
    )
    assert any(ln.startswith("hot, 1 part ") and "0.96/0.02/0.02" in ln for ln in lines)
    assert any(ln.startswith("hot, 3 parts ") and "1,200" in ln for ln in lines)
    assert "  hot, 3 parts, 2 API: 6,000 grants, 6,000 ledger rows: ok" in lines
    # the main table keeps the round-robin targets only
    assert sum(ln.startswith("3 masters, 16 shard(s) ") for ln in lines) == 1


def test_no_hot_runs_no_hot_lines() -> None:
    results = Results()
    results.http[(TARGETS[2], 2)] = _run(TARGETS[2], 1000.0, (0.3, 0.3, 0.4))
    opts = Options(duration=5, warmup=1, api=(2,), connections=64, max_rate=1.0, micro_s=0)
    text = report(results, opts, "machine")
    assert "hot campaign," not in text and "hot, " not in text and "hot runs" not in text

"""The cluster benchmark's pure parts: campaigns one per shard, and commands per grant."""

from __future__ import annotations

from loadtests.bench_cluster.runs import per_grant
from loadtests.bench_cluster.stores import campaign_ids
from quanyi.stores.keys import shard_of


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

"""The capacity model's footprint reader: keys grouped by kind, ids and numbers taken out."""

from loadtests.footprint import Footprint, key_kind


def test_a_campaign_key_is_grouped_by_what_follows_its_hash_tag() -> None:
    assert key_kind("qybi", "qybi:{q:0}:c:bulk-1:cu:17") == "q:c:cu"
    assert key_kind("qybi", "qybi:{q:3}:c:bulk-1:cd:20261201:3") == "q:c:cd"
    assert key_kind("qybi", "qybi:{q:0}:c:bulk-1") == "q:c"


def test_shared_keys_and_audiences_keep_their_names() -> None:
    assert key_kind("qybi", "qybi:{q:0}:outbox") == "q:outbox"
    assert key_kind("qybi", "qybi:{q:1}:idem:812") == "q:idem"
    assert key_kind("qybi", "qybi:aud:{a:vip}:1:40") == "aud:a"


def test_per_grant_figures_leave_the_audience_out() -> None:
    fp = Footprint(
        grants=4, redis={"aud:a": 4000, "c:cu": 200, "idem": 200}, postgres={"grants": 1000}
    )
    assert fp.redis_per_grant() == 100
    assert fp.postgres_per_grant() == 250

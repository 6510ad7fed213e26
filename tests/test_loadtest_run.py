"""`python -m loadtests.run --cluster`: the processes of the run are set to the cluster."""

from __future__ import annotations

from pathlib import Path

from loadtests import run
from loadtests.stack import REDIS_URL
from quanyi.core.settings import Settings

CLUSTER_NODE = "redis://127.0.0.1:9100/0"


def _settings_of(argv: list[str], tmp_path: Path, cluster_url: str | None) -> Settings:
    args = run._parser().parse_args(argv)
    return Settings.from_env(run.stack_for(args, tmp_path, cluster_url).env())


def test_cluster_run_sets_every_process_to_the_cluster_and_its_shards(tmp_path: Path) -> None:
    settings = _settings_of(["--short", "--cluster"], tmp_path, CLUSTER_NODE)
    assert settings.redis_url == CLUSTER_NODE
    assert settings.redis_cluster is True
    assert settings.redis_shards == run.CLUSTER_SHARDS


def test_cluster_run_takes_the_shards_asked_for(tmp_path: Path) -> None:
    settings = _settings_of(
        ["--cluster", "--masters", "4", "--shards", "8"], tmp_path, CLUSTER_NODE
    )
    assert (settings.redis_cluster, settings.redis_shards) == (True, 8)


def test_plain_run_stays_on_db_10_of_one_redis(tmp_path: Path) -> None:
    settings = _settings_of(["--short"], tmp_path, None)
    assert settings.redis_url == REDIS_URL
    assert settings.redis_cluster is False
    assert settings.redis_shards == 1


def test_too_few_masters_is_refused_before_anything_starts() -> None:
    assert run.main(["--short", "--cluster", "--masters", "2"]) == 2

"""The stores of tests that lose Redis's data (a flush, keys deleted, a kill -9): a scratch
server of their own, or on the cluster the suite's scratch cluster, never the shared Redis."""

from __future__ import annotations

import subprocess
from collections.abc import AsyncIterator
from typing import Any

from redis.asyncio import Redis

from quanyi.core.settings import Settings
from quanyi.stores.redis import cluster_client
from tests.conftest import CLUSTER_SHARDS
from tests.support.cli import quanyi
from tests.support.settings import settings_for_tests
from tests.support.stores import delete_test_keys


def lost_store_settings(redis_mode: str, redis_url: str, request: Any) -> Settings:
    """On the cluster, the suite's scratch cluster (tests/conftest.py): losing its data (a
    flush, the test's keys deleted) is a scratch's to lose as well. Else the test module's
    `scratch` server."""
    if redis_mode == "cluster":
        return settings_for_tests(
            redis_url=redis_url, redis_cluster=True, redis_shards=CLUSTER_SHARDS
        )
    return settings_for_tests(redis_url=request.getfixturevalue("scratch").url(0))


async def lost_store_redis(redis_mode: str, redis_url: str, request: Any) -> AsyncIterator[Redis]:
    """A client of the scratch server (or the scratch cluster), standing in for the shared test
    Redis in every fixture."""
    if redis_mode == "cluster":
        client: Redis = cluster_client(redis_url)  # type: ignore[assignment]
        await delete_test_keys(client)
    else:
        client = Redis.from_url(request.getfixturevalue("scratch").url(0), decode_responses=True)
    yield client
    if redis_mode == "cluster":
        await delete_test_keys(client)
    await client.aclose()


def quanyi_on(settings: Settings, *argv: str) -> subprocess.CompletedProcess[str]:
    """The command on the test's Redis: the scratch server, or the scratch cluster's shards."""
    return quanyi(
        *argv,
        QUANYI_REDIS_URL=settings.redis_url,
        QUANYI_REDIS_CLUSTER=str(settings.redis_cluster).lower(),
        QUANYI_REDIS_SHARDS=str(settings.redis_shards),
        COLUMNS="160",
    )

"""Redis: the one way the service opens its client, and what it refuses to start on."""

from __future__ import annotations

import logging
from typing import Any, cast

from redis.asyncio import BlockingConnectionPool, Redis, RedisCluster
from redis.asyncio.connection import Connection
from redis.connection import HiredisRespSerializer
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from quanyi.core.errors import StartupError
from quanyi.core.settings import Settings

log = logging.getLogger(__name__)


class PackedConnection(Connection):
    """Packs commands with hiredis, as redis-py's sync client does: the same bytes, several
    times faster than the asyncio client's pure-Python packer (~10 us a claim)."""

    _packer = HiredisRespSerializer()

    def pack_command(self, *args: Any) -> list[bytes]:
        return self._packer.pack(*args)


def cluster_client(url: str) -> RedisCluster:
    """A Redis Cluster client on the cluster one of whose nodes is at `url`.

    Replies are parsed by hiredis (redis-py's default when it is installed), and commands are
    packed by it too: RedisCluster takes no connection_class, so it is set on the connection
    settings every node is made from (those found later too) before the first connection."""
    cluster = RedisCluster.from_url(
        url,
        decode_responses=True,
        max_connections=128,
        socket_connect_timeout=2,
        socket_timeout=5,
        health_check_interval=30,
    )
    shared: Any = getattr(cluster, "connection_kwargs", None)
    if isinstance(shared, dict) and shared.get("connection_class") is Connection:
        shared["connection_class"] = PackedConnection
        for node in cluster.nodes_manager.startup_nodes.values():
            if node.connection_class is Connection:
                node.connection_class = PackedConnection
    return cluster


def is_cluster(redis: Any) -> bool:
    return isinstance(redis, RedisCluster)


async def _eviction_policies(redis: Any) -> list[str | None]:
    if not is_cluster(redis):
        return [(await redis.config_get("maxmemory-policy")).get("maxmemory-policy")]
    # Every master holds some of the keys: each must refuse to evict.
    return [
        (await redis.config_get("maxmemory-policy", target_nodes=node)).get("maxmemory-policy")
        for node in redis.get_primaries()
    ]


async def open_redis(settings: Settings) -> Redis:
    """A client that answered PING, on a server that never evicts keys (or a StartupError).

    With `redis_cluster`, a RedisCluster client. It answers every command the service sends
    (each script call, transaction and multi-key command stays in one slot: quanyi/stores/
    keys.py), so it is typed as the one client the call sites know."""
    if settings.redis_cluster:
        try:
            cluster = cluster_client(settings.redis_url)
            await cluster.initialize()
        except (OSError, RedisConnectionError) as exc:
            raise StartupError(
                f"redis cluster at {settings.redis_url} is unreachable: {exc}"
            ) from exc
        return await _refuse_eviction(cast(Redis, cluster))
    # A blocking pool: a burst beyond max_connections waits for a free connection instead of
    # failing the request.
    redis = Redis.from_pool(
        BlockingConnectionPool.from_url(
            settings.redis_url,
            connection_class=PackedConnection,
            decode_responses=True,
            max_connections=128,
            timeout=5,
            socket_connect_timeout=2,
            socket_timeout=5,
            health_check_interval=30,
        )
    )
    try:
        await redis.ping()
    except (OSError, RedisConnectionError) as exc:
        await redis.aclose()
        raise StartupError(f"redis at {settings.redis_url} is unreachable: {exc}") from exc
    return await _refuse_eviction(redis)


async def _refuse_eviction(redis: Redis) -> Redis:
    try:
        policies = await _eviction_policies(redis)
    except ResponseError:  # CONFIG is disabled on some managed services
        policies = []
        log.warning("cannot read maxmemory-policy; make sure it is noeviction")
    policy = next((p for p in policies if p not in (None, "noeviction")), None)
    if policy is not None:
        await redis.aclose()
        raise StartupError(
            f"redis maxmemory-policy is {policy}: it may evict stock counters or idempotency keys; "
            "set it to noeviction"
        )
    return redis


def as_text(value: str | bytes) -> str:
    """A reply of the service's client (it decodes responses) as the str it is; redis-py's
    types say `str | bytes` for every reply."""
    return value if isinstance(value, str) else value.decode()


StreamEntry = tuple[str, dict[str, str]]


async def stream_range(
    redis: Redis, key: str, start: str = "-", end: str = "+", count: int | None = None
) -> list[StreamEntry]:
    """XRANGE with the types the service's client returns: (entry id, fields), all str."""
    entries: Any = await redis.xrange(key, start, end, count=count)
    return entries or []

"""Redis: the one way the service opens its client, and what it refuses to start on."""

from __future__ import annotations

import logging
from typing import Any

from redis.asyncio import BlockingConnectionPool, Redis
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


async def open_redis(settings: Settings) -> Redis:
    """A client that answered PING, on a server that never evicts keys (or a StartupError)."""
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
    try:
        policy = (await redis.config_get("maxmemory-policy")).get("maxmemory-policy")
    except ResponseError:  # CONFIG is disabled on some managed services
        policy = None
        log.warning("cannot read maxmemory-policy; make sure it is noeviction")
    if policy not in (None, "noeviction"):
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

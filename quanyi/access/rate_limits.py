"""Per-channel rate limits: a token bucket per channel in Redis (lua/rate_limit.lua), so every
API process draws on the same budget, checked in one script call once a request's signature is
verified (an attacker without the secret cannot spend a channel's budget).

Why our own script and not the `limits` library: its async Redis storage builds its own client
from a URL (it cannot take the service's redis.asyncio client, its pool and timeouts), its
strategies are windows (fixed, moving, sliding counter) rather than a rate with a burst, and
the wait for Retry-After is a second call (`get_window_stats`) after the refused `hit`. The
script is one EVALSHA on the client the claims use, keyed by quanyi/stores/keys.py (our prefix,
so test runs stay apart), with the wait in its reply, and requests arriving together share
one call (RateLimiter)."""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass

import asyncpg
from prometheus_client import Counter
from redis.asyncio import Redis
from redis.commands.core import AsyncScript

from quanyi.access import queries
from quanyi.access.staff import Actor, audit
from quanyi.core import metrics
from quanyi.core.clock import Clock
from quanyi.core.errors import NotFound, QuanyiError, StartupError, Unavailable
from quanyi.core.settings import Settings
from quanyi.stores.keys import Keys
from quanyi.stores.scripts import run_script

# What a limit may be (the columns' CHECK in migration 0009 bounds them too): Lua numbers are
# doubles, so these stay far from where they lose precision.
MAX_PER_SECOND = 100_000.0
MIN_PER_SECOND = 0.001
MAX_BURST = 1_000_000


class RateLimited(QuanyiError):
    """A channel sent more than its rate limit allows; says when to send again."""

    status, code = 429, "rate_limited"

    def __init__(self, message: str, retry_after_s: int) -> None:
        super().__init__(message, retry_after_s=retry_after_s)
        self.headers = {"Retry-After": str(retry_after_s)}


@dataclass(frozen=True)
class RateLimit:
    """`per_second` requests a second on average, up to `burst` at once."""

    per_second: float
    burst: int

    def __post_init__(self) -> None:
        if not (
            isinstance(self.per_second, int | float)
            and not isinstance(self.per_second, bool)
            and math.isfinite(self.per_second)
            and MIN_PER_SECOND <= self.per_second <= MAX_PER_SECOND
        ):
            raise ValueError(
                f"per_second must be a number from {MIN_PER_SECOND} to {MAX_PER_SECOND:g}"
            )
        if not (
            isinstance(self.burst, int)
            and not isinstance(self.burst, bool)
            and 1 <= self.burst <= MAX_BURST
        ):
            raise ValueError(f"burst must be an integer from 1 to {MAX_BURST}")

    @property
    def interval_ms(self) -> float:
        return 1000.0 / self.per_second

    def to_json(self) -> dict[str, float | int]:
        return {"per_second": self.per_second, "burst": self.burst}


def default_limit(settings: Settings) -> RateLimit | None:
    """The limit of a channel that has none of its own: None (no limit) unless configured."""
    if settings.channel_rate_per_s <= 0:
        return None
    burst = settings.channel_rate_burst or max(1, math.ceil(settings.channel_rate_per_s))
    try:
        return RateLimit(float(settings.channel_rate_per_s), burst)
    except ValueError as exc:  # the service refuses to start rather than run without it
        raise StartupError(f"settings channel_rate_per_s and channel_rate_burst: {exc}") from None


async def set_rate_limit(
    pool: asyncpg.Pool, channel_id: str, limit: RateLimit | None, actor: Actor
) -> None:
    """Stores the channel's own limit (None: back to the default), audited with what it was."""
    async with pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow(queries.lock_channel_limit, channel_id)
        if row is None:
            raise NotFound(f"no channel {channel_id}")
        before = None if row["rate_per_s"] is None else RateLimit(row["rate_per_s"], row["burst"])
        await conn.execute(
            queries.set_channel_rate_limit,
            channel_id,
            None if limit is None else limit.per_second,
            None if limit is None else limit.burst,
        )
        detail = {
            "before": None if before is None else before.to_json(),
            "after": None if limit is None else limit.to_json(),
        }
        await audit(conn, actor, "channel.rate_limit", f"channel:{channel_id}", detail)


@dataclass(slots=True)
class _Take:
    channel_id: str
    limit: RateLimit
    future: asyncio.Future[int]


class RateLimiter:
    """Takes one token of a channel's bucket, or says how long until one is back.

    Takes that arrive together (requests handled in the same turn of the event loop, and those
    that come while `in_flight_max` calls are out) go to Redis as one script call of at most
    `batch_max`: each request is still decided by exactly one round trip, and a busy process
    pays redis-py's cost of a call (tens of microseconds, more than the script) once per batch
    rather than once per request, as claims do (issuance/claims.py)."""

    def __init__(
        self,
        redis: Redis,
        keys: Keys,
        script: AsyncScript,
        clock: Clock,
        *,
        batch_max: int = 64,
        in_flight_max: int = 4,
    ) -> None:
        self._redis = redis
        self._keys = keys
        self._script = script
        self._clock = clock
        self._batch_max = batch_max
        self._in_flight_max = in_flight_max
        self._pending: list[_Take] = []
        self._in_flight = 0
        self._scheduled = False
        self._sending: set[asyncio.Task[None]] = set()
        # The counters' children, made once per channel: labels() on every request costs more.
        self._allowed: dict[str, Counter] = {}
        self._refused: dict[str, Counter] = {}

    async def take(self, channel_id: str, limit: RateLimit | None) -> None:
        """Returns when the request may go on; raises RateLimited when the bucket is empty. A
        channel without a limit costs no Redis call."""
        if limit is not None:
            loop = asyncio.get_running_loop()
            future: asyncio.Future[int] = loop.create_future()
            self._pending.append(_Take(channel_id, limit, future))
            self._schedule(loop)
            wait_ms = await future
            if wait_ms:
                self._counter(self._refused, channel_id, "rate_limited").inc()
                retry_after_s = max(1, math.ceil(wait_ms / 1000))
                raise RateLimited(
                    f"channel {channel_id} is over its rate limit of {limit.per_second:g} "
                    f"requests per second (burst {limit.burst}); retry in {retry_after_s} s",
                    retry_after_s,
                )
        self._counter(self._allowed, channel_id, "allowed").inc()

    def _schedule(self, loop: asyncio.AbstractEventLoop) -> None:
        # call_soon, not at once: the other requests ready in this turn join the batch.
        if not self._scheduled and self._in_flight < self._in_flight_max:
            self._scheduled = True
            loop.call_soon(self._flush, loop)

    def _flush(self, loop: asyncio.AbstractEventLoop) -> None:
        self._scheduled = False
        while self._pending and self._in_flight < self._in_flight_max:
            batch = self._pending[: self._batch_max]
            del self._pending[: self._batch_max]
            self._in_flight += 1
            task = loop.create_task(self._send(batch, loop), name="rate-limit-call")
            self._sending.add(task)
            task.add_done_callback(self._sending.discard)

    async def _send(self, batch: list[_Take], loop: asyncio.AbstractEventLoop) -> None:
        try:
            waits = await self._call(batch)
            for take, wait_ms in zip(batch, waits, strict=True):
                if not take.future.done():
                    take.future.set_result(int(wait_ms))
        except BaseException as exc:
            # Redis away: each request gets the error, which the middleware answers 503.
            error = exc if isinstance(exc, Exception) else Unavailable("shutting down; retry")
            for take in batch:
                if not take.future.done():
                    take.future.set_exception(error)
            if not isinstance(exc, Exception):
                raise
        finally:
            self._in_flight -= 1
            if self._pending:
                self._schedule(loop)

    async def _call(self, batch: list[_Take]) -> list[int]:
        index: dict[str, int] = {}
        keys: list[str] = []
        args: list[int | str] = [int(self._clock() * 1000), len(batch)]
        for take in batch:
            k = index.get(take.channel_id)
            if k is None:
                keys.append(self._keys.rate_limit(take.channel_id))
                k = index[take.channel_id] = len(keys)
            args.extend((k, repr(take.limit.interval_ms), take.limit.burst))
        return await run_script(self._redis, self._script, keys, args)

    @staticmethod
    def _counter(cache: dict[str, Counter], channel_id: str, outcome: str) -> Counter:
        child = cache.get(channel_id)
        if child is None:
            child = cache[channel_id] = metrics.CHANNEL_REQUESTS.labels(channel_id, outcome)
        return child

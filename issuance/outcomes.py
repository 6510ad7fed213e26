"""Fulfilment outcomes as they happen, for claims that asked to wait for them (`wait_ms`)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import orjson
from redis.asyncio import Redis

from quanyi.stores.keys import Keys

log = logging.getLogger(__name__)


class OutcomeWaiter:
    """Listens on the outcomes channel and hands each outcome to whoever waits for that grant."""

    def __init__(self, redis: Redis, keys: Keys) -> None:
        self._redis = redis
        self._channel = keys.outcomes
        self._waiting: dict[str, asyncio.Future[dict[str, Any]]] = {}

    def expect(self, grant_id: str) -> asyncio.Future[dict[str, Any]]:
        future = self._waiting.get(grant_id)
        if future is None:
            future = asyncio.get_running_loop().create_future()
            self._waiting[grant_id] = future
        return future

    def forget(self, grant_id: str) -> None:
        self._waiting.pop(grant_id, None)

    async def listen(self) -> None:
        while True:
            try:
                async with self._redis.pubsub() as pubsub:
                    await pubsub.subscribe(self._channel)
                    async for message in pubsub.listen():
                        if message.get("type") == "message":
                            self._deliver(orjson.loads(message["data"]))
            except (OSError, ConnectionError) as exc:
                log.warning("outcome channel lost (%s); resubscribing", exc)
                await asyncio.sleep(1.0)
            except Exception as exc:  # redis-py raises its own ConnectionError types here
                log.warning("outcome channel error (%s); resubscribing", exc)
                await asyncio.sleep(1.0)

    def _deliver(self, outcome: dict[str, Any]) -> None:
        future = self._waiting.get(outcome.get("grant_id", ""))
        if future is not None and not future.done():
            future.set_result(outcome)

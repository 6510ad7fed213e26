"""Typed keys for the stores an app holds, set by the HTTP app from the runtime."""

from __future__ import annotations

import asyncpg
from aiohttp import web
from redis.asyncio import Redis

from quanyi.stores.keys import Keys

KEYS = web.AppKey("keys", Keys)
REDIS = web.AppKey("redis", Redis)
POOL = web.AppKey("pool", asyncpg.Pool)

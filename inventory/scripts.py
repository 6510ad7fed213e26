"""The Lua scripts, read from `lua/` once and called by SHA (redis-py reloads on NOSCRIPT)."""

from __future__ import annotations

from pathlib import Path

from redis.asyncio import Redis
from redis.commands.core import AsyncScript

LUA_DIR = Path(__file__).resolve().parent.parent / "lua"


def lua_source(name: str) -> str:
    return (LUA_DIR / f"{name}.lua").read_text()


class Scripts:
    def __init__(self, redis: Redis) -> None:
        self.claim: AsyncScript = redis.register_script(lua_source("claim"))
        self.transition: AsyncScript = redis.register_script(lua_source("transition"))
        self.assign_code: AsyncScript = redis.register_script(lua_source("assign_code"))
        self.lease_due: AsyncScript = redis.register_script(lua_source("lease_due"))

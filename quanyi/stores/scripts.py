"""The Lua scripts, read from `quanyi/lua/` (the repository's `lua/`) once and called by SHA (redis-py reloads on NOSCRIPT)."""

from __future__ import annotations

from importlib.resources import files

from redis.asyncio import Redis
from redis.commands.core import AsyncScript

# Package data, so the installed wheel reads the same scripts as a checkout.
LUA_DIR = files("quanyi") / "lua"


# A script whose first line is this has lua/grant.lua put in front of it: the checks and writes
# every way of granting shares (claims, card events).
USES_GRANT = "-- uses: grant"


def lua_source(name: str) -> str:
    source = LUA_DIR.joinpath(f"{name}.lua").read_text()
    if source.startswith(USES_GRANT):
        return LUA_DIR.joinpath("grant.lua").read_text() + "\n" + source
    return source


class Scripts:
    def __init__(self, redis: Redis) -> None:
        self.claim: AsyncScript = redis.register_script(lua_source("claim"))
        self.transition: AsyncScript = redis.register_script(lua_source("transition"))
        self.assign_code: AsyncScript = redis.register_script(lua_source("assign_code"))
        self.lease_due: AsyncScript = redis.register_script(lua_source("lease_due"))
        self.audience_has: AsyncScript = redis.register_script(lua_source("audience_has"))
        self.audience_members: AsyncScript = redis.register_script(lua_source("audience_members"))
        self.record_events: AsyncScript = redis.register_script(lua_source("record_events"))
        self.offers: AsyncScript = redis.register_script(lua_source("offers"))
        self.revise: AsyncScript = redis.register_script(lua_source("revise"))
        self.rate_limit: AsyncScript = redis.register_script(lua_source("rate_limit"))

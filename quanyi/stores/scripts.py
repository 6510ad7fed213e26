"""The Lua scripts, read from `quanyi/lua/` (the repository's `lua/`) once and called by SHA (redis-py reloads on NOSCRIPT)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from importlib.resources import files
from typing import Any

from redis.asyncio import Redis
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError

from quanyi.stores.redis import is_cluster

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
        self.route: AsyncScript = redis.register_script(lua_source("route"))
        self.take_stock: AsyncScript = redis.register_script(lua_source("take_stock"))
        self.give_stock: AsyncScript = redis.register_script(lua_source("give_stock"))
        self.cut_stock: AsyncScript = redis.register_script(lua_source("cut_stock"))


async def run_script(
    redis: Redis, script: AsyncScript, keys: Sequence[Any], args: Sequence[Any]
) -> Any:
    """One call of `script`. Should the script cache be emptied again between redis-py's reload
    and its retry (SCRIPT FLUSH, restart, failover), EVAL carries the source, so it cannot miss."""
    try:
        return await script(keys=keys, args=args, client=redis)
    except NoScriptError:
        return await redis.eval(str(script.script), len(keys), *keys, *args)


async def pipelined(
    redis: Redis, script: AsyncScript, calls: Sequence[tuple[Sequence[Any], Sequence[Any]]]
) -> list[Any]:
    """Each (keys, args) call of `script`, in one round trip: its reply, or the error of that
    one call. On a single Redis one pipeline (not a transaction; redis-py loads the script
    first). A cluster client refuses scripts in a pipeline: there the calls go at once, each
    on the connection of its slot's node (redis-py loads the script on NOSCRIPT)."""
    if not calls:
        return []
    if is_cluster(redis):
        return list(
            await asyncio.gather(
                *(script(keys=keys, args=args) for keys, args in calls), return_exceptions=True
            )
        )
    async with redis.pipeline(transaction=False) as pipe:
        for keys, args in calls:
            await script(keys=keys, args=args, client=pipe)
        return list(await pipe.execute(raise_on_error=False))


async def pipelined_reloading(
    redis: Redis, script: AsyncScript, calls: Sequence[tuple[Sequence[Any], Sequence[Any]]]
) -> list[Any]:
    """`pipelined`, with the calls that found the script cache emptied between the pipeline's
    load and their turn (SCRIPT FLUSH, restart, failover: NoScriptError) sent once more, loaded
    again; replies in call order. A NoScriptError refused a call before it ran, so sending that
    one call again runs it once."""
    replies = await pipelined(redis, script, calls)
    missed = [i for i, reply in enumerate(replies) if isinstance(reply, NoScriptError)]
    if missed:
        again = await pipelined(redis, script, [calls[i] for i in missed])
        for i, reply in zip(missed, again, strict=True):
            replies[i] = reply
    return replies

"""claim.lua alone, without HTTP: redis-benchmark sends the call ClaimService would send, as
recorded from ClaimService itself, with fresh request ids, customers and grant ids each call."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
from redis.asyncio import Redis

from loadtests.bench.results import BenchError, LuaRun
from loadtests.bench.stores import LUA_REDIS_DB, PREFIX, REDIS_HOST, REDIS_PORT, redis_cpu_s
from loadtests.drivers import redis_benchmark
from loadtests.procs import ChildError
from loadtests.seeding import CAMPAIGN, CHANNEL, REWARD
from loadtests.stats import per_unit_us
from quanyi.campaigns.service import CampaignService
from quanyi.core.settings import Settings
from quanyi.inventory.readiness import mark_store_ready
from quanyi.issuance.claims import Claim, ClaimService
from quanyi.stores.keys import Keys
from quanyi.stores.scripts import lua_source

# As the service loads it: claim.lua with grant.lua in front.
CLAIM_SOURCE = lua_source("claim")
CLAIM_LIBRARY, CLAIM_FUNCTION = "qyb_bench", "qyb_bench_claim"
GRANT_ID = re.compile(r"[0-9A-HJKMNP-TV-Z]{26}")


async def claim_lua_variant(
    redis: Redis,
    pool: asyncpg.Pool,
    label: str,
    shape: tuple[int, int, int],
    connections: int,
    say: Callable[[str], None],
) -> LuaRun:
    """`shape`: (redis-benchmark pipeline, claims per call, calls)."""
    pipeline, claims, calls = shape
    # The bench campaign, published to the scratch db the way the API publishes it.
    await CampaignService(pool, redis, Keys(PREFIX)).publish_all()
    await mark_store_ready(redis, Keys(PREFIX), "bench: a fresh scratch store", time.time())
    keys, argv = await recorded_claim_call(claims)
    # One call by hand first: a mistake in the arguments shows here, not as a silent rate.
    probe = [a.replace("__rand_int__", "000000000000") for a in argv]
    reply = await redis.register_script(CLAIM_SOURCE)(keys, probe)
    if reply[0][0] != "granted":
        raise BenchError(f"claim.lua answered {reply[0]} to the redis-benchmark arguments")
    return await claim_lua_run(redis, label, keys, argv, calls, pipeline, connections, say)


async def claim_lua_run(
    redis: Redis,
    label: str,
    keys: list[str],
    argv: list[str],
    calls: int,
    pipeline: int,
    connections: int,
    say: Callable[[str], None],
) -> LuaRun:
    per_call = int(argv[1])  # ARGV[2] of claim.lua: the number of claims
    counter = (Keys(PREFIX).campaign(CAMPAIGN), f"r:{REWARD}:granted")
    server = (REDIS_HOST, REDIS_PORT, LUA_REDIS_DB)

    async def attempt(command: list[str], how: str) -> LuaRun:
        granted, cpu = int(await redis.hget(*counter)), await redis_cpu_s(redis)
        rate = await redis_benchmark(server, command, calls, pipeline, connections)
        granted = int(await redis.hget(*counter)) - granted
        cpu_us = per_unit_us(cpu, await redis_cpu_s(redis), calls * per_call)
        return LuaRun(f"{how}, {label}", rate, per_call, granted, calls * per_call, cpu_us)

    for _ in range(2):
        sha = await redis.script_load(CLAIM_SOURCE)
        try:
            return await attempt(["EVALSHA", sha, str(len(keys)), *keys, *argv], "EVALSHA")
        except ChildError as exc:
            # SCRIPT FLUSH is server-wide (the test suite sends one per test) and
            # redis-benchmark stops at the first NOSCRIPT.
            if "NOSCRIPT" not in str(exc):
                raise
            say("claim.lua: another client flushed the script cache mid-run")
    # The same code as a function, which SCRIPT FLUSH leaves alone.
    say("claim.lua: running it as a Redis function (FCALL) instead")
    await redis.function_load(claim_function_source(), replace=True)
    try:
        return await attempt(["FCALL", CLAIM_FUNCTION, str(len(keys)), *keys, *argv], "FCALL")
    finally:
        await redis.function_delete(CLAIM_LIBRARY)


def claim_function_source() -> str:
    """claim.lua unchanged, as the body of a function taking KEYS and ARGV."""
    return (
        f"#!lua name={CLAIM_LIBRARY}\n"
        f"redis.register_function('{CLAIM_FUNCTION}', function(KEYS, ARGV)\n"
        f"{CLAIM_SOURCE}\nend)\n"
    )


class RecordingRedis(Redis):
    """A client that records claim.lua calls instead of sending them, answering every claim
    "granted"; everything else (the campaign definition) it reads from Redis as usual."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.calls: list[tuple[int, tuple[Any, ...]]] = []

    async def evalsha(self, sha: str, numkeys: int, *keys_and_args: Any) -> Any:
        self.calls.append((numkeys, keys_and_args))
        claims = int(keys_and_args[numkeys + 1])  # ARGV[2]: the number of claims
        return [["granted", "0" * 26] for _ in range(claims)]


async def recorded_claim_call(claims: int) -> tuple[list[str], list[str]]:
    """KEYS and ARGV of one claim.lua call deciding `claims` claims, exactly as ClaimService
    builds them, so this follows the script's interface when it changes."""
    redis = RecordingRedis(host=REDIS_HOST, port=REDIS_PORT, db=LUA_REDIS_DB, decode_responses=True)
    service = ClaimService(redis, Keys(PREFIX), Settings(key_prefix=PREFIX), time.time)
    await service.start()
    try:

        def claim(i: int) -> Awaitable[Any]:
            return service.claim(
                Claim(
                    channel_id=CHANNEL,
                    request_id=f"luareq{i:04d}",
                    campaign_id=CAMPAIGN,
                    customer_id=f"luacu{i:04d}",
                    reward_id=None,
                )
            )

        await claim(9999)  # loads the definition, so the next claims queue up together
        redis.calls.clear()
        await asyncio.gather(*(claim(i) for i in range(claims)))
    finally:
        await service.close()
        await redis.aclose()
    if len(redis.calls) != 1:
        raise BenchError(f"{claims} claims went as {len(redis.calls)} claim.lua calls, not one")
    numkeys, keys_and_args = redis.calls[0]
    return randomised(list(keys_and_args[:numkeys]), list(keys_and_args[numkeys:]), claims)


def randomised(keys: list[Any], argv: list[Any], claims: int) -> tuple[list[str], list[str]]:
    """The recorded call with redis-benchmark's __rand_int__ (12 digits, drawn anew for each
    occurrence in each call) in place of request ids, customers and grant ids, so every call
    decides new claims. Bucket keys stay as recorded: a few hot buckets, the worst case."""
    replace_text = {
        g: "01BENCH0000000__rand_int__"
        for g in argv
        if isinstance(g, str) and GRANT_ID.fullmatch(g)
    }
    replace_whole: dict[Any, str] = {}
    for i in range(claims):
        replace_text[f"luareq{i:04d}"] = "luareq__rand_int__"
        replace_text[f"luacu{i:04d}"] = "cu__rand_int__"
        # The idempotency field is a digest of the request id: any unique value will do.
        replace_whole[Keys(PREFIX).idempotency(CHANNEL, f"luareq{i:04d}")[1]] = "idem__rand_int__"

    def one(value: Any) -> str:
        if isinstance(value, bytes) and value in replace_whole:
            return replace_whole[value]
        text = value.decode() if isinstance(value, bytes) else str(value)
        for old, new in replace_text.items():
            text = text.replace(old, new)
        return text

    return [one(k) for k in keys], [one(a) for a in argv]

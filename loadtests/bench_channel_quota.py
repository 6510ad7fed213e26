"""`python -m loadtests.bench_channel_quota`: what channel quotas cost claim.lua, on a Redis
server of its own (so INFO commandstats counts only these calls).

Batches of 32 claims, as ClaimService sends them, against three rewards: without quotas, with a
quota for the claiming channel, and with quotas that do not name it (it draws on what they
leave). Rounds alternate the three, so a busy machine slows each alike; the figures are
Redis's own microseconds per claim (usec_per_call of EVALSHA over 32) and the calls each claim
makes inside the script, with each variant's ratio to the reward without quotas.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager

from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from quanyi.core.ids import new_grant_id
from quanyi.stores.keys import Keys
from quanyi.stores.scripts import lua_source

BATCH = 32
KEYS = Keys("qybq")
# claim.lua's keys of the one campaign are its shard's (the same keys with one shard or many).
SHARD = KEYS.of("c1")
FAR = 4_102_444_800  # 2100-01-01, unix s
VARIANTS = {
    "no quota": {},
    "named channel": {"r:r1:q:app": 6 * 10**8, "r:r1:qsum": 6 * 10**8, "r:r1:qch": "app"},
    "channel not named": {
        "r:r1:q:wechat": 6 * 10**8,
        "r:r1:qsum": 6 * 10**8,
        "r:r1:qch": "wechat",
    },
}


async def setup(redis: Redis, extra: dict[str, object]) -> None:
    await redis.flushall()  # the server is this benchmark's own
    fields = {
        "state": "active",
        "ver": 1,
        "starts": 0,
        "ends": FAR * 1000,
        "ch:app": 1,
        "spent": 0,
        "r:r1:stock": 10**9,
        "r:r1:limit": 1,
        "r:r1:cost": 0,
        "r:r1:granted": 0,
        **extra,
    }
    await redis.hset(KEYS.campaign("c1"), mapping=fields)  # type: ignore[arg-type]
    await redis.set(SHARD.store_ready, "1")


def call(first: int) -> tuple[list[str], list[object]]:
    """claim.lua's keys and arguments for BATCH new claims of customers first, first + 1, ..."""
    keys = [SHARD.outbox, SHARD.pending, SHARD.store_ready]
    args: list[object] = [int(time.time() * 1000), BATCH]
    for n in range(first, first + BATCH):
        customer, bucket = f"cu{n}", n % 64
        idem_key, idem_field = SHARD.idempotency("app", f"rq{n}")
        keys += [
            KEYS.campaign("c1"),
            idem_key,
            KEYS.customer_totals("c1", bucket),
            KEYS.customer_daily("c1", "20261201", bucket),
            KEYS.reward_daily("c1", "20261201"),
            SHARD.customer_pending(customer),
        ]
        grant_id = new_grant_id(int(time.time() * 1000))
        event = f'{{"grant_id":"{grant_id}","customer_id":"{customer}","channel_id":"app"}}'
        args += ["app", idem_field, "0123456789abcdef", grant_id, "r1", f"r1|{customer}"]
        args += [1, FAR, FAR, event, ""]
    return keys, args


async def run(redis: Redis, extra: dict[str, object], calls: int) -> tuple[float, float]:
    """(Redis µs per claim, calls per claim inside the script)."""
    await setup(redis, extra)
    script = redis.register_script(lua_source("claim"))
    prepared = [call(c * BATCH) for c in range(calls + 1)]
    keys, args = prepared[0]
    reply = await script(keys=keys, args=args)  # loads the script; checked, not counted
    if reply[0][0] != b"granted":
        raise RuntimeError(f"claim.lua answered {reply[0]}")
    await redis.config_resetstat()
    for keys, args in prepared[1:]:
        await script(keys=keys, args=args)
    stats = await redis.info("commandstats")
    claims = calls * BATCH
    inner = sum(v["calls"] for k, v in stats.items() if k not in ("cmdstat_evalsha",))
    return stats["cmdstat_evalsha"]["usec_per_call"] / BATCH, inner / claims


@contextmanager
def own_server(port: int) -> Iterator[None]:
    """A redis-server of this benchmark's own, without persistence, stopped on the way out."""
    with tempfile.TemporaryDirectory(prefix="quanyi-bench-quota-") as work_dir:
        argv = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
        server = subprocess.Popen(
            [*argv, "--appendonly", "no", "--dir", work_dir], stdout=subprocess.DEVNULL
        )
        try:
            yield
        finally:
            server.terminate()
            server.wait()


async def main(rounds: int, calls: int, port: int) -> None:
    with own_server(port):
        redis = Redis(port=port)
        for _ in range(50):
            try:
                await redis.ping()
                break
            except (OSError, RedisConnectionError):
                await asyncio.sleep(0.1)
        found: dict[str, list[tuple[float, float]]] = {name: [] for name in VARIANTS}
        for _ in range(rounds):
            for name, extra in VARIANTS.items():
                found[name].append(await run(redis, extra, calls))
        await redis.aclose()
    base = [us for us, _ in found["no quota"]]
    for name, runs in found.items():
        us = sorted(u for u, _ in runs)
        ratio = statistics.median(u / b for (u, _), b in zip(runs, base, strict=True))
        print(
            f"{name:18s} {statistics.median(us):6.2f} us/claim (p10 {us[len(us) // 10]:.2f}),"
            f" {runs[0][1]:.0f} calls/claim in the script, x{ratio:.3f} of no quota (paired)"
        )


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--rounds", type=int, default=40)
    p.add_argument("--calls", type=int, default=30, help="calls of 32 claims per run")
    p.add_argument("--port", type=int, default=6393)
    a = p.parse_args()
    asyncio.run(main(a.rounds, a.calls, a.port))

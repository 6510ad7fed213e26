"""What a grant leaves behind once the pipeline is done with it: bytes of Redis (by kind of key)
and of PostgreSQL (by table, indexes and TOAST included), for the README's capacity model.

Redis is read key by key with MEMORY USAGE under one prefix (the server is shared: INFO's
used_memory would count everybody's keys), so the figure is what the platform's own keys hold;
PostgreSQL per table with pg_total_relation_size of the benchmark's own database.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import asyncpg
from redis.asyncio import Redis

# The ledger's tables a grant writes to, in the order printed.
TABLES = ("grants", "grant_events", "report_daily", "report_status")
# A key's kind: its words with the hash tag's id, the campaign's id and numbers taken out
# (qybi:{q:0}:c:bulk-1:cu:17 -> "q:c:cu"; qybi:aud:{a:vip}:1:40 -> "aud:a").
_TAG = re.compile(r"\{([a-z]+):[^}]*\}")


def key_kind(prefix: str, key: str) -> str:
    words = _TAG.sub(lambda m: m.group(1), key[len(prefix) + 1 :]).split(":")
    if "c" in words[:2] and len(words) > words.index("c") + 1:
        del words[words.index("c") + 1]  # the campaign's id
    return ":".join(w for w in words if w and not w.isdigit())


@dataclass
class Footprint:
    grants: int
    redis: dict[str, int] = field(default_factory=dict)  # kind -> bytes
    postgres: dict[str, int] = field(default_factory=dict)  # table -> bytes

    def redis_per_grant(self, leave_out: tuple[str, ...] = ("aud",)) -> float:
        """Bytes of Redis per grant, leaving out the kinds that are not the grants' (the
        audience the job read, which belongs to the audience whatever is issued)."""
        kept = sum(b for kind, b in self.redis.items() if not kind.startswith(leave_out))
        return kept / max(self.grants, 1)

    def postgres_per_grant(self) -> float:
        return sum(self.postgres.values()) / max(self.grants, 1)

    def lines(self) -> list[str]:
        out = [f"footprint of {self.grants:,} grants once drained:"]
        for kind, b in sorted(self.redis.items(), key=lambda kv: -kv[1]):
            out.append(
                f"  redis {kind:<22} {b / 1e6:9.1f} MB  {b / max(self.grants, 1):7.1f} B/grant"
            )
        for table, b in self.postgres.items():
            out.append(
                f"  pg    {table:<22} {b / 1e6:9.1f} MB  {b / max(self.grants, 1):7.1f} B/grant"
            )
        out.append(
            f"  per grant: Redis {self.redis_per_grant():.0f} B (audience left out),"
            f" PostgreSQL {self.postgres_per_grant():.0f} B"
        )
        return out


async def measure(redis: Redis, prefix: str, conn: asyncpg.Connection) -> Footprint:
    grants = int(await conn.fetchval("SELECT count(*) FROM grants"))
    fp = Footprint(grants)
    async for key in redis.scan_iter(match=f"{prefix}:*", count=2000):
        name = key.decode() if isinstance(key, bytes) else str(key)
        used = await redis.memory_usage(name) or 0
        kind = key_kind(prefix, name)
        fp.redis[kind] = fp.redis.get(kind, 0) + int(used)
    for table in TABLES:
        size = await conn.fetchval("SELECT pg_total_relation_size(to_regclass($1))", table)
        if size is not None:
            fp.postgres[table] = int(size)
    return fp

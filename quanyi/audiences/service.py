"""Audiences: created in PostgreSQL, their members imported into Redis, membership checked.

Redis layout (quanyi/stores/keys.py):
- `Keys.audience(ID)`, the pointer, holds "VERSION:BUCKETS": the live version and how many
  member hashes it has;
- `Keys.audience_bucket(ID, VERSION, BUCKET)`, a hash per bucket: field = customer id, value
  "1"; BUCKET = audience_bucket_of(customer id, BUCKETS). BUCKETS is the smallest power of two
  with at most ~256 members a hash, so each stays a listpack (about 14 bytes a member);
- `Keys.audience_versions(ID)` counts the versions imports took, so an import that died
  half-way never shares its number with a later one.

An import writes the new version's hashes completely, then flips the pointer (one SET), then
unlinks the old version's hashes: lua/audience_has.lua reads the pointer and the hash in one
script, so a check sees the old audience or the new one, never a half-imported one.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib
import struct
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, cast

import asyncpg
import hiredis
from redis.asyncio import Redis

from quanyi.access.staff import Staff, audit, unknown_branch
from quanyi.audiences import queries
from quanyi.audiences.members import Chunk, MemberSource, Rejections
from quanyi.audiences.model import Audience, ImportReport
from quanyi.core.errors import AlreadyExists, NotFound, Unavailable
from quanyi.stores.keys import Keys, audience_bucket_of, audience_buckets_for
from quanyi.stores.redis import is_cluster
from quanyi.stores.scripts import Scripts


def _fastest_sha1() -> Callable[[bytes], Any]:
    """CPython's own SHA-1, about a third faster than OpenSSL's on ids this short."""
    try:
        return importlib.import_module("_sha1").sha1
    except (ImportError, AttributeError):  # another Python
        return hashlib.sha1


sha1 = _fastest_sha1()

# The value of every member field: the hash is a set, the field is what counts.
MEMBER = b"1"
# Keys unlinked per call when an old version goes.
UNLINK_BATCH = 1000

Progress = Callable[[int], None]


class AudienceStore:
    """Membership, as a claim asks it."""

    def __init__(self, redis: Redis, keys: Keys, scripts: Scripts) -> None:
        self._redis, self._keys, self._scripts = redis, keys, scripts

    async def has(self, audience_id: str, customer_id: str) -> bool:
        found = await self._scripts.audience_has(
            keys=[self._keys.audience(audience_id)], args=[customer_id]
        )
        return bool(found)

    async def members_among(self, audience_id: str, customers: list[str]) -> set[str]:
        return await members_among(self._redis, self._keys, audience_id, customers)


# Member hashes read per round trip when many customers are looked up at once.
MEMBER_BATCH = 256


async def members_among(
    redis: Redis, keys: Keys, audience_id: str, customers: list[str]
) -> set[str]:
    """Which of `customers` are members of the audience's live version; read-only, one HMGET a
    member hash, pipelined. An import that swaps the version meanwhile (and unlinks the old
    hashes) is seen in the pointer read after, and the members are read again."""
    for _ in range(3):
        pointer = parse_pointer(await redis.get(keys.audience(audience_id)))
        if pointer is None:
            return set()  # never imported: nobody
        version, buckets = pointer
        groups: dict[int, list[str]] = {}
        for customer in customers:
            groups.setdefault(audience_bucket_of(customer, buckets), []).append(customer)
        found: set[str] = set()
        items = list(groups.items())
        for start in range(0, len(items), MEMBER_BATCH):
            batch = items[start : start + MEMBER_BATCH]
            async with redis.pipeline(transaction=False) as pipe:
                for bucket, ids in batch:
                    pipe.hmget(keys.audience_bucket(audience_id, version, bucket), ids)
                replies = await pipe.execute()
            for (_bucket, ids), values in zip(batch, replies, strict=True):
                found.update(c for c, v in zip(ids, values, strict=True) if v is not None)
        if parse_pointer(await redis.get(keys.audience(audience_id))) == pointer:
            return found
    raise Unavailable(f"audience {audience_id} is being imported again; retry")


def parse_pointer(pointer: str | bytes | None) -> tuple[int, int] | None:
    """(version, buckets) of a pointer's "VERSION:BUCKETS"; None for an audience never imported."""
    if pointer is None:
        return None
    text = pointer.decode() if isinstance(pointer, bytes) else pointer
    version, _, buckets = text.partition(":")
    return int(version), int(buckets)


def _packed_hsets(chunk: Chunk, keys: list[bytes]) -> tuple[bytes, int]:
    """One HSET per bucket the chunk's ids fall in (RESP, packed by hiredis), and how many."""
    # audience_bucket_of, inlined for the million-member loop: BUCKETS is a power of two, so
    # the first four bytes of the digest masked are the first 8 hex digits modulo BUCKETS.
    mask = len(keys) - 1
    first_word = struct.Struct(">I").unpack_from
    groups: list[list[bytes]] = [[] for _ in keys]
    for customer_id in chunk.ids:
        groups[first_word(sha1(customer_id).digest())[0] & mask].append(customer_id)
    commands = []
    for bucket, ids in enumerate(groups):
        if not ids:
            continue
        fields: list[bytes] = [MEMBER] * (2 * len(ids))
        fields[0::2] = ids
        commands.append(hiredis.pack_command(cast(Any, (b"HSET", keys[bucket], *fields))))
    return b"".join(commands), len(commands)


def _next_packed(chunks: Iterator[Chunk], keys: list[bytes]) -> tuple[bytes, int, int] | None:
    chunk = next(chunks, None)
    return None if chunk is None else (*_packed_hsets(chunk, keys), chunk.read)


class AudienceService:
    def __init__(self, pool: asyncpg.Pool, redis: Redis, keys: Keys, scripts: Scripts) -> None:
        self._pool, self._redis, self._keys = pool, redis, keys
        self.store = AudienceStore(redis, keys, scripts)

    async def create(self, staff: Staff, audience_id: str, name: str, branch: str) -> Audience:
        staff.require_role("marketer")
        staff.require_branch(branch)
        async with self._pool.acquire() as conn, conn.transaction():
            try:
                row = await conn.fetchrow(
                    queries.insert_audience, audience_id, name, branch, staff.username
                )
            except asyncpg.UniqueViolationError:
                raise AlreadyExists(f"audience {audience_id} exists") from None
            except asyncpg.ForeignKeyViolationError:
                raise unknown_branch() from None
            await audit(
                conn, staff, "audience.create", f"audience:{audience_id}", {"branch": branch}
            )
        return Audience.from_row(row)

    async def get(self, staff: Staff, audience_id: str) -> Audience:
        staff.require_reader("marketer", "approver")
        row = await self._pool.fetchrow(queries.get_audience, audience_id)
        if row is None:
            raise NotFound(f"no audience {audience_id!r}")
        staff.require_branch(row["branch"])
        return Audience.from_row(row)

    async def may_import(self, staff: Staff, audience_id: str) -> Audience:
        """The audience, if `staff` may import into it: asked before a byte of the file is read."""
        staff.require_role("marketer")
        return await self.get(staff, audience_id)

    async def import_members(
        self,
        staff: Staff,
        audience_id: str,
        source: MemberSource,
        progress: Progress | None = None,
    ) -> ImportReport:
        """A new version of the audience from `source`, live once complete; the old one freed."""
        await self.may_import(staff, audience_id)
        pointer = self._keys.audience(audience_id)
        rejected = Rejections()
        async with self._pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(queries.lock_audience, audience_id)  # one import at a time
            old = parse_pointer(await self._redis.get(pointer))
            version = await self._new_version(
                audience_id, max(row["version"], old[0] if old else 0)
            )
            buckets = audience_buckets_for(source.expected)
            try:
                members = await self._write(
                    audience_id, version, buckets, source.chunks(rejected), progress
                )
            except BaseException:
                await self._unlink(audience_id, version, buckets)
                raise
            await self._redis.set(pointer, f"{version}:{buckets}")
            await conn.fetchrow(
                queries.record_import, audience_id, version, members, staff.username
            )
            await audit(
                conn,
                staff,
                "audience.import",
                f"audience:{audience_id}",
                {"version": version, "members": members, "rejected": rejected.count},
            )
        if old is not None:
            await self._unlink(audience_id, *old)
        return ImportReport(audience_id, version, members, rejected.count, rejected.errors)

    async def _new_version(self, audience_id: str, live: int) -> int:
        """A version number no import took before, past the live one: an import that died
        half-way left its hashes under its own number, which is never written into again."""
        key = self._keys.audience_versions(audience_id)
        version = int(await self._redis.incr(key))
        if version <= live:  # the counter was lost with Redis's data
            version = live + 1
            await self._redis.set(key, version)
        return version

    async def _write(
        self,
        audience_id: str,
        version: int,
        buckets: int,
        chunks: Iterator[Chunk],
        progress: Progress | None,
    ) -> int:
        """Every member into the version's hashes; how many distinct members there are."""
        members = 0
        bucket_keys = [
            self._keys.audience_bucket(audience_id, version, b).encode() for b in range(buckets)
        ]
        # redis-py's pipeline encodes every argument in Python (about 5 us a member at a million);
        # hiredis packs the commands in C, and they go on one connection of the pool as they are.
        # Reading and packing the next chunk (in a thread) overlaps with Redis storing this one.
        conn, release = await self._connection(bucket_keys[0].decode())
        pending = asyncio.create_task(asyncio.to_thread(_next_packed, chunks, bucket_keys))
        clean = False
        try:
            while (packed := await pending) is not None:
                commands, count, read = packed
                pending = asyncio.create_task(asyncio.to_thread(_next_packed, chunks, bucket_keys))
                await conn.send_packed_command(commands)
                for _ in range(count):  # HSET counts only the fields it added: duplicates once
                    members += int(await conn.read_response())
                if progress is not None:
                    progress(read)
            clean = True
        finally:
            # A failed write waits for the chunk under way (the file closes after it), and
            # drops the connection: replies may be left unread on it.
            await asyncio.wait([pending])
            if not pending.cancelled():
                pending.exception()  # retrieved: the error that counts is the one raised
            if not clean:
                await conn.disconnect()
            await release(conn)
        return members

    async def _connection(self, key: str) -> tuple[Any, Callable[[Any], Awaitable[None]]]:
        """A connection of the client's own to the node holding `key`, and how to give it back:
        the pool's on a single Redis; on a cluster the connections of the node serving the
        key's slot (every hash of an audience shares its slot, `{a:ID}`)."""
        if not is_cluster(self._redis):
            pool = self._redis.connection_pool
            return await pool.get_connection(), pool.release
        node = self._redis.get_node_from_key(key)  # type: ignore[attr-defined]

        async def release(conn: Any) -> None:
            node.release(conn)

        return node.acquire_connection(), release

    async def _unlink(self, audience_id: str, version: int, buckets: int) -> None:
        for start in range(0, buckets, UNLINK_BATCH):
            await self._redis.unlink(
                *(
                    self._keys.audience_bucket(audience_id, version, b)
                    for b in range(start, min(start + UNLINK_BATCH, buckets))
                )
            )

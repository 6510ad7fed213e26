"""Vendor operations the `quanyi` command runs: registry, keys, code pools, dead letters."""

from __future__ import annotations

import csv
import getpass
import os
from pathlib import Path
from typing import Any

import asyncpg
import orjson
from redis.asyncio import Redis
from rich.progress import Progress

from quanyi.access.staff import Staff, audit
from quanyi.core.errors import InvalidRequest
from quanyi.issuance.lifecycle import GrantLifecycle, grant_from_event
from quanyi.stores.keys import Keys, ShardKeys
from quanyi.stores.outbox import stream_id_key
from quanyi.stores.redis import stream_range
from quanyi.vendors import queries
from quanyi.vendors.registry import Vendor, VendorRegistry
from quanyi.vendors.rsa import generate_keypair

IMPORT_CHUNK = 1000


def cli_staff() -> Staff:
    """Commands act as a head-office admin named after the operator, for the audit log."""
    return Staff(f"cli:{getpass.getuser()}", "admin", "HQ")


def keygen(out: Path) -> tuple[Path, Path]:
    out.mkdir(parents=True, exist_ok=True)
    private, public = generate_keypair()
    private_path, public_path = out / "private.pem", out / "public.pem"
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # the mode of O_CREAT applies to a new file only
    with os.fdopen(fd, "w") as f:
        f.write(private)
    public_path.write_text(public)
    return private_path, public_path


async def create_vendor(pool: asyncpg.Pool, body: dict[str, Any]) -> Vendor:
    return await VendorRegistry(pool).create(cli_staff(), body)


async def list_vendors(pool: asyncpg.Pool) -> list[Vendor]:
    return await VendorRegistry(pool).all()


def read_codes(path: Path) -> list[str]:
    """First column of each row; a header row named `code` is skipped; blanks ignored."""
    with path.open(newline="") as f:
        codes = [row[0].strip() for row in csv.reader(f) if row and row[0].strip()]
    if codes and codes[0].lower() == "code":
        codes = codes[1:]
    return codes


async def import_codes(
    pool: asyncpg.Pool, redis: Redis, keys: Keys, vendor_id: str, right_id: str, path: Path
) -> dict[str, int]:
    """Codes go to PostgreSQL first (duplicates, in the file or from earlier imports, are
    refused there), then the new ones to the Redis pool the fulfilment worker pops from."""
    vendor = await VendorRegistry(pool).get(vendor_id)
    if vendor.adapter != "codepool":
        raise InvalidRequest(f"vendor {vendor_id} is a {vendor.adapter} vendor, not codepool")
    if await pool.fetchrow(queries.right_vendor, right_id) is None:
        raise InvalidRequest(f"no right {right_id}")
    codes = read_codes(path)
    unique = list(dict.fromkeys(codes))
    added = 0
    with Progress() as progress:
        task = progress.add_task(f"importing {path.name}", total=len(unique))
        for i in range(0, len(unique), IMPORT_CHUNK):
            chunk = unique[i : i + IMPORT_CHUNK]
            async with pool.acquire() as conn, conn.transaction():
                new = [
                    r["code"]
                    for r in await conn.fetch(queries.insert_codes, vendor_id, right_id, chunk)
                ]
                if new:
                    await redis.rpush(keys.code_pool(vendor_id, right_id), *new)
            added += len(new)
            progress.advance(task, len(chunk))
    await audit(
        pool,
        cli_staff(),
        "codes.import",
        f"vendor:{vendor_id}",
        {"right": right_id, "file": path.name, "added": added},
    )
    return {
        "read": len(codes),
        "added": added,
        "duplicates": len(codes) - added,
        "pool": await redis.llen(keys.code_pool(vendor_id, right_id)),
    }


async def dead_letters(
    redis: Redis, keys: Keys, limit: int, vendor_id: str | None = None
) -> list[dict[str, Any]]:
    """The oldest `limit` dead-lettered fulfilments (of `vendor_id` only, when given), over
    every shard's dead-letter stream."""
    found: list[dict[str, Any]] = []
    for shard in keys.shards:
        found += await _dead_letters_of(redis, shard, limit, vendor_id)
    return sorted(found, key=lambda d: stream_id_key(d["id"]))[:limit]


async def _dead_letters_of(
    redis: Redis, shard: ShardKeys, limit: int, vendor_id: str | None
) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    start = "-"
    while len(out) < limit:
        entries = await stream_range(redis, shard.fulfil_dead, start, count=limit)
        for entry_id, fields in entries:
            if vendor_id is not None and fields["vendor_id"] != vendor_id:
                continue
            grant = orjson.loads(fields["grant"])
            out.append(
                {
                    "id": entry_id,
                    "grant_id": grant["grant_id"],
                    "vendor_id": fields["vendor_id"],
                    "attempts": int(fields["attempts"]),
                    "error": fields["error"],
                    "at": fields["at"],
                }
            )
        if len(entries) < limit:
            break
        start = f"({entries[-1][0]}"  # exclusive: after the last one read
    return out[:limit]


async def redrive(
    pool: asyncpg.Pool,
    redis: Redis,
    keys: Keys,
    lifecycle: GrantLifecycle,
    grant_ids: set[str] | None,
    staff: Staff | None = None,
) -> list[tuple[str, str]]:
    """Put failed grants back in line for fulfilment: each becomes live again through
    `lifecycle` (taking back the stock its failure returned, if that is still there) and is
    parked as due now. Audited as `staff` (the command's operator by default)."""
    staff = staff or cli_staff()
    results = []
    for shard in keys.shards:
        results += await _redrive_shard(pool, redis, shard, lifecycle, grant_ids, staff)
    return results


async def _redrive_shard(
    pool: asyncpg.Pool,
    redis: Redis,
    shard: ShardKeys,
    lifecycle: GrantLifecycle,
    grant_ids: set[str] | None,
    staff: Staff,
) -> list[tuple[str, str]]:
    """redrive for the dead letters of one shard, parked again in that shard."""
    results = []
    for entry_id, fields in await stream_range(redis, shard.fulfil_dead):
        grant = orjson.loads(fields["grant"])
        grant_id = grant["grant_id"]
        if grant_ids is not None and grant_id not in grant_ids:
            continue
        moved = await lifecycle.move(
            grant_id, "redriven", staff.username, grant=grant_from_event(grant)
        )
        if not moved.applied:
            results.append((grant_id, f"not redriven: {moved.before}"))
            continue
        async with redis.pipeline(transaction=True) as pipe:  # one shard: one slot
            pipe.hdel(shard.fulfil_attempts, grant_id)
            pipe.hset(shard.fulfil_parked, grant_id, fields["grant"])
            pipe.zadd(shard.fulfil_retry, {grant_id: 0})
            pipe.xdel(shard.fulfil_dead, entry_id)
            await pipe.execute()
        await audit(
            pool, staff, "grant.redrive", f"grant:{grant_id}", {"vendor": fields["vendor_id"]}
        )
        results.append((grant_id, "redriven"))
    return results

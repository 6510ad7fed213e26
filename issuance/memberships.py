"""Audience membership read ahead of a shard's script, on a Redis Cluster.

An audience's hashes live in a slot of their own (`{a:ID}`, quanyi/stores/keys.py), out of
reach of a script that runs in a shard's slot. On a cluster the scripts that check membership
(record_events.lua, offers.lua) are therefore handed it, read just before by
audience_members.lua, one call per audience. Still correct: membership is only read, never
taken, so an answer read a moment earlier is one an import could have given a moment later.
On a single Redis the scripts read it themselves, as before, and nothing here is called.
"""

from __future__ import annotations

import asyncio

from quanyi.stores.redis import as_text
from quanyi.stores.scripts import Scripts


async def members(
    scripts: Scripts, pointers: list[str], customers: list[str]
) -> dict[str, set[str]]:
    """pointer -> those of `customers` who are members of its audience now."""
    if not pointers or not customers:
        return {}
    replies = await asyncio.gather(
        *(scripts.audience_members(keys=[pointer], args=customers) for pointer in pointers)
    )
    return {
        pointer: {c for c, bit in zip(customers, as_text(reply), strict=True) if bit == "1"}
        for pointer, reply in zip(pointers, replies, strict=True)
    }

"""The vendor registry: who fulfils which rights, how to reach them, and their keys.

Private keys never live in the database or the repository: a vendor row names where ours is
(`file:PATH` or `env:VARIABLE`); the vendor's public keys (two during a rotation) are stored.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, get_args

import asyncpg

from quanyi.access.staff import Staff, audit
from quanyi.campaigns.model import LIVE, read_body
from quanyi.core.errors import AlreadyExists, NotFound, VendorInUse
from quanyi.vendors import queries
from quanyi.vendors.model import Adapter, RetryBody, VendorBody, VendorPatch, load_private_key
from quanyi.vendors.rsa import RsaKey, load_key

ADAPTERS: tuple[str, ...] = get_args(Adapter)
# Where a vendor is reached and how: changing either redirects every credit and fulfilment of
# the campaigns routed to it, so neither moves while a live campaign is (see VendorInUse).
ROUTING_FIELDS = ("adapter", "base_url")
# Who last moved a vendor into each state of its lifecycle, and when: columns <move>_by, _at.
LIFECYCLE_MOVES = ("proposed", "activated", "suspended", "offboarded")


@dataclass(frozen=True)
class Vendor:
    id: str
    name: str
    adapter: str
    base_url: str | None
    timeout_ms: int
    max_in_flight: int
    max_attempts: int
    backoff_base_ms: int
    backoff_max_ms: int
    public_keys: tuple[str, ...]
    signing_key: str | None
    # The onboarding lifecycle (quanyi/vendors/lifecycle.py). Not compared: a vendor that only
    # changed state is reached the same way, and keeps its lane and its parsed keys.
    state: str = field(default="active", compare=False)
    moves: tuple[tuple[str, str | None, datetime | None], ...] = field(default=(), compare=False)

    @classmethod
    def from_row(cls, row: asyncpg.Record) -> Vendor:
        skip = ("public_keys", "moves")
        return cls(
            **{k: row[k] for k in cls.__dataclass_fields__ if k not in skip},
            public_keys=tuple(row["public_keys"]),
            moves=tuple((m, row[f"{m}_by"], row[f"{m}_at"]) for m in LIFECYCLE_MOVES),
        )

    def verifying_keys(self) -> list[RsaKey]:
        return [load_key(pem) for pem in self.public_keys]

    def private_key(self) -> RsaKey | None:
        return load_private_key(self.signing_key) if self.signing_key else None

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "adapter": self.adapter,
            "base_url": self.base_url,
            "timeout_ms": self.timeout_ms,
            "max_in_flight": self.max_in_flight,
            "retry": {
                "max_attempts": self.max_attempts,
                "backoff_base_ms": self.backoff_base_ms,
                "backoff_max_ms": self.backoff_max_ms,
            },
            "public_keys": list(self.public_keys),
            "signing_key": self.signing_key,
            "state": self.state,
            **{
                f"{move}_{k}": v.isoformat() if isinstance(v, datetime) else v
                for move, by, at in self.moves
                for k, v in (("by", by), ("at", at))
            },
        }


class VendorRegistry:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def create(self, staff: Staff, body: bytes | Mapping[str, Any]) -> Vendor:
        """`body`: a VendorBody, as JSON bytes or a mapping (the CLI, the demo)."""
        staff.require_role("operator")  # and admins
        staff.require_head_office()
        v = read_body(VendorBody, body)
        async with self._pool.acquire() as conn, conn.transaction():
            try:
                # Proposed: an approver other than its proposer activates it (lifecycle.py).
                row = await conn.fetchrow(queries.insert_vendor, *_columns(v), staff.username)
            except asyncpg.UniqueViolationError:
                raise AlreadyExists(f"vendor {v.id} exists") from None
            vendor = Vendor.from_row(row)
            await audit(conn, staff, "vendor.create", f"vendor:{vendor.id}", vendor.to_json())
        return vendor

    async def update(self, staff: Staff, vendor_id: str, body: bytes | Mapping[str, Any]) -> Vendor:
        """`body`: a VendorPatch; the vendor it makes is checked as a whole (a VendorBody)."""
        staff.require_role("operator")  # and admins
        staff.require_head_office()
        patch = read_body(VendorPatch, body)
        async with self._pool.acquire() as conn, conn.transaction():
            # Under the vendor's lock: a submit or approval routing rewards here waits for this
            # change, or this change sees the campaign it made live.
            row = await conn.fetchrow(queries.lock_vendor, vendor_id)
            if row is None:
                raise NotFound(f"no vendor {vendor_id}")
            current = Vendor.from_row(row)
            v = read_body(VendorBody, _patched(current, patch))
            rerouted = [f for f in ROUTING_FIELDS if getattr(v, f) != getattr(current, f)]
            if rerouted:
                in_use = [
                    r["id"]
                    for r in await conn.fetch(queries.campaigns_routed_to_vendor, vendor_id, LIVE)
                ]
                if in_use:
                    raise VendorInUse(
                        f"vendor {vendor_id} fulfils live campaigns: its {' and '.join(rerouted)}"
                        " cannot change until they end (keys and tuning may)",
                        campaigns=in_use,
                        fields={
                            f: "fixed while live campaigns route rewards here" for f in rerouted
                        },
                    )
            row = await conn.fetchrow(queries.update_vendor, *_columns(v))
            vendor = Vendor.from_row(row)
            await audit(
                conn, staff, "vendor.update", f"vendor:{vendor.id}", _changes(current, vendor)
            )
        return vendor

    async def get(self, vendor_id: str) -> Vendor:
        async with self._pool.acquire() as conn:
            return await self._get(conn, vendor_id)

    async def all(self) -> list[Vendor]:
        return [Vendor.from_row(r) for r in await self._pool.fetch(queries.list_vendors)]

    async def read(self, staff: Staff, vendor_id: str) -> Vendor:
        """One vendor as staff see it: base URL, keys and where our signing key lives serve
        every branch and are head office's to know."""
        staff.require_reader("marketer", "approver", "operator")
        staff.require_head_office()
        return await self.get(vendor_id)

    async def read_all(self, staff: Staff) -> list[Vendor]:
        staff.require_reader("marketer", "approver", "operator")
        staff.require_head_office()
        return await self.all()

    @staticmethod
    async def _get(conn: asyncpg.Connection, vendor_id: str) -> Vendor:
        row = await conn.fetchrow(queries.get_vendor, vendor_id)
        if row is None:
            raise NotFound(f"no vendor {vendor_id}")
        return Vendor.from_row(row)


def _patched(current: Vendor, patch: VendorPatch) -> dict[str, Any]:
    """The vendor as it is, with what the patch names; a null retry keeps the retry settings."""
    vendor = current.to_json()
    given = patch.model_dump(exclude_unset=True)
    given.pop("retry", None)
    if patch.retry is not None:
        vendor["retry"] = {**vendor["retry"], **patch.retry.model_dump(exclude_unset=True)}
    return {**vendor, **given}


def _columns(v: VendorBody) -> tuple[Any, ...]:
    retry = v.retry or RetryBody()  # a validated body has one: a null reads as the defaults
    return (
        v.id,
        v.name,
        v.adapter,
        v.base_url,
        v.timeout_ms,
        v.max_in_flight,
        retry.max_attempts,
        retry.backoff_base_ms,
        retry.backoff_max_ms,
        v.public_keys,
        v.signing_key,
    )


def key_fingerprint(key: RsaKey) -> str:
    """SHA-256 of a key's public half (DER): names a key in the audit log without the key."""
    return "SHA256:" + hashlib.sha256(key.public_key().export_key(format="DER")).hexdigest()


def _audited(vendor: Vendor) -> dict[str, Any]:
    """A vendor as the audit log keeps it: keys by fingerprint. Our signing key is a reference
    (file:PATH or env:VARIABLE), never the key; its fingerprint says when the key behind it
    changed."""
    shown = vendor.to_json()
    shown.pop("id")
    shown.update(shown.pop("retry"))
    shown["public_keys"] = [key_fingerprint(key) for key in vendor.verifying_keys()]
    if vendor.signing_key:
        try:
            fingerprint = key_fingerprint(load_private_key(vendor.signing_key))
        except (OSError, KeyError, ValueError, IndexError, TypeError):
            fingerprint = "unreadable"  # the key behind a reference that was replaced
        shown["signing_key"] = {"reference": vendor.signing_key, "fingerprint": fingerprint}
    return shown


def _changes(before: Vendor, after: Vendor) -> dict[str, Any]:
    """{"changed": {field: {"before", "after"}}}, of the fields that changed only."""
    old, new = _audited(before), _audited(after)
    return {"changed": {k: {"before": old[k], "after": new[k]} for k in new if old[k] != new[k]}}

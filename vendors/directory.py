"""Vendors as the callback endpoints need them: held in memory with their parsed public keys,
so verifying a callback needs no database round trip. Reloaded in the background."""

from __future__ import annotations

import logging

import asyncpg

from quanyi.core.reloads import Reloads
from quanyi.stores.db import keep_refreshed
from quanyi.vendors import queries
from quanyi.vendors.registry import Vendor
from quanyi.vendors.rsa import RsaKey

log = logging.getLogger(__name__)


class VendorDirectory:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        self._vendors: dict[str, tuple[Vendor, list[RsaKey]]] = {}
        self._reloads = Reloads()

    async def refresh(self) -> None:
        ticket = self._reloads.start()
        vendors = {}
        for row in await self._pool.fetch(queries.list_vendors):
            vendor = Vendor.from_row(row)
            known = self._vendors.get(vendor.id)
            if known is not None and known[0] == vendor:
                # Same keys; its state and lifecycle may have moved (not compared).
                vendors[vendor.id] = (vendor, known[1])
                continue
            try:
                vendors[vendor.id] = (vendor, vendor.verifying_keys())
            except (ValueError, IndexError, TypeError) as exc:
                log.error("vendor %s has an unreadable public key: %s", vendor.id, exc)
        if self._reloads.may_apply(ticket):
            self._vendors = vendors

    async def keep_fresh(self, interval_s: float) -> None:
        await keep_refreshed(self.refresh, interval_s, "vendor")

    def get(self, vendor_id: str) -> tuple[Vendor, list[RsaKey]] | None:
        return self._vendors.get(vendor_id)

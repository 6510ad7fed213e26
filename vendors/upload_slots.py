"""How many statement uploads a process takes at once: one per vendor, a few in all.

A statement may be 16 MiB, and who sent it is only proven once all of it has arrived (the
signature covers the body): anyone who knows a vendor id could otherwise make the process buffer
16 MiB per connection. A slot is taken before a byte of the body is read and given back when the
upload is answered; without a free slot the upload is refused at once (429, Retry-After).
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator
from contextlib import contextmanager

from aiohttp import web

from quanyi.core.errors import TooManyRequests

PER_PROCESS = 2
RETRY_AFTER_S = 5


class UploadSlots:
    def __init__(self, per_process: int = PER_PROCESS) -> None:
        self._per_process = per_process
        self._busy: set[str] = set()

    @property
    def in_flight(self) -> frozenset[str]:
        """The vendors whose statement is being uploaded now."""
        return frozenset(self._busy)

    @contextmanager
    def hold(self, vendor_id: str) -> Iterator[None]:
        """One slot for an upload of this vendor's statement, for as long as the block runs.
        No await between the check and the take: one event loop, so no race."""
        if vendor_id in self._busy:
            raise TooManyRequests(
                f"a statement of vendor {vendor_id} is being uploaded; send one at a time",
                RETRY_AFTER_S,
                scope="vendor",
            )
        if len(self._busy) >= self._per_process:
            raise TooManyRequests(
                "too many statements are being uploaded at once; retry shortly",
                RETRY_AFTER_S,
                scope="process",
            )
        self._busy.add(vendor_id)
        try:
            yield
        finally:
            self._busy.discard(vendor_id)


_SLOTS: weakref.WeakKeyDictionary[web.Application, UploadSlots] = weakref.WeakKeyDictionary()


def upload_slots(app: web.Application) -> UploadSlots:
    """The slots of this application (each test app, each process of `serve --workers`)."""
    slots = _SLOTS.get(app)
    if slots is None:
        slots = _SLOTS[app] = UploadSlots()
    return slots

"""The campaigns active now, as each process holds them for card events and offers.

Every publication of a campaign moves a counter in Redis (inventory/hot_campaigns.py); the list
held here carries the counter it was read at. record_events.lua refuses a batch made from an
older list (`stale`), so an event is never judged against a campaign that was paused, ended or
approved in the meantime; readers that only show (offers) reload at most every REFRESH_S.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from quanyi.inventory.hot_campaigns import HotCampaign, HotCampaigns

# How old a list may be for readers that only show it (offers, progress).
REFRESH_S = 1.0


@dataclass(frozen=True)
class LiveList:
    # Each shard's live-list version, in shard order (quanyi/stores/keys.py): a script of a
    # shard checks its own.
    versions: tuple[str, ...]
    campaigns: tuple[HotCampaign, ...]
    read_at: float

    @property
    def version(self) -> str:
        """Every shard's version in one string: the same list while it is the same."""
        return " ".join(self.versions)

    @property
    def with_goals(self) -> tuple[HotCampaign, ...]:
        return tuple(c for c in self.campaigns if c.has_goals)

    def on_channel(self, channel_id: str) -> tuple[HotCampaign, ...]:
        return tuple(c for c in self.campaigns if channel_id in c.channels)


class LiveCampaigns:
    def __init__(self, stock: HotCampaigns) -> None:
        self._stock = stock
        self._list: LiveList | None = None
        self._loading: asyncio.Task[LiveList] | None = None

    async def current(self, *, max_age_s: float | None = None) -> LiveList:
        """The list held, or a new one when there is none yet or it is older than
        `max_age_s`."""
        held = self._list
        if held is not None and (max_age_s is None or time.monotonic() - held.read_at < max_age_s):
            return held
        return await self.reload()

    async def reload(self) -> LiveList:
        """Read the list again (a burst of callers shares one read)."""
        if self._loading is None or self._loading.done():
            self._loading = asyncio.create_task(self._read())
        self._list = await asyncio.shield(self._loading)
        return self._list

    async def _read(self) -> LiveList:
        versions, ids = await self._stock.live()
        # A definition Redis lost is left out: its claims republish it, which moves the version.
        campaigns = [c for c in await self._stock.definitions(ids) if c.state == "active"]
        return LiveList(versions, tuple(campaigns), time.monotonic())

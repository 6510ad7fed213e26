"""Figures the API and the ledger worker publish on /metrics (Prometheus text format)."""

from __future__ import annotations

import asyncio
import contextlib
import re

import aiohttp

from loadtests.bench.runner import Poller


async def http_text(url: str) -> str:
    timeout = aiohttp.ClientTimeout(total=5)
    async with aiohttp.ClientSession(timeout=timeout) as session, session.get(url) as resp:
        return await resp.text()


def metric(text: str, name: str) -> float | None:
    """The value of an unlabelled sample in Prometheus text format."""
    match = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else None


async def histogram_totals(metrics_url: str, name: str) -> tuple[float, float]:
    """(sum, count) so far of a Prometheus histogram."""
    text = await http_text(metrics_url)
    return metric(text, f"{name}_sum") or 0.0, metric(text, f"{name}_count") or 0.0


class LagGauge(Poller):
    """Polls the ledger worker's quanyi_outbox_lag_seconds and keeps the highest value seen."""

    task_name = "lag-gauge"

    def __init__(self, url: str, every_s: float = 0.25) -> None:
        self.url = url
        self.every_s = every_s
        self.max_seconds: float | None = None

    async def _poll(self) -> None:
        while True:
            with contextlib.suppress(aiohttp.ClientError, OSError, TimeoutError):
                value = metric(await http_text(self.url), "quanyi_outbox_lag_seconds")
                if value is not None:
                    self.max_seconds = max(self.max_seconds or 0.0, value)
            await asyncio.sleep(self.every_s)

"""Delivery of queued notifications to the bank's webhook (QUANYI_WEBHOOK_URL).

Each notification is POSTed as JSON, signed (quanyi/notifications/signing.py), with its delivery
id for the receiver to dedupe on: delivery is at least once (a process that dies between the
receiver's 200 and recording it sends it again). A 2xx answer delivers it; anything else (another
status, a refused connection, a timeout) is tried again after a backoff that doubles from
QUANYI_WEBHOOK_BACKOFF_S up to QUANYI_WEBHOOK_BACKOFF_MAX_S, and after
QUANYI_WEBHOOK_MAX_ATTEMPTS attempts (about a day with the defaults) it is marked failed, for
`quanyi webhook redrive` to send again. Several senders may run: each takes its attempts with
FOR UPDATE SKIP LOCKED and holds them under a lease; an outcome is recorded only by the attempt
that holds the notification, so a sender whose lease ran out changes nothing. Delivered
notifications are deleted after QUANYI_WEBHOOK_RETENTION_DAYS (those of live campaigns stay:
their dedupe keys keep stock.low once per reward).

Without a URL nothing is sent: notifications wait in the outbox until one is set.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aiohttp
import asyncpg
import orjson
from prometheus_client import Counter, Gauge
from yarl import URL

from quanyi.core.clock import Clock, rfc3339
from quanyi.core.errors import StartupError
from quanyi.core.settings import Settings
from quanyi.core.side_tasks import SideTask, SideTasks
from quanyi.notifications import queries
from quanyi.notifications.signing import (
    DELIVERY_HEADER,
    EVENT_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    secrets_of,
    signature,
)
from quanyi.stores.outbox import worth_retrying

log = logging.getLogger(__name__)

DELIVERIES = Counter(
    "quanyi_webhook_deliveries_total",
    "Webhook attempts by notification kind and outcome (delivered, retried, failed)",
    ["kind", "outcome"],
)
QUEUED = Gauge(
    "quanyi_notifications_queued",
    "Notifications neither delivered nor failed yet (the webhook's queue depth)",
    multiprocess_mode="max",
)
SWEEP_EVERY_S = 3600.0


def redacted(url: str) -> str:
    """`url` as logs and last_error may show it: no user info, query or fragment (where a
    receiver's token could be)."""
    try:
        parsed = URL(url)
    except ValueError:
        return "(invalid url)"
    if not parsed.host:
        return "(invalid url)"
    return str(parsed.with_user(None).with_query(None).with_fragment(None))


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class WebhookConfig:
    url: str
    # One secret, or "new,old" while rotating: every request is signed with each.
    secret: str
    timeout_s: float = 5.0
    max_attempts: int = 35
    backoff_s: float = 2.0
    backoff_max_s: float = 3600.0
    poll_s: float = 1.0
    batch_size: int = 20
    retention_days: int = 30

    def __repr__(self) -> str:  # the secret and the URL's token stay out of every log line
        return f"WebhookConfig(url={redacted(self.url) if self.url else ''!r}, secret=***)"

    @classmethod
    def from_settings(cls, settings: Settings) -> WebhookConfig:
        """The settings' webhook; a StartupError when a URL is set without its secret, or is
        not https (plain http only to a loopback receiver)."""
        url = settings.webhook_url
        if url and not secrets_of(settings.webhook_secret):
            raise StartupError("QUANYI_WEBHOOK_URL is set but QUANYI_WEBHOOK_SECRET is not")
        if url:
            try:
                parsed = URL(url)
            except ValueError:
                parsed = URL()
            if not parsed.host or parsed.scheme not in ("https", "http"):
                raise StartupError(f"QUANYI_WEBHOOK_URL is not an http(s) URL: {redacted(url)}")
            if parsed.scheme == "http" and not _is_loopback(parsed.host):
                raise StartupError(
                    "QUANYI_WEBHOOK_URL must be https (plain http only to a loopback address):"
                    f" {redacted(url)}"
                )
        return cls(
            url=url,
            secret=settings.webhook_secret,
            timeout_s=settings.webhook_timeout_s,
            max_attempts=settings.webhook_max_attempts,
            backoff_s=settings.webhook_backoff_s,
            backoff_max_s=settings.webhook_backoff_max_s,
            poll_s=settings.webhook_poll_s,
            retention_days=settings.webhook_retention_days,
        )

    def backoff(self, attempts: int) -> float:
        """Seconds before the next attempt, after `attempts` failed ones."""
        return float(min(self.backoff_s * 2 ** (attempts - 1), self.backoff_max_s))

    @property
    def lease_s(self) -> float:
        """An attempt under way is its sender's this long: past its timeout, with a margin."""
        return self.timeout_s * 2 + 5.0


def _at(unix_s: float) -> datetime:
    return datetime.fromtimestamp(unix_s, UTC)


def envelope(row: asyncpg.Record | dict[str, Any]) -> bytes:
    """The body sent: the same bytes on every attempt of one notification."""
    created: datetime = row["created_at"]
    return orjson.dumps(
        {
            "id": row["id"],
            "kind": row["kind"],
            "created_at": rfc3339(round(created.timestamp() * 1000)),
            "data": orjson.loads(row["payload"]),
        }
    )


class WebhookSender:
    """A worker (run/stop, under a Supervisor) that delivers the notifications due."""

    def __init__(self, pool: asyncpg.Pool, config: WebhookConfig, clock: Clock) -> None:
        self._pool = pool
        self._config = config
        self._secrets = secrets_of(config.secret)
        self._clock = clock
        self._session: aiohttp.ClientSession | None = None
        self._stopping = asyncio.Event()

    def stop(self) -> None:
        self._stopping.set()

    async def run(self) -> None:
        """Deliver until stop(), and sweep delivered notifications; a failure of its own
        (PostgreSQL away, a bug) is logged and the job goes on after a pause (SideTasks): it
        never ends by itself."""
        if not self._config.url:
            log.info("QUANYI_WEBHOOK_URL is not set: notifications are kept, not sent")
        tasks = SideTasks(worth_retrying)
        tasks.start(
            [
                SideTask("webhook-deliver", self._config.poll_s, self._deliver_all_due),
                SideTask("webhook-sweep", SWEEP_EVERY_S, self.sweep),
            ]
        )
        try:
            await self._stopping.wait()
        finally:
            await tasks.stop(grace_s=self._config.timeout_s)
            await self.aclose()

    async def _deliver_all_due(self) -> None:
        while await self.deliver_due() >= self._config.batch_size and not self._stopping.is_set():
            pass  # more are waiting

    async def sweep(self) -> int:
        """Delete delivered notifications older than the retention (not those of a live
        campaign); how many were deleted."""
        before = _at(self._clock() - self._config.retention_days * 86_400)
        done = await self._pool.execute(queries.sweep_delivered, before)
        return int(done.split()[-1])

    async def redrive(self, ids: list[str] | None = None) -> list[str]:
        """Failed notifications (these, or all) queued again from a first attempt."""
        rows = await self._pool.fetch(queries.redrive, ids, _at(self._clock()))
        return [r["id"] for r in rows]

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def deliver_due(self) -> int:
        """One round: take the attempts due now (by the clock), make them at once, record each
        outcome. Returns how many were attempted."""
        taken = 0
        if self._config.url:
            now = self._clock()
            rows = await self._pool.fetch(
                queries.take_due,
                _at(now),
                _at(now + self._config.lease_s),
                self._config.batch_size,
            )
            taken = len(rows)
            results = await asyncio.gather(
                *(self._deliver(row) for row in rows), return_exceptions=True
            )
            # An outcome not recorded (PostgreSQL away) leaves the attempt leased: it is made
            # again once the lease ends, and the receiver dedupes it by its delivery id.
            errors = [r for r in results if isinstance(r, BaseException)]
            if errors:
                raise errors[0]
        QUEUED.set(await self._pool.fetchval(queries.queue_depth))
        return taken

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self._config.timeout_s),
                headers={"User-Agent": "quanyi-webhook/1"},
            )
        return self._session

    async def _deliver(self, row: asyncpg.Record) -> None:
        body = envelope(row)
        timestamp = int(self._clock())
        headers = {
            "Content-Type": "application/json",
            DELIVERY_HEADER: row["id"],
            EVENT_HEADER: row["kind"],
            TIMESTAMP_HEADER: str(timestamp),
            SIGNATURE_HEADER: signature(self._secrets, timestamp, row["id"], body),
        }
        error = await self._post(body, headers)
        now = self._clock()
        kind, attempts = row["kind"], row["attempts"]
        if error is None:
            await self._pool.execute(queries.delivered, row["id"], _at(now))
            DELIVERIES.labels(kind, "delivered").inc()
            log.info("webhook %s (%s) delivered, attempt %d", row["id"], kind, attempts)
        elif attempts >= self._config.max_attempts:
            await self._pool.execute(queries.failed, row["id"], _at(now), error, attempts)
            DELIVERIES.labels(kind, "failed").inc()
            log.error(
                "webhook %s (%s) failed for good after %d attempts: %s",
                row["id"],
                kind,
                attempts,
                error,
            )
        else:
            delay = self._config.backoff(attempts)
            await self._pool.execute(queries.retry_at, row["id"], _at(now + delay), error, attempts)
            DELIVERIES.labels(kind, "retried").inc()
            log.warning(
                "webhook %s (%s) attempt %d failed: %s; again in %.0f s",
                row["id"],
                kind,
                attempts,
                error,
                delay,
            )

    async def _post(self, body: bytes, headers: dict[str, str]) -> str | None:
        """None when the receiver took it (2xx), else why not, for last_error."""
        try:
            async with self._client().post(
                self._config.url, data=body, headers=headers, allow_redirects=False
            ) as resp:
                # The answer's body is not read: a receiver's page of any size costs nothing.
                resp.release()
                return None if 200 <= resp.status < 300 else f"HTTP {resp.status}"
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            detail = self._redact(str(exc))
            return f"{exc.__class__.__name__}: {detail}"[:300] if detail else exc.__class__.__name__

    def _redact(self, text: str) -> str:
        """An error's text without the URL's user info or query (aiohttp errors may name it)."""
        safe = redacted(self._config.url)
        for form in {self._config.url, str(URL(self._config.url))}:
            text = text.replace(form, safe)
        return text

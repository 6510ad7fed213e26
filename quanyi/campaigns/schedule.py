"""The campaign scheduler: approved campaigns follow the clock by themselves.

Every tick (QUANYI_SCHEDULE_EVERY_S) it looks for live (approved or paused) campaigns whose
stored `phase` is not the one the clock gives them, and moves them:

- to `scheduled` (before starts_at) or `running` (from starts_at); reaching `running` queues
  `campaign.started`;
- at ends_at, it ends the campaign through the `end` action itself (CampaignService.transition
  as SCHEDULE_ACTOR), the code path staff use, so Redis and PostgreSQL agree: status `ended`,
  Redis refuses claims, and ending.py writes the figures at the end, queues `campaign.ended` and
  releases the budget reservation. The action re-reads ends_at under the campaign's lock and
  ends nothing whose window a revision has just extended.

Then it compares each live campaign's state in Redis with PostgreSQL's and publishes it again
where they differ (an ending or approval that failed after Redis took it, before its commit),
and queues `stock.low` once per reward of a live campaign whose remaining stock (Redis's live
count) falls below 10 % of its stock: one HMGET per campaign, of the rewards not told yet (one
per part of a campaign split into stock parts: its state and version in every part, its grants
summed).

Several schedulers may run (one per `quanyi run`, or `quanyi worker schedule`): a phase move
locks its campaign with FOR UPDATE SKIP LOCKED and re-reads it, an ending takes the campaign's
row lock and finds it ended when another got there first, and each notification has a dedupe
key queued once. A store away ends the tick (tried again by the loop); any other failure is one
campaign's (or the watch's): logged with its traceback, counted, and the others go on.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime

import asyncpg
from prometheus_client import Counter
from redis.asyncio import Redis

from quanyi.campaigns.ending import SCHEDULE_ACTOR, about, queries
from quanyi.campaigns.parts import stock_parts_of
from quanyi.campaigns.service import CampaignService
from quanyi.core.clock import Clock
from quanyi.core.errors import CampaignNotFound, InvalidTransition, StoreNotReady
from quanyi.core.side_tasks import SideTask, SideTasks
from quanyi.notifications.outbox import CAMPAIGN_STARTED, STOCK_LOW, enqueue
from quanyi.stores.db import POSTGRES_AWAY
from quanyi.stores.keys import Keys, part_ids
from quanyi.stores.outbox import REDIS_AWAY

log = logging.getLogger(__name__)

# stock.low: remaining stock below this share of the reward's stock.
STOCK_LOW_PERCENT = 10
# Campaigns moved per tick at most; more wait for the next tick (soonest ends first).
BATCH = 200
FAILURES = Counter(
    "quanyi_schedule_failures_total",
    "Scheduler steps that failed for a reason other than a store away (a bug, bad data), by"
    " step: move, end, heal, watch, give",
    ["step"],
)
# A store away: the tick ends and is tried again. Any other error belongs to one campaign.
STORES_AWAY = (*REDIS_AWAY, *POSTGRES_AWAY, StoreNotReady)


def store_away(exc: BaseException) -> bool:
    return isinstance(exc, STORES_AWAY)


@dataclass
class Tick:
    """What one tick did: campaign ids per phase reached, campaigns whose Redis state was
    published again, and (campaign, reward) of stock.low."""

    scheduled: list[str] = field(default_factory=list)
    running: list[str] = field(default_factory=list)
    ended: list[str] = field(default_factory=list)
    healed: list[str] = field(default_factory=list)
    # Split campaigns whose parts now hold a revision's raise the approval could not give.
    given: list[str] = field(default_factory=list)
    stock_low: list[tuple[str, str]] = field(default_factory=list)


def phase_at(now: datetime, starts_at: datetime, ends_at: datetime) -> str:
    if now < starts_at:
        return "scheduled"
    return "running" if now < ends_at else "ended"


def redis_state(status: str) -> str:
    """The `state` Redis holds for a campaign of this status (Campaign.hot)."""
    return "active" if status == "approved" else status


class CampaignScheduler:
    """A worker (run/stop, under a Supervisor)."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        redis: Redis,
        keys: Keys,
        campaigns: CampaignService,
        clock: Clock,
        *,
        every_s: float = 5.0,
    ) -> None:
        self._pool = pool
        self._redis = redis
        self._keys = keys
        self._campaigns = campaigns
        self._clock = clock
        self._every_s = every_s
        self._stopping = asyncio.Event()

    def stop(self) -> None:
        self._stopping.set()

    async def run(self) -> None:
        """Tick until stop(); never ends by itself (a failed tick is logged and tried again
        after a growing pause, quanyi/core/side_tasks.py)."""
        log.info("campaign scheduler started, every %.1f s", self._every_s)
        tasks = SideTasks(store_away)
        tasks.start([SideTask("schedule", self._every_s, self.tick)])
        try:
            await self._stopping.wait()
        finally:
            await tasks.stop(grace_s=5.0)
        log.info("campaign scheduler stopped")

    async def tick(self) -> Tick:
        """One pass at the clock's time. A store away ends the tick (raised); a campaign that
        fails for another reason is logged and counted, and the others go on."""
        done = Tick()
        # The clock decides what is due; what is written (phase_changed_at, results, each
        # notification's id and created_at) is dated by PostgreSQL, as the staff's own actions
        # are, so notifications sort as the changes they tell of.
        now = datetime.fromtimestamp(self._clock(), UTC)
        for row in await self._pool.fetch(queries.due_phases, now, BATCH):
            step = "end" if row["due"] == "ended" else "move"
            try:
                if step == "end":
                    if await self._end(row["id"], now):
                        done.ended.append(row["id"])
                else:
                    reached = await self._move(row["id"], now)
                    if reached:
                        getattr(done, reached).append(row["id"])
            except Exception as exc:
                self._failed(exc, step, "campaign %s not moved; again next tick", row["id"])
        try:
            done.given = await self._campaigns.revisions.give_pending()
        except Exception as exc:
            self._failed(exc, "give", "revisions' raises not given to stock parts; again next tick")
        try:
            done.healed, done.stock_low = await self._watch()
        except Exception as exc:
            self._failed(exc, "watch", "state and stock watch failed; again next tick")
        return done

    @staticmethod
    def _failed(exc: Exception, step: str, message: str, *args: object) -> None:
        if store_away(exc):
            raise exc
        FAILURES.labels(step).inc()
        log.exception("scheduler: " + message, *args)

    async def _move(self, campaign_id: str, now: datetime) -> str | None:
        """Into scheduled or running; the phase reached, or None (moved by another, held)."""
        async with self._pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(queries.lock_for_phase, campaign_id)
            if row is None:
                return None  # held by another scheduler or a staff action: next tick
            due = phase_at(now, row["starts_at"], row["ends_at"])
            if due == row["phase"] or due == "ended":
                return None
            await conn.execute(queries.set_phase, campaign_id, due)
            if due == "running":
                await enqueue(
                    conn,
                    CAMPAIGN_STARTED,
                    f"{CAMPAIGN_STARTED}:{campaign_id}",
                    {
                        **about(
                            row["id"], row["name"], row["branch"], row["starts_at"], row["ends_at"]
                        ),
                        "status": row["status"],
                    },
                )
            log.info("campaign %s is %s", campaign_id, due)
            return due

    async def _end(self, campaign_id: str, now: datetime) -> bool:
        """Through the `end` action; False when someone ended it first, or its window was
        extended past `now` (read under the campaign's lock)."""
        try:
            ended = await self._campaigns.transition(
                SCHEDULE_ACTOR, campaign_id, "end", ends_by=now
            )
        except (InvalidTransition, CampaignNotFound):
            return False
        if ended.status != "ended":
            return False
        log.info("campaign %s ended at the end of its window", campaign_id)
        return True

    async def _watch(self) -> tuple[list[str], list[tuple[str, str]]]:
        """One Redis round trip: per campaign Redis may hold as live, its state and the granted
        counts of the rewards not told of yet. Publishes again those whose state differs from
        PostgreSQL's; queues stock.low for each reward below the threshold."""
        rows = await self._pool.fetch(queries.live_watch)
        campaigns: dict[str, list[asyncpg.Record]] = {}
        for r in rows:
            campaigns.setdefault(r["campaign_id"], []).append(r)
        if not campaigns:
            return [], []
        # A split campaign is read in every part: a publication that failed half way leaves
        # some parts in the new state and some in the old, and each counts its own grants.
        parts = await stock_parts_of(self._pool, list(campaigns))
        async with self._redis.pipeline(transaction=False) as pipe:
            for campaign_id, rewards in campaigns.items():
                for pid in part_ids(campaign_id, parts.get(campaign_id, 1)):
                    pipe.hmget(
                        self._keys.campaign(pid),
                        [
                            "state",
                            "ver",
                            *(f"r:{r['reward_id']}:granted" for r in rewards if r["reward_id"]),
                        ],
                    )
            replies = iter(await pipe.execute())
        healed, low = [], []
        for campaign_id, rewards in campaigns.items():
            held = [next(replies) for _ in range(parts.get(campaign_id, 1))]
            states = [v[0] for v in held]
            wanted = redis_state(rewards[0]["status"])
            granted = [sum(int(v[i] or 0) for v in held) for i in range(2, len(held[0]))]
            # Parts of two versions: a revision applied to some parts only (revisions.py),
            # whose claims are answered `stale` until every part holds one version again.
            versions = {v[1] for v in held}
            # Nothing held (Redis emptied, or a shard of a split campaign's parts): `quanyi
            # rebuild-redis` restores it, not this (a part written alone could hold more stock
            # than the other parts left it).
            if None not in states and (any(s != wanted for s in states) or len(versions) > 1):
                try:
                    if await self._campaigns.publish_one(campaign_id):
                        healed.append(campaign_id)
                        log.warning(
                            "campaign %s: redis said %s (version %s); published again",
                            campaign_id,
                            "/".join(states),
                            "/".join(sorted(str(v) for v in versions)),
                        )
                except Exception as exc:
                    self._failed(exc, "heal", "campaign %s not published again", campaign_id)
                continue
            told = [r for r in rewards if r["reward_id"]]
            for r, g in zip(told, granted, strict=True):
                remaining = max(r["stock"] - g, 0)
                if remaining * 100 < r["stock"] * STOCK_LOW_PERCENT:
                    low.append((r, remaining))
        queued_now = []
        for r, remaining in low:
            payload = {
                "campaign_id": r["campaign_id"],
                "reward_id": r["reward_id"],
                "right_id": r["right_id"],
                "stock": r["stock"],
                "remaining": remaining,
                "threshold_percent": STOCK_LOW_PERCENT,
            }
            key = f"{STOCK_LOW}:{r['campaign_id']}:{r['reward_id']}"
            if await enqueue(self._pool, STOCK_LOW, key, payload):
                queued_now.append((r["campaign_id"], r["reward_id"]))
        return healed, queued_now

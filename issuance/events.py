"""Card events toward spending goals (达标) and the grants they trigger (触发器).

The card system streams transactions in; each one that a live campaign's goal counts moves the
customer's progress for the goal's period, and a goal reached grants its reward at once
(`grant: auto`), through record_events.lua: the checks and writes of claim.lua (grant.lua), in
one atomic call per batch of events. A reversal takes back what its original counted, and
with `claw_back` revokes the automatic grant the goal no longer supports, if not redeemed.

What is judged here, before Redis: which goals an event can count for (the campaign's window,
the goal's amount and merchant-category filters, the period). What only Redis can judge
(repeats, audience membership, progress, limits, stock, budget) is judged in the script.
"""

from __future__ import annotations

import logging
import zlib
from collections import Counter
from dataclasses import dataclass
from typing import Any

import orjson
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError
from redis.exceptions import TimeoutError as RedisTimeoutError

from quanyi.core import metrics
from quanyi.core.clock import Clock, LocalCalendar, LocalPeriods
from quanyi.core.errors import StoreNotReady, Unavailable
from quanyi.core.ids import new_grant_id
from quanyi.core.settings import Settings
from quanyi.inventory.hot_campaigns import HotCampaign
from quanyi.issuance.claims import born_status
from quanyi.issuance.event_model import CardEvent, occurred_ms
from quanyi.issuance.live import LiveCampaigns, LiveList
from quanyi.stores.keys import EVENT_BUCKETS, PROGRESS_BUCKETS, Keys, customer_bucket
from quanyi.stores.scripts import Scripts

log = logging.getLogger(__name__)

DAY_S = 86_400
# One script call holds Redis for its length (claims wait behind it): a call takes at most this
# many events, and fewer when many goals are live, each event's work growing with them.
EVENTS_PER_CALL = 250
GOALS_PER_CALL = 2000
# A card system's clock may run a little ahead of ours; an event later than this is refused
# (it would count toward a period that has not begun).
FUTURE_SKEW_S = 300
# Reloads of the live list one batch may need (a campaign approved or ended meanwhile).
STALE_RETRIES = 3


@dataclass(frozen=True)
class EventOutcome:
    status: str  # accepted | duplicate | rejected
    code: str | None = None
    message: str | None = None
    held: bool = False
    granted: tuple[str, ...] = ()
    revoked: tuple[str, ...] = ()


_IN_THE_FUTURE = EventOutcome(
    "rejected",
    "in_the_future",
    f"occurred_at is more than {FUTURE_SKEW_S} s ahead of the platform's clock",
)
_NOT_RECORDED = EventOutcome(
    "rejected", "unavailable", "not recorded: the rights store went away; send it again"
)


class EventService:
    def __init__(
        self,
        redis: Redis,
        keys: Keys,
        settings: Settings,
        clock: Clock,
        live: LiveCampaigns,
        scripts: Scripts | None = None,
    ) -> None:
        self._redis = redis
        self._keys = keys
        self._clock = clock
        self._live = live
        self._retention_s = settings.idempotency_retention_days * DAY_S
        self._hold_s = settings.event_hold_days * DAY_S
        self._calendar = LocalCalendar(settings.zone)
        self._periods = LocalPeriods(settings.zone)
        self._script = (scripts or Scripts(redis)).record_events
        self._calls = 0

    async def record(self, channel_id: str, events: list[CardEvent]) -> list[EventOutcome]:
        """Each event's outcome, in order. Raises StoreNotReady or Unavailable when nothing
        could be decided (then nothing was recorded: the caller sends the batch again); when
        the store goes away part-way, the events not recorded are `rejected` with the code
        `unavailable` (send those again)."""
        latest_ms = int((self._clock() + FUTURE_SKEW_S) * 1000)
        outcomes: list[EventOutcome | None] = [
            _IN_THE_FUTURE if occurred_ms(e.occurred_at) > latest_ms else None for e in events
        ]
        todo = [i for i, o in enumerate(outcomes) if o is None]
        per_call = await self._events_per_call()
        for start in range(0, len(todo), per_call):
            chunk = todo[start : start + per_call]
            try:
                decided = await self._record(channel_id, [events[i] for i in chunk])
            except (Unavailable, StoreNotReady):
                if start == 0:
                    raise
                for i in todo[start:]:
                    outcomes[i] = _NOT_RECORDED
                break
            for i, outcome in zip(chunk, decided, strict=True):
                outcomes[i] = outcome
        return [o or _NOT_RECORDED for o in outcomes]

    async def _events_per_call(self) -> int:
        live = await self._live.current()
        goals = sum(1 for c in live.with_goals for r in c.rewards if r.goal is not None)
        return max(10, min(EVENTS_PER_CALL, GOALS_PER_CALL // (1 + goals)))

    async def _record(self, channel_id: str, events: list[CardEvent]) -> list[EventOutcome]:
        live = await self._live.current()
        for _ in range(STALE_RETRIES):
            reply = await self._call(self._batch(channel_id, events, live))
            if reply.get("store_not_ready"):
                raise StoreNotReady()
            if not reply.get("stale"):
                break
            live = await self._live.reload()
        else:
            raise Unavailable("campaigns are changing too fast to judge these events; retry")
        outcomes = [
            EventOutcome(
                status=r["s"],
                code=r.get("code"),
                message=r.get("msg"),
                held=bool(r.get("held")),
                granted=tuple(r.get("granted") or ()),
                revoked=tuple(r.get("revoked") or ()),
            )
            for r in reply["results"]
        ]
        for status, count in Counter(o.status for o in outcomes).items():
            metrics.EVENTS.labels(status).inc(count)
        granted = sum(len(o.granted) for o in outcomes)
        if granted:
            metrics.GOAL_GRANTS.inc(granted)
        return outcomes

    async def _call(self, batch: bytes) -> dict[str, Any]:
        keys = [
            self._keys.outbox,
            self._keys.pending,
            self._keys.store_ready,
            self._keys.live_version,
            self._keys.pending_events,
            self._keys.held_reversals_count,
        ]
        try:
            try:
                raw = await self._script(keys=keys, args=[batch])
            except NoScriptError:  # emptied between redis-py's reload and its retry
                raw = await self._redis.eval(str(self._script.script), len(keys), *keys, batch)
        except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
            log.warning("card events: redis unreachable: %s", exc)
            raise Unavailable("the rights store is unreachable; retry") from exc
        result: dict[str, Any] = orjson.loads(raw)
        return result

    def _batch(self, channel_id: str, events: list[CardEvent], live: LiveList) -> bytes:
        now = self._clock()
        now_ms = int(now * 1000)
        day, day_ends = self._calendar.day(now)
        goal_campaigns = live.with_goals
        used: dict[str, HotCampaign] = {}
        items: list[list[Any]] = []
        for e in events:
            at_ms = occurred_ms(e.occurred_at)
            own_bucket = customer_bucket(e.event_id, EVENT_BUCKETS)
            rev: str | bool = False
            original_bucket: int | bool = False
            more: list[Any]
            if e.reversal_of is not None:
                # The original may have counted where a goal counts a transaction like this one
                # (a refund has its purchase's amount and merchant category): look there.
                rev, original_bucket = e.reversal_of, customer_bucket(e.reversal_of, EVENT_BUCKETS)
                more = []
                for c in goal_campaigns:
                    rewards = [
                        r.id for r in c.rewards if r.goal and r.goal.qualifies(e.amount, e.mcc)
                    ]
                    if rewards:
                        more.append((c.id, rewards))
                        used[c.id] = c
            else:
                more = self._goals(e, at_ms, goal_campaigns, used)
            # As record_events.lua reads it: a list, in the order of its header.
            items.append(
                [
                    e.event_id,
                    e.customer_id,
                    e.amount,
                    e.mcc,
                    at_ms,
                    zlib.crc32(e.customer_id.encode()),
                    own_bucket,
                    rev,
                    original_bucket,
                    more,
                ]
            )
        self._calls += 1
        batch = {
            "ch": channel_id,
            # One type of event so far: card transactions.
            "type": "card_transaction",
            "now": now_ms,
            "live": str(live.version),
            # The script completes each grant id: a shared start, a counter of its own.
            "gid": new_grant_id(now_ms)[:21],
            "day": day,
            "day_ends": day_ends + DAY_S,
            "hold_s": self._hold_s,
            "held": self._keys.held_reversals_prefix,
            # Each call clears one held-reversal hash of holds whose time is over, in turn.
            "sweep": self._calls % EVENT_BUCKETS,
            "pending_c": self._keys.customer_pending(""),
            "pbuckets": PROGRESS_BUCKETS,
            "campaigns": {cid: self._campaign(c) for cid, c in used.items()},
            "events": items,
        }
        return orjson.dumps(batch)

    def _goals(
        self,
        event: CardEvent,
        at_ms: int,
        campaigns: tuple[HotCampaign, ...],
        used: dict[str, HotCampaign],
    ) -> list[tuple[str, str, str]]:
        """The goals this transaction counts for, (campaign, reward, period): its campaign's
        window holds it, and it passes the goal's filters."""
        goals = []
        for campaign in campaigns:
            if not campaign.starts_ms <= at_ms < campaign.ends_ms:
                continue  # outside the campaign's window it counts for nothing
            for reward in campaign.rewards:
                goal = reward.goal
                if goal is None or not goal.qualifies(event.amount, event.mcc):
                    continue
                period, _ = self._periods.period(goal.window, at_ms / 1000)
                goals.append((campaign.id, reward.id, period))
                used[campaign.id] = campaign
        return goals

    def _campaign(self, campaign: HotCampaign) -> dict[str, Any]:
        rewards: dict[str, Any] = {}
        for r in campaign.rewards:
            if r.goal is None:
                continue
            # Absent, never null: the script reads a JSON null as a value.
            reward: dict[str, Any] = {
                "right": r.right_id,
                "cost": r.cost,
                "auto": r.grant == "auto",
                "cb": r.claw_back,
            }
            if r.goal.count is not None:
                reward["n"] = r.goal.count
            if r.goal.amount is not None:
                reward["a"] = r.goal.amount
            if r.audience_id:
                reward["aud"] = self._keys.audience(r.audience_id)
            if born_status(r) == "fulfilled":
                reward["f"] = True  # its grants are born fulfilled, as a claim's (claims.py)
            rewards[r.id] = reward
        return {
            "key": self._keys.campaign(campaign.id),
            "ver": str(campaign.version),
            "keep": campaign.ends_ms // 1000 + self._retention_s,
            "buckets": campaign.buckets,
            "rewards": rewards,
        }

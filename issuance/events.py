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

import asyncio
import logging
import zlib
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import orjson
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from quanyi.core import metrics
from quanyi.core.clock import Clock, LocalCalendar, LocalPeriods
from quanyi.core.errors import StoreNotReady, Unavailable
from quanyi.core.ids import new_grant_id
from quanyi.core.settings import Settings
from quanyi.inventory.hot_campaigns import HotCampaign
from quanyi.issuance import memberships
from quanyi.issuance.claims import born_status
from quanyi.issuance.event_model import CardEvent, occurred_ms
from quanyi.issuance.live import LiveCampaigns, LiveList
from quanyi.stores.keys import (
    EVENT_BUCKETS,
    PROGRESS_BUCKETS,
    Keys,
    ShardKeys,
    customer_bucket,
    shard_of,
)
from quanyi.stores.redis import is_cluster
from quanyi.stores.scripts import Scripts, run_script

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
        self._scripts = scripts or Scripts(redis)
        self._script = self._scripts.record_events
        self._cluster = is_cluster(redis)
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
        if self._keys.sharded:
            outcomes = await self._across_shards(channel_id, events, live)
        else:
            everyone = list(range(len(events)))
            outcomes = await self._in_shard(self._keys.single(), channel_id, events, everyone, live)
        for status, count in Counter(o.status for o in outcomes).items():
            metrics.EVENTS.labels(status).inc(count)
        granted = sum(len(o.granted) for o in outcomes)
        if granted:
            metrics.GOAL_GRANTS.inc(granted)
        return outcomes

    async def _in_shard(
        self,
        shard: ShardKeys,
        channel_id: str,
        events: list[CardEvent],
        chosen: list[int],
        live: LiveList,
    ) -> list[EventOutcome]:
        """The outcomes of the `chosen` events (indexes into `events`), judged in one shard
        against its campaigns (every campaign with one shard)."""
        for _ in range(STALE_RETRIES):
            batch = await self._batch(shard, channel_id, events, chosen, live)
            reply = await self._call(shard, batch)
            if reply.get("store_not_ready"):
                raise StoreNotReady()
            if not reply.get("stale"):
                break
            live = await self._live.reload()
        else:
            raise Unavailable("campaigns are changing too fast to judge these events; retry")
        return [
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

    async def _across_shards(
        self, channel_id: str, events: list[CardEvent], live: LiveList
    ) -> list[EventOutcome]:
        """With several shards each shard judges an event against its own campaigns, all
        shards at once: an event goes to every shard with a campaign whose goal it may count
        for, and one that counts nowhere to one shard (its id's), which records it for the
        ledger. The outcomes are merged (_merged). Each shard's decision is atomic, not the
        event's across shards: a conflict one shard finds does not undo what another counted
        (each is right about its own campaigns, and a resend is a duplicate in each)."""
        per_shard: dict[int, list[int]] = {}
        for i, event in enumerate(events):
            places = {self._keys.of(p[0]).shard for p in self._places(event, live)}
            if not places:
                places = {shard_of(event.event_id, len(self._keys.shards))}
            for n in places:
                per_shard.setdefault(n, []).append(i)

        async def one(n: int, chosen: list[int]) -> list[EventOutcome] | Exception:
            try:
                return await self._in_shard(self._keys.shards[n], channel_id, events, chosen, live)
            except (Unavailable, StoreNotReady) as exc:
                return exc

        shards = sorted(per_shard)
        replies = await asyncio.gather(*(one(n, per_shard[n]) for n in shards))
        failed = [r for r in replies if isinstance(r, Exception)]
        if failed and len(failed) == len(replies):
            raise failed[0]
        judged: list[list[EventOutcome]] = [[] for _ in events]
        lost: set[int] = set()
        for n, reply in zip(shards, replies, strict=True):
            if isinstance(reply, Exception):
                lost.update(per_shard[n])
                continue
            for i, outcome in zip(per_shard[n], reply, strict=True):
                judged[i].append(outcome)
        return [_NOT_RECORDED if i in lost else _merged(o) for i, o in enumerate(judged)]

    async def _call(self, shard: ShardKeys, batch: bytes) -> dict[str, Any]:
        keys = [
            shard.outbox,
            shard.pending,
            shard.store_ready,
            shard.live_version,
            shard.pending_events,
            shard.held_reversals_count,
        ]
        try:
            raw = await run_script(self._redis, self._script, keys, [batch])
        except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
            log.warning("card events: redis unreachable: %s", exc)
            raise Unavailable("the rights store is unreachable; retry") from exc
        result: dict[str, Any] = orjson.loads(raw)
        return result

    def _places(self, event: CardEvent, live: LiveList) -> list[Any]:
        """Where the event may count: for a transaction its goals, (campaign, reward, period);
        for a reversal, (campaign, [rewards]) where its original may have counted (a refund
        has its purchase's amount and merchant category)."""
        if event.reversal_of is None:
            return self._goals(event, occurred_ms(event.occurred_at), live.with_goals)
        places: list[Any] = []
        for c in live.with_goals:
            rewards = [
                r.id for r in c.rewards if r.goal and r.goal.qualifies(event.amount, event.mcc)
            ]
            if rewards:
                places.append((c.id, rewards))
        return places

    async def _batch(
        self,
        shard: ShardKeys,
        channel_id: str,
        events: list[CardEvent],
        chosen: list[int],
        live: LiveList,
    ) -> bytes:
        now = self._clock()
        now_ms = int(now * 1000)
        day, day_ends = self._calendar.day(now)
        sharded = self._keys.sharded
        by_id = {c.id: c for c in live.with_goals}
        used: dict[str, HotCampaign] = {}
        items: list[list[Any]] = []
        for i in chosen:
            e = events[i]
            places = self._places(e, live)
            if sharded:  # this shard's campaigns only: the others are judged in theirs
                places = [p for p in places if self._keys.of(p[0]).shard == shard.shard]
            for place in places:
                used[place[0]] = by_id[place[0]]
            rev: str | bool = False
            original_bucket: int | bool = False
            if e.reversal_of is not None:
                rev, original_bucket = e.reversal_of, customer_bucket(e.reversal_of, EVENT_BUCKETS)
            # As record_events.lua reads it: a list, in the order of its header.
            items.append(
                [
                    e.event_id,
                    e.customer_id,
                    e.amount,
                    e.mcc,
                    occurred_ms(e.occurred_at),
                    zlib.crc32(e.customer_id.encode()),
                    customer_bucket(e.event_id, EVENT_BUCKETS),
                    rev,
                    original_bucket,
                    places,
                ]
            )
        self._calls += 1
        batch = {
            "ch": channel_id,
            # One type of event so far: card transactions.
            "type": "card_transaction",
            "now": now_ms,
            "live": live.versions[shard.shard],
            # The script completes each grant id: a shared start, a counter of its own.
            "gid": new_grant_id(now_ms)[:21],
            "day": day,
            "day_ends": day_ends + DAY_S,
            "hold_s": self._hold_s,
            "held": shard.held_reversals_prefix,
            # Each call clears one held-reversal hash of holds whose time is over, in turn.
            "sweep": self._calls % EVENT_BUCKETS,
            "pending_c": shard.customer_pending(""),
            "pbuckets": PROGRESS_BUCKETS,
            "campaigns": {cid: self._campaign(c) for cid, c in used.items()},
            "events": items,
        }
        if self._cluster:
            batch["members"] = await self._members(used.values(), [events[i] for i in chosen])
        return orjson.dumps(batch)

    async def _members(
        self, campaigns: Iterable[HotCampaign], events: list[CardEvent]
    ) -> dict[str, dict[str, int]]:
        """record_events.lua's `members`: the batch's customers in each audience its
        campaigns' goals keep rewards for (quanyi/issuance/memberships.py)."""
        pointers = sorted(
            {
                self._keys.audience(r.audience_id)
                for c in campaigns
                for r in c.rewards
                if r.goal is not None and r.audience_id
            }
        )
        customers = sorted({e.customer_id for e in events})
        found = await memberships.members(self._scripts, pointers, customers)
        return {pointer: dict.fromkeys(inside, 1) for pointer, inside in found.items()}

    def _goals(self, event: CardEvent, at_ms: int, campaigns: tuple[HotCampaign, ...]) -> list[Any]:
        """The goals this transaction counts for, (campaign, reward, period): its campaign's
        window holds it, and it passes the goal's filters."""
        goals: list[Any] = []
        for campaign in campaigns:
            if not campaign.starts_ms <= at_ms < campaign.ends_ms:
                continue  # outside the campaign's window it counts for nothing
            for reward in campaign.rewards:
                goal = reward.goal
                if goal is None or not goal.qualifies(event.amount, event.mcc):
                    continue
                period, _ = self._periods.period(goal.window, at_ms / 1000)
                goals.append((campaign.id, reward.id, period))
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


def _merged(outcomes: list[EventOutcome]) -> EventOutcome:
    """One event's outcome from the shards that judged it: a refusal if one refused it, else
    accepted if one accepted it (what a resend finds counted elsewhere is a duplicate there),
    with every shard's grants and revocations; a duplicate when it was one everywhere."""
    if len(outcomes) == 1:
        return outcomes[0]
    for outcome in outcomes:
        if outcome.status == "rejected":
            return outcome
    accepted = [o for o in outcomes if o.status == "accepted"]
    if not accepted:
        return outcomes[0]
    return EventOutcome(
        "accepted",
        held=any(o.held for o in accepted),
        granted=tuple(g for o in accepted for g in o.granted),
        revoked=tuple(r for o in accepted for r in o.revoked),
    )

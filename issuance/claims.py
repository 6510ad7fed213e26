"""Deciding claims: one atomic claim.lua decision per claim, several claims per round trip.

Claims that arrive while a round trip is under way wait in a queue and go together in the next
one, which is what lets one process decide far more claims per second than it has round trips.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from dataclasses import dataclass
from typing import Any

import orjson
from prometheus_client import Histogram
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from quanyi.core import metrics
from quanyi.core.clock import Clock, LocalCalendar, LocalPeriods, rfc3339
from quanyi.core.errors import (
    BudgetExhausted,
    CampaignNotActive,
    CampaignNotFound,
    ChannelNotAllowed,
    IdempotencyConflict,
    LimitReached,
    NotEligible,
    OutOfStock,
    QuanyiError,
    RewardNotFound,
    StoreNotReady,
    Unavailable,
)
from quanyi.core.ids import grant_id_ms, new_grant_id
from quanyi.core.settings import Settings
from quanyi.inventory.hot_campaigns import HotCampaign, HotReward
from quanyi.issuance.definitions import CampaignCache, Republisher
from quanyi.stores.keys import PROGRESS_BUCKETS, Keys, ShardKeys, customer_bucket
from quanyi.stores.redis import is_cluster
from quanyi.stores.scripts import Scripts, run_script
from quanyi.stores.shards import Route, route_requests, routed_elsewhere

log = logging.getLogger(__name__)

DAY_S = 86_400


@dataclass(frozen=True)
class Claim:
    channel_id: str
    request_id: str
    campaign_id: str
    customer_id: str
    reward_id: str | None

    def fingerprint(self) -> str:
        """Identifies the body: the same request id with another body is a conflict."""
        body = f"{self.campaign_id}\0{self.customer_id}\0{self.reward_id or ''}".encode()
        return hashlib.blake2b(body, digest_size=8).hexdigest()


@dataclass(frozen=True)
class Grant:
    grant_id: str
    campaign_id: str
    reward_id: str
    right_id: str
    customer_id: str
    channel_id: str
    granted_at_ms: int
    replayed: bool
    # A replay reports the grant as it is now (fulfilled, revoked, ...).
    status: str = "granted"

    def to_json(self) -> dict[str, Any]:
        return {
            "grant_id": self.grant_id,
            "campaign_id": self.campaign_id,
            "reward_id": self.reward_id,
            "right_id": self.right_id,
            "customer_id": self.customer_id,
            "channel_id": self.channel_id,
            "status": self.status,
            "granted_at": rfc3339(self.granted_at_ms),
            "replayed": self.replayed,
        }


def born_status(reward: HotReward) -> str:
    """The status a grant of `reward` has the moment it is granted: a right with no vendor is
    fulfilled in the same claim.lua call (its outbox entry carries `fulfilled_at_ms`, which the
    ledger writes as its `fulfilled` event: quanyi/ledger/entries.py); any other waits for the
    fulfilment worker."""
    return "fulfilled" if reward.vendor_id is None else "granted"


def grant_event(
    grant_id: str, campaign_id: str, reward: HotReward, claim: Claim, now_ms: int
) -> bytes:
    """The grant event claim.lua appends to the outbox, for a claim through the API and one of
    bulk issuance (bulk_claims.py) alike: the ledger and the fulfilment worker read it."""
    event: dict[str, Any] = {
        "grant_id": grant_id,
        "campaign_id": campaign_id,
        "reward_id": reward.id,
        "right_id": reward.right_id,
        "customer_id": claim.customer_id,
        "channel_id": claim.channel_id,
        "request_id": claim.request_id,
        "unit_cost": reward.cost,
        "granted_at_ms": now_ms,
    }
    if born_status(reward) == "fulfilled":
        # Nothing to issue anywhere: fulfilled as it is granted, by this same entry.
        event["fulfilled_at_ms"] = now_ms
    return orjson.dumps(event)


def rejection(
    outcome: str,
    detail: str,
    claim: Claim,
    reward: HotReward | None = None,
    extra: list | None = None,
) -> QuanyiError:
    """The domain error for a script outcome (`extra`: what claim.lua returned after it)."""
    match outcome:
        case "store_not_ready":
            return StoreNotReady()
        case "idempotency_conflict":
            return IdempotencyConflict(
                f"request {claim.request_id} was already used with a different body"
            )
        case "campaign_not_found":
            return CampaignNotFound(f"no campaign {claim.campaign_id}")
        case "campaign_not_active":
            return CampaignNotActive(
                f"campaign {claim.campaign_id} is not active ({detail})", state=detail
            )
        case "channel_not_allowed":
            return ChannelNotAllowed(f"channel {claim.channel_id} may not claim in this campaign")
        case "reward_not_found":
            return RewardNotFound(f"campaign {claim.campaign_id} has no reward {claim.reward_id}")
        case "not_eligible" if detail == "audience":
            return NotEligible(
                f"customer {claim.customer_id} is not in the audience of this reward",
                reason="audience",
            )
        case "not_eligible":
            count, amount = (int(v) for v in (extra or [0, 0]))
            goal = reward.goal.to_json() if reward and reward.goal else {}
            return NotEligible(
                "the customer has not reached this reward's goal yet",
                reason="goal_not_met",
                progress={"count": count, "amount": amount, "goal": goal},
            )
        case "limit_reached" if detail == "window":
            return LimitReached(
                "the customer already had this reward for reaching its goal in this period",
                scope="window",
            )
        case "limit_reached":
            return LimitReached(
                f"customer reached the {detail.replace('_', ' ')} limit", scope=detail
            )
        case "out_of_stock" if detail == "channel":
            return OutOfStock(
                f"channel {claim.channel_id} has used up its share of the stock", scope="channel"
            )
        case "out_of_stock":
            return OutOfStock(f"no {detail} stock left", scope=detail)
        case "budget_exhausted":
            return BudgetExhausted(f"campaign {claim.campaign_id} budget is spent")
    raise AssertionError(f"unknown claim outcome {outcome}")


@dataclass
class _Pending:
    keys: list[str]
    args: list[Any]
    future: asyncio.Future
    shard: ShardKeys
    route: Route | None  # with several shards: the request id's route, taken with the batch


def _fail(batch: list[_Pending], error: BaseException) -> None:
    for p in batch:
        if not p.future.done():
            p.future.set_exception(error)


class ClaimService:
    def __init__(
        self,
        redis: Redis,
        keys: Keys,
        settings: Settings,
        clock: Clock,
        *,
        republish: Republisher | None = None,
        scripts: Scripts | None = None,
        campaigns: CampaignCache | None = None,
    ) -> None:
        """`scripts` and `campaigns` come from the runtime; built here only when a caller
        (a benchmark, a test) runs the service on its own."""
        self._redis = redis
        self._keys = keys
        self._settings = settings
        self._calendar = LocalCalendar(settings.zone)
        self._periods = LocalPeriods(settings.zone)
        self._clock = clock
        self._scripts = scripts or Scripts(redis)
        self._script = self._scripts.claim
        self._cluster = is_cluster(redis)
        self.campaigns = campaigns or CampaignCache.of_store(redis, keys, republish)
        self._queue: asyncio.Queue[_Pending] = asyncio.Queue()
        self._runners: list[asyncio.Task] = []
        self._closing = False
        # CLAIM_SECONDS' child per outcome, made once: labels() on every claim costs a lock and
        # a look-up more than observe() alone.
        self._claim_seconds: dict[str, Histogram] = {}

    async def start(self) -> None:
        self._runners = [
            asyncio.create_task(self._run_batches(), name=f"claim-batcher-{i}")
            for i in range(self._settings.claim_batch_concurrency)
        ]

    async def close(self) -> None:
        # The flag as well as the cancel: a cancellation that lands inside a Redis call can be
        # absorbed there (the call then returns), and the runner must still stop.
        self._closing = True
        for task in self._runners:
            task.cancel()
        await asyncio.gather(*self._runners, return_exceptions=True)
        while not self._queue.empty():
            self._queue.get_nowait().future.set_exception(Unavailable("shutting down"))

    async def claim(self, claim: Claim) -> Grant:
        try:
            return await self._claim(claim)
        except (CampaignNotFound, RewardNotFound):
            # Idempotency comes first even here: a request id already used for another
            # campaign or reward is a conflict, not a missing campaign.
            if self._keys.sharded:
                held = await routed_elsewhere(
                    self._redis, self._keys, claim.channel_id, claim.request_id
                )
            else:
                idem_key, idem_field = self._keys.idempotency(claim.channel_id, claim.request_id)
                held = bool(await self._redis.hexists(idem_key, idem_field))
            if held:
                raise IdempotencyConflict(
                    f"request {claim.request_id} was already used with a different body"
                ) from None
            raise

    async def _claim(self, claim: Claim) -> Grant:
        campaign = await self.campaigns.get(claim.campaign_id)
        for last in (False, True):
            try:
                reward = self._reward(campaign, claim.reward_id)
            except RewardNotFound:
                if last:
                    raise
            else:
                if reward.grant == "auto":
                    raise NotEligible(
                        "this reward is granted when its goal is reached, not claimed",
                        reason="automatic",
                    )
                outcome, detail, *extra = await self._decide(claim, campaign, reward)
                if outcome not in ("stale", "campaign_not_found"):
                    break
                if last:
                    raise Unavailable("campaign definition is changing; retry")
                if outcome == "campaign_not_found":
                    # The definition was at hand, so the campaign exists: Redis lost it.
                    campaign = await self.campaigns.republish(claim.campaign_id)
                    continue
            # The cached definition may be older than the campaign: look again once.
            campaign = await self.campaigns.get(claim.campaign_id, reload=True)
        if outcome in ("granted", "replayed"):
            replayed = outcome == "replayed"
            return Grant(
                grant_id=detail,
                campaign_id=campaign.id,
                reward_id=reward.id,
                right_id=reward.right_id,
                customer_id=claim.customer_id,
                channel_id=claim.channel_id,
                granted_at_ms=grant_id_ms(detail),
                replayed=replayed,
                # Only a replay can have moved on: a new grant is `granted` (`fulfilled` for a
                # right with no vendor), with no look-up.
                status=(
                    await self._status_now(campaign.id, detail, reward)
                    if replayed
                    else born_status(reward)
                ),
            )
        raise rejection(outcome, detail, claim, reward, extra)

    async def _status_now(self, campaign_id: str, grant_id: str, reward: HotReward) -> str:
        """A replayed grant's final status (revoked, redeemed, expired, failed) as Redis decided
        it, else `granted` (`fulfilled` for a right with no vendor): one HGET, and no PostgreSQL
        on the claim path, even under a storm of retries. Fulfilment details are for
        GET /v1/grants/{id}."""
        final = await self._redis.hget(self._keys.grant_states(campaign_id), grant_id)
        return str(final) if final else born_status(reward)

    @staticmethod
    def _reward(campaign: HotCampaign, reward_id: str | None) -> HotReward:
        if reward_id is None:
            if len(campaign.rewards) != 1:
                raise RewardNotFound(
                    f"campaign {campaign.id} has {len(campaign.rewards)} rewards: name one in reward_id"
                )
            return campaign.rewards[0]
        reward = campaign.reward(reward_id)
        if reward is None:
            raise RewardNotFound(f"campaign {campaign.id} has no reward {reward_id}")
        return reward

    async def _decide(self, claim: Claim, campaign: HotCampaign, reward: HotReward) -> list[Any]:
        """claim.lua's reply for this claim: [outcome, detail, ...]."""
        now = self._clock()
        now_ms = int(now * 1000)
        day, day_ends = self._calendar.day(now)
        bucket = customer_bucket(claim.customer_id, campaign.buckets)
        shard = self._keys.of(campaign.id)
        idem_key, idem_field = shard.idempotency(claim.channel_id, claim.request_id)
        keep_until = campaign.ends_ms // 1000 + self._settings.idempotency_retention_days * DAY_S
        grant_id = new_grant_id(now_ms)
        event = grant_event(grant_id, campaign.id, reward, claim, now_ms)
        pending = _Pending(
            keys=[
                self._keys.campaign(campaign.id),
                idem_key,
                self._keys.customer_totals(campaign.id, bucket),
                self._keys.customer_daily(campaign.id, day, bucket),
                self._keys.reward_daily(campaign.id, day),
                shard.customer_pending(claim.customer_id),
            ],
            args=[
                claim.channel_id,
                idem_field,
                claim.fingerprint(),
                grant_id,
                reward.id,
                f"{reward.id}|{claim.customer_id}",
                campaign.version,
                keep_until,
                day_ends + DAY_S,
                event,
                await self._who_may_have(claim, campaign, reward, now, day),
            ],
            future=asyncio.get_running_loop().create_future(),
            shard=shard,
            route=(
                Route(claim.channel_id, claim.request_id, shard.shard, keep_until)
                if self._keys.sharded
                else None
            ),
        )
        started = time.perf_counter()
        self._queue.put_nowait(pending)
        reply = await pending.future
        elapsed = time.perf_counter() - started
        timer = self._claim_seconds.get(reply[0])
        if timer is None:
            timer = self._claim_seconds[reply[0]] = metrics.CLAIM_SECONDS.labels(reply[0])
        timer.observe(elapsed)
        return reply

    async def _who_may_have(
        self, claim: Claim, campaign: HotCampaign, reward: HotReward, now: float, day: str
    ) -> str:
        """claim.lua's ARGV[a+11]: the audience, and the goal of this period to have reached;
        the audience pointer alone when there is no goal to claim by; "" for a reward anyone
        may claim at any time (most claims)."""
        goal = reward.goal
        by_goal = goal is not None and reward.grant == "claim"
        if not (reward.audience_id or by_goal):
            return ""
        pointer = self._keys.audience(reward.audience_id) if reward.audience_id else ""
        if pointer and self._cluster:
            pointer = await self._member_on_cluster(pointer, claim.customer_id)
        if not by_goal:
            return pointer  # an audience alone: claim.lua skips the goal's lines
        progress = field = count = amount = ""
        if goal is not None and by_goal:
            # Claimed once the goal of this period is reached, once a period.
            period, _ = self._periods.period(goal.window, now)
            progress = self._keys.progress(
                campaign.id, customer_bucket(claim.customer_id, PROGRESS_BUCKETS)
            )
            field = f"{reward.id}|{claim.customer_id}|{period}"
            count = "" if goal.count is None else str(goal.count)
            amount = "" if goal.amount is None else str(goal.amount)
        return "\n".join((pointer, progress, field, count, amount, day))

    async def _member_on_cluster(self, pointer: str, customer_id: str) -> str:
        """On a cluster the audience's hashes are in their own slot, out of the claim script's
        reach: membership is read here, just before, and handed to the script as "" (a member:
        no check) or "!" (not one: refused at the audience step, after idempotency, so a
        replay still replays). Still correct: membership is only read, never taken, so the
        claim is decided as if it had come at the moment of this read; an import that lands
        between the two is one the claim came just before."""
        found = await self._scripts.audience_has(keys=[pointer], args=[customer_id])
        return "" if found else "!"

    async def _run_batches(self) -> None:
        # With several shards a batch is split per shard (_call): taking up to the limit per
        # shard keeps each shard's call as full as the one call of one shard when the load is
        # there, instead of a batch of the limit split into calls of a few claims.
        limit = self._settings.claim_batch_max * len(self._keys.shards)
        while not self._closing:
            batch = [await self._queue.get()]
            while len(batch) < limit and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            try:
                if self._keys.sharded:
                    batch = await self._routed(batch)
                replies = await self._call(batch) if batch else []
                for p, reply in zip(batch, replies, strict=True):
                    if not p.future.done():
                        p.future.set_result(reply)
            except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
                log.warning("claim batch of %d failed: redis unreachable: %s", len(batch), exc)
                _fail(batch, Unavailable("the rights store is unreachable; retry"))
            except asyncio.CancelledError:
                _fail(batch, Unavailable("shutting down; retry"))
                raise
            except Exception as exc:  # a bug: fail these claims, keep serving others
                log.exception("claim batch of %d failed", len(batch))
                _fail(batch, exc)

    async def _routed(self, batch: list[_Pending]) -> list[_Pending]:
        """The claims of the batch whose request id is decided in their own shard (one route
        round trip for the batch); the others answer idempotency_conflict here."""
        allowed = await route_requests(
            self._redis,
            self._scripts.route,
            self._keys,
            [p.route for p in batch if p.route is not None],
        )
        kept: list[_Pending] = []
        for p, ok in zip(batch, allowed, strict=True):
            if ok:
                kept.append(p)
            elif not p.future.done():
                p.future.set_result(["idempotency_conflict", ""])
        return kept

    async def _call(self, batch: list[_Pending]) -> list[list[Any]]:
        limit = self._settings.claim_batch_max
        if len(batch) <= limit and len({p.shard.shard for p in batch}) == 1:
            return await self._call_shard(batch)
        # One script call per shard (one slot each) and per `limit` claims, at once; replies
        # back in batch order.
        by_shard: dict[int, list[int]] = {}
        for i, p in enumerate(batch):
            by_shard.setdefault(p.shard.shard, []).append(i)
        parts = [ix[j : j + limit] for ix in by_shard.values() for j in range(0, len(ix), limit)]
        answers = await asyncio.gather(*(self._call_shard([batch[i] for i in ix]) for ix in parts))
        replies: list[list[Any]] = [[] for _ in batch]
        for ix, answer in zip(parts, answers, strict=True):
            for i, reply in zip(ix, answer, strict=True):
                replies[i] = reply
        return replies

    async def _call_shard(self, batch: list[_Pending]) -> list[list[Any]]:
        shard = batch[0].shard
        keys = [shard.outbox, shard.pending, shard.store_ready]
        args: list[Any] = [int(self._clock() * 1000), len(batch)]
        for p in batch:
            keys.extend(p.keys)
            args.extend(p.args)
        metrics.CLAIM_BATCH_SIZE.observe(len(batch))
        return await run_script(self._redis, self._script, keys, args)

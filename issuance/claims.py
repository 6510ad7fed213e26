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

from prometheus_client import Histogram
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from quanyi.core import metrics
from quanyi.core.clock import Clock, LocalCalendar, LocalPeriods, rfc3339
from quanyi.core.errors import (
    CampaignNotFound,
    IdempotencyConflict,
    NotEligible,
    RewardNotFound,
    Unavailable,
)
from quanyi.core.ids import grant_id_ms, new_grant_id
from quanyi.core.settings import Settings
from quanyi.inventory.hot_campaigns import HotCampaign, HotReward
from quanyi.inventory.stock_parts import REFILL_TRIES, StockParts, short_of
from quanyi.issuance.claim_calls import (
    DAY_S,
    audience_pointer,
    born_status,
    claim_slice,
    read_members,
    rejection,
    who_may_have,
    with_membership,
)
from quanyi.issuance.definitions import CampaignCache, Republisher
from quanyi.stores.keys import Keys, ShardKeys
from quanyi.stores.redis import is_cluster
from quanyi.stores.scripts import Scripts, run_script
from quanyi.stores.shards import Route, route_requests, routed_elsewhere

log = logging.getLogger(__name__)


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


@dataclass
class _Pending:
    keys: list[str]
    args: list[Any]
    future: asyncio.Future
    shard: ShardKeys
    route: Route | None  # with several shards: the request id's route, taken with the batch
    # On a cluster, for a reward of an audience: (pointer, customer), whose membership is read
    # with the batch and put in the pointer's place in args (claim_calls.py with_membership).
    audience: tuple[str, str] | None = None


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
        self._parts = StockParts(redis, keys, self._scripts)
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
                outcome, detail, *extra = await self._decide_refilling(claim, campaign, reward)
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
                    await self._status_now(campaign.part_of(claim.customer_id), detail, reward)
                    if replayed
                    else born_status(reward)
                ),
            )
        raise rejection(outcome, detail, claim, reward, extra)

    async def _status_now(self, part_id: str, grant_id: str, reward: HotReward) -> str:
        """A replayed grant's final status (revoked, redeemed, expired, failed) as Redis decided
        it, else `granted` (`fulfilled` for a right with no vendor): one HGET, and no PostgreSQL
        on the claim path, even under a storm of retries. Fulfilment details are for
        GET /v1/grants/{id}."""
        final = await self._redis.hget(self._keys.grant_states(part_id), grant_id)
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

    async def _decide_refilling(
        self, claim: Claim, campaign: HotCampaign, reward: HotReward
    ) -> list[Any]:
        """_decide's reply; for a split campaign whose part for this customer ran dry, decided
        again after stock or budget was moved into it from another part (stock_parts.py), so
        a claim is refused out_of_stock only when no part has any to spare."""
        reply = await self._decide(claim, campaign, reward)
        if campaign.parts == 1:
            return reply
        part = campaign.part_of(claim.customer_id)
        for _ in range(REFILL_TRIES):
            short = short_of(reply)
            if short is None:
                return reply
            if not await self._parts.refill(
                campaign.id, campaign.parts, reward.id, part, short, reward.cost
            ):
                return reply
            reply = await self._decide(claim, campaign, reward)
        return reply

    async def _decide(self, claim: Claim, campaign: HotCampaign, reward: HotReward) -> list[Any]:
        """claim.lua's reply for this claim: [outcome, detail, ...]."""
        now = self._clock()
        now_ms = int(now * 1000)
        day, day_ends = self._calendar.day(now)
        shard = self._keys.of(campaign.part_of(claim.customer_id))
        keep_until = campaign.ends_ms // 1000 + self._settings.idempotency_retention_days * DAY_S
        pointer = audience_pointer(self._keys, reward)
        who = who_may_have(self._keys, self._periods, campaign, reward, claim.customer_id, now, day)
        keys, args = claim_slice(
            self._keys,
            shard,
            campaign,
            reward,
            claim,
            new_grant_id(now_ms),
            now_ms,
            day,
            day_ends,
            keep_until,
            who,
        )
        pending = _Pending(
            keys=keys,
            args=args,
            future=asyncio.get_running_loop().create_future(),
            shard=shard,
            route=(
                Route(claim.channel_id, claim.request_id, shard.shard, keep_until)
                if self._keys.sharded
                else None
            ),
            audience=(pointer, claim.customer_id) if pointer and self._cluster else None,
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
                batch = await self._ahead(batch)
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

    async def _ahead(self, batch: list[_Pending]) -> list[_Pending]:
        """The claims of the batch to call claim.lua for: with several shards those routed to
        their own shard (_routed); on a cluster with the audience membership of those that need
        it read in, one read per audience for the batch, at once with the routes."""
        asks = [(p, p.audience) for p in batch if p.audience is not None]
        if not asks:
            return await self._routed(batch) if self._keys.sharded else batch
        reading = read_members(self._scripts, [audience for _, audience in asks])
        if self._keys.sharded:
            kept, found = await asyncio.gather(self._routed(batch), reading)
        else:
            kept, found = batch, await reading
        for (p, (pointer, _)), member in zip(asks, found, strict=True):
            p.args[-1] = with_membership(p.args[-1], pointer, member)
        return kept

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

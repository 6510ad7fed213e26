"""Moving grants along their lifecycle: fulfilled, redeemed, expired, failed, revoked.

    granted -> fulfilled -> redeemed
    granted -> failed            (retries exhausted; stock returns if the campaign says so)
    fulfilled -> expired         (validity over)
    granted | fulfilled -> revoked   (stock and the customer's limit return)

Each transition is one transition.lua call: atomic, applied once, appended to the outbox so the
ledger records it with who and when. While Redis lacks its store-ready marker (it lost its data
and is not rebuilt yet) nothing moves and `move` raises StoreNotReady (503; workers retry).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson
from redis.asyncio import Redis

from quanyi.core.clock import Clock, local_day
from quanyi.core.errors import GrantNotLive, StoreNotReady, Unavailable
from quanyi.core.settings import Settings
from quanyi.inventory.stock_parts import REFILL_TRIES, StockParts
from quanyi.issuance.claims import CampaignCache
from quanyi.issuance.grants import GrantReader
from quanyi.stores.keys import Keys, customer_bucket
from quanyi.stores.outbox import REDIS_AWAY
from quanyi.stores.scripts import Scripts, pipelined

RETURNS_STOCK = {"revoked": True, "redeemed": False, "expired": False, "fulfilled": False}


def grant_from_event(event: dict[str, Any]) -> dict[str, Any]:
    """The grant as a transition needs it, from its outbox event: saves a look-up."""
    fields = ("campaign_id", "reward_id", "customer_id", "channel_id", "granted_at_ms", "unit_cost")
    return {k: event[k] for k in fields}


@dataclass(frozen=True)
class Transition:
    """What transition.lua decided for one event of one grant; every caller reads it here."""

    event: str
    outcome: str  # applied | repeated | refused
    before: str  # live, or the final state the grant was already in
    grant: dict[str, Any]

    @property
    def applied(self) -> bool:
        """It happened now."""
        return self.outcome == "applied"

    @property
    def repeated(self) -> bool:
        """It had happened already (a retry, a callback sent twice): nothing changed."""
        return self.outcome == "repeated"

    @property
    def refused(self) -> bool:
        """The grant is in another final state (`before`) that this event cannot follow."""
        return self.outcome == "refused"

    @property
    def state(self) -> str:
        """The grant's state after the call: the event's, unless the event was refused."""
        return self.before if self.refused else self.event


@dataclass(frozen=True)
class Move:
    """One transition of `move_many`: what `move` takes, the grant at hand."""

    grant_id: str
    event: str
    actor: str
    detail: dict[str, Any]
    grant: dict[str, Any]


def _decided(event: str, outcome: str, before: str, grant: dict[str, Any]) -> Transition:
    if outcome == "store_not_ready":
        # Redis lost its data: nothing moved. Callers answer 503 or retry later.
        raise StoreNotReady()
    return Transition(event, outcome, before, grant)


# What a refused redrive was short of, that another part of a split campaign may have.
SHORT_ON_REDRIVE = {"out_of_stock": "stock", "budget_exhausted": "budget"}


class GrantLifecycle:
    def __init__(
        self,
        redis: Redis,
        keys: Keys,
        grants: GrantReader,
        campaigns: CampaignCache,
        settings: Settings,
        clock: Clock,
        scripts: Scripts | None = None,
    ) -> None:
        self._redis = redis
        self._keys = keys
        self.grants = grants
        self._campaigns = campaigns
        self._zone = settings.zone
        self._retention_s = settings.idempotency_retention_days * 86_400
        self._clock = clock
        scripts = scripts or Scripts(redis)
        self._script = scripts.transition
        self._parts = StockParts(redis, keys, scripts)

    async def move(
        self,
        grant_id: str,
        event: str,
        actor: str,
        detail: dict[str, Any] | None = None,
        *,
        return_stock: bool | None = None,
        grant: dict[str, Any] | None = None,
    ) -> Transition:
        """Apply `event` to the grant. `return_stock` defaults to what the event implies (and for
        `failed`, to the campaign's choice). `grant` saves the look-up when the caller has it."""
        call = await self._call(grant_id, event, actor, detail, return_stock, grant)
        if isinstance(call, Transition):
            return call
        keys, args, grant = call
        outcome, before = await self._script(keys=keys, args=args)
        if event == "redriven" and outcome == "refused" and before in SHORT_ON_REDRIVE:
            # A redrive takes the stock and budget again in the grant's part: a split campaign's
            # part run dry is refilled from the others first, as a claim's would be.
            campaign = await self._campaigns.get(grant["campaign_id"])
            part = campaign.part_of(grant["customer_id"])
            short, cost = SHORT_ON_REDRIVE[before], int(args[5])  # ARGV[6]: the unit cost
            for _ in range(REFILL_TRIES if campaign.parts > 1 else 0):
                if not await self._parts.refill(
                    campaign.id, campaign.parts, grant["reward_id"], part, short, cost
                ):
                    break
                outcome, before = await self._script(keys=keys, args=args)
                if not (outcome == "refused" and before in SHORT_ON_REDRIVE):
                    break
        return _decided(event, outcome, before, grant)

    async def move_many(self, moves: list[Move]) -> list[Transition | Exception]:
        """Several transitions in one round trip (a pipeline of transition.lua calls, each as
        atomic and applied once as `move`'s): for each, its Transition, or the error of that
        one call (StoreNotReady, a script error). Raises what Redis raised for the round trip
        (Redis away), when any of them may or may not have been applied."""
        calls: list[Transition | Exception | tuple[list[str], list[Any], dict[str, Any]]] = []
        for m in moves:
            try:
                calls.append(
                    await self._call(m.grant_id, m.event, m.actor, m.detail, None, m.grant)
                )
            except (*REDIS_AWAY, StoreNotReady, Unavailable):
                raise  # the stores, not this grant: the whole batch waits for them
            except Exception as exc:  # this grant's campaign cannot be read
                calls.append(exc)
        results: list[Transition | Exception] = []
        sent = [(call[0], call[1]) for call in calls if isinstance(call, tuple)]
        replies = iter(await pipelined(self._redis, self._script, sent))
        for m, call in zip(moves, calls, strict=True):
            if not isinstance(call, tuple):
                results.append(call)
                continue
            reply = next(replies)
            if isinstance(reply, Exception):
                results.append(reply)
                continue
            try:
                results.append(_decided(m.event, reply[0], reply[1], call[2]))
            except StoreNotReady as exc:
                results.append(exc)
        return results

    async def _call(
        self,
        grant_id: str,
        event: str,
        actor: str,
        detail: dict[str, Any] | None,
        return_stock: bool | None,
        grant: dict[str, Any] | None,
    ) -> Transition | tuple[list[str], list[Any], dict[str, Any]]:
        """transition.lua's keys and arguments for this move, or its Transition when it is
        refused before any call."""
        if grant is None:
            grant = await self.grants.get(grant_id)
        campaign = await self._campaigns.get(grant["campaign_id"])
        reward = campaign.reward(grant["reward_id"])
        if return_stock is None:
            # A redrive takes back exactly what the failure gave back.
            return_stock = (
                campaign.return_stock_on_failure
                if event in ("failed", "redriven")
                else RETURNS_STOCK[event]
            )
        keep_until = campaign.ends_ms // 1000 + self._retention_s
        if self._clock() > keep_until and event in ("revoked", "failed", "redriven"):
            # The campaign's counters and grant states are gone: nothing can be given back
            # exactly once any more.
            return Transition(event, "refused", "retention_over", grant)
        day, _ = local_day(grant["granted_at_ms"] / 1000, self._zone)
        bucket = customer_bucket(grant["customer_id"], campaign.buckets)
        cid = campaign.id
        now_ms = int(self._clock() * 1000)
        payload = orjson.dumps(
            {
                "grant_id": grant_id,
                "event": event,
                "at_ms": now_ms,
                "actor": actor,
                "detail": detail or {},
                "campaign_id": cid,
                "reward_id": grant["reward_id"],
            }
        )
        # The campaign's shard: its outbox and pending events share the campaign's slot (of a
        # split campaign, the slot of the part the grant was taken in: the customer's).
        part = campaign.part_of(grant["customer_id"])
        shard = self._keys.of(part)
        return (
            [
                shard.outbox,
                shard.campaign(part),
                self._keys.grant_states(part),
                self._keys.customer_totals(part, bucket),
                self._keys.customer_daily(part, day, bucket),
                self._keys.reward_daily(part, day),
                shard.pending_events,
                shard.store_ready,
            ],
            [
                grant_id,
                event,
                1 if return_stock else 0,
                grant["reward_id"],
                f"{grant['reward_id']}|{grant['customer_id']}",
                reward.cost if reward else grant["unit_cost"],
                payload,
                keep_until,
                # Its channel's quota comes back with the stock (README "Channel quotas").
                grant.get("channel_id") or "goal",
            ],
            grant,
        )

    async def revoke(self, grant_id: str, actor: str, reason: str) -> None:
        """Revoke a live grant (stock and the customer's limit come back); revoking a revoked
        one again changes nothing; any other final state is a GrantNotLive."""
        moved = await self.move(grant_id, "revoked", actor, {"reason": reason} if reason else {})
        if moved.refused:
            raise GrantNotLive(
                f"grant {grant_id} is {moved.before}: it cannot be revoked", state=moved.before
            )

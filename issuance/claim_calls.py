"""A claim's part of a claim.lua call: its KEYS and ARGV slice (claim.lua's header), the grant
event it appends and who may have the reward, and the domain error its refusal is (`rejection`);
and, on a Redis Cluster, the audience membership read ahead of the call for many claims at once.

A claim through the API (claims.py ClaimService, one slice a claim) and one of bulk issuance
(bulk_claims.py, hundreds to a call) are built by the same `claim_slice`, so the script sees
the same arguments whichever way a claim came.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import orjson

from quanyi.core.clock import LocalPeriods
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
)
from quanyi.inventory.hot_campaigns import HotCampaign, HotReward
from quanyi.issuance import memberships
from quanyi.stores.keys import PROGRESS_BUCKETS, Keys, ShardKeys, customer_bucket
from quanyi.stores.scripts import Scripts

if TYPE_CHECKING:
    from quanyi.issuance.claims import Claim

DAY_S = 86_400


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
    bulk issuance alike: the ledger and the fulfilment worker read it."""
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


def claim_slice(
    keys: Keys,
    shard: ShardKeys,
    campaign: HotCampaign,
    reward: HotReward,
    claim: Claim,
    grant_id: str,
    now_ms: int,
    day: str,
    day_ends: int,
    keep_until: int,
    who: str,
) -> tuple[list[str], list[Any]]:
    """One claim's 6 KEYS and 11 ARGV of a claim.lua call (its header: KEYS[k+1..k+6],
    ARGV[a+1..a+11]). `shard` is the campaign's (of a split campaign, the customer's part's:
    keys.of(campaign.part_of(customer))); `day_ends` the unix second today ends;
    `keep_until` the unix second until which idempotency and customer totals are kept; `who`
    the ARGV[a+11] of `who_may_have` (with, on a cluster, the membership read in place of the
    pointer: `with_membership`)."""
    bucket = customer_bucket(claim.customer_id, campaign.buckets)
    idem_key, idem_field = shard.idempotency(claim.channel_id, claim.request_id)
    part = campaign.part_of(claim.customer_id)
    return (
        [
            keys.campaign(part),
            idem_key,
            keys.customer_totals(part, bucket),
            keys.customer_daily(part, day, bucket),
            keys.reward_daily(part, day),
            shard.customer_pending(claim.customer_id),
        ],
        [
            claim.channel_id,
            idem_field,
            claim.fingerprint(),
            grant_id,
            reward.id,
            f"{reward.id}|{claim.customer_id}",
            campaign.version,
            keep_until,
            day_ends + DAY_S,
            grant_event(grant_id, campaign.id, reward, claim, now_ms),
            who,
        ],
    )


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


def audience_pointer(keys: Keys, reward: HotReward) -> str:
    """The pointer of the audience whose members alone may have `reward`; "" for none."""
    return keys.audience(reward.audience_id) if reward.audience_id else ""


def who_may_have(
    keys: Keys,
    periods: LocalPeriods,
    campaign: HotCampaign,
    reward: HotReward,
    customer_id: str,
    now: float,
    day: str,
) -> str:
    """claim.lua's ARGV[a+11]: the audience, and the goal of this period to have reached;
    the audience pointer alone when there is no goal to claim by; "" for a reward anyone
    may claim at any time (most claims). It starts with the audience pointer (or "" for no
    audience), the place `with_membership` fills on a cluster."""
    goal = reward.goal
    by_goal = goal is not None and reward.grant == "claim"
    if not (reward.audience_id or by_goal):
        return ""
    pointer = audience_pointer(keys, reward)
    if goal is None or not by_goal:
        return pointer  # an audience alone: claim.lua skips the goal's lines
    # Claimed once the goal of this period is reached, once a period.
    period, _ = periods.period(goal.window, now)
    progress = keys.progress(campaign.id, customer_bucket(customer_id, PROGRESS_BUCKETS))
    field = f"{reward.id}|{customer_id}|{period}"
    count = "" if goal.count is None else str(goal.count)
    amount = "" if goal.amount is None else str(goal.amount)
    return "\n".join((pointer, progress, field, count, amount, day))


# On a cluster the audience's hashes are in their own slot, out of the claim script's reach:
# membership is read here, just before the call, and handed to the script in the pointer's
# place as "" (a member: no check) or "!" (not one: refused at the audience step, after
# idempotency, so a replay still replays). Still correct: membership is only read, never taken,
# so the claim is decided as if it had come at the moment of this read; an import that lands
# between the two is one the claim came just before.


def with_membership(who: str, pointer: str, member: bool) -> str:
    """`who` (of `who_may_have`, starting with `pointer`) with the membership read on a cluster
    in the pointer's place."""
    if not who.startswith(pointer):
        raise ValueError(f"who-may-have argument does not start with {pointer}")
    return ("" if member else "!") + who[len(pointer) :]


async def read_members(scripts: Scripts, asks: Sequence[tuple[str, str]]) -> list[bool]:
    """Whether each (audience pointer, customer) of `asks` is a member now: one
    lua/audience_members.lua call per audience for all its customers (memberships.py), the
    audiences at once."""
    if not asks:
        return []
    by_pointer: dict[str, dict[str, None]] = {}
    for pointer, customer in asks:
        by_pointer.setdefault(pointer, {})[customer] = None
    found = await asyncio.gather(
        *(memberships.members(scripts, [p], list(cs)) for p, cs in by_pointer.items())
    )
    members = {p: f.get(p, set()) for p, f in zip(by_pointer, found, strict=True)}
    return [customer in members[pointer] for pointer, customer in asks]

"""Bulk issuance's claims: many members of one campaign's reward decided by claim.lua, hundreds
to a call and several calls to a round trip.

The same script, and the same keys, arguments and grant event (claim_calls.py `claim_slice`)
as a claim through ClaimService (claims.py `_decide`): idempotency on the request id
("<job>/<customer>"), then the campaign, the audience, the limits, stock and budget, each claim
a unit. What a single
claim needs and a bulk one does not is left out: no queue, future or metric per claim (the
call is the unit), no Grant built, no status read for a replay (the job counts a replay as
issued, having not counted it before), one definition look-up and one clock read per call,
and on a cluster one audience membership read per call for all its customers.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from quanyi.core.errors import CampaignNotFound, RewardNotFound, Unavailable
from quanyi.inventory.hot_campaigns import HotCampaign, HotReward
from quanyi.inventory.stock_parts import REFILL_TRIES
from quanyi.issuance.claim_calls import (
    DAY_S,
    audience_pointer,
    claim_slice,
    read_members,
    who_may_have,
    with_membership,
)
from quanyi.issuance.claims import Claim, ClaimService
from quanyi.stores.scripts import pipelined_reloading

# Claims per claim.lua call: Redis runs one call at a time (~15 µs a claim), so a call of 256
# holds it ~4 ms, and the channel API's claims wait no longer than that behind one.
PER_CALL = 256
# Calls sent in one pipeline (one round trip).
CALLS_PER_TRIP = 4
_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
# Two Crockford base32 characters for each 10 bits: a grant id (130 bits) is 13 look-ups.
_PAIRS = [a + b for a in _ALPHABET for b in _ALPHABET]
_SHIFTS = tuple(range(120, -1, -10))


def grant_ids(now_ms: int, n: int) -> list[str]:
    """`n` grant ids of `now_ms`, as core/ids.py new_grant_id makes them one at a time (48-bit
    milliseconds, then 80 random bits, as 26 Crockford base32 characters), in a fraction of
    the time: one read of random bytes for all, and 10 bits a step."""
    random = os.urandom(10 * n)
    head = now_ms << 80
    pairs = _PAIRS
    ids = []
    for i in range(0, 10 * n, 10):
        v = head | int.from_bytes(random[i : i + 10], "big")
        ids.append("".join([pairs[(v >> shift) & 1023] for shift in _SHIFTS]))
    return ids


@dataclass(frozen=True)
class _Batch:
    """What every call of one round of `decide_many` shares: the channel, the campaign's
    definition as read for the round, its reward, and the claims a call holds."""

    channel_id: str
    campaign: HotCampaign
    reward: HotReward
    per_call: int


class BulkClaims(ClaimService):
    """A claim service that also decides claims in bulk (`decide_many`)."""

    async def decide_many(
        self,
        channel_id: str,
        campaign_id: str,
        reward_id: str,
        requests: Sequence[tuple[str, str]],
        *,
        per_call: int = PER_CALL,
    ) -> list[str]:
        """claim.lua's outcome for each (request id, customer) of `requests`, in order:
        granted, replayed, out_of_stock, limit_reached, not_eligible, ... A definition that
        changed under the calls is reloaded and those claims sent once more; Unavailable if it
        changes again, or when Redis is away."""
        try:
            campaign = await self.campaigns.get(campaign_id)
        except CampaignNotFound:
            return ["campaign_not_found"] * len(requests)
        outcomes: list[str] = [""] * len(requests)
        todo = list(range(len(requests)))
        for last in (False, True):
            try:
                reward = self._reward(campaign, reward_id)
            except RewardNotFound:
                if last:
                    return ["reward_not_found"] * len(requests)
                todo_outcomes = ["stale"] * len(todo)
            else:
                if reward.grant == "auto":
                    return ["not_eligible"] * len(requests)
                batch = _Batch(channel_id, campaign, reward, per_call)
                todo_outcomes = await self._send(batch, [requests[i] for i in todo])
            again = []
            for i, outcome in zip(todo, todo_outcomes, strict=True):
                if outcome in ("stale", "campaign_not_found"):
                    again.append(i)
                else:
                    outcomes[i] = outcome
            if not again:
                return outcomes
            if last:
                raise Unavailable("campaign definition is changing; retry")
            todo = again
            if "campaign_not_found" in todo_outcomes:
                # The definition was at hand, so the campaign exists: Redis lost it.
                campaign = await self.campaigns.republish(campaign_id)
            else:
                campaign = await self.campaigns.get(campaign_id, reload=True)
        return outcomes

    async def _send(self, batch: _Batch, requests: list[tuple[str, str]]) -> list[str]:
        campaign = batch.campaign
        if campaign.parts == 1:
            return await self._send_to_part(batch, campaign.id, requests)
        # A split campaign: each member's claim in the member's part, the parts' calls at once;
        # a part run dry is refilled from the others and its refused members sent again, as a
        # live claim would be (claims.py _decide_refilling), so a job issues the whole stock.
        by_part: dict[str, list[int]] = {}
        for i, (_request_id, customer) in enumerate(requests):
            by_part.setdefault(campaign.part_of(customer), []).append(i)
        answers = await asyncio.gather(
            *(
                self._send_refilling(batch, part, [requests[i] for i in ix])
                for part, ix in by_part.items()
            )
        )
        outcomes = [""] * len(requests)
        for ix, answer in zip(by_part.values(), answers, strict=True):
            for i, outcome in zip(ix, answer, strict=True):
                outcomes[i] = outcome
        return outcomes

    async def _send_refilling(
        self, batch: _Batch, part: str, requests: list[tuple[str, str]]
    ) -> list[str]:
        campaign, reward = batch.campaign, batch.reward
        outcomes = await self._send_to_part(batch, part, requests)
        for _ in range(REFILL_TRIES):
            # Refused for what another part may have: only "total" stock in a split campaign
            # (it has no daily stock), or the budget. Sent again, they replay nothing: a
            # refusal writes no idempotency entry.
            dry = [i for i, o in enumerate(outcomes) if o in ("out_of_stock", "budget_exhausted")]
            if not dry:
                break
            short = "budget" if outcomes[dry[0]] == "budget_exhausted" else "stock"
            if not await self._parts.refill(
                campaign.id, campaign.parts, reward.id, part, short, reward.cost
            ):
                break
            again = await self._send_to_part(batch, part, [requests[i] for i in dry])
            for i, outcome in zip(dry, again, strict=True):
                outcomes[i] = outcome
        return outcomes

    async def _send_to_part(
        self, batch: _Batch, part: str, requests: list[tuple[str, str]]
    ) -> list[str]:
        per_call = batch.per_call
        calls = [
            await self._call_of(batch, part, requests[i : i + per_call])
            for i in range(0, len(requests), per_call)
        ]
        outcomes: list[str] = []
        for start in range(0, len(calls), CALLS_PER_TRIP):
            # A call the emptied script cache refused did not run: it goes once more, loaded.
            answers = await pipelined_reloading(
                self._redis, self._script, calls[start : start + CALLS_PER_TRIP]
            )
            for replies in answers:
                if isinstance(replies, Exception):
                    raise replies
                outcomes.extend(str(reply[0]) for reply in replies)
        return outcomes

    async def _call_of(
        self, batch: _Batch, part: str, requests: list[tuple[str, str]]
    ) -> tuple[list[str], list[Any]]:
        """One claim.lua call's KEYS and ARGV (claim.lua's header): each claim's slice as
        `_decide` builds it (claim_calls.py claim_slice). `part`: the campaign's id, or of a
        split campaign the part all these customers' claims are in."""
        # Locals, once a call: the loop below runs once a member.
        channel_id, campaign, reward = batch.channel_id, batch.campaign, batch.reward
        now = self._clock()
        now_ms = int(now * 1000)
        day, day_ends = self._calendar.day(now)
        keys_of = self._keys
        # A call goes to its part's shard (the campaign's, unsplit). Its request ids
        # ("<job>/<customer>") name the job, and a customer's are always in the customer's
        # part, so they are never reused in another shard and need no route
        # (quanyi/stores/shards.py route_requests).
        shard = keys_of.of(part)
        keep_until = campaign.ends_ms // 1000 + self._settings.idempotency_retention_days * DAY_S
        pointer = audience_pointer(keys_of, reward)
        # On a cluster the membership of the call's customers, read in one go just before.
        members = (
            await read_members(self._scripts, [(pointer, customer) for _, customer in requests])
            if pointer and self._cluster
            else None
        )
        keys: list[str] = [shard.outbox, shard.pending, shard.store_ready]
        args: list[Any] = [now_ms, len(requests)]
        ids = grant_ids(now_ms, len(requests))
        for i, ((request_id, customer), grant_id) in enumerate(zip(requests, ids, strict=True)):
            claim = Claim(channel_id, request_id, campaign.id, customer, reward.id)
            who = who_may_have(keys_of, self._periods, campaign, reward, customer, now, day)
            if members is not None:
                who = with_membership(who, pointer, members[i])
            claim_keys, claim_args = claim_slice(
                keys_of,
                shard,
                campaign,
                reward,
                claim,
                grant_id,
                now_ms,
                day,
                day_ends,
                keep_until,
                who,
            )
            keys += claim_keys
            args += claim_args
        return keys, args

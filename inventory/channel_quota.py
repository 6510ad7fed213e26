"""Per-channel stock quotas on a reward (README "Channel quotas").

A reward's `channel_quota` ({"app": 600, "wechat": 400}) reserves part of its stock for
channels: a channel it names grants at most its quota; channels it does not name and goal
grants share what the quotas leave (stock less their sum). grant.lua checks it in the claim's
own atomic step, from fields of the campaign hash (no extra key, no extra round trip); a
reward without quotas has none of them and costs a claim one absent field of the read it
makes anyway:

    r:<reward>:q:<channel>   the quota of a channel the map names
    r:<reward>:qg:<channel>  the live grants a channel made (every channel, and "goal")
    r:<reward>:qsum          the quotas' sum: the others share the stock less it (so a new
                             stock moves their share too); marks a reward with quotas (only
                             those count grants per channel)
    r:<reward>:qfg           the live grants of the channels not named, goal grants included
    r:<reward>:qch           the named channels, apart by ","

A live campaign's quotas move through a campaign revision (quanyi/campaigns/revisions.py:
lua/revise.lua calls grant.lua's quota_revision_refusal and write_quotas in the step that
writes the revision), or `ChannelQuotas.move` for one reward alone (lua/channel_quota.lua):
each checked against what its channel granted, in the step that writes it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Protocol

import orjson
from redis.asyncio import Redis
from redis.typing import EncodableT, FieldT

from quanyi.core.errors import InvalidRequest, StoreNotReady
from quanyi.stores.keys import Keys
from quanyi.stores.redis import as_text
from quanyi.stores.scripts import lua_source

# The channel goal grants are made under (record_events.lua): it shares the remainder, always.
GOAL_CHANNEL = "goal"


def quota_errors(
    field: str, quota: Mapping[str, int] | None, channels: Iterable[str], stock: int
) -> dict[str, str]:
    """What is wrong with `quota` for a reward of `stock` in a campaign of `channels`, by field
    name (`field` names the map: "rewards[0].channel_quota"); empty when nothing is. The values
    are integers >= 1 already (the body's model checks them)."""
    if quota is None:
        return {}
    allowed = set(channels)
    errors = {
        f"{field}.{channel}": (
            "goal grants share what the quotas leave: not a channel a quota can name"
            if channel == GOAL_CHANNEL
            else "not a channel of the campaign"
        )
        for channel in quota
        if channel not in allowed or channel == GOAL_CHANNEL
    }
    total = sum(quota.values())
    if not errors and total > stock:
        errors[field] = f"the quotas add up to {total}, more than the stock of {stock}"
    return errors


class Quoted(Protocol):
    """A reward as a body or a record holds it: its stock and its quotas."""

    @property
    def stock(self) -> int: ...

    @property
    def channel_quota(self) -> Mapping[str, int] | None: ...


def rewards_quota_errors(rewards: Sequence[Quoted], channels: Iterable[str]) -> dict[str, str]:
    """quota_errors of each of a campaign's rewards, named rewards[i].channel_quota: for a new
    or edited campaign, and for a revision's figures (its channels and stocks after it)."""
    allowed = list(channels)
    errors: dict[str, str] = {}
    for i, r in enumerate(rewards):
        field = f"rewards[{i}].channel_quota"
        errors.update(quota_errors(field, r.channel_quota, allowed, r.stock))
    return errors


def _p(reward_id: str) -> str:
    return f"r:{reward_id}:"


def definition_fields(reward_id: str, quota: Mapping[str, int]) -> dict[FieldT, EncodableT]:
    """The campaign hash fields that define a reward's quotas (written on every publication)."""
    p = _p(reward_id)
    fields: dict[FieldT, EncodableT] = {f"{p}q:{ch}": n for ch, n in quota.items()}
    fields[p + "qsum"] = sum(quota.values())
    fields[p + "qch"] = ",".join(sorted(quota))
    return fields


def stale_fields(reward_id: str, quota: Mapping[str, int], channels: Iterable[str]) -> list[str]:
    """Quota fields of the campaign's channels the map no longer names (deleted on publication)."""
    return [f"{_p(reward_id)}q:{ch}" for ch in channels if ch not in quota]


def counter_fields(
    reward_id: str,
    quota: Mapping[str, int],
    channels: Iterable[str],
    by_channel: Mapping[str, int],
) -> dict[FieldT, EncodableT]:
    """The per-channel counters, from the ledger's live grants per channel (`by_channel`): only
    ever initialised (HSETNX) on publication, set exactly by the rebuild."""
    p = _p(reward_id)
    names = {*channels, GOAL_CHANNEL, *by_channel}
    fields: dict[FieldT, EncodableT] = {f"{p}qg:{ch}": by_channel.get(ch, 0) for ch in names}
    fields[p + "qfg"] = sum(n for ch, n in by_channel.items() if ch not in quota)
    return fields


def granted_fields(reward_id: str, channels: Iterable[str]) -> list[str]:
    return [f"{_p(reward_id)}qg:{ch}" for ch in channels]


# What a refusal of lua/channel_quota.lua says, for the field of the channel (or of the map).
_REFUSALS = {
    "quota_not_kept": "the reward was approved without channel quotas: none can be set live",
    "quota_below_granted": "below the {figure} this channel granted already",
    "quota_over_stock": "the quotas add up to {figure}, more than the stock",
    "quota_over_remaining": (
        "the quotas reserve more than the {figure} left in stock (each less what its channel"
        " granted already)"
    ),
}


class ChannelQuotas:
    """Moving a live reward's quotas, and reading what each channel granted."""

    def __init__(self, redis: Redis, keys: Keys) -> None:
        self._redis = redis
        self._keys = keys
        self._script = redis.register_script(lua_source("channel_quota"))

    async def granted(
        self, campaign_id: str, reward_id: str, channels: list[str]
    ) -> dict[str, int]:
        """The live grants each of `channels` made of a reward with quotas (0 for none)."""
        values = await self._redis.hmget(
            self._keys.campaign(campaign_id), granted_fields(reward_id, channels)
        )
        return {ch: int(v or 0) for ch, v in zip(channels, values, strict=True)}

    async def move(
        self,
        campaign_id: str,
        reward_id: str,
        stock: int,
        quota: Mapping[str, int],
        field: str = "channel_quota",
    ) -> None:
        """Give a live reward these quotas (its stock `stock` after the change), checked in the
        same atomic step against what each channel granted: no quota below its channel's grants,
        their sum within the stock, and what they still reserve within the stock left. Call it
        after `quota_errors` found nothing, inside the database transaction that records the
        change (a refusal raises InvalidRequest naming `field`.<channel> or `field`, and
        nothing is written)."""
        outcome, channel, figure = await self._script(
            keys=[self._keys.campaign(campaign_id), self._keys.of(campaign_id).store_ready],
            args=[reward_id, stock, orjson.dumps(dict(quota))],
        )
        outcome = as_text(outcome)
        if outcome == "moved":
            return
        if outcome == "store_not_ready":
            raise StoreNotReady()
        if outcome == "reward_not_found":
            raise InvalidRequest("no such reward", {field: f"no reward {reward_id} is published"})
        raise refusal_error(outcome, as_text(channel), int(figure), field)


def quota_not_kept() -> str:
    """Why a reward approved without quotas cannot be given them live (its grants were never
    counted per channel): said before a change is made, as the script would refuse it."""
    return _REFUSALS["quota_not_kept"]


def is_refusal(outcome: str) -> bool:
    """Whether a script's outcome is one of grant.lua quota_revision_refusal's."""
    return outcome in _REFUSALS


def refusal_error(outcome: str, channel: str, figure: int, field: str) -> InvalidRequest:
    """The typed 400 for a refusal of grant.lua quota_revision_refusal ({code, channel, figure}),
    naming `field`.<channel> (or `field` for the whole map): "rewards[0].channel_quota"."""
    name = f"{field}.{channel}" if channel else field
    message = _REFUSALS[outcome].format(figure=figure)
    return InvalidRequest("the channel quotas cannot move so", {name: message})

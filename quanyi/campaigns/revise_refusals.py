"""What lua/revise.lua answers when it refuses a revision, as the typed errors the API shows.

What the live counters refuse (a stock below what was granted, a budget below what was spent,
channel quotas that no longer fit what their channels granted) is a 409: the revision was fine
when it was made, the campaign moved since. Field names of channel quotas are by reward id,
rewards.<id>.channel_quota[.<channel>], as Revised.problems names them.

A campaign split into stock parts refuses a revision of its stock or budget before anything
else (CampaignSplit): a 409 too, of the campaign as approved rather than as it moved.
"""

from __future__ import annotations

from quanyi.core.errors import Conflict, QuanyiError, StoreNotReady, Unavailable
from quanyi.inventory import channel_quota


class StockBelowGranted(Conflict):
    """A reward's new stock is below what it granted already (details: reward_id, granted)."""

    code = "stock_below_granted"


class StockBelowQuotas(Conflict):
    """A reward's new stock would not hold what its channel quotas still reserve, each less
    what its channel granted (details: reward_id, left, fields)."""

    code = "stock_below_quotas"


class QuotaBelowGranted(Conflict):
    """A channel's new quota is below what that channel granted already (details: reward_id,
    channel, granted, fields)."""

    code = "quota_below_granted"


class BudgetBelowSpent(Conflict):
    """The new budget is below what the campaign spent already (details: spent)."""

    code = "budget_below_spent"


class CampaignSplit(Conflict):
    """What a campaign split into stock parts (inventory/stock_parts.py) does not have: a daily
    stock (one counter for the whole campaign), or a budget it was not approved with (details:
    campaign_id, stock_parts)."""

    code = "campaign_split"


def split_daily_refusal(campaign_id: str, parts: int) -> CampaignSplit:
    """A revision giving a split campaign a daily stock, or a budget where it had none (or
    none where it had one)."""
    return CampaignSplit(
        f"campaign {campaign_id} is split into {parts} stock parts: it has no daily stock, and"
        " keeps a budget (or none) as approved; its stock, budget, end, limits and channels may"
        " be revised",
        campaign_id=campaign_id,
        stock_parts=parts,
    )


def refusal(outcome: str, detail: str, figure: int, channel: str) -> QuanyiError:
    """The error for revise.lua's {outcome, detail, figure, channel} other than "applied"."""
    if outcome == "stock_below_granted":
        return StockBelowGranted(
            f"reward {detail} granted {figure} already: its stock cannot go below that",
            reward_id=detail,
            granted=figure,
        )
    if outcome == "budget_below_spent":
        return BudgetBelowSpent(
            f"the campaign spent {figure} fen already: its budget cannot go below that",
            spent=figure,
        )
    if channel_quota.is_refusal(outcome) and outcome != "quota_not_kept":
        return _quota_refusal(outcome, detail, figure, channel)
    if outcome == "store_not_ready":
        return StoreNotReady()
    # campaign_not_found, reward_not_found, quota_not_kept (the reward holds quotas in
    # PostgreSQL, none in Redis): Redis lost the campaign's definition.
    return Unavailable(
        f"the campaign's definition is missing from Redis ({outcome}); retry once it is"
        " published again"
    )


def _quota_refusal(outcome: str, reward_id: str, figure: int, channel: str) -> QuanyiError:
    """A refusal of grant.lua quota_revision_refusal: what the live counters refuse is a 409; a
    map over the stock a 400 (checked when the revision is made: only a campaign changed since
    then meets it here)."""
    field = f"rewards.{reward_id}.channel_quota"
    refused = channel_quota.refusal_error(outcome, channel, figure, field)
    fields = refused.details["fields"]
    if outcome == "quota_below_granted":
        return QuotaBelowGranted(
            f"reward {reward_id}: channel {channel} granted {figure} already; its quota cannot go"
            " below that",
            reward_id=reward_id,
            channel=channel,
            granted=figure,
            fields=fields,
        )
    if outcome == "quota_over_remaining":
        return StockBelowQuotas(
            f"reward {reward_id}'s channel quotas reserve more than the {figure} its new stock"
            " leaves (each quota less what its channel granted)",
            reward_id=reward_id,
            left=figure,
            fields=fields,
        )
    return refused

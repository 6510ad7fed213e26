"""What an offers.lua reply is turned into, and how a split campaign's figures are judged.

offers.lua answers one comma-separated row per campaign (lua/offers.lua); CampaignFigures.parse
reads it into the campaign's figures and one RewardFigures per reward. A part of a split
campaign (inventory/stock_parts.py) that has run dry is judged by what the whole campaign has
left, as a claim would refill it from the other parts.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from quanyi.inventory.hot_campaigns import HotCampaign


def _int(value: str) -> int:
    return int(value) if value else 0


@dataclass(frozen=True)
class RewardFigures:
    """One reward's figures as offers.lua read them."""

    stock: int
    granted: int
    daily_stock: int
    limit: int
    daily_limit: int
    cost: int
    customer_total: int
    customer_today: int
    reward_today: int
    member: int  # 1 member, 0 not, -1 no audience
    count: int
    amount: int
    claimed_in_period: bool
    known: bool  # the campaign hash holds the reward
    # Channel quotas (README "Channel quotas"), for the calling channel: None without quotas.
    channel_left: int | None = None


def _channel_left(stock: int, q: list[str]) -> int | None:
    """What the channel may still grant of a reward with quotas, from qsum, q:<channel>,
    qg:<channel>, qfg, as grant.lua quota_refused judges it: a named channel its quota less its
    grants; any other the stock less the quotas' sum, less what the others took of it."""
    quota_sum, quota, granted, shared = q
    if not quota_sum:  # the hash holds no quotas for it: claims check none either
        return None
    if quota:
        return int(quota) - _int(granted)
    return stock - int(quota_sum) - _int(shared)


@dataclass(frozen=True)
class CampaignFigures:
    """One campaign's figures as offers.lua read them (its part's, when split)."""

    state: str
    starts_ms: int
    ends_ms: int
    budget: int | None
    spent: int
    rewards: list[RewardFigures]

    @classmethod
    def parse(cls, row: str, quoted: tuple[bool, ...]) -> CampaignFigures:
        """`quoted`: which of the campaign's rewards have channel quotas (their 4 figures
        follow the others, in reward order)."""
        f = row.split(",")
        m = len(quoted)
        customer = 5 + 6 * m
        quota_at = customer + 7 * m
        rewards = []
        for r in range(m):
            h, c = f[5 + 6 * r : 11 + 6 * r], f[customer + 7 * r : customer + 7 * r + 7]
            left = None
            if quoted[r]:
                left = _channel_left(_int(h[0]), f[quota_at : quota_at + 4])
                quota_at += 4
            rewards.append(
                RewardFigures(
                    stock=_int(h[0]),
                    granted=_int(h[1]),
                    daily_stock=_int(h[2]),
                    limit=_int(h[3]),
                    daily_limit=_int(h[4]),
                    cost=_int(h[5]),
                    customer_total=_int(c[0]),
                    customer_today=_int(c[1]),
                    reward_today=_int(c[2]),
                    member=int(c[3]),
                    count=_int(c[4]),
                    amount=_int(c[5]),
                    claimed_in_period=c[6] == "1",
                    known=h[0] != "",
                    channel_left=left,
                )
            )
        return cls(f[0], _int(f[1]), _int(f[2]), int(f[3]) if f[3] else None, _int(f[4]), rewards)


def _stock_dry(fig: RewardFigures) -> bool:
    return fig.known and fig.granted >= fig.stock


def _budget_dry(held: CampaignFigures, fig: RewardFigures) -> bool:
    return fig.known and held.budget is not None and held.spent + fig.cost > held.budget


def part_is_dry(campaign: HotCampaign, held: CampaignFigures) -> bool:
    """Whether the customer's part of a split campaign has run out of what an offer shown to
    them would be judged by (a customer at their limit is refused whatever is left)."""
    if campaign.parts == 1 or held.state != "active":
        return False
    return any(
        fig.customer_total < fig.limit and (_stock_dry(fig) or _budget_dry(held, fig))
        for fig in held.rewards
        if fig.member != 0
    )


def whole_campaign_figures(
    campaign: HotCampaign, held: CampaignFigures, granted: dict[str, int], spent: int
) -> CampaignFigures:
    """The part's figures with what ran dry in it counted over the whole campaign: the
    reward's stock against the grants of every part, the budget against every part's spend.
    Stock in a move not completed is still the campaign's: the next refill completes it."""
    rewards = [
        replace(fig, stock=reward.stock, granted=granted[reward.id]) if _stock_dry(fig) else fig
        for reward, fig in zip(campaign.rewards, held.rewards, strict=True)
    ]
    if any(_budget_dry(held, fig) for fig in held.rewards):
        held = replace(held, budget=campaign.budget, spent=spent)
    return replace(held, rewards=rewards)

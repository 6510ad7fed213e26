"""A revision of the stock or budget of a campaign split into stock parts
(inventory/stock_parts.py), whose figure no one hash holds: each part holds its share, moved
between the parts by claims. So a revision moves the parts by the difference, in an order that
never lets them add up to more than the campaign's figure in PostgreSQL, whatever fails:

- A cut (less stock or budget) is taken from the parts before the revision is committed, each
  part giving at most what it has left (lua/cut_stock.lua). When they have not that much left
  between them, what was taken is given back and the revision refused, as revise.lua refuses a
  stock below granted; a failure after the cuts gives them back too. A crash in between leaves
  the parts with less than the campaign's figure: they sell less, never more.
- A raise is given to the parts after the revision is committed, shared out as a publication
  shares stock, each part's share once (give_stock.lua's marker per revision). Until then the
  parts sell less; what is still to give is kept on the revision row (`parts_to_give`), and the
  scheduler gives it should the approval's own try fail (give_pending).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import asyncpg
import orjson
from redis.asyncio import Redis

from quanyi.campaigns import approvals
from quanyi.campaigns.model import Campaign
from quanyi.campaigns.revise_refusals import BudgetBelowSpent, StockBelowGranted
from quanyi.campaigns.revision_model import Revised
from quanyi.inventory.stock_parts import RECEIVED_FIELD, StockParts
from quanyi.stores.keys import Keys

log = logging.getLogger(__name__)
queries = approvals.queries
# Revisions whose raise the scheduler gives in one tick.
GIVE_BATCH = 100

# (reward id, or None for the budget; how much)
Change = tuple[str | None, int]
Cuts = list[tuple[str | None, dict[str, int]]]


@dataclass(frozen=True)
class PartChanges:
    """What a revision takes from a split campaign's parts, and what it gives them."""

    cuts: list[Change]
    raises: list[Change]


def part_changes(campaign: Campaign, figures: Revised) -> PartChanges:
    """The stock and budget differences of a revision (`figures`) of `campaign`."""
    cuts: list[Change] = []
    raises: list[Change] = []
    before = {r.id: r.stock for r in campaign.rewards}
    moves: list[Change] = [(r.id, r.stock - before[r.id]) for r in figures.rewards]
    if campaign.budget is not None and figures.budget is not None:
        moves.append((None, figures.budget - campaign.budget))
    for what, delta in moves:
        if delta < 0:
            cuts.append((what, -delta))
        elif delta > 0:
            raises.append((what, delta))
    return PartChanges(cuts, raises)


async def cut_parts(parts: StockParts, campaign: Campaign, cuts: Sequence[Change]) -> Cuts:
    """Every cut taken from the parts (StockParts.cut), or none of them: a cut the parts have
    not enough left for gives back the others and is refused (StockBelowGranted,
    BudgetBelowSpent), with what they granted (spent)."""
    taken: Cuts = []
    try:
        for what, amount in cuts:
            got = await parts.cut(campaign.id, campaign.stock_parts, what, amount)
            if got is None:
                raise await _refusal(parts, campaign, what)
            taken.append((what, got))
    except BaseException:
        await give_back(parts, taken)
        raise
    return taken


async def give_back(parts: StockParts, taken: Cuts) -> None:
    """Cuts of a revision that did not go through, given back to the parts they came from."""
    for what, cuts in taken:
        await parts.give_back(what, cuts)


async def _refusal(
    parts: StockParts, campaign: Campaign, what: str | None
) -> StockBelowGranted | BudgetBelowSpent:
    rewards = [r.id for r in campaign.rewards]
    granted, spent, _moving = await parts.sums(campaign.id, campaign.stock_parts, rewards)
    if what is None:
        return BudgetBelowSpent(
            f"the campaign spent {spent} fen already: its budget cannot go below that",
            spent=spent,
        )
    return StockBelowGranted(
        f"reward {what} granted {granted[what]} already: its stock cannot go below that",
        reward_id=what,
        granted=granted[what],
    )


def to_give(raises: Sequence[Change]) -> str | None:
    """The `parts_to_give` of a revision with these raises (None for none)."""
    return orjson.dumps(raises).decode() if raises else None


def revision_move(revision_id: int, what: str | None) -> str:
    """The move id of a revision's raise of a reward's stock (None: of the budget), the same
    in every part (give_stock.lua keeps one marker per move in each)."""
    return f"rev{revision_id}:{what or ''}"


async def forget_pending(
    pool: asyncpg.Pool, redis: Redis, keys: Keys, campaign_id: str, part_ids: Sequence[str]
) -> int:
    """A rebuild's step (ledger/rebuild_parts.py), before it writes the parts from the
    campaign's figures, which hold every applied revision: the raises still to give are marked
    received in every part, so a give in flight or a later tick adds nothing, and forgotten.
    Returns how many revisions had some."""
    rows = await pool.fetch(queries.parts_to_give_of_campaign, campaign_id)
    for row in rows:
        for what, _amount in orjson.loads(row["parts_to_give"]):
            for pid in part_ids:
                marker = RECEIVED_FIELD + revision_move(row["id"], what)
                await redis.hsetnx(keys.campaign(pid), marker, 1)
        await pool.execute(queries.parts_given, campaign_id, row["id"])
    return len(rows)


async def give_and_forget(
    pool: asyncpg.Pool,
    parts: StockParts,
    campaign_id: str,
    stock_parts: int,
    revision_id: int,
    raises: Sequence[Change],
) -> bool:
    """The raises of revision `revision_id` shared out over the parts, each part's share once
    however often this runs; then the revision's `parts_to_give` cleared. False, and kept,
    when a part was not there to take its share."""
    given = True
    for what, amount in raises:
        move = revision_move(revision_id, what)
        given &= await parts.add(campaign_id, stock_parts, what, amount, move)
    if given:
        await pool.execute(queries.parts_given, campaign_id, revision_id)
    return given


async def give_pending(pool: asyncpg.Pool, parts: StockParts) -> list[str]:
    """The raises applied revisions have still to give their parts, given (the scheduler's
    step): the campaigns whose parts now hold all of them."""
    done = []
    for row in await pool.fetch(queries.revisions_with_parts_to_give, GIVE_BATCH):
        raises = [(what, int(amount)) for what, amount in orjson.loads(row["parts_to_give"])]
        cid, rid, k = row["campaign_id"], row["id"], row["stock_parts"]
        if await give_and_forget(pool, parts, cid, k, rid, raises):
            done.append(cid)
            log.info("campaign %s: revision %d's raise given to its %d stock parts", cid, rid, k)
    return done

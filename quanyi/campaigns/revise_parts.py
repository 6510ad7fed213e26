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

import contextlib
import logging
import secrets
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

import asyncpg
import orjson
from redis.asyncio import Redis
from redis.exceptions import RedisError

from quanyi.campaigns import approvals
from quanyi.campaigns.model import Campaign
from quanyi.campaigns.revise_refusals import BudgetBelowSpent, StockBelowGranted
from quanyi.campaigns.revision_model import Revised
from quanyi.inventory.stock_parts import RECEIVED_FIELD, Cut, StockParts
from quanyi.stores.db import POSTGRES_AWAY
from quanyi.stores.keys import Keys
from quanyi.stores.outbox import REDIS_AWAY

log = logging.getLogger(__name__)
queries = approvals.queries
# Revisions whose raise the scheduler gives in one tick.
GIVE_BATCH = 100

# (reward id, or None for the budget; how much)
Change = tuple[str | None, int]
Cuts = list[Cut]


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


async def cut_parts(
    parts: StockParts, campaign: Campaign, cuts: Sequence[Change], revision_id: int, taken: Cuts
) -> None:
    """Every cut taken from the parts (StockParts.cut), each in `taken` before it is sent, for
    given_back_on_failure to give back should the revision not be committed. A cut the parts
    have not enough left for is refused (StockBelowGranted, BudgetBelowSpent, with what they
    granted or spent)."""
    for what, amount in cuts:
        cut = Cut(f"rev{revision_id}:{what or ''}:{secrets.token_hex(4)}", what)
        taken.append(cut)
        if not await parts.cut(campaign.id, campaign.stock_parts, cut, amount):
            raise await _refusal(parts, campaign, what)


@contextlib.asynccontextmanager
async def given_back_on_failure(parts: StockParts, campaign_id: str) -> AsyncIterator[Cuts]:
    """The cuts a revision's approval takes (cut_parts) go in the list this yields, and are
    given back if the block fails before the commit (transaction_keeping_cuts empties it)."""
    taken: Cuts = []
    try:
        yield taken
    except BaseException:
        for cut in taken:
            try:
                await parts.give_back(cut)
            except Exception:
                log.exception(
                    "campaign %s: cut %s of a failed revision not given back", campaign_id, cut.id
                )
        raise


@contextlib.asynccontextmanager
async def transaction_keeping_cuts(
    conn: asyncpg.Connection, parts: StockParts, taken: Cuts
) -> AsyncIterator[None]:
    """The approval's transaction. From the moment its COMMIT is sent, answered or not, the cuts
    are the campaign's and `taken` is emptied: giving back a cut whose revision went through
    would let the parts sell past the new figure (a commit that failed leaves them selling
    less). Their records in the parts are dropped after (best effort: only a record)."""
    transaction = conn.transaction()
    await transaction.start()
    try:
        yield
    except BaseException:
        with contextlib.suppress(Exception):  # a connection gone rolls back by itself
            await transaction.rollback()
        raise
    stands = list(taken)
    try:
        await transaction.commit()
    finally:
        taken.clear()
    for cut in stands:
        try:
            await parts.forget(cut)
        except RedisError as exc:
            log.warning("cut %s stands; its records in the parts not dropped: %s", cut.id, exc)


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


async def give_after_commit(
    pool: asyncpg.Pool,
    parts: StockParts,
    campaign: Campaign,
    revision_id: int,
    raises: Sequence[Change],
) -> None:
    """A committed revision's raises given to the split campaign's parts: applied already, so a
    failure is only said; the scheduler gives what is left (give_pending)."""
    try:
        given = await give_and_forget(
            pool, parts, campaign.id, campaign.stock_parts, revision_id, raises
        )
    except (RedisError, *POSTGRES_AWAY) as exc:
        log.warning(
            "campaign %s: revision %d's raise not in its parts yet (%s); the scheduler gives it",
            campaign.id,
            revision_id,
            exc,
        )
        return
    if not given:
        log.warning(
            "campaign %s: a stock part missing; revision %d's raise is given once it is back",
            campaign.id,
            revision_id,
        )


async def give_pending(pool: asyncpg.Pool, parts: StockParts) -> list[str]:
    """The raises applied revisions have still to give their parts, given (the scheduler's
    step): the campaigns whose parts now hold all of them."""
    done = []
    for row in await pool.fetch(queries.revisions_with_parts_to_give, GIVE_BATCH):
        raises = [(what, int(amount)) for what, amount in orjson.loads(row["parts_to_give"])]
        cid, rid, k = row["campaign_id"], row["id"], row["stock_parts"]
        try:
            given = await give_and_forget(pool, parts, cid, k, rid, raises)
        except REDIS_AWAY as exc:  # one shard away: the campaigns on the others go on
            log.warning("campaign %s: revision %d's raise not given yet: %s", cid, rid, exc)
            continue
        if given:
            done.append(cid)
            log.info("campaign %s: revision %d's raise given to its %d stock parts", cid, rid, k)
    return done

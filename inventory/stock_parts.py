"""A hot campaign split into stock parts on several shards, and stock moved between them.

One flash sale on one campaign hash is bound to one Redis shard. A campaign approved with
`stock_parts: K` is published as K copies of its hash (quanyi/stores/keys.py part_ids), part j
on the shard j on from part 0's, each holding the whole definition and 1/K of each reward's
stock and of the budget (part_share). A customer's claims always go to the same part
(keys.part_of), so the customer's limits and request ids stay in that part's slot, and
claim.lua decides them there unchanged: granted <= stock in every part, so the sum of the
parts never passes the campaign's stock, nor spent its budget.

A part that runs dry takes stock from the others (refill): take_stock.lua takes half of what
a donor has left and records the move in the donor; give_stock.lua adds it to the dry part
once (a marker per move). Two steps in two slots, so a crash between them leaves the stock
recorded in the donor and counted in no part: claims can then sell less, never more, until
complete_moves (run by every refill and by `quanyi reconcile`) finishes the move.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, cast

from redis.asyncio import Redis

from quanyi.core.errors import StoreNotReady
from quanyi.stores.keys import MAX_STOCK_PARTS, Keys, part_ids, part_of, part_share
from quanyi.stores.scripts import Scripts, run_script

MOVE_FIELD = "mv:"  # in the donor, until the receiver holds the move
RECEIVED_FIELD = "mi:"  # in the receiver, for as long as its hash lives (give_stock.lua)
CUT_FIELD = "ct:"  # in a part a revision's cut took from, until it stands or is given back
# How often a claim in a dry part is decided again after a refill: each refill moves something
# into the part, so a claim that keeps losing it to others of its part sees the campaign near
# its end, and gives up after this many.
REFILL_TRIES = 2 * MAX_STOCK_PARTS
# Refill locks a process keeps (one per part that ran dry) before it forgets the idle ones.
MAX_REFILL_LOCKS = 4096


def short_of(reply: list[Any]) -> str | None:
    """What a part refused a claim for lack of (claim.lua's reply), that another part may
    have: "stock" or "budget"; None for any other outcome."""
    if reply[0] == "out_of_stock" and reply[1] == "total":
        return "stock"
    return "budget" if reply[0] == "budget_exhausted" else None


@dataclass
class Cut:
    """One cut of a revision of a split campaign's stock (`reward_id`) or budget (None): its
    id, unique to one approval, and every part it was sent to."""

    id: str
    reward_id: str | None
    parts: list[str] = field(default_factory=list)


@dataclass
class PartCounters:
    """What one part has taken: grants per reward and spend (fen)."""

    granted: dict[str, int] = field(default_factory=dict)
    spent: int = 0


def counters_by_part(
    campaign_id: str, parts: int, rows: Iterable[Mapping[str, Any]]
) -> dict[str, PartCounters]:
    """Each part's counters from the ledger's live grants per customer (rows of customer_id,
    reward_id, granted, spent): a customer's grants are all in the customer's part."""
    found = {pid: PartCounters() for pid in part_ids(campaign_id, parts)}
    for row in rows:
        part = found[part_of(campaign_id, parts, row["customer_id"])]
        rid = row["reward_id"]
        part.granted[rid] = part.granted.get(rid, 0) + int(row["granted"])
        part.spent += int(row["spent"])
    return found


def part_limits(
    stock: Mapping[str, int],
    budget: int | None,
    parts: Mapping[str, PartCounters],
) -> dict[str, dict[str, int]]:
    """Each part's `r:<reward>:stock` and `budget` for the counters it holds: what it granted
    and spent, plus its share of what the campaign has left. The parts' stocks add up to the
    campaign's (its budget likewise), whatever moves came before: how a publication or a
    rebuild writes the parts from the ledger."""
    ids = list(parts)
    fields: dict[str, dict[str, int]] = {pid: {} for pid in ids}
    for rid, total in stock.items():
        left = max(0, total - sum(p.granted.get(rid, 0) for p in parts.values()))
        for j, pid in enumerate(ids):
            fields[pid][f"r:{rid}:stock"] = parts[pid].granted.get(rid, 0) + part_share(
                left, len(ids), j
            )
    if budget is not None:
        left = max(0, budget - sum(p.spent for p in parts.values()))
        for j, pid in enumerate(ids):
            fields[pid]["budget"] = parts[pid].spent + part_share(left, len(ids), j)
    return fields


class StockParts:
    """Moves stock between the parts of split campaigns, and reads their sums."""

    def __init__(self, redis: Redis, keys: Keys, scripts: Scripts) -> None:
        self._redis = redis
        self._keys = keys
        self._scripts = scripts
        # One refill at a time per dry part in this process: claims that found it dry together
        # wait for the one refill instead of each draining the donors into it.
        self._refilling: dict[str, asyncio.Lock] = {}

    async def refill(
        self, campaign_id: str, parts: int, reward_id: str, dry: str, short: str, cost: int
    ) -> bool:
        """Move stock of the reward (`short` "stock") or budget ("budget") into the part `dry`
        from the part with the most of it left, unless `dry` has enough of it again already
        (one unit of stock, or the budget for one grant of `cost`);
        False when no part has any to spare: the campaign has sold out (spent its budget)."""
        if len(self._refilling) > MAX_REFILL_LOCKS:  # parts of campaigns long over, mostly
            self._refilling = {k: v for k, v in self._refilling.items() if v.locked()}
        need = cost if short == "budget" else 1
        lock = self._refilling.setdefault(dry, asyncio.Lock())
        async with lock:
            hashes = await read_parts(self._redis, self._keys, campaign_id, parts)
            if await self._complete(campaign_id, parts, hashes):
                # What the completed moves gave.
                hashes = await read_parts(self._redis, self._keys, campaign_id, parts)
            total, taken = (
                ("budget", "spent")
                if short == "budget"
                else (f"r:{reward_id}:stock", f"r:{reward_id}:granted")
            )
            ids = part_ids(campaign_id, parts)
            have = _left(hashes[ids.index(dry)], total, taken)
            if have >= need:
                return True  # refilled meanwhile (another claim's refill, a completed move)
            donors = sorted(
                ((_left(h, total, taken), pid) for pid, h in zip(ids, hashes, strict=True)),
                reverse=True,
            )
            # Gathered until the part has `need` (a budget may lie in pieces smaller than one
            # unit cost over several parts), so the claim after it can be granted: a refill
            # that moved less would leave parts passing pieces back and forth.
            for left, donor in donors:
                if left <= 0:
                    break
                if donor != dry:
                    have += await self._move(donor, dry, reward_id, short, need - have)
                    if have >= need:
                        return True
            return False

    async def _move(
        self, donor: str, receiver: str, reward_id: str, short: str, at_least: int
    ) -> int:
        """How much was moved from `donor` to `receiver` (0: it had none to spare)."""
        move = secrets.token_hex(8)
        stock, budget = await run_script(
            self._redis,
            self._scripts.take_stock,
            [self._keys.campaign(donor), self._keys.of(donor).store_ready],
            [reward_id, move, receiver, short, max(at_least, 1)],
        )
        if not int(stock) and not int(budget):
            return 0
        if not await self._give(donor, receiver, reward_id, move, int(stock), int(budget)):
            return 0
        return int(budget) if short == "budget" else int(stock)

    async def _give(
        self, donor: str, receiver: str, reward_id: str, move: str, stock: int, budget: int
    ) -> bool:
        """Whether the receiver holds the move now (given now or before)."""
        given = await run_script(
            self._redis,
            self._scripts.give_stock,
            [self._keys.campaign(receiver), self._keys.of(receiver).store_ready],
            [reward_id, move, stock, budget],
        )
        if int(given) < 0:
            return False  # the receiver's store is lost: kept in the donor for the rebuild
        # Only once the receiver holds it: a crash before this leaves the move to complete.
        await self._redis.hdel(self._keys.campaign(donor), MOVE_FIELD + move)
        return True

    async def cut(self, campaign_id: str, parts: int, cut: Cut, amount: int) -> bool:
        """Take `amount` of the cut's reward's stock (reward_id None: of the budget) out of the
        parts for good, from the parts with the most left first (cut_stock.lua, each part at
        most what it has left, recorded in it under the cut's id). Every part a call is sent to
        is in `cut.parts` before it is sent, so give_back finds what it took, answered or not.
        False when the parts have not that much left between them: the cut would go below what
        they granted (spent); the caller gives back what it took."""
        # Stock in moves a crash left open is in no part: completed first, it counts as left.
        await self.complete_moves(campaign_id, parts)
        ids = part_ids(campaign_id, parts)
        hashes = await read_parts(self._redis, self._keys, campaign_id, parts)
        total, taken = (
            ("budget", "spent")
            if cut.reward_id is None
            else (f"r:{cut.reward_id}:stock", f"r:{cut.reward_id}:granted")
        )
        order = sorted(
            ((_left(h, total, taken), pid) for pid, h in zip(ids, hashes, strict=True)),
            reverse=True,
        )
        got = 0
        for _left_then, pid in order:
            if got >= amount:
                break
            cut.parts.append(pid)
            reply = int(
                await run_script(
                    self._redis,
                    self._scripts.cut_stock,
                    [self._keys.campaign(pid), self._keys.of(pid).store_ready],
                    [cut.reward_id or "", amount - got, cut.id],
                )
            )
            if reply < 0:
                raise StoreNotReady()
            got += reply
        return got >= amount

    async def give_back(self, cut: Cut) -> None:
        """What `cut` took, given back to each part it came from, read from the part itself
        (once: give_stock.lua's marker under the cut's id). Should Redis fail here, the parts
        keep less than the campaign's figure: they sell less, never more (`quanyi reconcile`
        reports parts that do not add up)."""
        for pid in cut.parts:
            key = self._keys.campaign(pid)
            recorded = await self._redis.hget(key, CUT_FIELD + cut.id)
            if recorded and int(recorded) > 0:
                await self.add_to(pid, cut.reward_id, int(recorded), cut.id)
            await self._redis.hdel(key, CUT_FIELD + cut.id)

    async def forget(self, cut: Cut) -> None:
        """A cut that stands (its revision committed): its records in the parts dropped."""
        for pid in cut.parts:
            await self._redis.hdel(self._keys.campaign(pid), CUT_FIELD + cut.id)

    async def add(
        self, campaign_id: str, parts: int, reward_id: str | None, amount: int, move: str
    ) -> bool:
        """`amount` more of the reward's stock (None: of the budget) shared out over the parts
        as a publication shares stock (part_share), each part's share once for `move` however
        often this is called (give_stock.lua's marker). False when a part's hash or its shard's
        marker is gone: its share is to be given again once the part is back."""
        given = [
            await self.add_to(pid, reward_id, part_share(amount, parts, j), move)
            for j, pid in enumerate(part_ids(campaign_id, parts))
        ]
        return all(given)

    async def add_to(self, pid: str, reward_id: str | None, amount: int, move: str) -> bool:
        """`amount` more stock (None: budget) in part `pid`, once for `move`."""
        if amount <= 0:
            return True
        stock, budget = (0, amount) if reward_id is None else (amount, 0)
        given = await run_script(
            self._redis,
            self._scripts.give_stock,
            [self._keys.campaign(pid), self._keys.of(pid).store_ready],
            [reward_id or "", move, stock, budget],
        )
        return int(given) >= 0

    async def sums(
        self, campaign_id: str, parts: int, reward_ids: list[str]
    ) -> tuple[dict[str, int], int, dict[str, int]]:
        """The module's sums() on these stores."""
        return await sums(self._redis, self._keys, campaign_id, parts, reward_ids)

    async def complete_moves(self, campaign_id: str, parts: int) -> int:
        """Finish the moves a crash left between take and give; how many there were."""
        hashes = await read_parts(self._redis, self._keys, campaign_id, parts)
        return await self._complete(campaign_id, parts, hashes)

    async def _complete(self, campaign_id: str, parts: int, hashes: list[dict[str, str]]) -> int:
        done = 0
        for donor, h in zip(part_ids(campaign_id, parts), hashes, strict=True):
            for name, value in h.items():
                if not name.startswith(MOVE_FIELD):
                    continue
                receiver, reward_id, stock, budget = value.split("|")
                move = name[len(MOVE_FIELD) :]
                # A give refused (the receiver's store lost) stays open: not counted as done.
                done += await self._give(donor, receiver, reward_id, move, int(stock), int(budget))
        return done


async def read_parts(
    redis: Redis, keys: Keys, campaign_id: str, parts: int
) -> list[dict[str, str]]:
    """Every part's hash, part 0 first (at once: each is in a slot of its own)."""
    read = await asyncio.gather(
        *(redis.hgetall(keys.campaign(p)) for p in part_ids(campaign_id, parts))
    )
    return [cast(dict[str, str], h) for h in read]  # the client decodes responses


async def sums(
    redis: Redis, keys: Keys, campaign_id: str, parts: int, reward_ids: list[str]
) -> tuple[dict[str, int], int, dict[str, int]]:
    """(granted per reward, spent, stock per reward in moves not completed) over the parts. A
    move its receiver holds already (a crash after give_stock, before the donor forgot it) is
    in the receiver's stock, so not counted as moving."""
    granted = dict.fromkeys(reward_ids, 0)
    spent = 0
    moving = dict.fromkeys(reward_ids, 0)
    ids = part_ids(campaign_id, parts)
    hashes = dict(zip(ids, await read_parts(redis, keys, campaign_id, parts), strict=True))
    for h in hashes.values():
        spent += int(h.get("spent") or 0)
        for rid in reward_ids:
            granted[rid] += int(h.get(f"r:{rid}:granted") or 0)
        for name, value in h.items():
            if name.startswith(MOVE_FIELD):
                receiver, rid, stock, _budget = value.split("|")
                if RECEIVED_FIELD + name[len(MOVE_FIELD) :] not in hashes.get(receiver, {}):
                    moving[rid] = moving.get(rid, 0) + int(stock)
    return granted, spent, moving


def _left(h: Mapping[str, str], total: str, taken: str) -> int:
    """What a part has left of a stock or a budget (0 for a part Redis does not hold)."""
    if total not in h:
        return 0
    return int(h[total]) - int(h.get(taken) or 0)

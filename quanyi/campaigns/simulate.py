"""The dry run of a campaign (测试工具): past card transactions replayed against its goals, stock,
limits and budget, answering what it would have granted and cost. Pure: no I/O, so it runs in a
worker process (the route hands it the CSV bytes, the HotCampaign and the audience members).

A line of the file is `customer_id,amount,mcc,occurred_at[,event_id,reversal_of]` (a first line
starting `customer_id` is a header): amount in fen, occurred_at RFC 3339 with an offset. A file
with a bad line is refused as a whole (a forecast on part of a file misleads): `forecast`
answers the first 100 of them by line number, never with the value (it may be a card number);
quanyi/campaigns/transactions.py reads the file.

What it replays, as the live path decides a card event:
- transactions in occurred_at order (file order among equals); outside [starts, ends) nothing,
  but a reversal is applied whatever its own date;
- a goal reward counts a qualifying transaction (`goal.qualifies`) into the customer's progress
  of the period (quanyi/core/clock.py LocalPeriods); once the period's goal is reached the
  customer qualifies, and is granted if the per-customer limits (the daily one by the local day
  of the transaction), stock, daily stock and budget allow; if they do not, the next
  qualifying transaction of the period tries again, as the live path does. "claim" rewards are
  forecast as claimed when reached. Only members of a reward's audience count for it;
- a reward without a goal is claimed once by each customer who may have it, at their first
  transaction in the window;
- an event id seen before is a repeat and counts once. A reversal (reversal_of = an earlier
  event of the same customer and amount) takes the original's progress back, once; with
  claw_back, a grant whose customer drops below the goal in that period is revoked (stock,
  limits and budget come back). A reversal before its original cancels it, as the live path
  holds it for the original: the first such reversal of an original is the one kept. Once an
  original is reversed or cancelled, any further reversal of it counts for nothing.

`stock_exhausted_at` is when a reward's last unit went for good: a revocation that frees a
unit again clears it until the stock runs out once more.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

from quanyi.campaigns.transactions import Rejected, Rows, arrow_rows, parse
from quanyi.core.clock import LocalCalendar, LocalPeriods, rfc3339
from quanyi.inventory.hot_campaigns import HotCampaign, HotGoal, HotReward

# What a customer's progress in one period has come to (Progress.state).
OPEN, GRANTED, MISSED = 0, 1, 2


@dataclass(slots=True)
class Progress:
    count: int = 0
    amount: int = 0
    state: int = OPEN
    day: str = ""  # the local day of its grant


class RewardRun:
    """One reward's counters over the replay."""

    def __init__(self, reward: HotReward, members: frozenset[str] | None, zone: ZoneInfo) -> None:
        self.reward = reward
        self.goal: HotGoal | None = reward.goal
        self.members = members
        self._periods = LocalPeriods(zone)
        # The period of the latest transaction and the unix ms at which it ends: transactions
        # come in time order, so the zone is consulted once a period.
        self.period, self.period_ends = "", -1
        # period -> customer -> progress; `current` is the latest period's
        self.progress: dict[str, dict[str, Progress]] = {}
        self.current: dict[str, Progress] = {}
        # merchant category -> whether it may count (goal.qualifies, the amount left aside)
        self.mcc_counts: dict[str, bool] = {}
        self.min_amount = 0 if reward.goal is None else reward.goal.min_amount or 0
        self.need_count = 0 if reward.goal is None else reward.goal.count or 0
        self.need_amount = 0 if reward.goal is None else reward.goal.amount or 0
        self.claimed: set[str] = set()  # goal-less: customers who claimed it
        self.qualified: set[str] = set()
        self.granted = 0
        self.per_customer: dict[str, int] = {}
        self.per_customer_day: dict[tuple[str, str], int] = {}
        self.per_day: dict[str, int] = {}
        self.exhausted_at: int | None = None

    def may_have(self, customer: str) -> bool:
        return self.members is None or customer in self.members

    def period_at(self, moment_ms: int) -> str:
        """The goal period of a time; any time, not only the latest."""
        assert self.goal is not None
        return self._periods.period(self.goal.window, moment_ms / 1000)[0]

    def move_to(self, moment_ms: int) -> None:
        assert self.goal is not None
        period, ends = self._periods.period(self.goal.window, moment_ms / 1000)
        self.period = period
        self.period_ends = ends * 1000 if ends else 1 << 62  # "C" ends with the campaign
        self.current = self.progress.setdefault(period, {})

    def mcc_may_count(self, mcc: str) -> bool:
        counts = self.mcc_counts.get(mcc)
        if counts is None:
            assert self.goal is not None
            counts = self.mcc_counts[mcc] = self.goal.qualifies(self.min_amount, mcc)
        return counts


class Replay:
    def __init__(
        self, campaign: HotCampaign, zone: ZoneInfo, members: Mapping[str, frozenset[str]]
    ) -> None:
        self.campaign = campaign
        self.calendar = LocalCalendar(zone)
        self.runs = [
            RewardRun(r, members.get(r.audience_id, frozenset()) if r.audience_id else None, zone)
            for r in campaign.rewards
        ]
        self.spent = 0

    def day_of(self, moment_ms: int) -> str:
        return self.calendar.day(moment_ms / 1000)[0]

    def grant(self, run: RewardRun, customer: str, day: str, moment_ms: int) -> bool:
        """A grant if limits, stock and budget allow it (claim.lua's checks, in its order)."""
        r = run.reward
        if run.per_customer.get(customer, 0) >= r.limit:
            return False
        if r.daily_limit and run.per_customer_day.get((customer, day), 0) >= r.daily_limit:
            return False
        if run.granted >= r.stock:
            return False
        if r.daily_stock and run.per_day.get(day, 0) >= r.daily_stock:
            return False
        budget = self.campaign.budget
        if budget is not None and self.spent + r.cost > budget:
            return False
        self._move(run, customer, day, 1)
        if run.granted >= r.stock:
            run.exhausted_at = moment_ms
        return True

    def revoke(self, run: RewardRun, customer: str, day: str) -> None:
        self._move(run, customer, day, -1)
        run.exhausted_at = None  # a unit is free again

    def _move(self, run: RewardRun, customer: str, day: str, by: int) -> None:
        run.granted += by
        self.spent += by * run.reward.cost
        run.per_customer[customer] = run.per_customer.get(customer, 0) + by
        run.per_customer_day[(customer, day)] = run.per_customer_day.get((customer, day), 0) + by
        run.per_day[day] = run.per_day.get(day, 0) + by

    def claim(self, run: RewardRun, customer: str, moment_ms: int) -> None:
        """A reward without a goal: claimed once, at the customer's first transaction."""
        run.claimed.add(customer)
        if run.may_have(customer) and self.grant(run, customer, self.day_of(moment_ms), moment_ms):
            run.qualified.add(customer)

    def reached(self, run: RewardRun, customer: str, progress: Progress, moment_ms: int) -> None:
        run.qualified.add(customer)
        day = self.day_of(moment_ms)
        if self.grant(run, customer, day, moment_ms):
            progress.state, progress.day = GRANTED, day
        else:
            progress.state = MISSED  # the next qualifying transaction tries again

    def take_back(self, customer: str, amount: int, mcc: str, original_ms: int) -> None:
        for run in self.runs:
            goal = run.goal
            if goal is None or not goal.qualifies(amount, mcc) or not run.may_have(customer):
                continue
            progress = run.progress.get(run.period_at(original_ms), {}).get(customer)
            if progress is None:
                continue
            progress.count -= 1
            progress.amount -= amount
            if (
                run.reward.claw_back
                and progress.state == GRANTED
                and not goal.reached(progress.count, progress.amount)
            ):
                self.revoke(run, customer, progress.day)
                progress.state, progress.day = OPEN, ""

    def reverse(
        self, rows: Rows, original: int, customer: str, amount: int, reversed_rows: set[int]
    ) -> None:
        """A reversal of row `original`: applied once, and only to a transaction of the same
        customer and amount."""
        if (
            original not in reversed_rows
            and rows.customers[original] == customer
            and rows.amounts[original] == amount
            and not rows.reversal_ofs[original]
        ):
            reversed_rows.add(original)
            self.take_back(customer, amount, rows.mccs[original], rows.moments[original])

    def run(self, rows: Rows) -> None:
        starts, ends = self.campaign.starts_ms, self.campaign.ends_ms
        seen: dict[str, int] = {}  # event id -> its row
        reversed_rows: set[int] = set()
        held: dict[str, tuple[str, int]] = {}  # original id -> (customer, amount) of a reversal
        customers, amounts, mccs, moments = rows.customers, rows.amounts, rows.mccs, rows.moments
        event_ids, reversal_ofs = rows.event_ids, rows.reversal_ofs
        plain = [run for run in self.runs if run.goal is None]
        goals = [run for run in self.runs if run.goal is not None]
        order: Sequence[int] = range(len(moments))
        if any(moments[i] > moments[i + 1] for i in range(len(moments) - 1)):
            order = sorted(order, key=moments.__getitem__)  # stable: file order among equals
        for i in order:
            moment = moments[i]
            # A transaction outside the window counts for nothing; a reversal is applied
            # whatever its own date, as the live path does (a refund on 1 January of a
            # purchase of 31 December takes the purchase back).
            if not starts <= moment < ends and not reversal_ofs[i]:
                continue
            customer, amount, event_id = customers[i], amounts[i], event_ids[i]
            if event_id:
                if event_id in seen:
                    continue  # a repeat counts once
                seen[event_id] = i
                original_id = reversal_ofs[i]
                if original_id:
                    original = seen.get(original_id)
                    if original is None:
                        # The first reversal held is the one kept, as the live path keeps it.
                        held.setdefault(original_id, (customer, amount))
                    else:
                        self.reverse(rows, original, customer, amount, reversed_rows)
                    continue
                if held and held.get(event_id) == (customer, amount):
                    del held[event_id]
                    reversed_rows.add(i)  # cancelled by the reversal that came first
                    continue
            elif reversal_ofs[i]:
                # A reversal without an id of its own: of an original seen before, or nothing.
                original = seen.get(reversal_ofs[i])
                if original is not None:
                    self.reverse(rows, original, customer, amount, reversed_rows)
                continue
            for run in plain:
                if customer not in run.claimed:
                    self.claim(run, customer, moment)
            mcc = mccs[i]
            for run in goals:
                if amount < run.min_amount or not run.mcc_may_count(mcc):
                    continue
                if run.members is not None and customer not in run.members:
                    continue
                if moment >= run.period_ends:
                    run.move_to(moment)
                progress = run.current.get(customer)
                if progress is None:
                    progress = run.current[customer] = Progress()
                progress.count += 1
                progress.amount += amount
                if (
                    progress.state != GRANTED
                    and progress.count >= run.need_count
                    and progress.amount >= run.need_amount
                ):
                    self.reached(run, customer, progress, moment)

    def result(self, customers: int) -> dict[str, Any]:
        by_reward = [
            {
                "reward_id": run.reward.id,
                "qualified": len(run.qualified),
                "grants": run.granted,
                "cost": run.granted * run.reward.cost,
                "stock_exhausted_at": _time(run.exhausted_at),
            }
            for run in self.runs
        ]
        exhausted = [run.exhausted_at for run in self.runs if run.exhausted_at is not None]
        return {
            "customers": customers,
            "qualified": len(set().union(*(run.qualified for run in self.runs))),
            "grants": sum(run.granted for run in self.runs),
            "cost": self.spent,
            "stock_exhausted_at": _time(min(exhausted) if exhausted else None),
            "by_reward": by_reward,
        }


def _time(ms: int | None) -> str | None:
    return None if ms is None else rfc3339(ms)


def forecast(
    body: bytes,
    campaign: HotCampaign,
    zone: str,
    audience: frozenset[str] | None = None,
    members: Mapping[str, frozenset[str]] | None = None,
) -> dict[str, Any]:
    """The dry run of `body` (CSV) against `campaign`, local periods in time zone `zone`.
    `audience`: only these customers' transactions count (None: everyone's); `members`: the
    members, among the file's customers, of each audience the rewards name.

    Answers the forecast, or `{"rejected": n, "errors": [{"line", "reason"}, ...]}` for a file
    with bad lines (a plain value, so it crosses from a worker process as it is)."""
    rejected = Rejected()
    rows = arrow_rows(body, audience) or parse(body, audience, rejected)
    if rejected.count:
        return {"rejected": rejected.count, "errors": rejected.errors}
    replay = Replay(campaign, ZoneInfo(zone), members or {})
    replay.run(rows)
    return replay.result(rows.customer_count)

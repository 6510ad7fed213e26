"""Dual control on money: who may approve what, and when one approval is not enough.

Whatever puts money at risk (a campaign, a revision of one, a bulk issuance) is approved by
someone who did not make it (maker-checker). Above QUANYI_DUAL_APPROVAL_ABOVE fen it needs two
distinct approvers, at least one of them at head office. The rule is said once, here, for
each of them:

    money = money_of(budget, [(stock, unit_cost), ...])
    needed = required_approvals(money, settings.dual_approval_above)
    check_approver(staff, makers, given, needed)   # raises, or returns
    ...record the approval...; complete once len(given) + 1 >= needed

`given` are the approvals of the current round (since the last submission), oldest first.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from quanyi.access.staff import HEAD_OFFICE, Staff
from quanyi.campaigns.model import Campaign
from quanyi.core.errors import Conflict, Forbidden
from quanyi.stores.db import load_queries

queries = load_queries("quanyi.campaigns", "revisions.sql")

# QUANYI_DUAL_APPROVAL_ABOVE=0: one approver for any amount.
DUAL_OFF = 0


class MakerMayNotApprove(Forbidden):
    code = "maker_may_not_approve"


class HeadOfficeApprovalNeeded(Forbidden):
    """The amount needs two approvers, one of head office, and the first was not."""

    code = "head_office_approval_needed"


class AlreadyApproved(Conflict):
    """The same approver twice: dual control needs two people."""

    code = "already_approved"


@dataclass(frozen=True)
class Approval:
    approver: str
    branch: str
    at: datetime

    @classmethod
    def from_row(cls, row: asyncpg.Record) -> Approval:
        return cls(row["approver"], row["branch"], row["at"])

    def to_json(self) -> dict[str, Any]:
        return {"approver": self.approver, "branch": self.branch, "at": self.at.isoformat()}


def money_of(budget: int | None, rewards: Iterable[tuple[int, int]]) -> int:
    """What can be paid out, in fen: the budget when there is one (nothing is granted beyond
    it), else every unit of stock at its unit cost. `rewards`: (stock, unit cost) pairs."""
    if budget is not None:
        return budget
    return sum(stock * unit_cost for stock, unit_cost in rewards)


def campaign_money(campaign: Campaign) -> int:
    """What a campaign can pay out (money_of its budget and rewards)."""
    return money_of(campaign.budget, ((r.stock, r.unit_cost) for r in campaign.rewards))


def required_approvals(money: int, dual_above: int) -> int:
    """2 when `money` exceeds the threshold (a threshold of 0 turns dual control off), else 1."""
    return 2 if dual_above > DUAL_OFF and money > dual_above else 1


def check_approver(
    staff: Staff, makers: Iterable[str | None], given: Sequence[Approval], needed: int
) -> None:
    """Refuses an approval that would break the rule: a maker (whoever created, edited or
    submitted it) approving, the same approver twice, or a second approval that would leave
    no head-office approver among the two."""
    if staff.username in set(makers):
        raise MakerMayNotApprove(
            "maker-checker: whoever created, edited or submitted it may not approve it"
        )
    if any(a.approver == staff.username for a in given):
        raise AlreadyApproved(
            f"{staff.username} approved this already; a second, different approver must",
            approvals=[a.to_json() for a in given],
            approvals_needed=needed,
        )
    last = len(given) + 1 >= needed
    if needed > 1 and last:
        branches = [a.branch for a in given] + [staff.branch]
        if HEAD_OFFICE not in branches:
            raise HeadOfficeApprovalNeeded(
                f"amounts above the dual-approval threshold need a head-office ({HEAD_OFFICE})"
                " approver among the two; the first was not, so this one must be",
                approvals=[a.to_json() for a in given],
                approvals_needed=needed,
            )


async def approvals_of(
    conn: asyncpg.Connection | asyncpg.Pool, campaign_id: str, revision_id: int | None
) -> list[Approval]:
    """The approvals of the current round, oldest first."""
    rows = await conn.fetch(queries.current_approvals, campaign_id, revision_id)
    return [Approval.from_row(r) for r in rows]


async def approvals_by_campaign(
    conn: asyncpg.Connection | asyncpg.Pool, campaign_ids: list[str]
) -> dict[str, list[Approval]]:
    """The current round's approvals of each of these campaigns (not of their revisions)."""
    found: dict[str, list[Approval]] = {}
    for row in await conn.fetch(queries.current_approvals_of_campaigns, campaign_ids):
        found.setdefault(row["campaign_id"], []).append(Approval.from_row(row))
    return found


async def approve(
    conn: asyncpg.Connection,
    staff: Staff,
    *,
    campaign_id: str,
    revision_id: int | None,
    makers: Iterable[str | None],
    money: int,
    dual_above: int,
) -> tuple[bool, list[Approval], int]:
    """Checks and records `staff`'s approval (the caller holds the row lock of what is
    approved). Returns (complete, approvals of the round including this one, needed)."""
    needed = required_approvals(money, dual_above)
    given = await approvals_of(conn, campaign_id, revision_id)
    check_approver(staff, makers, given, needed)
    row = await conn.fetchrow(
        queries.insert_approval,
        campaign_id,
        revision_id,
        staff.username,
        staff.branch,
        money,
        needed,
    )
    given = [*given, Approval.from_row(row)]
    return len(given) >= needed, given, needed


async def new_round(conn: asyncpg.Connection, campaign_id: str, revision_id: int | None) -> None:
    """A submission: approvals given before it do not count for what is submitted now."""
    await conn.execute(queries.supersede_approvals, campaign_id, revision_id)

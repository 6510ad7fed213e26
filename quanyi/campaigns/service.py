"""The campaign workflow: create, submit, approve (maker-checker), pause, resume, end.

PostgreSQL holds the definitions. Each change is published to Redis inside the transaction that
made it, under the campaign's row lock, so Redis sees changes in the order they were made and a
change Redis did not take is rolled back.
"""

from __future__ import annotations

import builtins
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import asyncpg
import orjson
from redis.asyncio import Redis

from quanyi.access.staff import Staff, audit, unknown_branch
from quanyi.campaigns import approvals, queries
from quanyi.campaigns.approvals import campaign_money
from quanyi.campaigns.budget_reservations import reserve
from quanyi.campaigns.budgets import DEFAULT_RULES, BudgetRules
from quanyi.campaigns.dry_run import DryRuns, audience_branches
from quanyi.campaigns.ending import campaign_ended, prepare_ending
from quanyi.campaigns.model import (
    EDITABLE,
    LIVE,
    RIGHT_EDITABLE,
    TRANSITIONS,
    Campaign,
    CampaignBody,
    CampaignChange,
    CloneBody,
    RightBody,
    RightChange,
    read_body,
)
from quanyi.campaigns.parts import stock_parts_of
from quanyi.campaigns.revisions import Revisions
from quanyi.campaigns.rights import RightLifecycle, refuse_unadmitted
from quanyi.campaigns.view import campaign_views
from quanyi.core.errors import (
    AlreadyExists,
    CampaignNotFound,
    Forbidden,
    InvalidRequest,
    InvalidTransition,
    NotFound,
    RightInUse,
)
from quanyi.inventory.hot_campaigns import Counters, HotCampaigns
from quanyi.inventory.stock_parts import counters_by_part
from quanyi.stores.keys import Keys
from quanyi.stores.scripts import Scripts


def _unknown_vendor(vendor_id: str | None) -> InvalidRequest:
    return InvalidRequest("unknown vendor", {"vendor_id": f"no vendor {vendor_id}"})


def _refuse_bad_quotas(draft: CampaignChange) -> None:
    errors = draft.quota_errors()
    if errors:
        raise InvalidRequest("some channel quotas are invalid", errors)


def _row_json(row: asyncpg.Record) -> dict[str, Any]:
    return {k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in row.items()}


class CampaignService:
    def __init__(
        self,
        pool: asyncpg.Pool,
        redis: Redis,
        keys: Keys,
        *,
        dual_approval_above: int = approvals.DUAL_OFF,
        scripts: Scripts | None = None,
        retention_days: int = 7,
        budget_rules: BudgetRules = DEFAULT_RULES,
    ) -> None:
        self._pool = pool
        # Approval reserves the campaign's budget from its branch's (budget_reservations.py).
        self._budget_rules = budget_rules
        self._redis = redis
        self._keys = keys
        # Above this many fen a campaign or a revision needs two approvers
        # (quanyi/campaigns/approvals.py; QUANYI_DUAL_APPROVAL_ABOVE, 0: one for any amount).
        self._dual_above = dual_approval_above
        self._stock = HotCampaigns(redis, keys)
        # Dry runs: who may ask, and how many at once (quanyi/campaigns/dry_run.py).
        self.dry_runs = DryRuns(pool, redis, keys, self._load)
        # Admission, suspension and retirement of rights (quanyi/campaigns/rights.py).
        self.rights = RightLifecycle(pool, self._load, self._publish)
        # Revisions of approved campaigns (quanyi/campaigns/revisions.py).
        self.revisions = Revisions(
            pool,
            redis,
            keys,
            scripts or Scripts(redis),
            self._load,
            dual_approval_above,
            retention_days * 86_400,
            budget_rules=budget_rules,
        )

    # rights

    async def create_right(self, staff: Staff, body: bytes | Mapping[str, Any]) -> dict[str, Any]:
        """`body`: a RightBody, as JSON bytes or a mapping (quanyi/campaigns/model.py read_body)."""
        staff.require_role("marketer")
        staff.require_head_office()
        right = read_body(RightBody, body)
        async with self._pool.acquire() as conn, conn.transaction():
            try:
                row = await conn.fetchrow(
                    queries.insert_right,
                    right.id,
                    right.name,
                    right.kind,
                    right.face_value,
                    right.unit_cost,
                    right.vendor_id,
                    staff.username,
                )
            except asyncpg.UniqueViolationError:
                raise AlreadyExists(f"right {right.id} exists") from None
            except asyncpg.ForeignKeyViolationError:
                raise _unknown_vendor(right.vendor_id) from None
            await audit(conn, staff, "right.create", f"right:{right.id}", _row_json(row))
        return _row_json(row)

    async def list_rights(self) -> list[dict[str, Any]]:
        return [_row_json(r) for r in await self._pool.fetch(queries.list_rights)]

    async def update_right(
        self, staff: Staff, right_id: str, body: bytes | Mapping[str, Any]
    ) -> dict[str, Any]:
        """Change a right that no live campaign uses. A pending, approved or paused campaign
        pays out the face value, cost and vendor its approver saw (copied into its rewards), and
        the catalog must not drift from them unseen: such an edit is refused. Drafts and rejected
        campaigns copy the new figures when next edited; ended ones keep their own copy."""
        staff.require_role("marketer")
        staff.require_head_office()
        right = read_body(RightChange, body).with_id(right_id)
        async with self._pool.acquire() as conn, conn.transaction():
            # Under the right's lock: a submit that makes a campaign live waits for this edit,
            # or this edit sees the campaign it made live (see transition).
            locked = await conn.fetchrow(queries.lock_right, right.id)
            if locked is None:
                raise NotFound(f"no right {right_id}")
            if locked["state"] not in RIGHT_EDITABLE:
                raise InvalidTransition(
                    f"cannot edit a right that is {locked['state']}", state=locked["state"]
                )
            in_use = [
                r["id"] for r in await conn.fetch(queries.campaigns_using_right, right.id, LIVE)
            ]
            if in_use:
                raise RightInUse(
                    f"right {right.id} is paid out by live campaigns; end them first",
                    campaigns=in_use,
                )
            try:
                # Proposed again: an approver other than the editor admits what changed.
                row = await conn.fetchrow(
                    queries.update_right,
                    right.id,
                    right.name,
                    right.kind,
                    right.face_value,
                    right.unit_cost,
                    right.vendor_id,
                    staff.username,
                )
            except asyncpg.ForeignKeyViolationError:
                raise _unknown_vendor(right.vendor_id) from None
            if row is None:
                raise NotFound(f"no right {right_id}")
            await audit(conn, staff, "right.update", f"right:{right.id}", _row_json(row))
        return _row_json(row)

    # campaigns

    async def create(self, staff: Staff, body: bytes | Mapping[str, Any]) -> Campaign:
        """`body`: a CampaignBody, as JSON bytes or a mapping."""
        staff.require_role("marketer")
        draft = read_body(CampaignBody, body)
        staff.require_branch(draft.branch)
        _refuse_bad_quotas(draft)
        async with self._pool.acquire() as conn, conn.transaction():
            rights = await self._rights(conn, staff, draft)
            try:
                await conn.execute(
                    queries.insert_campaign,
                    draft.id,
                    draft.name,
                    draft.branch,
                    draft.starts_at,
                    draft.ends_at,
                    draft.channels,
                    draft.budget,
                    draft.return_stock_on_failure,
                    staff.username,
                    draft.stock_parts,
                )
            except asyncpg.UniqueViolationError:
                raise AlreadyExists(f"campaign {draft.id} exists") from None
            except asyncpg.ForeignKeyViolationError:
                raise unknown_branch() from None
            await self._insert_rewards(conn, draft, rights)
            campaign = await self._load(conn, draft.id)
            await audit(conn, staff, "campaign.create", f"campaign:{draft.id}", campaign.to_json())
            await self._publish(conn, campaign)
        return campaign

    async def update(
        self, staff: Staff, campaign_id: str, body: bytes | Mapping[str, Any]
    ) -> Campaign:
        """Replace the definition of a draft or rejected campaign (`body`: a CampaignChange)."""
        staff.require_role("marketer")
        draft = read_body(CampaignChange, body).with_id(campaign_id)
        _refuse_bad_quotas(draft)
        async with self._pool.acquire() as conn, conn.transaction():
            current = await self._load(conn, campaign_id, lock=True)
            staff.require_branch(current.branch)
            staff.require_branch(draft.branch)
            if current.status not in EDITABLE:
                raise InvalidTransition(
                    f"cannot edit a campaign that is {current.status}", state=current.status
                )
            rights = await self._rights(conn, staff, draft)
            try:
                await conn.execute(
                    queries.update_campaign,
                    draft.id,
                    draft.name,
                    draft.branch,
                    draft.starts_at,
                    draft.ends_at,
                    draft.channels,
                    draft.budget,
                    draft.return_stock_on_failure,
                    staff.username,
                    draft.stock_parts,
                )
            except asyncpg.ForeignKeyViolationError:
                raise unknown_branch() from None
            await conn.execute(queries.delete_rewards, campaign_id)
            await self._insert_rewards(conn, draft, rights)
            campaign = await self._load(conn, campaign_id)
            await audit(
                conn, staff, "campaign.update", f"campaign:{campaign_id}", campaign.to_json()
            )
            await self._publish(conn, campaign)
        return campaign

    @staticmethod
    async def _rights(
        conn: asyncpg.Connection, staff: Staff, draft: CampaignBody
    ) -> dict[str, asyncpg.Record]:
        """The rights the rewards name: their face value, cost and vendor are copied into each
        reward, so what the campaign pays out is what its approver sees. The audiences they
        name must be of a branch `staff` acts on: a campaign's dry run tells who is in them."""
        rights = {
            r["id"]: r
            for r in await conn.fetch(queries.rights_by_ids, [r.right_id for r in draft.rewards])
        }
        unknown = {
            f"rewards[{i}].right_id": "no such right"
            for i, r in enumerate(draft.rewards)
            if r.right_id not in rights
        }
        named = [r.audience_id for r in draft.rewards if r.audience_id]
        audiences = await audience_branches(conn, named)
        unknown.update(
            {
                f"rewards[{i}].audience_id": "no such audience"
                for i, r in enumerate(draft.rewards)
                if r.audience_id and r.audience_id not in audiences
            }
        )
        if unknown:
            raise InvalidRequest("unknown rights or audiences", unknown)
        refuse_unadmitted(rights, [r.right_id for r in draft.rewards])
        for branch in sorted(set(audiences.values())):
            staff.require_branch(branch)
        return rights

    @staticmethod
    async def _insert_rewards(
        conn: asyncpg.Connection, draft: CampaignBody, rights: dict[str, asyncpg.Record]
    ) -> None:
        for position, r in enumerate(draft.rewards):
            await conn.execute(
                queries.insert_reward,
                draft.id,
                r.id,
                r.right_id,
                rights[r.right_id]["face_value"],
                rights[r.right_id]["unit_cost"],
                rights[r.right_id]["vendor_id"],
                r.stock,
                r.daily_stock,
                r.per_customer_limit,
                r.per_customer_daily_limit,
                position,
                r.audience_id,
                orjson.dumps(r.goal.model_dump(exclude_none=True)).decode() if r.goal else None,
                r.grant_mode,
                r.claw_back,
            )
            if r.channel_quota is not None:
                await conn.execute(
                    queries.set_channel_quota,
                    draft.id,
                    r.id,
                    orjson.dumps(r.channel_quota).decode(),
                )

    async def transition(
        self, staff: Staff, campaign_id: str, action: str, *, ends_by: datetime | None = None
    ) -> Campaign:
        """`ends_by` (the scheduler's): end only a campaign whose ends_at is not after it, as
        read under the lock (a revision may have just extended the window); else unchanged."""
        sources, target, roles = TRANSITIONS[action]
        staff.require_role(*roles)
        async with self._pool.acquire() as conn, conn.transaction():
            campaign = await self._load(conn, campaign_id, lock=True)
            if ends_by is not None and campaign.ends_at > ends_by:
                return campaign
            staff.require_branch(campaign.branch)
            if campaign.status not in sources:
                raise InvalidTransition(
                    f"cannot {action} a campaign that is {campaign.status}",
                    state=campaign.status,
                )
            makers = {*campaign.makers, campaign.created_by, campaign.submitted_by}
            if action == "approve" and staff.username in makers:
                raise Forbidden(
                    "maker-checker: whoever created, edited or submitted any version of a"
                    " campaign may not approve it"
                )
            if action == "submit":
                await approvals.new_round(conn, campaign_id, None)
            if action == "approve" and not await self._approval_completes(conn, staff, campaign):
                return campaign  # still pending: a second approver is needed
            if action == "approve":
                await reserve(conn, self._budget_rules, staff, campaign)
            if target in LIVE and campaign.status not in LIVE:
                # Its rights become frozen: wait for an edit of one of them in flight. They
                # must be admitted, and stay so (a suspension or retirement waits for this).
                right_ids = sorted({r.right_id for r in campaign.rewards})
                shared = await conn.fetch(queries.share_rights, right_ids)
                refuse_unadmitted({r["id"]: r for r in shared}, right_ids)
            if action in ("submit", "approve"):
                # Where its vendors are reached becomes frozen (vendors/registry.py update):
                # wait for a change of one of them in flight, or make that change see this.
                vendors = sorted({r.vendor_id for r in campaign.rewards if r.vendor_id})
                if vendors:
                    await conn.fetch(queries.share_vendors, vendors)
            await conn.execute(queries.set_status, campaign_id, target, staff.username)
            await audit(
                conn,
                staff,
                f"campaign.{action}",
                f"campaign:{campaign_id}",
                {"from": campaign.status, "to": target},
            )
            campaign = await self._load(conn, campaign_id)
            # An ending's reads that may fail come before Redis is told (quanyi/campaigns/ending.py).
            ending = (
                await prepare_ending(conn, self._redis, self._keys, campaign)
                if target == "ended"
                else None
            )
            await self._publish(conn, campaign)
            if ending is not None:
                # Redis refuses claims from here, so its counters are final: figures, phase,
                # campaign.ended, budget release.
                await campaign_ended(
                    conn, self._redis, self._keys, campaign, staff.username, ending
                )
        return campaign

    async def _approval_completes(
        self, conn: asyncpg.Connection, staff: Staff, campaign: Campaign
    ) -> bool:
        """Dual control: records `staff`'s approval; False while a second one is needed (the
        campaign stays pending). Refused for a maker, a repeat, or a second approval that
        leaves head office out (quanyi/campaigns/approvals.py)."""
        complete, given, needed = await approvals.approve(
            conn,
            staff,
            campaign_id=campaign.id,
            revision_id=None,
            makers=(*campaign.makers, campaign.created_by, campaign.submitted_by),
            money=campaign_money(campaign),
            dual_above=self._dual_above,
        )
        if not complete:
            await audit(
                conn,
                staff,
                "campaign.approve.first",
                f"campaign:{campaign.id}",
                {"approvals": len(given), "needed": needed},
            )
        return complete

    async def clone(
        self, staff: Staff, campaign_id: str, body: bytes | Mapping[str, Any]
    ) -> Campaign:
        """A new draft of the caller's from campaign `campaign_id`: its name, branch, rewards
        (audiences and goals included), channels and budget, with a new id and window (`body`:
        a CloneBody). What the rewards pay out is copied from the catalog again, as for any
        new draft; the draft is the caller's, as if drafted by them."""
        staff.require_role("marketer")
        async with self._pool.acquire() as conn:
            source = await self._load(conn, campaign_id)
        staff.require_branch(source.branch)
        window = read_body(CloneBody, body)
        draft = {
            "id": window.id,
            "name": source.name,
            "branch": source.branch,
            "starts_at": window.starts_at.isoformat(),
            "ends_at": window.ends_at.isoformat(),
            "channels": list(source.channels),
            "budget": source.budget,
            "return_stock_on_failure": source.return_stock_on_failure,
            "stock_parts": source.stock_parts,
            "rewards": [
                {
                    "id": r.id,
                    "right_id": r.right_id,
                    "stock": r.stock,
                    "daily_stock": r.daily_stock,
                    "per_customer_limit": r.per_customer_limit,
                    "per_customer_daily_limit": r.per_customer_daily_limit,
                    "audience_id": r.audience_id,
                    "goal": r.goal,
                    "grant": r.grant,
                    "claw_back": r.claw_back,
                    "channel_quota": r.channel_quota,
                }
                for r in source.rewards
            ],
        }
        campaign = await self.create(staff, draft)
        await audit(
            self._pool, staff, "campaign.clone", f"campaign:{campaign.id}", {"from": campaign_id}
        )
        return campaign

    async def get(self, staff: Staff, campaign_id: str) -> dict[str, Any]:
        staff.require_reader("marketer", "approver")
        async with self._pool.acquire() as conn:
            campaign = await self._load(conn, campaign_id)
            given = await approvals.approvals_of(conn, campaign_id, None)
        staff.require_branch(campaign.branch)
        [view] = await campaign_views(
            self._pool, self._redis, self._keys, [campaign], with_ledger=True
        )
        self._show_approvals(view, campaign, given)
        return view

    async def list(self, staff: Staff) -> list[dict[str, Any]]:
        """The campaigns the staff member's branch may see, each as `get` shows it but without
        the ledger counts (quanyi/campaigns/view.py); rewards and counters are read for all at once."""
        staff.require_reader("marketer", "approver")
        async with self._pool.acquire() as conn:
            rows = await conn.fetch(queries.list_campaigns, staff.visible_branches())
            rewards: dict[str, list[asyncpg.Record]] = {row["id"]: [] for row in rows}
            for reward in await conn.fetch(queries.rewards_of_campaigns, list(rewards)):
                rewards[reward["campaign_id"]].append(reward)
            given = await approvals.approvals_by_campaign(conn, list(rewards))
        campaigns = [Campaign.from_rows(row, rewards[row["id"]]) for row in rows]
        views = await campaign_views(self._pool, self._redis, self._keys, campaigns)
        for campaign, view in zip(campaigns, views, strict=True):
            self._show_approvals(view, campaign, given.get(campaign.id, []))
        return views

    def _show_approvals(
        self, view: dict[str, Any], campaign: Campaign, given: builtins.list[approvals.Approval]
    ) -> None:
        view["approvals"] = [a.to_json() for a in given]
        view["approvals_needed"] = approvals.required_approvals(
            campaign_money(campaign), self._dual_above
        )

    async def stock_levels(self) -> builtins.list[tuple[str, str, int, int]]:
        """(campaign, reward, stock, remaining) for every approved or paused campaign."""
        levels = []
        rows = await self._pool.fetch(queries.live_rewards)
        # A split campaign's granted is the sum over its parts.
        parts = await stock_parts_of(self._pool, list({r["campaign_id"] for r in rows}))
        for row in rows:
            live = await self._stock.counters(
                row["campaign_id"], [row["reward_id"]], parts=parts.get(row["campaign_id"], 1)
            )
            remaining = max(row["stock"] - live.granted[row["reward_id"]], 0)
            levels.append((row["campaign_id"], row["reward_id"], row["stock"], remaining))
        return levels

    async def publish_all(self) -> int:
        """Publish every campaign again: heals Redis after a lost write or a restart that lost data."""
        ids = [r["id"] for r in await self._pool.fetch(queries.all_campaign_ids)]
        for campaign_id in ids:
            async with self._pool.acquire() as conn, conn.transaction():
                await self._publish(conn, await self._load(conn, campaign_id, lock=True))
        return len(ids)

    async def _load(
        self, conn: asyncpg.Connection, campaign_id: str, lock: bool = False
    ) -> Campaign:
        row = await conn.fetchrow(
            queries.lock_campaign if lock else queries.get_campaign, campaign_id
        )
        if row is None:
            raise CampaignNotFound(f"no campaign {campaign_id}")
        return Campaign.from_rows(row, await conn.fetch(queries.campaign_rewards, campaign_id))

    async def publish_one(self, campaign_id: str) -> bool:
        """Publish one campaign again (Redis lost it); False when there is no such campaign."""
        async with self._pool.acquire() as conn, conn.transaction():
            try:
                campaign = await self._load(conn, campaign_id, lock=True)
            except CampaignNotFound:
                return False
            await self._publish(conn, campaign)
        return True

    async def _publish(self, conn: asyncpg.Connection, campaign: Campaign) -> None:
        # Counters are only initialised from these (when Redis lost them): live grants only.
        totals = await conn.fetch(queries.live_ledger_totals, campaign.id)
        by_channel: dict[str, dict[str, int]] = {}
        if any(r.channel_quota is not None for r in campaign.rewards):
            for row in await conn.fetch(queries.live_ledger_channel_totals, campaign.id):
                by_channel.setdefault(row["reward_id"], {})[row["channel_id"]] = row["granted"]
        by_part = None
        if campaign.stock_parts > 1 and totals:
            rows = await conn.fetch(queries.live_ledger_customer_totals, campaign.id)
            by_part = counters_by_part(campaign.id, campaign.stock_parts, rows)
        counters = Counters(
            granted={r["reward_id"]: r["granted"] for r in totals},
            spent=sum(r["spent"] for r in totals),
            by_channel=by_channel,
            by_part=by_part,
        )
        await self._stock.publish(campaign.hot(), counters, fresh=campaign.approved_at is None)

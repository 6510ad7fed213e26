-- Dual control on money, and revisions of approved campaigns (quanyi/campaigns/approvals.py,
-- quanyi/campaigns/revisions.py).

-- A change to an approved or paused campaign (reward stock, daily stock, limits, end, budget,
-- channels), made and checked like a campaign: draft -> pending -> applied (approved and
-- applied in one step), or rejected; `approved` is for a revision approved to apply later
-- (none does yet). `changes` holds only the fields it changes.
CREATE TABLE IF NOT EXISTS campaign_revisions (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    campaign_id  text NOT NULL REFERENCES campaigns (id),
    changes      jsonb NOT NULL,
    -- The campaign as it was when the revision was made: what the approver compares against.
    before       jsonb NOT NULL,
    status       text NOT NULL DEFAULT 'draft'
        CHECK (status IN ('draft', 'pending', 'approved', 'rejected', 'applied')),
    created_by   text NOT NULL,
    submitted_by text,
    rejected_by  text,
    created_at   timestamptz NOT NULL DEFAULT now(),
    submitted_at timestamptz,
    decided_at   timestamptz,
    applied_at   timestamptz
);
CREATE INDEX IF NOT EXISTS campaign_revisions_by_campaign
    ON campaign_revisions (campaign_id, id);
-- One open revision per campaign: an approver never weighs two changes made against the same
-- campaign that each assume the other is not there.
CREATE UNIQUE INDEX IF NOT EXISTS campaign_revisions_one_open
    ON campaign_revisions (campaign_id) WHERE status IN ('draft', 'pending');

-- Every approval given, of a campaign (revision_id null) or of a revision: who, from which
-- branch, when. A submission starts a new round: earlier approvals are marked superseded and
-- no longer count towards the two that large amounts need.
CREATE TABLE IF NOT EXISTS campaign_approvals (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    campaign_id   text NOT NULL REFERENCES campaigns (id),
    revision_id   bigint REFERENCES campaign_revisions (id),
    approver      text NOT NULL,
    branch        text NOT NULL,
    -- The amount approved (fen) and how many approvals it needed.
    money         bigint NOT NULL,
    needed        smallint NOT NULL CHECK (needed BETWEEN 1 AND 2),
    at            timestamptz NOT NULL DEFAULT now(),
    superseded_at timestamptz
);
CREATE INDEX IF NOT EXISTS campaign_approvals_by_campaign
    ON campaign_approvals (campaign_id, revision_id, id);
-- Never twice by the same approver in one round.
CREATE UNIQUE INDEX IF NOT EXISTS campaign_approvals_once
    ON campaign_approvals (campaign_id, coalesce(revision_id, 0), approver)
    WHERE superseded_at IS NULL;

-- How many customer buckets the campaign's counters are spread over, fixed once a revision
-- changes its stock: the bucket of each customer must not move (its totals would be lost).
ALTER TABLE campaigns ADD COLUMN IF NOT EXISTS customer_buckets integer
    CHECK (customer_buckets > 0);

-- Bulk issuance: a job issues one reward of a campaign to every member of an audience, through
-- the claim path (channel "bulk"), after an approver other than its creator approved it.
-- The job row is also its checkpoint: the next bucket of the frozen member list and the counts
-- of every bucket before it, written after each batch in one UPDATE.

CREATE TABLE issuance_jobs (
    id text PRIMARY KEY,
    campaign_id text NOT NULL REFERENCES campaigns (id),
    reward_id text NOT NULL,
    audience_id text NOT NULL REFERENCES audiences (id),
    branch text NOT NULL,
    state text NOT NULL DEFAULT 'pending_approval'
        CHECK (state IN ('pending_approval', 'running', 'paused', 'done', 'cancelled')),
    -- What it can pay out (fen), and how many approvals that needs (campaigns/approvals.py).
    money bigint NOT NULL CHECK (money >= 0),
    approvals_needed integer NOT NULL CHECK (approvals_needed IN (1, 2)),
    created_by text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    approved_by text,
    approved_at timestamptz,
    -- The member list frozen at approval: how many buckets it has and how many members.
    buckets integer,
    total bigint NOT NULL DEFAULT 0,
    -- The checkpoint: buckets [0, next_bucket) are done and counted below.
    next_bucket integer NOT NULL DEFAULT 0,
    issued bigint NOT NULL DEFAULT 0,
    failed bigint NOT NULL DEFAULT 0,
    skipped jsonb NOT NULL DEFAULT '{}',
    started_at timestamptz,
    finished_at timestamptz,
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX issuance_jobs_running ON issuance_jobs (created_at) WHERE state = 'running';
CREATE INDEX issuance_jobs_campaign ON issuance_jobs (campaign_id);

CREATE TABLE issuance_approvals (
    job_id text NOT NULL REFERENCES issuance_jobs (id),
    approver text NOT NULL,
    branch text NOT NULL,
    at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (job_id, approver)
);

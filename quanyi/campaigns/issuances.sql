-- name: insert_job
INSERT INTO issuance_jobs
    (id, campaign_id, reward_id, audience_id, branch, money, approvals_needed, created_by)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
RETURNING *

-- name: get_job
SELECT * FROM issuance_jobs WHERE id = $1

-- name: lock_job
SELECT * FROM issuance_jobs WHERE id = $1 FOR UPDATE

-- name: job_approvals
SELECT approver, branch, at FROM issuance_approvals WHERE job_id = $1 ORDER BY at, approver

-- name: insert_approval
INSERT INTO issuance_approvals (job_id, approver, branch) VALUES ($1, $2, $3)
RETURNING approver, branch, at

-- name: start_job
-- The last approval: the member list is frozen (buckets, total) and the job runs.
UPDATE issuance_jobs
SET state = 'running', approved_by = $2, approved_at = now(), buckets = $3, total = $4,
    started_at = now(), updated_at = now()
WHERE id = $1
RETURNING *

-- name: set_state
UPDATE issuance_jobs
SET state = $2, updated_at = now(),
    finished_at = CASE WHEN $2 IN ('done', 'cancelled') THEN now() ELSE finished_at END
WHERE id = $1
RETURNING *

-- name: running_jobs
SELECT id FROM issuance_jobs WHERE state = 'running' ORDER BY created_at LIMIT $1

-- name: checkpoint
-- After a batch: its counts and the next bucket, from the checkpoint the batch started at
-- (a pause or a cancel given meanwhile keeps the batch's counts: its claims were made). The
-- state is returned, so a pause or a cancel is seen before the next batch.
UPDATE issuance_jobs
SET next_bucket = $2, issued = issued + $3, failed = failed + $4,
    skipped = (
        SELECT coalesce(jsonb_object_agg(k, v), '{}')
        FROM (
            SELECT k, sum(v::bigint) AS v
            FROM (
                SELECT key AS k, value::text AS v FROM jsonb_each(skipped)
                UNION ALL
                SELECT key, value::text FROM jsonb_each($5::jsonb)
            ) parts
            GROUP BY k
        ) summed
    ),
    updated_at = now()
WHERE id = $1 AND state <> 'done' AND next_bucket = $6
RETURNING state

-- name: finish_job
UPDATE issuance_jobs
SET state = 'done', finished_at = now(), updated_at = now()
WHERE id = $1 AND state = 'running' AND next_bucket >= buckets
RETURNING *

-- name: other_running_jobs
SELECT count(*) FROM issuance_jobs WHERE campaign_id = $1 AND id <> $2 AND state = 'running'

-- name: campaign_of_job
SELECT c.id, c.branch, c.budget, c.status FROM campaigns c WHERE c.id = $1

-- name: reward_of_campaign
SELECT id, stock, unit_cost, grant_mode FROM rewards WHERE campaign_id = $1 AND id = $2

-- name: audience_of_job
SELECT id, branch, members FROM audiences WHERE id = $1

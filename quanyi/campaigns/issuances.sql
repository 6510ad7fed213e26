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

-- name: make_lanes
-- The job's lanes, once, from its checkpoint: the buckets left split into $2 ranges. The caller
-- holds the job row (lock_job), so two workers taking the job up at once make one set.
INSERT INTO issuance_lanes (job_id, lane, next_bucket, end_bucket)
SELECT j.id, l,
       j.next_bucket + (coalesce(j.buckets, 0) - j.next_bucket) * l / $2,
       j.next_bucket + (coalesce(j.buckets, 0) - j.next_bucket) * (l + 1) / $2
FROM issuance_jobs j CROSS JOIN generate_series(0, $2 - 1) AS l
WHERE j.id = $1 AND NOT EXISTS (SELECT 1 FROM issuance_lanes WHERE job_id = $1)

-- name: lanes_left
SELECT lane, next_bucket, end_bucket FROM issuance_lanes
WHERE job_id = $1 AND next_bucket < end_bucket
ORDER BY lane

-- name: get_lane
-- A lane as it is now, read again once its lock is held (another worker may have moved it on
-- since lanes_left read it).
SELECT lane, next_bucket, end_bucket FROM issuance_lanes WHERE job_id = $1 AND lane = $2

-- name: checkpoint
-- After a batch of a lane: the lane's next bucket, from the one the batch started at ($7),
-- and the batch's counts added to the job, in one statement (a pause or a cancel given
-- meanwhile keeps the batch's counts: its claims were made). The job's state is returned, so
-- a pause or a cancel is seen before the next batch; no row: the lane was not where the batch
-- started (nothing is counted).
-- The job's next_bucket follows as a low-water mark, the lowest lane's next bucket (every
-- bucket below it is done), so a worker of the version before lanes that takes the job up
-- (a rolling upgrade, a rollback) resumes from a true checkpoint. The lanes are read as the
-- statement's snapshot has them, this lane at $3: another lane moved meanwhile is seen behind,
-- so the mark never moves back (greatest) and the next checkpoint catches up.
WITH moved AS (
    UPDATE issuance_lanes SET next_bucket = $3
    WHERE job_id = $1 AND lane = $2 AND next_bucket = $7
    RETURNING job_id
)
UPDATE issuance_jobs j
SET issued = issued + $4, failed = failed + $5,
    skipped = (
        SELECT coalesce(jsonb_object_agg(k, v), '{}')
        FROM (
            SELECT k, sum(v::bigint) AS v
            FROM (
                SELECT key AS k, value::text AS v FROM jsonb_each(j.skipped)
                UNION ALL
                SELECT key, value::text FROM jsonb_each($6::jsonb)
            ) parts
            GROUP BY k
        ) summed
    ),
    next_bucket = greatest(j.next_bucket, (
        SELECT min(CASE WHEN l.lane = $2 THEN $3 ELSE l.next_bucket END)
        FROM issuance_lanes l WHERE l.job_id = $1
    )),
    updated_at = now()
FROM moved
WHERE j.id = moved.job_id AND j.state <> 'done'
RETURNING j.state

-- name: finish_job
-- Every lane done: the job is.
UPDATE issuance_jobs
SET state = 'done', next_bucket = coalesce(buckets, 0), finished_at = now(), updated_at = now()
WHERE id = $1 AND state = 'running'
  AND EXISTS (SELECT 1 FROM issuance_lanes WHERE job_id = $1)
  AND NOT EXISTS (SELECT 1 FROM issuance_lanes WHERE job_id = $1 AND next_bucket < end_bucket)
RETURNING *

-- name: other_running_jobs
SELECT count(*) FROM issuance_jobs WHERE campaign_id = $1 AND id <> $2 AND state = 'running'

-- name: campaign_of_job
SELECT c.id, c.branch, c.budget, c.status FROM campaigns c WHERE c.id = $1

-- name: reward_of_campaign
SELECT id, stock, unit_cost, grant_mode FROM rewards WHERE campaign_id = $1 AND id = $2

-- name: audience_of_job
SELECT id, branch, members FROM audiences WHERE id = $1

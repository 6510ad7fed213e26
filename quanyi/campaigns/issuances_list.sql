-- name: list_jobs
-- Newest first, optionally of one campaign and one state, within the caller's branches ($3 null:
-- every branch). The job's branch is its campaign's, copied when the job was made.
SELECT * FROM issuance_jobs
WHERE ($1::text IS NULL OR campaign_id = $1)
  AND ($2::text IS NULL OR state = $2)
  AND ($3::text[] IS NULL OR branch = ANY ($3))
ORDER BY created_at DESC, id DESC
LIMIT $4

-- name: approvals_of_jobs
SELECT job_id, approver, branch, at FROM issuance_approvals
WHERE job_id = ANY ($1::text[])
ORDER BY job_id, at, approver

-- Revisions of approved campaigns and the approvals of campaigns and revisions
-- (quanyi/campaigns/revisions.py, quanyi/campaigns/approvals.py).

-- name: current_approvals
-- The approvals of the current round (since the last submission), oldest first.
SELECT approver, branch, at FROM campaign_approvals
WHERE campaign_id = $1 AND revision_id IS NOT DISTINCT FROM $2::bigint AND superseded_at IS NULL
ORDER BY id

-- name: current_approvals_of_campaigns
SELECT campaign_id, approver, branch, at FROM campaign_approvals
WHERE campaign_id = ANY($1::text[]) AND revision_id IS NULL AND superseded_at IS NULL
ORDER BY id

-- name: insert_approval
INSERT INTO campaign_approvals (campaign_id, revision_id, approver, branch, money, needed)
VALUES ($1, $2, $3, $4, $5, $6)
RETURNING approver, branch, at

-- name: supersede_approvals
UPDATE campaign_approvals SET superseded_at = now()
WHERE campaign_id = $1 AND revision_id IS NOT DISTINCT FROM $2::bigint AND superseded_at IS NULL

-- name: revision_approvals
-- Every approval of a campaign's revisions, each with its revision.
SELECT revision_id, approver, branch, at FROM campaign_approvals
WHERE campaign_id = $1 AND revision_id IS NOT NULL AND superseded_at IS NULL
ORDER BY id

-- name: insert_revision
INSERT INTO campaign_revisions (campaign_id, changes, before, created_by)
VALUES ($1, $2::jsonb, $3::jsonb, $4)
RETURNING *

-- name: get_revision
SELECT * FROM campaign_revisions WHERE campaign_id = $1 AND id = $2

-- name: lock_revision
SELECT * FROM campaign_revisions WHERE campaign_id = $1 AND id = $2 FOR UPDATE

-- name: list_revisions
SELECT * FROM campaign_revisions WHERE campaign_id = $1 ORDER BY id

-- name: submit_revision
UPDATE campaign_revisions SET status = 'pending', submitted_by = $3, submitted_at = now()
WHERE campaign_id = $1 AND id = $2
RETURNING *

-- name: reject_revision
UPDATE campaign_revisions SET status = 'rejected', rejected_by = $3, decided_at = now()
WHERE campaign_id = $1 AND id = $2
RETURNING *

-- name: applied_revision
UPDATE campaign_revisions SET status = 'applied', decided_at = now(), applied_at = now()
WHERE campaign_id = $1 AND id = $2
RETURNING *

-- name: revise_campaign
-- The campaign's new end, budget and channels; a new version for the hot path's caches. The
-- customer buckets are fixed at what they were, whatever the new stock.
UPDATE campaigns
SET ends_at = $2, budget = $3, channels = $4, version = version + 1,
    customer_buckets = coalesce(customer_buckets, $5), updated_at = now()
WHERE id = $1

-- name: revise_reward
UPDATE rewards
SET stock = $3, daily_stock = $4, per_customer_limit = $5, per_customer_daily_limit = $6
WHERE campaign_id = $1 AND id = $2

-- name: set_parts_to_give
UPDATE campaign_revisions SET parts_to_give = $3::jsonb WHERE campaign_id = $1 AND id = $2

-- name: parts_given
UPDATE campaign_revisions SET parts_to_give = NULL WHERE campaign_id = $1 AND id = $2

-- name: revisions_with_parts_to_give
-- Applied revisions whose raise some stock part does not hold yet, oldest first.
SELECT r.campaign_id, r.id, r.parts_to_give, c.stock_parts
FROM campaign_revisions r JOIN campaigns c ON c.id = r.campaign_id
WHERE r.parts_to_give IS NOT NULL
ORDER BY r.id
LIMIT $1

-- name: parts_to_give_of_campaign
SELECT id, parts_to_give FROM campaign_revisions
WHERE campaign_id = $1 AND parts_to_give IS NOT NULL
ORDER BY id

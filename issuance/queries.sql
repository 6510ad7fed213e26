-- Grant reads: one grant, a customer's grants, a grant's events, from the ledger's tables.

-- name: grant_by_id
SELECT * FROM grants WHERE grant_id = $1

-- name: grants_of_customer
SELECT * FROM grants WHERE customer_id = $1 ORDER BY granted_at DESC, grant_id DESC LIMIT $2

-- name: events_of_grant
SELECT event, at, actor, detail, outbox_id FROM grant_events WHERE grant_id = $1
ORDER BY split_part(outbox_id, '-', 1)::bigint, split_part(outbox_id, '-', 2)::bigint

-- name: campaign_branch
-- The branch of a grant's campaign: staff revoke grants of their own branch only.
SELECT branch FROM campaigns WHERE id = $1


-- name: campaign_branches
-- The branch of each campaign of a list of grants: staff read grants of their subtree only.
SELECT id, branch FROM campaigns WHERE id = ANY($1::text[])

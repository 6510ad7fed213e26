-- name: insert_right
-- A new right is proposed: an approver who did not propose it admits it (right_transition).
INSERT INTO rights (id, name, kind, face_value, unit_cost, vendor_id, created_by, state,
                    proposed_by, proposers)
VALUES ($1, $2, $3, $4, $5, $6, $7, 'proposed', $7, ARRAY[$7::text])
RETURNING *

-- name: list_rights
SELECT * FROM rights ORDER BY id

-- name: rights_by_ids
SELECT id, face_value, unit_cost, vendor_id, state FROM rights WHERE id = ANY($1::text[])

-- name: lock_right
SELECT id, state FROM rights WHERE id = $1 FOR UPDATE

-- name: share_rights
-- Held while a campaign goes live: its rights must be admitted, and stay so until it is.
SELECT id, state FROM rights WHERE id = ANY($1::text[]) ORDER BY id FOR SHARE

-- name: share_vendors
-- The vendors a campaign's rewards route to, held still while it goes live (vendors lock_vendor).
SELECT id FROM vendors WHERE id = ANY($1::text[]) ORDER BY id FOR SHARE

-- name: campaigns_using_right
SELECT DISTINCT c.id
FROM campaigns c JOIN rewards r ON r.campaign_id = c.id
WHERE r.right_id = $1 AND c.status = ANY($2::text[])
ORDER BY c.id

-- name: insert_campaign
INSERT INTO campaigns (id, name, branch, starts_at, ends_at, channels, budget,
                       return_stock_on_failure, created_by, makers, stock_parts)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, ARRAY[$9::text], $10)

-- name: insert_reward
INSERT INTO rewards (campaign_id, id, right_id, face_value, unit_cost, vendor_id, stock,
                     daily_stock, per_customer_limit, per_customer_daily_limit, position,
                     audience_id, goal, grant_mode, claw_back)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13::jsonb, $14, $15)

-- name: audiences_by_ids
SELECT id, branch FROM audiences WHERE id = ANY($1::text[])

-- name: get_campaign
SELECT * FROM campaigns WHERE id = $1

-- name: lock_campaign
SELECT * FROM campaigns WHERE id = $1 FOR UPDATE

-- name: campaign_rewards
-- With the state of each reward's right: a suspended right's rewards are published suspended.
SELECT rw.*, rt.state AS right_state
FROM rewards rw LEFT JOIN rights rt ON rt.id = rw.right_id
WHERE rw.campaign_id = $1 ORDER BY rw.position

-- name: rewards_of_campaigns
SELECT rw.*, rt.state AS right_state
FROM rewards rw LEFT JOIN rights rt ON rt.id = rw.right_id
WHERE rw.campaign_id = ANY($1::text[]) ORDER BY rw.campaign_id, rw.position

-- name: ledger_counts
-- One campaign's grants as the ledger holds them, per reward: read through the index
-- grants_campaign (campaign_id, reward_id), so only this campaign's rows. The campaign list
-- never asks (it would read every grant of 500 campaigns on every call).
SELECT reward_id,
       count(*) AS persisted,
       count(*) FILTER (WHERE status = 'revoked') AS revoked,
       count(*) FILTER (WHERE status = 'failed') AS failed
FROM grants WHERE campaign_id = $1 GROUP BY reward_id

-- name: list_campaigns
SELECT * FROM campaigns WHERE ($1::text[] IS NULL OR branch = ANY($1)) ORDER BY created_at DESC, id LIMIT 500

-- name: all_campaign_ids
SELECT id FROM campaigns ORDER BY id

-- name: set_status
UPDATE campaigns
SET status = $2,
    submitted_by = CASE WHEN $2 = 'pending' THEN $3 ELSE submitted_by END,
    makers = CASE WHEN $2 = 'pending' AND NOT $3 = ANY(makers) THEN makers || $3::text
                  ELSE makers END,
    approved_by = CASE WHEN $2 = 'approved' AND approved_by IS NULL THEN $3 ELSE approved_by END,
    approved_at = CASE WHEN $2 = 'approved' AND approved_at IS NULL THEN now() ELSE approved_at END,
    updated_at = now()
WHERE id = $1

-- name: live_ledger_totals
-- What Redis counts for a campaign, from the ledger: every grant once, except those whose
-- stock came back (transition.lua): revoked ones, and failed ones when the campaign returns
-- stock on failure. A redriven grant is `granted` again and counts again.
SELECT g.reward_id, count(*) AS granted, coalesce(sum(g.unit_cost), 0)::bigint AS spent
FROM grants g JOIN campaigns c ON c.id = g.campaign_id
WHERE g.campaign_id = $1
  AND g.status <> 'revoked'
  AND NOT (g.status = 'failed' AND c.return_stock_on_failure)
GROUP BY g.reward_id

-- name: live_ledger_customer_totals
-- As live_ledger_totals, per customer: a split campaign's counters per part (each customer's
-- grants are in the customer's part, inventory/stock_parts.py counters_by_part).
SELECT g.customer_id, g.reward_id, count(*) AS granted,
       coalesce(sum(g.unit_cost), 0)::bigint AS spent
FROM grants g JOIN campaigns c ON c.id = g.campaign_id
WHERE g.campaign_id = $1
  AND g.status <> 'revoked'
  AND NOT (g.status = 'failed' AND c.return_stock_on_failure)
GROUP BY g.customer_id, g.reward_id

-- name: live_rewards
SELECT c.id AS campaign_id, r.id AS reward_id, r.stock
FROM campaigns c JOIN rewards r ON r.campaign_id = c.id
WHERE c.status IN ('approved', 'paused')

-- name: update_right
-- An edit is a new proposal ($7, the editor): of an admitted right, made by the editor alone;
-- of a proposed one, by its proposers and the editor. None of them may admit it.
UPDATE rights SET name = $2, kind = $3, face_value = $4, unit_cost = $5, vendor_id = $6,
                  proposers = CASE WHEN state = 'proposed' AND NOT $7 = ANY(proposers)
                                   THEN proposers || $7::text
                                   WHEN state = 'proposed' THEN proposers
                                   ELSE ARRAY[$7::text] END,
                  state = 'proposed', proposed_by = $7, proposed_at = now()
WHERE id = $1
RETURNING *

-- name: update_campaign
UPDATE campaigns
SET name = $2, branch = $3, starts_at = $4, ends_at = $5, channels = $6, budget = $7,
    return_stock_on_failure = $8, version = version + 1, updated_at = now(),
    makers = CASE WHEN $9 = ANY(makers) THEN makers ELSE makers || $9::text END,
    stock_parts = $10
WHERE id = $1

-- name: delete_rewards
DELETE FROM rewards WHERE campaign_id = $1

-- name: get_right_for_update
SELECT * FROM rights WHERE id = $1 FOR UPDATE

-- name: right_vendor_state
-- The vendor of a right being admitted or resumed, held still until this commits (vendors
-- lock_vendor): a vendor suspended or offboarded at the same time is seen, or sees the right.
SELECT id, state FROM vendors WHERE id = $1 FOR SHARE

-- name: campaigns_for_update
-- Taken before the right's own lock, in the order a campaign's transition takes them
-- (campaign, then its rights), so a suspension and a transition never wait for each other.
SELECT id FROM campaigns WHERE id = ANY($1::text[]) ORDER BY id FOR UPDATE

-- name: set_right_state
UPDATE rights
SET state = $2,
    admitted_by = CASE WHEN $2 = 'admitted' THEN $3 ELSE admitted_by END,
    admitted_at = CASE WHEN $2 = 'admitted' THEN now() ELSE admitted_at END,
    suspended_by = CASE WHEN $2 = 'suspended' THEN $3 ELSE suspended_by END,
    suspended_at = CASE WHEN $2 = 'suspended' THEN now() ELSE suspended_at END,
    retired_by = CASE WHEN $2 = 'retired' THEN $3 ELSE retired_by END,
    retired_at = CASE WHEN $2 = 'retired' THEN now() ELSE retired_at END
WHERE id = $1
RETURNING *

-- name: set_channel_quota
-- A reward's channel quotas (README "Channel quotas"), written after insert_reward.
UPDATE rewards SET channel_quota = $3::jsonb WHERE campaign_id = $1 AND id = $2

-- name: live_ledger_channel_totals
-- As live_ledger_totals, per reward and channel: the per-channel counters of channel quotas.
SELECT g.reward_id, g.channel_id, count(*) AS granted
FROM grants g JOIN campaigns c ON c.id = g.campaign_id
WHERE g.campaign_id = $1
  AND g.status <> 'revoked'
  AND NOT (g.status = 'failed' AND c.return_stock_on_failure)
GROUP BY g.reward_id, g.channel_id

-- name: split_campaigns
-- Which of these campaigns Redis counts in several hashes (campaigns/parts.py).
SELECT id, stock_parts FROM campaigns WHERE id = ANY($1::text[]) AND stock_parts > 1

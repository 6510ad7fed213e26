-- name: insert_vendor
-- A new vendor is proposed ($12, by whom); an approver who did not propose it activates it.
INSERT INTO vendors (id, name, adapter, base_url, timeout_ms, max_in_flight, max_attempts,
                     backoff_base_ms, backoff_max_ms, public_keys, signing_key, state,
                     proposed_by)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, 'proposed', $12)
RETURNING *

-- name: update_vendor
UPDATE vendors
SET name = $2, adapter = $3, base_url = $4, timeout_ms = $5, max_in_flight = $6,
    max_attempts = $7, backoff_base_ms = $8, backoff_max_ms = $9, public_keys = $10,
    signing_key = $11, updated_at = now()
WHERE id = $1
RETURNING *

-- name: get_vendor
SELECT * FROM vendors WHERE id = $1

-- name: lock_vendor
-- Held by a change of the vendor until it commits; a submit or approval that routes rewards to
-- the vendor takes a share lock on it (campaigns share_vendors), so the two never cross.
SELECT * FROM vendors WHERE id = $1 FOR NO KEY UPDATE

-- name: campaigns_routed_to_vendor
SELECT DISTINCT c.id
FROM campaigns c JOIN rewards r ON r.campaign_id = c.id
WHERE r.vendor_id = $1 AND c.status = ANY($2::text[])
ORDER BY c.id

-- name: list_vendors
SELECT * FROM vendors ORDER BY id

-- name: reward_routes
-- What each reward pays out: the copy frozen into the reward, never the catalog's current figure.
SELECT r.campaign_id, r.id AS reward_id, r.vendor_id, r.face_value
FROM rewards r
WHERE r.campaign_id = $1

-- name: insert_codes
INSERT INTO vendor_codes (vendor_id, right_id, code)
SELECT $1, $2, code FROM unnest($3::text[]) AS code
ON CONFLICT DO NOTHING
RETURNING code

-- name: reward_vendor
SELECT vendor_id FROM rewards WHERE campaign_id = $1 AND id = $2

-- name: right_vendor
SELECT vendor_id FROM rights WHERE id = $1

-- name: grant_by_code
SELECT grant_id FROM grants WHERE vendor_id = $1 AND code = $2

-- name: get_redemption
SELECT * FROM redemptions WHERE vendor_id = $1 AND redemption_id = $2

-- name: insert_redemption
INSERT INTO redemptions (vendor_id, redemption_id, grant_id, code, redeemed_at, outcome, reason, body)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
ON CONFLICT DO NOTHING

-- name: expiring_grants
SELECT grant_id FROM grants WHERE status = 'fulfilled' AND expires_at < $1 LIMIT $2

-- name: vendor_grants
SELECT g.grant_id, g.code, g.status, redeemed.redemption_id, redeemed.redeemed_at
FROM grants g
LEFT JOIN LATERAL (
    SELECT redemption_id, redeemed_at FROM redemptions r
    WHERE r.vendor_id = g.vendor_id AND r.grant_id = g.grant_id AND r.outcome = 'applied'
    LIMIT 1
) redeemed ON true
WHERE g.vendor_id = $1 AND g.granted_at >= $2 AND g.granted_at < $3

-- name: insert_statement
INSERT INTO statements (vendor_id, uploaded_by, rows, report, day, billed_issued,
                        billed_redeemed, summary)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
RETURNING id, uploaded_at

-- name: codepool_demand
SELECT r.campaign_id, r.id AS reward_id, r.right_id, r.stock
FROM rewards r JOIN campaigns c ON c.id = r.campaign_id
WHERE r.vendor_id = $1 AND c.status IN ('approved', 'paused')


-- name: request_holders
-- The grant the ledger holds for each (channel, request id) of a batch, when it is another
-- grant than the one at hand: that one is a duplicate only a Redis data loss can make. One
-- look-up per pair through the UNIQUE (channel_id, request_id) index.
SELECT t.grant_id, g.grant_id AS holder
FROM unnest($1::text[], $2::text[], $3::text[]) AS t (grant_id, channel_id, request_id)
JOIN grants g ON g.channel_id = t.channel_id AND g.request_id = t.request_id
WHERE g.grant_id <> t.grant_id

-- name: set_vendor_state
UPDATE vendors
SET state = $2, updated_at = now(),
    activated_by = CASE WHEN $2 = 'active' THEN $3 ELSE activated_by END,
    activated_at = CASE WHEN $2 = 'active' THEN now() ELSE activated_at END,
    suspended_by = CASE WHEN $2 = 'suspended' THEN $3 ELSE suspended_by END,
    suspended_at = CASE WHEN $2 = 'suspended' THEN now() ELSE suspended_at END,
    offboarded_by = CASE WHEN $2 = 'offboarded' THEN $3 ELSE offboarded_by END,
    offboarded_at = CASE WHEN $2 = 'offboarded' THEN now() ELSE offboarded_at END
WHERE id = $1
RETURNING *

-- name: rights_held_by_vendor
-- The rights that keep a vendor from being offboarded: admitted ones, and suspended ones
-- (which may be resumed). Read under the vendor's lock: a right being admitted on it at the
-- same time waits for the vendor (campaigns right_vendor_state), then sees it offboarded.
SELECT id, state FROM rights
WHERE vendor_id = $1 AND state IN ('admitted', 'suspended')
ORDER BY id


-- name: code_pool_rights
-- The rights a vendor fulfils: each has a code pool at a codepool vendor, demand or none.
SELECT id AS right_id FROM rights WHERE vendor_id = $1 ORDER BY id

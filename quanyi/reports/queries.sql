-- name: summary
-- The key placeholder is one of quanyi/reports/model.py GROUP_KEYS (a fixed expression, never
-- input).
-- $1, $2: the first and last local day; $3: one campaign or NULL; $4: the branches the caller
-- may see, NULL for every branch.
SELECT {key} AS key,
       sum(issued)::bigint AS issued, sum(fulfilled)::bigint AS fulfilled,
       sum(redeemed)::bigint AS redeemed, sum(expired)::bigint AS expired,
       sum(revoked)::bigint AS revoked, sum(failed)::bigint AS failed,
       sum(cost)::bigint AS cost, sum(face_value_issued)::bigint AS face_value_issued,
       sum(face_value_redeemed)::bigint AS face_value_redeemed
FROM report_daily
WHERE day BETWEEN $1 AND $2
  AND ($3::text IS NULL OR campaign_id = $3)
  AND ($4::text[] IS NULL OR branch = ANY($4))
GROUP BY 1
ORDER BY 1

-- name: campaign_branch
SELECT branch FROM campaigns WHERE id = $1

-- name: export_grants
-- $1, $2: [start, end) of the export. No voucher code: it is the customer's to redeem with.
SELECT grant_id, campaign_id, reward_id, right_id, customer_id, channel_id, request_id,
       unit_cost, status, granted_at, persisted_at, vendor_id, reference, expires_at
-- In no order: rows stream as the scan finds them, with no sort of the whole range first.
FROM grants WHERE granted_at >= $1 AND granted_at < $2

-- name: count_grants
SELECT count(*) FROM grants WHERE granted_at >= $1 AND granted_at < $2

-- name: export_card_events
SELECT channel_id, event_id, type, customer_id, amount, mcc, occurred_at, reversal_of, outcome,
       counted::text AS counted, grants::text AS grants, received_at
FROM card_events WHERE occurred_at >= $1 AND occurred_at < $2

-- name: count_card_events
SELECT count(*) FROM card_events WHERE occurred_at >= $1 AND occurred_at < $2

-- name: export_rollups
-- $1, $2: the first and last local day, both included.
SELECT * FROM report_daily WHERE day BETWEEN $1 AND $2 ORDER BY day, campaign_id, reward_id, channel_id

-- name: count_rollups
SELECT count(*) FROM report_daily WHERE day BETWEEN $1 AND $2

-- name: liability
-- Per right and vendor: grants by status now, and the face value of the fulfilled ones (the
-- outstanding liability). $1: the branches the caller may see, NULL for every branch.
SELECT right_id, vendor_id,
       sum(grants)::bigint AS issued,
       coalesce(sum(grants) FILTER (WHERE status = 'fulfilled'), 0)::bigint AS outstanding,
       coalesce(sum(grants * face_value) FILTER (WHERE status = 'fulfilled'), 0)::bigint
           AS outstanding_face_value,
       coalesce(sum(grants) FILTER (WHERE status = 'redeemed'), 0)::bigint AS redeemed,
       coalesce(sum(grants) FILTER (WHERE status = 'expired'), 0)::bigint AS expired
FROM report_status
WHERE ($1::text[] IS NULL OR branch = ANY($1))
GROUP BY right_id, vendor_id
ORDER BY right_id, vendor_id

-- name: vendor_days
-- Per vendor and local day ($1..$2; $3 one vendor or NULL): what we issued there (by the day
-- of the grant) and what its callbacks redeemed (by the day of the redemption), beside the
-- latest statement the vendor sent for that day, if any.
WITH ours AS (
    SELECT vendor_id, day, sum(issued)::bigint AS issued, sum(cost)::bigint AS cost,
           sum(redeemed)::bigint AS redeemed_by_callback
    FROM report_daily
    WHERE vendor_id <> '' AND day BETWEEN $1 AND $2 AND ($3::text IS NULL OR vendor_id = $3)
    GROUP BY vendor_id, day
), theirs AS (
    SELECT DISTINCT ON (vendor_id, day) vendor_id, day, id AS statement_id, rows,
           billed_issued, billed_redeemed, summary::text AS summary
    FROM statements
    WHERE day BETWEEN $1 AND $2 AND ($3::text IS NULL OR vendor_id = $3)
    ORDER BY vendor_id, day, id DESC
)
SELECT vendor_id, day, coalesce(o.issued, 0) AS issued, coalesce(o.cost, 0) AS cost,
       coalesce(o.redeemed_by_callback, 0) AS redeemed_by_callback, t.statement_id, t.rows,
       t.billed_issued, t.billed_redeemed, t.summary
FROM ours o FULL JOIN theirs t USING (vendor_id, day)
ORDER BY vendor_id, day

-- name: funnel_campaign
-- The campaign's branch, the members of the audiences its rewards name (each audience once;
-- NULL when no reward names one), and whether a reward has a goal.
SELECT c.branch,
       (SELECT sum(a.members)::bigint
        FROM audiences a
        WHERE a.id IN (SELECT audience_id FROM rewards WHERE campaign_id = c.id)) AS audience,
       EXISTS (SELECT 1 FROM rewards WHERE campaign_id = c.id AND goal IS NOT NULL) AS has_goal
FROM campaigns c WHERE c.id = $1

-- name: funnel_grants
-- The campaign's grants now: all of them, those fulfilled at some point (fulfilled, redeemed
-- or expired since), and the redeemed.
SELECT coalesce(sum(grants), 0)::bigint AS issued,
       coalesce(sum(grants) FILTER (WHERE status IN ('fulfilled', 'redeemed', 'expired')), 0)::bigint
           AS fulfilled,
       coalesce(sum(grants) FILTER (WHERE status = 'redeemed'), 0)::bigint AS redeemed
FROM report_status WHERE campaign_id = $1

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

-- name: insert_grants
-- Idempotent: an entry delivered twice (a worker died before its XACK) inserts nothing.
INSERT INTO grants (grant_id, campaign_id, reward_id, right_id, customer_id, channel_id,
                    request_id, unit_cost, granted_at, outbox_id)
SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
                     $7::text[], $8::bigint[], $9::timestamptz[], $10::text[])
ON CONFLICT DO NOTHING
RETURNING grant_id

-- name: existing_grants
SELECT grant_id FROM grants WHERE grant_id = ANY($1::text[])

-- name: grant_by_id
SELECT * FROM grants WHERE grant_id = $1

-- name: grants_of_customer
SELECT * FROM grants WHERE customer_id = $1 ORDER BY granted_at DESC, grant_id DESC LIMIT $2

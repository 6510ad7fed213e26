-- name: insert_grants
-- Idempotent: an entry delivered twice (a worker died before its XACK) inserts nothing.
INSERT INTO grants (grant_id, campaign_id, reward_id, right_id, customer_id, channel_id,
                    request_id, unit_cost, granted_at, outbox_id)
SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
                     $7::text[], $8::bigint[], $9::timestamptz[], $10::text[])
ON CONFLICT DO NOTHING
RETURNING grant_id

-- name: existing_grants
SELECT g.grant_id FROM unnest($1::text[]) AS t (grant_id) JOIN grants g USING (grant_id)

-- name: insert_events
INSERT INTO grant_events (grant_id, event, at, actor, detail, outbox_id)
SELECT * FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::text[], $5::jsonb[],
                     $6::text[])
ON CONFLICT DO NOTHING
RETURNING grant_id

-- name: refresh_status
-- A grant's status is its latest event in outbox order, whichever order the entries reached
-- the ledger in; its code and reference come from its latest fulfilment. Ids are unnested and
-- looked up one by one through the index: a generic plan of `= ANY($1)` cannot know the array
-- is small, and scanned the whole events table for every batch.
UPDATE grants g
SET status = latest.status,
    vendor_id = coalesce(f.detail ->> 'vendor_id', g.vendor_id),
    code = coalesce(f.detail ->> 'code', g.code),
    reference = coalesce(f.detail ->> 'reference', g.reference),
    expires_at = coalesce((f.detail ->> 'expires_at')::timestamptz, g.expires_at)
FROM unnest($1::text[]) AS t (grant_id)
CROSS JOIN LATERAL (
    SELECT CASE e.event WHEN 'redriven' THEN 'granted' ELSE e.event END AS status
    FROM grant_events e
    WHERE e.grant_id = t.grant_id
    ORDER BY split_part(e.outbox_id, '-', 1)::bigint DESC,
             split_part(e.outbox_id, '-', 2)::bigint DESC
    LIMIT 1
) latest
LEFT JOIN LATERAL (
    SELECT e.detail
    FROM grant_events e
    WHERE e.grant_id = t.grant_id AND e.event = 'fulfilled'
    ORDER BY split_part(e.outbox_id, '-', 1)::bigint DESC,
             split_part(e.outbox_id, '-', 2)::bigint DESC
    LIMIT 1
) f ON true
WHERE g.grant_id = t.grant_id

-- name: insert_card_events
-- Idempotent on (channel_id, event_id): the card system's resend, or an entry delivered twice,
-- inserts nothing.
INSERT INTO card_events (channel_id, event_id, type, customer_id, amount, mcc, occurred_at,
                         reversal_of, outcome, counted, grants, received_at, outbox_id)
SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[], $6::text[],
                     $7::timestamptz[], $8::text[], $9::text[], $10::jsonb[], $11::jsonb[],
                     $12::timestamptz[], $13::text[])
ON CONFLICT (channel_id, event_id) DO NOTHING

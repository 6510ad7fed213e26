-- name: lock_ledger
-- A transaction that writes events of their own outbox entries (transitions: they may meet
-- their grant, written by another worker at the same time) runs alone across processes: a
-- grant and its event written at once by two workers would each miss the other (neither sees
-- the other's uncommitted row), leaving the grant's status and the report rollups without the
-- event for good.
SELECT pg_advisory_xact_lock(7263005173)

-- name: lock_ledger_shared
-- A transaction of grants only (and the events born with them, in the same entries) meets no
-- event of another transaction: such transactions run side by side, and only beside each
-- other (lock_ledger waits for them, they wait for it). Their rollup upserts add up row by row.
SELECT pg_advisory_xact_lock_shared(7263005173)

-- name: stage_grants
-- The batch's grants are copied (COPY) here, then inserted from here: COPY is the fastest way
-- in, and the INSERT keeps the ledger idempotent (ON CONFLICT DO NOTHING). One table per
-- connection, emptied at every commit.
CREATE TEMP TABLE IF NOT EXISTS ledger_grants_in (
    grant_id text, campaign_id text, reward_id text, right_id text, customer_id text,
    channel_id text, request_id text, unit_cost bigint, granted_at timestamptz, outbox_id text,
    status text
) ON COMMIT DELETE ROWS

-- name: insert_staged_grants
-- Idempotent: an entry delivered twice (a worker died before its XACK) inserts nothing. Each
-- grant comes with the status the batch's own events give it (the worker works it out).
INSERT INTO grants (grant_id, campaign_id, reward_id, right_id, customer_id, channel_id,
                    request_id, unit_cost, granted_at, outbox_id, status)
SELECT grant_id, campaign_id, reward_id, right_id, customer_id, channel_id, request_id,
       unit_cost, granted_at, outbox_id, status
FROM ledger_grants_in
ORDER BY grant_id
ON CONFLICT DO NOTHING
RETURNING grant_id

-- name: grants_with_events
-- Of the grants $1, those with events in the ledger already (events that reached it first).
SELECT DISTINCT t.grant_id FROM unnest($1::text[]) AS t (grant_id)
WHERE EXISTS (SELECT 1 FROM grant_events e WHERE e.grant_id = t.grant_id)

-- name: events_of_grants
-- Every event of the grants $1 (grants inserted now whose events reached the ledger first),
-- for the batch's rollups to count with the rest (batch.py).
SELECT e.grant_id, e.event, e.at FROM unnest($1::text[]) AS t (grant_id)
JOIN grant_events e USING (grant_id)

-- name: add_status_counts
-- report_status: the counts a batch moved, summed by the worker (rollups.py BatchRollups).
INSERT INTO report_status AS s (campaign_id, reward_id, status, right_id, vendor_id, branch,
                                face_value, grants)
SELECT t.campaign_id, t.reward_id, t.status, t.right_id, coalesce(r.vendor_id, ''),
       coalesce(c.branch, ''), coalesce(r.face_value, 0), t.n
FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[])
     AS t (campaign_id, reward_id, status, right_id, n)
LEFT JOIN rewards r ON r.campaign_id = t.campaign_id AND r.id = t.reward_id
LEFT JOIN campaigns c ON c.id = t.campaign_id
ON CONFLICT (campaign_id, reward_id, status) DO UPDATE SET grants = s.grants + EXCLUDED.grants

-- name: add_daily
-- report_daily: a batch's grants and their events, summed by day, campaign, reward and channel
-- by the worker (rollups.py BatchRollups); face values are the reward's times the counts, as
-- roll_up_grants and roll_up_events sum them.
INSERT INTO report_daily AS d (day, campaign_id, reward_id, channel_id, right_id, vendor_id,
                               branch, issued, cost, face_value_issued, fulfilled, redeemed,
                               expired, revoked, failed, face_value_redeemed)
SELECT t.day, t.campaign_id, t.reward_id, t.channel_id, t.right_id, coalesce(r.vendor_id, ''),
       coalesce(c.branch, ''), t.issued, t.cost, t.issued * coalesce(r.face_value, 0),
       t.fulfilled, t.redeemed, t.expired, t.revoked, t.failed,
       t.redeemed * coalesce(r.face_value, 0)
FROM unnest($1::date[], $2::text[], $3::text[], $4::text[], $5::text[], $6::bigint[],
            $7::bigint[], $8::bigint[], $9::bigint[], $10::bigint[], $11::bigint[],
            $12::bigint[])
     AS t (day, campaign_id, reward_id, channel_id, right_id, issued, cost, fulfilled,
           redeemed, expired, revoked, failed)
LEFT JOIN rewards r ON r.campaign_id = t.campaign_id AND r.id = t.reward_id
LEFT JOIN campaigns c ON c.id = t.campaign_id
ON CONFLICT (day, campaign_id, reward_id, channel_id) DO UPDATE
SET issued = d.issued + EXCLUDED.issued,
    cost = d.cost + EXCLUDED.cost,
    face_value_issued = d.face_value_issued + EXCLUDED.face_value_issued,
    fulfilled = d.fulfilled + EXCLUDED.fulfilled,
    redeemed = d.redeemed + EXCLUDED.redeemed,
    expired = d.expired + EXCLUDED.expired,
    revoked = d.revoked + EXCLUDED.revoked,
    failed = d.failed + EXCLUDED.failed,
    face_value_redeemed = d.face_value_redeemed + EXCLUDED.face_value_redeemed

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

-- name: request_holders
-- The grant the ledger holds for each (channel, request id), when it is another grant than the
-- one at hand (a duplicate only a Redis data loss can make), as vendors/queries.sql asks it.
SELECT t.grant_id, g.grant_id AS holder
FROM unnest($1::text[], $2::text[], $3::text[]) AS t (grant_id, channel_id, request_id)
JOIN grants g ON g.channel_id = t.channel_id AND g.request_id = t.request_id
WHERE g.grant_id <> t.grant_id

-- name: insert_events
INSERT INTO grant_events (grant_id, event, at, actor, detail, outbox_id)
SELECT * FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::text[], $5::jsonb[],
                     $6::text[])
-- Keyed by (grant_id, outbox_id): an outbox id is unique in its own shard's stream only
-- (migration 0021); a redelivered entry repeats the pair and writes nothing.
ON CONFLICT (grant_id, outbox_id) DO NOTHING
RETURNING outbox_id, grant_id, event, at

-- name: refresh_status
-- A grant's status is its latest event in outbox order, whichever order the entries reached
-- the ledger in; its code and reference come from its latest fulfilment. Ids are unnested and
-- looked up one by one through the index: a generic plan of `= ANY($1)` cannot know the array
-- is small, and scanned the whole events table for every batch. Returns each grant's status
-- before and after, for the status counts (move_status_counts): `prior` reads the row as the
-- statement found it.
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
CROSS JOIN LATERAL (SELECT p.status FROM grants p WHERE p.grant_id = t.grant_id) prior
WHERE g.grant_id = t.grant_id
RETURNING g.grant_id, prior.status AS before, g.status AS after, g.campaign_id, g.reward_id,
          g.right_id

-- name: insert_card_events
-- One row per (channel_id, event_id). With several shards an event counted in campaigns of
-- several shards comes in one outbox entry per shard, each naming its own shard's goals and
-- grants: a later one merges into the row (its goals and grants added, the outcome that moved
-- progress kept over one that did not; the row keeps its first outbox id). A set union, so
-- the card system's resend, or an entry delivered twice, changes nothing (and writes nothing).
-- The rows of one call are merged already (entries.py merge_card_event_rows): an upsert may
-- touch a row once per statement.
INSERT INTO card_events AS e (channel_id, event_id, type, customer_id, amount, mcc, occurred_at,
                              reversal_of, outcome, counted, grants, received_at, outbox_id)
SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[], $6::text[],
                     $7::timestamptz[], $8::text[], $9::text[], $10::jsonb[], $11::jsonb[],
                     $12::timestamptz[], $13::text[])
ON CONFLICT (channel_id, event_id) DO UPDATE
SET counted = e.counted || coalesce(
        (SELECT jsonb_agg(x.item ORDER BY x.n)
         FROM jsonb_array_elements(EXCLUDED.counted) WITH ORDINALITY AS x (item, n)
         WHERE NOT e.counted @> jsonb_build_array(x.item)), '[]'::jsonb),
    grants = e.grants || coalesce(
        (SELECT jsonb_agg(x.item ORDER BY x.n)
         FROM jsonb_array_elements(EXCLUDED.grants) WITH ORDINALITY AS x (item, n)
         WHERE NOT e.grants @> jsonb_build_array(x.item)), '[]'::jsonb),
    outcome = CASE
        WHEN array_position(ARRAY['uncounted', 'held', 'cancelled', 'reversal', 'counted'],
                            EXCLUDED.outcome)
             > array_position(ARRAY['uncounted', 'held', 'cancelled', 'reversal', 'counted'],
                              e.outcome)
        THEN EXCLUDED.outcome ELSE e.outcome END
WHERE NOT (e.counted @> EXCLUDED.counted AND e.grants @> EXCLUDED.grants)
   OR array_position(ARRAY['uncounted', 'held', 'cancelled', 'reversal', 'counted'],
                     EXCLUDED.outcome)
      > array_position(ARRAY['uncounted', 'held', 'cancelled', 'reversal', 'counted'], e.outcome)

-- name: roll_up_grants
-- $1: the grants this transaction inserted (each counted once, as the insert returned it only
-- once); $2: the time zone whose calendar days the reports use.
INSERT INTO report_daily AS d (day, campaign_id, reward_id, channel_id, right_id, vendor_id,
                               branch, issued, cost, face_value_issued)
SELECT (g.granted_at AT TIME ZONE $2)::date, g.campaign_id, g.reward_id, g.channel_id,
       min(g.right_id), coalesce(min(r.vendor_id), ''), coalesce(min(c.branch), ''),
       count(*), sum(g.unit_cost), coalesce(sum(r.face_value), 0)
FROM unnest($1::text[]) AS t (grant_id)
JOIN grants g USING (grant_id)
LEFT JOIN rewards r ON r.campaign_id = g.campaign_id AND r.id = g.reward_id
LEFT JOIN campaigns c ON c.id = g.campaign_id
GROUP BY 1, 2, 3, 4
ON CONFLICT (day, campaign_id, reward_id, channel_id) DO UPDATE
SET issued = d.issued + EXCLUDED.issued,
    cost = d.cost + EXCLUDED.cost,
    face_value_issued = d.face_value_issued + EXCLUDED.face_value_issued

-- name: roll_up_events
-- The grant events to count now, each exactly once: every event of a grant this transaction
-- inserted ($1; an event may have reached the ledger before its grant, uncounted until now),
-- and every event this transaction inserted ($2 grant ids and $3 outbox ids, pairwise: an
-- outbox id is unique in its own shard's stream only) whose grant the ledger holds.
-- An event inserted before its grant was counted by neither then; a grant inserted earlier had
-- its events counted as they came. $4: the reports' time zone.
WITH counted AS (
    SELECT e.outbox_id, e.grant_id, e.event, e.at
    FROM unnest($1::text[]) AS t (grant_id) JOIN grant_events e USING (grant_id)
    UNION
    SELECT e.outbox_id, e.grant_id, e.event, e.at
    FROM unnest($2::text[], $3::text[]) AS t (grant_id, outbox_id)
    JOIN grant_events e USING (grant_id, outbox_id)
)
INSERT INTO report_daily AS d (day, campaign_id, reward_id, channel_id, right_id, vendor_id,
                               branch, fulfilled, redeemed, expired, revoked, failed,
                               face_value_redeemed)
SELECT (e.at AT TIME ZONE $4)::date, g.campaign_id, g.reward_id, g.channel_id,
       min(g.right_id), coalesce(min(r.vendor_id), ''), coalesce(min(c.branch), ''),
       count(*) FILTER (WHERE e.event = 'fulfilled'),
       count(*) FILTER (WHERE e.event = 'redeemed'),
       count(*) FILTER (WHERE e.event = 'expired'),
       count(*) FILTER (WHERE e.event = 'revoked'),
       count(*) FILTER (WHERE e.event = 'failed'),
       coalesce(sum(r.face_value) FILTER (WHERE e.event = 'redeemed'), 0)
FROM counted e
JOIN grants g USING (grant_id)
LEFT JOIN rewards r ON r.campaign_id = g.campaign_id AND r.id = g.reward_id
LEFT JOIN campaigns c ON c.id = g.campaign_id
WHERE e.event <> 'redriven'
GROUP BY 1, 2, 3, 4
ON CONFLICT (day, campaign_id, reward_id, channel_id) DO UPDATE
SET fulfilled = d.fulfilled + EXCLUDED.fulfilled,
    redeemed = d.redeemed + EXCLUDED.redeemed,
    expired = d.expired + EXCLUDED.expired,
    revoked = d.revoked + EXCLUDED.revoked,
    failed = d.failed + EXCLUDED.failed,
    face_value_redeemed = d.face_value_redeemed + EXCLUDED.face_value_redeemed

-- name: grant_ids_after
-- The rollup rebuild's pages: grant ids in order, after $1.
SELECT grant_id FROM grants WHERE grant_id > $1 ORDER BY grant_id LIMIT $2

-- name: move_status_counts
-- report_status: each grant of $1 leaves its status of $2 (NULL: a grant just inserted) for
-- its status of $3, in the transaction that changed it.
WITH moved AS (
    SELECT * FROM unnest($1::text[], $2::text[], $3::text[]) AS m (grant_id, before, after)
    WHERE before IS DISTINCT FROM after
), changes AS (
    SELECT grant_id, before AS status, -1 AS n FROM moved WHERE before IS NOT NULL
    UNION ALL
    SELECT grant_id, after, 1 FROM moved
)
INSERT INTO report_status AS s (campaign_id, reward_id, status, right_id, vendor_id, branch,
                                face_value, grants)
SELECT g.campaign_id, g.reward_id, ch.status, min(g.right_id), coalesce(min(r.vendor_id), ''),
       coalesce(min(c.branch), ''), coalesce(min(r.face_value), 0), sum(ch.n)
FROM changes ch
JOIN grants g USING (grant_id)
LEFT JOIN rewards r ON r.campaign_id = g.campaign_id AND r.id = g.reward_id
LEFT JOIN campaigns c ON c.id = g.campaign_id
GROUP BY g.campaign_id, g.reward_id, ch.status
ON CONFLICT (campaign_id, reward_id, status) DO UPDATE SET grants = s.grants + EXCLUDED.grants

-- name: count_statuses
-- report_status from scratch: the grants of each campaign reward in each status.
INSERT INTO report_status (campaign_id, reward_id, status, right_id, vendor_id, branch,
                           face_value, grants)
SELECT g.campaign_id, g.reward_id, g.status, min(g.right_id), coalesce(min(r.vendor_id), ''),
       coalesce(min(c.branch), ''), coalesce(min(r.face_value), 0), count(*)
FROM grants g
LEFT JOIN rewards r ON r.campaign_id = g.campaign_id AND r.id = g.reward_id
LEFT JOIN campaigns c ON c.id = g.campaign_id
GROUP BY g.campaign_id, g.reward_id, g.status

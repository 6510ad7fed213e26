-- name: now
-- PostgreSQL's transaction time, unix seconds: what a notification queued without a clock is
-- dated by.
SELECT extract(epoch FROM now())::float8

-- name: insert
-- Once per dedupe key, whoever queues it and however often: returns the id only when new.
INSERT INTO notifications (id, kind, dedupe_key, payload, created_at, next_attempt_at)
VALUES ($1, $2, $3, $4::jsonb, $5, $5)
ON CONFLICT (dedupe_key) DO NOTHING
RETURNING id

-- name: queued_keys
SELECT dedupe_key FROM notifications WHERE dedupe_key = ANY($1::text[])

-- name: take_due
-- The next attempts to make, each leased until $2 so no other sender takes it meanwhile. A new
-- notification is due at once (attempts = 0) whatever the clocks that queued it; a failed
-- attempt waits for its backoff.
UPDATE notifications n
SET attempts = n.attempts + 1, next_attempt_at = $2
FROM (
    SELECT id FROM notifications
    WHERE delivered_at IS NULL AND failed_at IS NULL AND (attempts = 0 OR next_attempt_at <= $1)
    ORDER BY created_at, id
    LIMIT $3
    FOR UPDATE SKIP LOCKED
) due
WHERE n.id = due.id
RETURNING n.id, n.kind, n.payload::text AS payload, n.created_at, n.attempts

-- name: delivered
-- A 2xx is a fact whoever's attempt it answered (one whose lease ran out included): recorded
-- unless recorded already.
UPDATE notifications SET delivered_at = $2, failed_at = NULL, last_error = NULL
WHERE id = $1 AND delivered_at IS NULL

-- name: retry_at
-- Only the attempt that holds it ($4, its number) reschedules it: a sender whose lease ran out
-- finds a later attempt under way, or the notification delivered, and changes nothing.
UPDATE notifications SET next_attempt_at = $2, last_error = $3
WHERE id = $1 AND attempts = $4 AND delivered_at IS NULL AND failed_at IS NULL

-- name: failed
UPDATE notifications SET failed_at = $2, last_error = $3
WHERE id = $1 AND attempts = $4 AND delivered_at IS NULL AND failed_at IS NULL

-- name: queue_depth
SELECT count(*) FROM notifications WHERE delivered_at IS NULL AND failed_at IS NULL

-- name: redrive
-- Failed notifications ($1: these ids; NULL: all) sent again from a first attempt, at once.
UPDATE notifications
SET failed_at = NULL, attempts = 0, next_attempt_at = $2
WHERE failed_at IS NOT NULL AND delivered_at IS NULL AND ($1::text[] IS NULL OR id = ANY($1))
RETURNING id

-- name: sweep_delivered
-- Delivered notifications older than $1, except those of a campaign still live: their dedupe
-- key (stock.low once per reward) must stay while the campaign runs.
DELETE FROM notifications n
WHERE n.delivered_at < $1
  AND NOT EXISTS (SELECT 1 FROM campaigns c
                  WHERE c.id = n.payload->>'campaign_id' AND c.status IN ('approved', 'paused'))

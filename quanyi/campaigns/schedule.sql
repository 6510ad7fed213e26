-- Queries of the campaign scheduler (schedule.py), of ending a campaign (ending.py) and of
-- what the campaign views show of both (view.py).

-- name: due_phases
-- Live campaigns not in the phase the clock ($1) puts them in: scheduled before starts_at,
-- running until ends_at, ended from then on. Soonest ends first.
SELECT id, phase, due FROM (
    SELECT id, phase, ends_at,
           CASE WHEN $1 < starts_at THEN 'scheduled'
                WHEN $1 < ends_at THEN 'running'
                ELSE 'ended' END AS due
    FROM campaigns
    WHERE status IN ('approved', 'paused')
) live
WHERE phase IS DISTINCT FROM due
ORDER BY ends_at, id
LIMIT $2

-- name: lock_for_phase
-- The campaign, unless someone holds it (another scheduler, a staff action): the next tick
-- looks again.
SELECT id, name, branch, starts_at, ends_at, status, phase FROM campaigns
WHERE id = $1 AND status IN ('approved', 'paused')
FOR UPDATE SKIP LOCKED

-- name: set_phase
UPDATE campaigns SET phase = $2, phase_changed_at = now()
WHERE id = $1 AND phase IS DISTINCT FROM $2

-- name: end_phase
UPDATE campaigns SET phase = 'ended', phase_changed_at = now() WHERE id = $1

-- name: live_watch
-- What each tick checks of the campaigns Redis may hold as live (pending ones too: an approval
-- whose commit failed after Redis took it): their status, and the rewards with stock whose
-- stock.low is not queued yet (none, reward_id NULL, once all are).
SELECT c.id AS campaign_id, c.status, r.id AS reward_id, r.right_id, r.stock
FROM campaigns c
LEFT JOIN rewards r
       ON r.campaign_id = c.id AND r.stock > 0 AND c.status IN ('approved', 'paused')
      AND NOT EXISTS (SELECT 1 FROM notifications n
                      WHERE n.dedupe_key = 'stock.low:' || c.id || ':' || r.id)
WHERE c.status IN ('approved', 'paused', 'pending')
ORDER BY c.id, r.position

-- name: ledger_final
-- What the ledger holds of a campaign per reward, in one read of its grants: `persisted` as the
-- campaign view counts it (every grant, revoked and failed included) and the redeemed ones.
SELECT reward_id,
       count(*) AS persisted,
       count(*) FILTER (WHERE status = 'redeemed') AS redeemed
FROM grants WHERE campaign_id = $1
GROUP BY reward_id

-- name: insert_result
INSERT INTO campaign_results (campaign_id, reward_id, granted, redeemed, cost, persisted,
                              ledger_lag_entries, ended_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, now())
ON CONFLICT (campaign_id, reward_id) DO NOTHING

-- name: phases
SELECT id, phase, phase_changed_at FROM campaigns WHERE id = ANY($1::text[])

-- name: results
-- The figures at the end of these campaigns (none for those not ended), per reward in order.
SELECT cr.campaign_id, cr.reward_id, cr.granted, cr.redeemed, cr.cost, cr.persisted,
       cr.ledger_lag_entries, cr.ended_at
FROM campaign_results cr
LEFT JOIN rewards r ON r.campaign_id = cr.campaign_id AND r.id = cr.reward_id
WHERE cr.campaign_id = ANY($1::text[])
ORDER BY cr.campaign_id, r.position, cr.reward_id

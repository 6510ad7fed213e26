-- Queries that restore Redis from the ledger (quanyi/ledger/rebuild.py) and compare the two
-- (quanyi/ledger/reconcile.py).
--
-- A grant counts against stock, the budget and its customer's limits exactly as Redis counts
-- it (claim.lua adds, transition.lua gives back): every grant once, except revoked ones and
-- failed ones of a campaign that returns stock on failure. A redriven grant is `granted` again.

-- name: campaigns
SELECT c.id, c.return_stock_on_failure, count(r.id) AS rewards
FROM campaigns c LEFT JOIN rewards r ON r.campaign_id = c.id
GROUP BY c.id ORDER BY c.id

-- name: grant_count
SELECT count(*) FROM grants

-- name: any_grant
-- Whether the ledger holds any grant at all (an empty Redis is then a fresh one, not a lost one).
SELECT EXISTS (SELECT 1 FROM grants)

-- name: newest_grant
-- The ledger's most recent grant: Redis still holding its idempotency entry means Redis kept
-- its data (an upgrade from before the store-ready marker), not that it lost it.
SELECT grant_id, channel_id, request_id FROM grants ORDER BY granted_at DESC LIMIT 1

-- name: live_totals
SELECT g.campaign_id, g.reward_id, count(*) AS granted,
       coalesce(sum(g.unit_cost), 0)::bigint AS spent
FROM grants g JOIN campaigns c ON c.id = g.campaign_id
WHERE g.status <> 'revoked' AND NOT (g.status = 'failed' AND c.return_stock_on_failure)
GROUP BY g.campaign_id, g.reward_id

-- name: live_customer_counts
-- Per reward and customer of one campaign; with $2/$3, only grants made in [$2, $3).
SELECT g.reward_id, g.customer_id, count(*) AS granted
FROM grants g JOIN campaigns c ON c.id = g.campaign_id
WHERE g.campaign_id = $1
  AND g.status <> 'revoked' AND NOT (g.status = 'failed' AND c.return_stock_on_failure)
  AND ($2::timestamptz IS NULL OR g.granted_at >= $2)
  AND ($3::timestamptz IS NULL OR g.granted_at < $3)
GROUP BY g.reward_id, g.customer_id

-- name: final_states
-- Grants that left the live states: transition.lua keeps them so each leaves once.
SELECT grant_id, status FROM grants
WHERE campaign_id = $1 AND status IN ('redeemed', 'expired', 'failed', 'revoked')

-- name: requests_of_campaign
SELECT grant_id, reward_id, customer_id, channel_id, request_id FROM grants
WHERE campaign_id = $1

-- name: status_drift
-- Grants whose status is not what their latest event says (a vendor outcome not applied).
SELECT count(*) FROM grants g
LEFT JOIN LATERAL (
    SELECT CASE e.event WHEN 'redriven' THEN 'granted' ELSE e.event END AS status
    FROM grant_events e WHERE e.grant_id = g.grant_id
    ORDER BY split_part(e.outbox_id, '-', 1)::bigint DESC,
             split_part(e.outbox_id, '-', 2)::bigint DESC
    LIMIT 1
) latest ON true
WHERE g.status <> coalesce(latest.status, 'granted')

-- name: unfulfilled_outcomes
-- Fulfilled, redeemed or expired grants without a fulfilment event: the vendor outcome is missing.
SELECT count(*) FROM grants g
WHERE g.status IN ('fulfilled', 'redeemed', 'expired')
  AND NOT EXISTS (
      SELECT 1 FROM grant_events e WHERE e.grant_id = g.grant_id AND e.event = 'fulfilled'
  )

-- name: stored_events
SELECT outbox_id FROM grant_events WHERE outbox_id = ANY($1::text[])

-- name: customers_of_grants
SELECT grant_id, customer_id FROM grants WHERE grant_id = ANY($1::text[])

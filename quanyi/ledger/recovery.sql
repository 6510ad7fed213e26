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
-- its data (an upgrade from before the store-ready marker), not that it lost it. Grants made by
-- a goal (channel 'goal') have no idempotency entry: a goal grants once a period by its
-- progress, not by a channel's request id. With its customer and the campaign's stock parts:
-- the entry is in the shard of the customer's part.
SELECT g.grant_id, g.campaign_id, g.channel_id, g.request_id, g.customer_id, c.stock_parts
FROM grants g JOIN campaigns c ON c.id = g.campaign_id WHERE g.channel_id <> 'goal'
ORDER BY g.granted_at DESC LIMIT 1

-- name: live_totals
SELECT g.campaign_id, g.reward_id, count(*) AS granted,
       coalesce(sum(g.unit_cost), 0)::bigint AS spent
FROM grants g JOIN campaigns c ON c.id = g.campaign_id
WHERE g.status <> 'revoked' AND NOT (g.status = 'failed' AND c.return_stock_on_failure)
GROUP BY g.campaign_id, g.reward_id

-- name: live_channel_totals
-- As live_totals, per channel (goal grants under "goal"): the counters of channel quotas.
SELECT g.campaign_id, g.reward_id, g.channel_id, count(*) AS granted
FROM grants g JOIN campaigns c ON c.id = g.campaign_id
JOIN rewards r ON r.campaign_id = g.campaign_id AND r.id = g.reward_id
WHERE r.channel_quota IS NOT NULL
  AND g.status <> 'revoked' AND NOT (g.status = 'failed' AND c.return_stock_on_failure)
GROUP BY g.campaign_id, g.reward_id, g.channel_id

-- name: live_customer_counts
-- Per reward and customer of one campaign; with $2/$3, only grants made in [$2, $3). With
-- their spend: a split campaign's counters per part add up its customers'.
SELECT g.reward_id, g.customer_id, count(*) AS granted,
       coalesce(sum(g.unit_cost), 0)::bigint AS spent
FROM grants g JOIN campaigns c ON c.id = g.campaign_id
WHERE g.campaign_id = $1
  AND g.status <> 'revoked' AND NOT (g.status = 'failed' AND c.return_stock_on_failure)
  AND ($2::timestamptz IS NULL OR g.granted_at >= $2)
  AND ($3::timestamptz IS NULL OR g.granted_at < $3)
GROUP BY g.reward_id, g.customer_id

-- name: final_states
-- Grants that left the live states: transition.lua keeps them so each leaves once (in the
-- part of the grant's customer, for a split campaign).
SELECT grant_id, status, customer_id FROM grants
WHERE campaign_id = $1 AND status IN ('redeemed', 'expired', 'failed', 'revoked')

-- name: requests_of_campaign
-- The grants made under a channel's request id (not a goal's: see newest_grant).
SELECT grant_id, reward_id, customer_id, channel_id, request_id FROM grants
WHERE campaign_id = $1 AND channel_id <> 'goal'

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
-- Which of the (grant id $1, outbox id $2) pairs the ledger holds: an outbox id is unique in
-- its own shard's stream only, a grant's events all come from its campaign's shard.
SELECT e.grant_id, e.outbox_id
FROM unnest($1::text[], $2::text[]) AS t (grant_id, outbox_id)
JOIN grant_events e USING (grant_id, outbox_id)

-- name: customers_of_grants
SELECT grant_id, customer_id FROM grants WHERE grant_id = ANY($1::text[])

-- Goal progress (quanyi/ledger/rebuild_goals.py), as record_events.lua and claim.lua left it.
-- `counted` names the goals an event moved: [{"campaign_id", "reward_id", "period"}] (a
-- reversal: those it moved back). `@>` keeps to the events of one campaign before the lateral
-- unnest looks inside.

-- name: goal_record_count
-- Work units for a progress bar: one per card event and campaign it counted in.
SELECT count(*) FROM card_events e
CROSS JOIN LATERAL (
    SELECT DISTINCT c.item ->> 'campaign_id' FROM jsonb_array_elements(e.counted) AS c (item)
) AS campaigns
WHERE e.outcome IN ('counted', 'reversal')

-- name: goal_progress_of_campaign
-- Each goal's count and amount per customer and period: +1/+amount for every event counted
-- toward it, -1/-amount for every reversal that took one back.
SELECT c.item ->> 'reward_id' AS reward_id, e.customer_id, c.item ->> 'period' AS period,
       sum(CASE e.outcome WHEN 'counted' THEN 1 ELSE -1 END)::bigint AS count,
       sum(CASE e.outcome WHEN 'counted' THEN e.amount ELSE -e.amount END)::bigint AS amount
FROM card_events e CROSS JOIN LATERAL jsonb_array_elements(e.counted) AS c (item)
WHERE e.outcome IN ('counted', 'reversal')
  AND e.counted @> jsonb_build_array(jsonb_build_object('campaign_id', $1::text))
  AND c.item ->> 'campaign_id' = $1
GROUP BY 1, 2, 3

-- name: goal_records_of_campaign
-- The record each event left in one campaign's counted events (Keys.counted_events, in the
-- bucket of its own id): a transaction "<customer>|<amount>|<reward>@<period>,..." (its goals
-- in the order counted), with "x" in front once a reversal took it back there; a reversal
-- "R<original id>".
WITH moved AS (
    SELECT e.channel_id, e.event_id, e.customer_id, e.amount, e.reversal_of, e.outcome,
           string_agg((c.item ->> 'reward_id') || '@' || (c.item ->> 'period'), ','
                      ORDER BY c.n) AS what
    FROM card_events e
    CROSS JOIN LATERAL jsonb_array_elements(e.counted) WITH ORDINALITY AS c (item, n)
    WHERE e.outcome IN ('counted', 'reversal')
      AND e.counted @> jsonb_build_array(jsonb_build_object('campaign_id', $1::text))
      AND c.item ->> 'campaign_id' = $1
    GROUP BY e.channel_id, e.event_id
),
reversed AS (
    SELECT DISTINCT channel_id, reversal_of FROM moved WHERE outcome = 'reversal'
)
SELECT m.event_id, m.channel_id || '|' || m.event_id AS field,
       CASE WHEN m.outcome = 'reversal' THEN 'R' || m.reversal_of
            ELSE CASE WHEN r.reversal_of IS NULL THEN '' ELSE 'x' END
                 || m.customer_id || '|' || m.amount::text || '|' || m.what
       END AS record
FROM moved m
LEFT JOIN reversed r ON r.channel_id = m.channel_id AND r.reversal_of = m.event_id
    AND m.outcome = 'counted'

-- name: goal_grants_of_campaign
-- The grants a campaign's goals gave automatically and no reversal clawed back, each with the
-- period of the goal the granting event reached: each still stands as its period's grant.
WITH caused AS (
    SELECT x.item ->> 'grant_id' AS grant_id, x.item ->> 'event' AS event, e.counted
    FROM card_events e CROSS JOIN LATERAL jsonb_array_elements(e.grants) AS x (item)
    WHERE e.grants <> '[]'::jsonb
      AND e.counted @> jsonb_build_array(jsonb_build_object('campaign_id', $1::text))
)
SELECT g.grant_id, g.reward_id, g.customer_id, g.granted_at, c.item ->> 'period' AS period
FROM caused x
JOIN grants g ON g.grant_id = x.grant_id AND g.campaign_id = $1
CROSS JOIN LATERAL jsonb_array_elements(x.counted) AS c (item)
WHERE x.event = 'granted'
  AND c.item ->> 'campaign_id' = $1 AND c.item ->> 'reward_id' = g.reward_id
  AND NOT EXISTS (
      SELECT 1 FROM caused y WHERE y.grant_id = x.grant_id AND y.event = 'revoked'
  )

-- name: claims_of_rewards
-- The claims of a campaign's rewards claimed once their goal is reached, oldest first.
SELECT grant_id, reward_id, customer_id, granted_at FROM grants
WHERE campaign_id = $1 AND reward_id = ANY($2::text[])
ORDER BY granted_at, grant_id

-- name: cancelled_card_events
-- Transactions whose reversal came first, each with that reversal (the latest held one of its
-- customer and amount: the one record_events.lua found waiting).
WITH held AS (
    SELECT DISTINCT ON (channel_id, reversal_of) channel_id, reversal_of, event_id,
           customer_id, amount
    FROM card_events
    WHERE outcome = 'held'
    ORDER BY channel_id, reversal_of, split_part(outbox_id, '-', 1)::bigint DESC,
             split_part(outbox_id, '-', 2)::bigint DESC
)
SELECT e.channel_id, e.event_id, e.customer_id, e.amount, e.mcc, e.occurred_at,
       h.event_id AS reversal_id
FROM card_events e
JOIN held h ON h.channel_id = e.channel_id AND h.reversal_of = e.event_id
    AND h.customer_id = e.customer_id AND h.amount = e.amount
WHERE e.outcome = 'cancelled'

-- name: held_card_events
-- The reversals held (outcome 'held': never 'uncounted' ones, which no goal could count) whose
-- wait is not over at $1 (unix s) with a wait of $2 s, the latest per original first, each
-- with the unix second it was held at (record_events.lua's now) and `waiting` unless its
-- original came since and was cancelled by it (an original of another customer or amount
-- counts, and leaves the reversal waiting).
SELECT h.channel_id, h.reversal_of, h.event_id, h.customer_id, h.amount,
       floor(extract(epoch FROM h.received_at))::bigint AS held_at,
       NOT EXISTS (
           SELECT 1 FROM card_events o
           WHERE o.channel_id = h.channel_id AND o.event_id = h.reversal_of
             AND o.outcome = 'cancelled'
             AND (split_part(o.outbox_id, '-', 1)::bigint, split_part(o.outbox_id, '-', 2)::bigint)
                 >= (split_part(h.outbox_id, '-', 1)::bigint,
                     split_part(h.outbox_id, '-', 2)::bigint)
       ) AS waiting
FROM card_events h
WHERE h.outcome = 'held'
  AND floor(extract(epoch FROM h.received_at))::bigint + $2::bigint > $1::bigint
ORDER BY h.channel_id, h.reversal_of, split_part(h.outbox_id, '-', 1)::bigint DESC,
         split_part(h.outbox_id, '-', 2)::bigint DESC

-- name: channels_of_grants
SELECT grant_id, channel_id FROM grants WHERE grant_id = ANY($1::text[])

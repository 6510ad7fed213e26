-- Named queries of the branch budgets (quanyi/campaigns/budgets.py); the tables are described
-- in quanyi/stores/migrations/0013_branch_budgets.sql.

-- name: branch
SELECT id, parent_id, depth FROM branches WHERE id = $1

-- name: in_force
-- Budgets are in force for a period once head office has a budget for it.
SELECT EXISTS (SELECT 1 FROM branch_budgets WHERE branch_id = 'HQ' AND period = $1)

-- name: open_balance
INSERT INTO branch_budgets (branch_id, period) VALUES ($1, $2) ON CONFLICT DO NOTHING

-- name: lock_balance
SELECT branch_id, period, allocated, given, committed
FROM branch_budgets WHERE branch_id = $1 AND period = $2
FOR UPDATE

-- name: balance
SELECT branch_id, period, allocated, given, committed
FROM branch_budgets WHERE branch_id = $1 AND period = $2

-- name: move
-- One movement and the balance it changes, in one statement: $3 names the column ($5 added to
-- it), $4 the kind, $6 the other branch, $7 the campaign, $8 who.
WITH changed AS (
    UPDATE branch_budgets
    SET allocated = allocated + CASE WHEN $3::text = 'allocated' THEN $5::bigint ELSE 0 END,
        given = given + CASE WHEN $3::text = 'given' THEN $5::bigint ELSE 0 END,
        committed = committed + CASE WHEN $3::text = 'committed' THEN $5::bigint ELSE 0 END,
        updated_at = now()
    WHERE branch_id = $1 AND period = $2
    RETURNING branch_id, period
)
INSERT INTO budget_movements (branch_id, period, account, kind, amount, counterpart,
                              campaign_id, actor)
SELECT branch_id, period, $3, $4, $5, $6, $7, $8 FROM changed
RETURNING id

-- name: lock_reservation
-- The live reservation of a campaign, locked.
SELECT campaign_id, branch_id, period, amount
FROM budget_reservations WHERE campaign_id = $1 AND released_at IS NULL
FOR UPDATE

-- name: insert_reservation
INSERT INTO budget_reservations (campaign_id, branch_id, period, amount) VALUES ($1, $2, $3, $4)

-- name: update_reservation
UPDATE budget_reservations SET amount = $2 WHERE campaign_id = $1

-- name: close_reservation
UPDATE budget_reservations SET charged = $2, released_at = now() WHERE campaign_id = $1

-- name: reservations_of_balance
-- The campaigns charged to a balance: amount, and charged once ended (NULL while live).
SELECT campaign_id, amount, charged
FROM budget_reservations WHERE branch_id = $1 AND period = $2
ORDER BY campaign_id

-- name: delete_reservation
DELETE FROM budget_reservations WHERE campaign_id = $1

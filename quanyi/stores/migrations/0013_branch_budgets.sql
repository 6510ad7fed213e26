-- Budgets carved down the branch tree (quanyi/campaigns/budgets.py). Amounts in fen; a period
-- is a calendar year "YYYY" in QUANYI_TZ.

-- One balance per branch and period, changed only under its row lock (SELECT ... FOR UPDATE)
-- and only by the statement that also writes the movement explaining it, so each column is
-- the sum of its movements. allocated: received from the parent net of reclaims (head office:
-- its own budget); given: handed to its children net of reclaims; committed: what live
-- campaigns reserved plus what ended campaigns spent. What is left to give or reserve is
-- allocated - given - committed, and the database refuses a balance that goes below zero.
CREATE TABLE branch_budgets (
    branch_id  text NOT NULL REFERENCES branches (id),
    period     text NOT NULL CHECK (period ~ '^[0-9]{4}$'),
    allocated  bigint NOT NULL DEFAULT 0,
    given      bigint NOT NULL DEFAULT 0 CHECK (given >= 0),
    committed  bigint NOT NULL DEFAULT 0 CHECK (committed >= 0),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (branch_id, period),
    CHECK (given + committed <= allocated)
);

-- Every movement of money, one row per balance it changes: an allocation or a reclaim writes
-- one on the parent (given) and one on the child (allocated); head office's own budget (fund,
-- or a reclaim without counterpart) one; a campaign's reservation, its release at the end and
-- a revision of its budget one (committed). Never updated or deleted.
CREATE TABLE budget_movements (
    id          bigserial PRIMARY KEY,
    branch_id   text NOT NULL,
    period      text NOT NULL,
    account     text NOT NULL CHECK (account IN ('allocated', 'given', 'committed')),
    kind        text NOT NULL
                CHECK (kind IN ('fund', 'allocation', 'reclaim', 'reservation', 'release',
                                'revision')),
    amount      bigint NOT NULL CHECK (amount <> 0),
    -- The other branch of an allocation or a reclaim; NULL for head office's own budget.
    counterpart text REFERENCES branches (id),
    campaign_id text REFERENCES campaigns (id),
    actor       text NOT NULL,
    at          timestamptz NOT NULL DEFAULT now(),
    FOREIGN KEY (branch_id, period) REFERENCES branch_budgets (branch_id, period),
    CHECK ((account = 'committed') = (campaign_id IS NOT NULL))
);
CREATE INDEX budget_movements_of_balance ON budget_movements (branch_id, period, id);
CREATE INDEX budget_movements_of_campaign ON budget_movements (campaign_id)
    WHERE campaign_id IS NOT NULL;

-- What an approved campaign holds of its branch's budget: `amount` (its budget) while live;
-- at its end `charged` (what it spent, kept by the branch) is set and the rest released.
CREATE TABLE budget_reservations (
    campaign_id text PRIMARY KEY REFERENCES campaigns (id),
    branch_id   text NOT NULL,
    period      text NOT NULL,
    amount      bigint NOT NULL CHECK (amount >= 0),
    charged     bigint CHECK (charged BETWEEN 0 AND amount),
    reserved_at timestamptz NOT NULL DEFAULT now(),
    released_at timestamptz,
    FOREIGN KEY (branch_id, period) REFERENCES branch_budgets (branch_id, period),
    CHECK ((charged IS NULL) = (released_at IS NULL))
);
CREATE INDEX budget_reservations_of_balance ON budget_reservations (branch_id, period);

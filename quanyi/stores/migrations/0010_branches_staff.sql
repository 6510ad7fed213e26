-- The organisation: a tree of branches under head office (HQ), at most four levels deep (head
-- office, branch, sub-branch, outlet). Staff act on their own branch and everything below it.
-- Branch ids never change and a branch never moves, so a stored depth stays true.
CREATE TABLE IF NOT EXISTS branches (
    id         text PRIMARY KEY,
    name       text NOT NULL,
    parent_id  text REFERENCES branches (id),
    depth      smallint NOT NULL CHECK (depth BETWEEN 1 AND 4),
    created_at timestamptz NOT NULL DEFAULT now(),
    -- HQ is the one root.
    CHECK ((parent_id IS NULL) = (id = 'HQ')),
    CHECK ((depth = 1) = (parent_id IS NULL))
);
CREATE INDEX IF NOT EXISTS branches_by_parent ON branches (parent_id);

INSERT INTO branches (id, name, parent_id, depth) VALUES ('HQ', 'Head office', NULL, 1)
ON CONFLICT (id) DO NOTHING;
-- Every label already in use becomes a branch under head office, named after itself.
INSERT INTO branches (id, name, parent_id, depth)
SELECT label, label, 'HQ', 2
FROM (
    SELECT branch FROM staff
    UNION SELECT branch FROM campaigns
    UNION SELECT branch FROM audiences
) AS used (label)
WHERE label <> 'HQ'
ON CONFLICT (id) DO NOTHING;

-- A branch a record names must exist: no campaign, audience or account of a branch nobody
-- can be scoped to.
ALTER TABLE staff DROP CONSTRAINT IF EXISTS staff_branch_fkey;
ALTER TABLE staff ADD CONSTRAINT staff_branch_fkey FOREIGN KEY (branch) REFERENCES branches (id);
ALTER TABLE campaigns DROP CONSTRAINT IF EXISTS campaigns_branch_fkey;
ALTER TABLE campaigns
    ADD CONSTRAINT campaigns_branch_fkey FOREIGN KEY (branch) REFERENCES branches (id);
ALTER TABLE audiences DROP CONSTRAINT IF EXISTS audiences_branch_fkey;
ALTER TABLE audiences
    ADD CONSTRAINT audiences_branch_fkey FOREIGN KEY (branch) REFERENCES branches (id);

-- auditor reads everything in its scope and changes nothing; operator runs vendors and dead
-- letters and touches no money.
ALTER TABLE staff DROP CONSTRAINT IF EXISTS staff_role_check;
ALTER TABLE staff ADD CONSTRAINT staff_role_check
    CHECK (role IN ('marketer', 'approver', 'admin', 'auditor', 'operator'));

-- Set by a password reset: the account must choose a new password before anything else.
ALTER TABLE staff ADD COLUMN IF NOT EXISTS must_change_password boolean NOT NULL DEFAULT false;
ALTER TABLE staff ADD COLUMN IF NOT EXISTS password_changed_at timestamptz;
CREATE INDEX IF NOT EXISTS staff_by_branch ON staff (branch);
CREATE INDEX IF NOT EXISTS staff_sessions_by_username ON staff_sessions (username);

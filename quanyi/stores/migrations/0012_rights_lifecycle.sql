-- The lifecycle of a right (准入 / 退出): proposed by a head-office marketer, admitted by an
-- approver who did not propose it, suspended and resumed, retired. A vendor is onboarded the
-- same way: proposed, activated, suspended and resumed, offboarded. Each row keeps who moved it
-- last into each state and when; the audit log keeps every move.
--
-- Rights and vendors that exist already were in use before there was a lifecycle: they start
-- admitted and active. New ones start proposed.

ALTER TABLE rights
    ADD COLUMN state        text NOT NULL DEFAULT 'admitted'
                            CHECK (state IN ('proposed', 'admitted', 'suspended', 'retired')),
    ADD COLUMN proposed_by  text,
    ADD COLUMN proposed_at  timestamptz,
    -- Whoever proposed or edited this version since it was last admitted: none of them admits.
    ADD COLUMN proposers    text[] NOT NULL DEFAULT '{}',
    ADD COLUMN admitted_by  text,
    ADD COLUMN admitted_at  timestamptz,
    ADD COLUMN suspended_by text,
    ADD COLUMN suspended_at timestamptz,
    ADD COLUMN retired_by   text,
    ADD COLUMN retired_at   timestamptz;
UPDATE rights
SET proposed_by = created_by, proposed_at = created_at, proposers = ARRAY[created_by],
    admitted_at = now();
ALTER TABLE rights
    ALTER COLUMN state SET DEFAULT 'proposed',
    ALTER COLUMN proposed_by SET NOT NULL,
    ALTER COLUMN proposed_at SET NOT NULL,
    ALTER COLUMN proposed_at SET DEFAULT now();
-- Offboarding a vendor looks for the rights still naming it.
CREATE INDEX rights_vendor ON rights (vendor_id) WHERE vendor_id IS NOT NULL;

ALTER TABLE vendors
    ADD COLUMN state          text NOT NULL DEFAULT 'active'
                              CHECK (state IN ('proposed', 'active', 'suspended', 'offboarded')),
    ADD COLUMN proposed_by    text,
    ADD COLUMN proposed_at    timestamptz,
    ADD COLUMN activated_by   text,
    ADD COLUMN activated_at   timestamptz,
    ADD COLUMN suspended_by   text,
    ADD COLUMN suspended_at   timestamptz,
    ADD COLUMN offboarded_by  text,
    ADD COLUMN offboarded_at  timestamptz;
UPDATE vendors SET proposed_at = created_at, activated_at = now();
ALTER TABLE vendors
    ALTER COLUMN state SET DEFAULT 'proposed',
    ALTER COLUMN proposed_at SET NOT NULL,
    ALTER COLUMN proposed_at SET DEFAULT now();

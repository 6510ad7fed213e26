-- Maker-checker: what a campaign pays out is frozen into its rewards, and everyone who made any
-- version of a campaign is remembered so that none of them approves it.

-- The face value a reward pays, copied from its right when the campaign is drafted or edited
-- (as unit_cost and vendor_id already are); fulfilment reads this copy, never the catalog.
ALTER TABLE rewards ADD COLUMN IF NOT EXISTS face_value bigint;
UPDATE rewards r SET face_value = rt.face_value
FROM rights rt
WHERE rt.id = r.right_id AND r.face_value IS NULL;
ALTER TABLE rewards ALTER COLUMN face_value SET NOT NULL;
ALTER TABLE rewards DROP CONSTRAINT IF EXISTS rewards_face_value_check;
ALTER TABLE rewards ADD CONSTRAINT rewards_face_value_check CHECK (face_value >= 0);

-- Whoever created, edited or submitted any version of the campaign.
ALTER TABLE campaigns ADD COLUMN IF NOT EXISTS makers text[] NOT NULL DEFAULT '{}';
UPDATE campaigns c
SET makers = ARRAY(
    SELECT DISTINCT who FROM (
        SELECT c.created_by AS who
        UNION ALL SELECT c.submitted_by
        UNION ALL
        SELECT a.actor FROM audit_log a
        WHERE a.target = 'campaign:' || c.id
          AND a.action IN ('campaign.create', 'campaign.update', 'campaign.submit')
    ) made
    WHERE who IS NOT NULL
    ORDER BY who
)
WHERE c.makers = '{}';

-- Which live campaigns use a right: asked on every edit of the right.
CREATE INDEX IF NOT EXISTS rewards_right ON rewards (right_id);

-- A vendor statement's day, what it bills (its rows by status) and its reconciliation summary,
-- beside the stored report, so the vendor three-way view (quanyi/reports) reads them without
-- opening the report (up to 16 MiB).

ALTER TABLE statements
    ADD COLUMN day date,
    ADD COLUMN billed_issued integer NOT NULL DEFAULT 0,
    ADD COLUMN billed_redeemed integer NOT NULL DEFAULT 0,
    ADD COLUMN summary jsonb NOT NULL DEFAULT '{}';

-- Statements reconciled before: their day and counts from the report they stored.
UPDATE statements s
SET day = (s.report ->> 'day')::date,
    summary = coalesce(s.report -> 'summary', '{}'),
    billed_issued = coalesce((
        SELECT count(*) FROM (
            SELECT e ->> 'theirs' AS status FROM jsonb_array_elements(s.report -> 'matched') e
            UNION ALL
            SELECT e ->> 'theirs' FROM jsonb_array_elements(s.report -> 'mismatched') e
            UNION ALL
            SELECT e ->> 'status' FROM jsonb_array_elements(s.report -> 'missing_ours') e
        ) lines WHERE status = 'issued'), 0),
    billed_redeemed = coalesce((
        SELECT count(*) FROM (
            SELECT e ->> 'theirs' AS status FROM jsonb_array_elements(s.report -> 'matched') e
            UNION ALL
            SELECT e ->> 'theirs' FROM jsonb_array_elements(s.report -> 'mismatched') e
            UNION ALL
            SELECT e ->> 'status' FROM jsonb_array_elements(s.report -> 'missing_ours') e
        ) lines WHERE status = 'redeemed'), 0);

ALTER TABLE statements ALTER COLUMN day SET NOT NULL;
CREATE INDEX statements_vendor_day ON statements (vendor_id, day, id);

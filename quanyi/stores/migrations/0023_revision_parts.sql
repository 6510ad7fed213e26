-- A revision raising a split campaign's stock or budget (quanyi/campaigns/revise_parts.py):
-- what it still has to give its stock parts in Redis, [[reward id or null for the budget,
-- amount], ...], from its approval until every part holds its share; the scheduler gives it
-- should the approval's own try fail.
ALTER TABLE campaign_revisions ADD COLUMN IF NOT EXISTS parts_to_give jsonb;

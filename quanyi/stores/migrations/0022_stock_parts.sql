-- A hot campaign split into stock parts on several Redis shards (README "Splitting a hot
-- campaign"): fixed from its creation, since each customer's counters live in one part.
ALTER TABLE campaigns ADD COLUMN IF NOT EXISTS stock_parts integer NOT NULL DEFAULT 1
    CHECK (stock_parts BETWEEN 1 AND 16);

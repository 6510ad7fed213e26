-- Per-channel stock quotas on a reward (README "Channel quotas"): {"<channel>": n, ...}, each
-- n >= 1, every channel one of the campaign's, the sum at most the reward's stock. A named
-- channel grants at most its quota; other channels and goal grants share what is left.
-- NULL: no quotas, every channel draws from the whole stock.
ALTER TABLE rewards ADD COLUMN IF NOT EXISTS channel_quota jsonb
    CHECK (channel_quota IS NULL OR jsonb_typeof(channel_quota) = 'object');

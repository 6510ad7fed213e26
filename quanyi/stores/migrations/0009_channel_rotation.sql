-- Channel credential rotation and per-channel rate limits (quanyi/access/channels.py).
--
-- A rotation (`quanyi channel rotate`, POST /admin/v1/channels/{id}/rotate) moves the sealed
-- secret into `previous_secret_sealed`, accepted until `previous_until`, and seals a new one:
-- both sign requests during the grace period, then only the new. The previous secret stays
-- sealed under the same key and channel id as the current one (access/secret_box.py).
ALTER TABLE channels ADD COLUMN previous_secret_sealed text;
ALTER TABLE channels ADD COLUMN previous_until timestamptz;
ALTER TABLE channels ADD COLUMN rotated_at timestamptz;
ALTER TABLE channels ADD CONSTRAINT channels_previous_secret_whole
    CHECK ((previous_secret_sealed IS NULL) = (previous_until IS NULL));

-- Requests per second and burst (a token bucket in Redis, lua/rate_limit.lua), set through
-- PUT /admin/v1/channels/{id}/rate-limit. NULL: the settings' default (channel_rate_per_s,
-- channel_rate_burst), which is no limit unless configured.
ALTER TABLE channels ADD COLUMN rate_per_s double precision;
ALTER TABLE channels ADD COLUMN burst integer;
ALTER TABLE channels ADD CONSTRAINT channels_rate_limit_whole
    CHECK ((rate_per_s IS NULL) = (burst IS NULL));
ALTER TABLE channels ADD CONSTRAINT channels_rate_limit_positive
    CHECK (rate_per_s > 0 AND rate_per_s <= 100000 AND burst >= 1 AND burst <= 1000000);

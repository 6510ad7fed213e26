-- Failed staff logins, counted in PostgreSQL so every API process sees the same count. A row is
-- written when an attempt starts (and removed when it succeeds), so concurrent guesses cannot
-- slip past the limit together. Keyed by a SHA-256 digest of the username tried: unknown names
-- are counted like known ones, and whatever was typed into the username box is never kept.
CREATE TABLE IF NOT EXISTS login_failures (
    id              bigserial PRIMARY KEY,
    username_digest bytea NOT NULL,
    failed_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS login_failures_by_username
    ON login_failures (username_digest, failed_at);
CREATE INDEX IF NOT EXISTS login_failures_by_age ON login_failures (failed_at);

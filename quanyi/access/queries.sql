-- name: insert_staff
INSERT INTO staff (username, password_hash, role, branch) VALUES ($1, $2, $3, $4)

-- name: staff_for_login
SELECT username, password_hash, role, branch FROM staff WHERE username = $1 AND NOT disabled

-- name: insert_session
INSERT INTO staff_sessions (token_hash, username, expires_at) VALUES ($1, $2, $3)

-- name: staff_for_token
SELECT s.username, s.role, s.branch
FROM staff_sessions t JOIN staff s USING (username)
WHERE t.token_hash = $1 AND t.expires_at > now() AND NOT s.disabled

-- name: delete_expired_sessions
DELETE FROM staff_sessions WHERE expires_at <= now()

-- name: delete_session
DELETE FROM staff_sessions WHERE token_hash = $1

-- name: insert_login_attempt
INSERT INTO login_failures (username_digest) VALUES ($1) RETURNING id

-- name: recent_login_failures
-- $2: the lockout window, $3: how many to read. Newest first, each with the seconds until it
-- leaves the window.
SELECT id, extract(epoch FROM failed_at + $2::interval - now())::float8 AS ages_out_in_s
FROM login_failures
WHERE username_digest = $1 AND failed_at > now() - $2::interval
ORDER BY failed_at DESC, id DESC
LIMIT $3

-- name: delete_login_attempt
DELETE FROM login_failures WHERE id = $1

-- name: delete_old_login_failures
DELETE FROM login_failures WHERE failed_at <= now() - $1::interval

-- name: insert_channel
-- $3: the secret sealed with the secrets key (quanyi/access/secret_box.py), never the secret itself.
-- $4: what it may call (quanyi/access/channels.py SCOPES).
INSERT INTO channels (id, name, secret_sealed, scopes) VALUES ($1, $2, $3, $4)

-- name: upsert_channel
INSERT INTO channels (id, name, secret_sealed, scopes) VALUES ($1, $2, $3, $4)
ON CONFLICT (id) DO UPDATE
SET name = EXCLUDED.name, secret_sealed = EXCLUDED.secret_sealed, secret = NULL, disabled = false,
    scopes = EXCLUDED.scopes

-- name: active_channels
SELECT id, secret_sealed, scopes FROM channels WHERE NOT disabled AND secret_sealed IS NOT NULL

-- name: plaintext_channel_secrets
-- Secrets written in clear before migration 0005, to be sealed.
SELECT id, secret FROM channels WHERE secret IS NOT NULL

-- name: seal_channel_secret
UPDATE channels SET secret_sealed = $2, secret = NULL WHERE id = $1 AND secret IS NOT NULL

-- name: insert_audit
INSERT INTO audit_log (actor, branch, action, target, detail) VALUES ($1, $2, $3, $4, $5)

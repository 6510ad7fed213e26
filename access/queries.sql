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

-- name: insert_channel
INSERT INTO channels (id, name, secret) VALUES ($1, $2, $3)

-- name: upsert_channel
INSERT INTO channels (id, name, secret) VALUES ($1, $2, $3)
ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name, secret = EXCLUDED.secret, disabled = false

-- name: active_channels
SELECT id, secret FROM channels WHERE NOT disabled

-- name: insert_audit
INSERT INTO audit_log (actor, branch, action, target, detail) VALUES ($1, $2, $3, $4, $5)

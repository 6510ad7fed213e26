-- name: insert_staff
-- $5: must set a new password at first login (an account made with a temporary one).
INSERT INTO staff (username, password_hash, role, branch, must_change_password)
VALUES ($1, $2, $3, $4, $5)

-- name: staff_for_login
SELECT username, password_hash, role, branch, must_change_password
FROM staff WHERE username = $1 AND NOT disabled

-- name: insert_session
INSERT INTO staff_sessions (token_hash, username, expires_at) VALUES ($1, $2, $3)

-- name: staff_for_token
-- The staff member of a live session with the ids of its subtree (its branch and every branch
-- below it), in one round trip.
WITH RECURSIVE me AS (
    SELECT s.username, s.role, s.branch, s.must_change_password
    FROM staff_sessions t JOIN staff s USING (username)
    WHERE t.token_hash = $1 AND t.expires_at > now() AND NOT s.disabled
), subtree AS (
    SELECT b.id FROM branches b JOIN me ON b.id = me.branch
    UNION ALL
    SELECT c.id FROM branches c JOIN subtree p ON c.parent_id = p.id
)
SELECT me.*, ARRAY(SELECT id FROM subtree ORDER BY id) AS branches FROM me

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
    scopes = EXCLUDED.scopes, previous_secret_sealed = NULL, previous_until = NULL

-- name: active_channels
-- With the secret a rotation replaced while it is still accepted (previous_until, unix s) and
-- the channel's own rate limit (NULL: the settings' default).
SELECT id, secret_sealed, scopes, previous_secret_sealed,
       extract(epoch FROM previous_until)::float8 AS previous_until, rate_per_s, burst
FROM channels WHERE NOT disabled AND secret_sealed IS NOT NULL

-- name: plaintext_channel_secrets
-- Secrets written in clear before migration 0005, to be sealed.
SELECT id, secret FROM channels WHERE secret IS NOT NULL

-- name: seal_channel_secret
UPDATE channels SET secret_sealed = $2, secret = NULL WHERE id = $1 AND secret IS NOT NULL

-- name: rotate_channel_secret
-- $2: the new sealed secret; $3: until when (unix s) the one it replaces still signs, $4 false
-- when it stops at once (not kept). A secret still in grace from an earlier rotation is
-- dropped: two secrets at most sign at once.
UPDATE channels
SET previous_secret_sealed = CASE WHEN $4::bool THEN secret_sealed END,
    previous_until = CASE WHEN $4::bool THEN to_timestamp($3) END,
    secret_sealed = $2, rotated_at = now()
WHERE id = $1 AND NOT disabled AND secret_sealed IS NOT NULL
RETURNING id, extract(epoch FROM previous_until)::float8 AS previous_until

-- name: lock_sealed_secrets
-- Every sealed secret, for `quanyi channel rekey` to seal again under a new key; locked so a
-- rotation waits for it.
SELECT id, secret_sealed, previous_secret_sealed FROM channels
WHERE secret_sealed IS NOT NULL ORDER BY id FOR UPDATE

-- name: reseal_channel_secrets
-- $2, $3: the same secrets, sealed under the new key ($3 NULL when none is kept).
UPDATE channels SET secret_sealed = $2, previous_secret_sealed = $3 WHERE id = $1

-- name: drop_expired_previous_secrets
-- $1: now, unix s. A rotated-out secret past its grace is no use to anyone: not kept, even sealed.
UPDATE channels SET previous_secret_sealed = NULL, previous_until = NULL
WHERE previous_until <= to_timestamp($1)

-- name: list_channels
-- Never a secret, sealed or not: only whether a rotated-out one still signs, and until when.
SELECT id, name, scopes, disabled, rate_per_s, burst, rotated_at,
       CASE WHEN previous_until > to_timestamp($1) THEN previous_until END AS previous_until
FROM channels ORDER BY id

-- name: lock_channel_limit
SELECT id, rate_per_s, burst FROM channels WHERE id = $1 FOR UPDATE

-- name: set_channel_rate_limit
-- $2, $3: requests per second and burst, both NULL for the settings' default.
UPDATE channels SET rate_per_s = $2, burst = $3 WHERE id = $1

-- name: insert_audit
INSERT INTO audit_log (actor, branch, action, target, detail) VALUES ($1, $2, $3, $4, $5)

-- name: audit_chain_head
-- The end of the audit chain (migration 0008): the last id and hash; none when never written.
SELECT last_id, hash FROM audit_chain_head WHERE only_row

-- name: audit_first_id
SELECT min(id) FROM audit_log

-- name: audit_chain_rows
-- Every row as the chain hashes it (detail as PostgreSQL prints jsonb), in chain order.
SELECT id, at, actor, branch, action, target, detail::text AS detail, prev_hash, hash
FROM audit_log ORDER BY id

-- name: audit_page
-- $1: the reader's branches (NULL: every branch); $2: actor; $3: object, and $4 the LIKE
-- pattern of what it is the kind of ('campaign' -> 'campaign:%'); $5: action, and $6 its
-- pattern ('login' -> 'login.%'); $7 from (inclusive), $8 to (exclusive); $9: ids below this;
-- $10: how many. Newest first.
SELECT id, at, actor, branch, action, target, detail::text AS detail, hash
FROM audit_log
WHERE ($1::text[] IS NULL OR branch = ANY ($1::text[]))
  AND ($2::text IS NULL OR actor = $2::text)
  AND ($3::text IS NULL OR target = $3::text OR target LIKE $4::text)
  AND ($5::text IS NULL OR action = $5::text OR action LIKE $6::text)
  AND ($7::timestamptz IS NULL OR at >= $7::timestamptz)
  AND ($8::timestamptz IS NULL OR at < $8::timestamptz)
  AND ($9::bigint IS NULL OR id < $9::bigint)
ORDER BY id DESC
LIMIT $10

-- name: audit_export
-- The filters of audit_page; $9: ids above this; $10: how many. Oldest first.
SELECT id, at, actor, branch, action, target, detail::text AS detail, hash
FROM audit_log
WHERE ($1::text[] IS NULL OR branch = ANY ($1::text[]))
  AND ($2::text IS NULL OR actor = $2::text)
  AND ($3::text IS NULL OR target = $3::text OR target LIKE $4::text)
  AND ($5::text IS NULL OR action = $5::text OR action LIKE $6::text)
  AND ($7::timestamptz IS NULL OR at >= $7::timestamptz)
  AND ($8::timestamptz IS NULL OR at < $8::timestamptz)
  AND id > $9::bigint
ORDER BY id
LIMIT $10

-- name: insert_branch
-- Under an existing parent, one level deeper; NULL when the parent does not exist.
INSERT INTO branches (id, name, parent_id, depth)
SELECT $1, $2, p.id, p.depth + 1 FROM branches p WHERE p.id = $3
RETURNING id, name, parent_id, depth, created_at

-- name: get_branch
SELECT id, name, parent_id, depth, created_at FROM branches WHERE id = $1

-- name: list_branches
-- $1: the ids to list (NULL: every branch), parents before their children.
SELECT id, name, parent_id, depth, created_at FROM branches
WHERE $1::text[] IS NULL OR id = ANY($1)
ORDER BY depth, id

-- name: list_staff
-- $1: the branches whose staff to list (NULL: every branch).
SELECT username, role, branch, disabled, must_change_password, created_at FROM staff
WHERE $1::text[] IS NULL OR branch = ANY($1)
ORDER BY username

-- name: lock_staff
SELECT username, role, branch, disabled, must_change_password, created_at FROM staff
WHERE username = $1 FOR UPDATE

-- name: update_staff
UPDATE staff SET role = $2, branch = $3, disabled = $4 WHERE username = $1
RETURNING username, role, branch, disabled, must_change_password, created_at

-- name: set_password
-- $3: whether the account must choose another at its next login (a temporary password).
UPDATE staff SET password_hash = $2, must_change_password = $3, password_changed_at = now()
WHERE username = $1

-- name: password_of
SELECT password_hash FROM staff WHERE username = $1 AND NOT disabled

-- name: delete_sessions_of
DELETE FROM staff_sessions WHERE username = $1

-- name: delete_other_sessions
DELETE FROM staff_sessions WHERE username = $1 AND token_hash <> $2

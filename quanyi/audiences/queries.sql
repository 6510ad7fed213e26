-- name: insert_audience
INSERT INTO audiences (id, name, branch, created_by)
VALUES ($1, $2, $3, $4)
RETURNING *

-- name: get_audience
SELECT * FROM audiences WHERE id = $1

-- name: lock_audience
-- Held by an import until it commits: two imports of one audience run one after the other.
SELECT * FROM audiences WHERE id = $1 FOR UPDATE

-- name: record_import
UPDATE audiences
SET version = $2, members = $3, imported_at = now(), imported_by = $4
WHERE id = $1
RETURNING *

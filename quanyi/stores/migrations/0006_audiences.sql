-- Audiences (customer segments from the data warehouse). The members live in Redis only
-- (quanyi/audiences/service.py); this row says which version is live and how many it holds.
CREATE TABLE audiences (
    id          text PRIMARY KEY,
    name        text NOT NULL,
    branch      text NOT NULL,
    version     integer NOT NULL DEFAULT 0,
    members     bigint NOT NULL DEFAULT 0,
    imported_at timestamptz,
    imported_by text,
    created_at  timestamptz NOT NULL DEFAULT now(),
    created_by  text NOT NULL
);

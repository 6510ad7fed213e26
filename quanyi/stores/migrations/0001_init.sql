-- The first schema: staff and channels, the rights catalog, campaigns, the grant ledger, audit.

CREATE TABLE staff (
    username      text PRIMARY KEY,
    password_hash text NOT NULL,
    role          text NOT NULL CHECK (role IN ('marketer', 'approver', 'admin')),
    branch        text NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    disabled      boolean NOT NULL DEFAULT false
);

-- Only a hash of each bearer token is kept.
CREATE TABLE staff_sessions (
    token_hash bytea PRIMARY KEY,
    username   text NOT NULL REFERENCES staff (username),
    expires_at timestamptz NOT NULL
);
CREATE INDEX staff_sessions_expires ON staff_sessions (expires_at);

CREATE TABLE channels (
    id         text PRIMARY KEY,
    name       text NOT NULL,
    secret     text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    disabled   boolean NOT NULL DEFAULT false
);

CREATE TABLE rights (
    id         text PRIMARY KEY,
    name       text NOT NULL,
    kind       text NOT NULL,
    face_value bigint NOT NULL CHECK (face_value >= 0),
    unit_cost  bigint NOT NULL CHECK (unit_cost >= 0),
    vendor_id  text,
    created_by text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE campaigns (
    id           text PRIMARY KEY,
    name         text NOT NULL,
    branch       text NOT NULL,
    starts_at    timestamptz NOT NULL,
    ends_at      timestamptz NOT NULL CHECK (ends_at > starts_at),
    channels     text[] NOT NULL,
    budget       bigint CHECK (budget >= 0),
    status       text NOT NULL DEFAULT 'draft'
                 CHECK (status IN ('draft', 'pending', 'approved', 'rejected', 'paused', 'ended')),
    version      integer NOT NULL DEFAULT 1,
    created_by   text NOT NULL,
    submitted_by text,
    approved_by  text,
    approved_at  timestamptz,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE rewards (
    campaign_id              text NOT NULL REFERENCES campaigns (id) ON DELETE CASCADE,
    id                       text NOT NULL,
    right_id                 text NOT NULL REFERENCES rights (id),
    unit_cost                bigint NOT NULL,
    stock                    bigint NOT NULL CHECK (stock >= 0),
    daily_stock              bigint CHECK (daily_stock > 0),
    per_customer_limit       integer NOT NULL CHECK (per_customer_limit > 0),
    per_customer_daily_limit integer CHECK (per_customer_daily_limit > 0),
    position                 integer NOT NULL,
    PRIMARY KEY (campaign_id, id)
);

-- The ledger: one row per grant, written by the ledger worker from the Redis outbox.
CREATE TABLE grants (
    grant_id     text PRIMARY KEY,
    campaign_id  text NOT NULL,
    reward_id    text NOT NULL,
    right_id     text NOT NULL,
    customer_id  text NOT NULL,
    channel_id   text NOT NULL,
    request_id   text NOT NULL,
    unit_cost    bigint NOT NULL,
    status       text NOT NULL DEFAULT 'granted',
    granted_at   timestamptz NOT NULL,
    persisted_at timestamptz NOT NULL DEFAULT now(),
    outbox_id    text NOT NULL,
    UNIQUE (channel_id, request_id)
);
CREATE INDEX grants_customer ON grants (customer_id, granted_at DESC);
CREATE INDEX grants_campaign ON grants (campaign_id, reward_id);

CREATE TABLE audit_log (
    id     bigserial PRIMARY KEY,
    at     timestamptz NOT NULL DEFAULT now(),
    actor  text NOT NULL,
    branch text NOT NULL,
    action text NOT NULL,
    target text NOT NULL,
    detail jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX audit_log_target ON audit_log (target, at);

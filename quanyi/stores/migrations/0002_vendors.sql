-- Vendors and the grant lifecycle: fulfilment, redemption, expiry, revocation, statements.

CREATE TABLE vendors (
    id              text PRIMARY KEY,
    name            text NOT NULL,
    adapter         text NOT NULL CHECK (adapter IN ('http', 'points', 'codepool', 'simulated')),
    base_url        text,
    timeout_ms      integer NOT NULL DEFAULT 2000 CHECK (timeout_ms > 0),
    max_in_flight   integer NOT NULL DEFAULT 64 CHECK (max_in_flight > 0),
    max_attempts    integer NOT NULL DEFAULT 8 CHECK (max_attempts > 0),
    backoff_base_ms integer NOT NULL DEFAULT 200 CHECK (backoff_base_ms > 0),
    backoff_max_ms  integer NOT NULL DEFAULT 60000 CHECK (backoff_max_ms > 0),
    -- The vendor's public keys (PEM) that verify its callbacks and responses: two during a rotation.
    public_keys     text[] NOT NULL DEFAULT '{}',
    -- Where our private key for signing calls to this vendor lives: file:PATH or env:VARIABLE.
    signing_key     text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);

ALTER TABLE rights ADD CONSTRAINT rights_vendor FOREIGN KEY (vendor_id) REFERENCES vendors (id);
ALTER TABLE campaigns ADD COLUMN return_stock_on_failure boolean NOT NULL DEFAULT true;
ALTER TABLE rewards ADD COLUMN vendor_id text;

ALTER TABLE grants
    ADD COLUMN vendor_id  text,
    ADD COLUMN code       text,
    ADD COLUMN reference  text,
    ADD COLUMN expires_at timestamptz;
CREATE INDEX grants_code ON grants (vendor_id, code) WHERE code IS NOT NULL;
CREATE INDEX grants_expiring ON grants (expires_at) WHERE status = 'fulfilled';

-- Every transition after the grant, once per outbox entry. A grant's status is its latest
-- event in outbox order (the order Redis applied them in).
CREATE TABLE grant_events (
    outbox_id text PRIMARY KEY,
    grant_id  text NOT NULL,
    event     text NOT NULL
              CHECK (event IN ('fulfilled', 'failed', 'redriven', 'redeemed', 'expired', 'revoked')),
    at        timestamptz NOT NULL,
    actor     text NOT NULL,
    detail    jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX grant_events_grant ON grant_events (grant_id);

-- Voucher codes a vendor delivered up front, one per grant.
CREATE TABLE vendor_codes (
    vendor_id   text NOT NULL REFERENCES vendors (id),
    right_id    text NOT NULL REFERENCES rights (id),
    code        text NOT NULL,
    imported_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (vendor_id, code)
);

-- Redemption callbacks as received, including the refused ones (kept for reconciliation).
CREATE TABLE redemptions (
    vendor_id     text NOT NULL,
    redemption_id text NOT NULL,
    grant_id      text,
    code          text,
    redeemed_at   timestamptz,
    received_at   timestamptz NOT NULL DEFAULT now(),
    outcome       text NOT NULL CHECK (outcome IN ('applied', 'refused')),
    reason        text,
    body          jsonb NOT NULL,
    PRIMARY KEY (vendor_id, redemption_id)
);

CREATE TABLE statements (
    id          bigserial PRIMARY KEY,
    vendor_id   text NOT NULL REFERENCES vendors (id),
    uploaded_by text NOT NULL,
    uploaded_at timestamptz NOT NULL DEFAULT now(),
    rows        integer NOT NULL,
    report      jsonb NOT NULL
);

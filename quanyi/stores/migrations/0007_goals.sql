-- Rewards for target customers and for spending goals, channels with scopes, and the card
-- events the card system streams in (quanyi/issuance/events.py).

-- Only members of the audience may have the reward.
ALTER TABLE rewards ADD COLUMN audience_id text REFERENCES audiences (id);
-- {"count"?, "amount"?, "min_amount"?, "mcc_in"?, "mcc_not_in"?, "window"}
ALTER TABLE rewards ADD COLUMN goal jsonb;
-- auto: granted the moment the goal is reached; claim: claimed once it is.
ALTER TABLE rewards ADD COLUMN grant_mode text NOT NULL DEFAULT 'claim'
    CHECK (grant_mode IN ('auto', 'claim'));
ALTER TABLE rewards ADD COLUMN claw_back boolean NOT NULL DEFAULT false;
ALTER TABLE rewards ADD CONSTRAINT rewards_auto_has_goal
    CHECK (grant_mode = 'claim' OR goal IS NOT NULL);

-- What a channel may call: claims (claims, grants, offers, progress) and/or events.
ALTER TABLE channels ADD COLUMN scopes text[] NOT NULL DEFAULT '{claims}';

-- Every card event accepted, once per (channel, event id), with what it counted for, so goal
-- progress can be rebuilt and audited. Card numbers never reach this table (refused on entry).
CREATE TABLE card_events (
    channel_id  text NOT NULL,
    event_id    text NOT NULL,
    type        text NOT NULL,
    customer_id text NOT NULL,
    amount      bigint NOT NULL,
    mcc         text NOT NULL,
    occurred_at timestamptz NOT NULL,
    reversal_of text,
    -- counted | reversal | held (a reversal waiting for its original) | cancelled (an
    -- original whose reversal came first) | uncounted
    outcome     text NOT NULL,
    -- [{"campaign_id", "reward_id", "period"}]: the goals it moved (a reversal: moved back)
    counted     jsonb NOT NULL DEFAULT '[]',
    -- grants it caused: [{"grant_id", "event": "granted" | "revoked"}]
    grants      jsonb NOT NULL DEFAULT '[]',
    received_at timestamptz NOT NULL,
    outbox_id   text NOT NULL,
    PRIMARY KEY (channel_id, event_id)
);
CREATE INDEX card_events_customer ON card_events (customer_id, occurred_at);

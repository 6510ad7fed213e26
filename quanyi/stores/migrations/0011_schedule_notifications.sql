-- Campaigns follow the clock (quanyi/campaigns/schedule.py), their final figures are kept when
-- they end (quanyi/campaigns/ending.py), and notifications wait in a durable outbox until the
-- bank's webhook has them (quanyi/notifications/).

-- Where an approved campaign stands in its window, kept by the scheduler: scheduled (before
-- starts_at), running, ended. NULL before approval. `status` keeps its own meaning (the
-- workflow: draft ... approved, paused, ended); a paused campaign still has a phase.
ALTER TABLE campaigns ADD COLUMN phase text
    CHECK (phase IN ('scheduled', 'running', 'ended'));
ALTER TABLE campaigns ADD COLUMN phase_changed_at timestamptz;
-- Campaigns live before this migration take their phase now, so none is announced as started
-- late; one already past its end is ended by the scheduler's first tick.
UPDATE campaigns
SET phase = CASE WHEN status = 'ended' THEN 'ended'
                 WHEN now() < starts_at THEN 'scheduled'
                 ELSE 'running' END,
    phase_changed_at = now()
WHERE status IN ('approved', 'paused', 'ended');
-- The scheduler's question every tick: which live campaigns are not in the phase the clock says.
CREATE INDEX campaigns_live_window ON campaigns (ends_at, starts_at)
    WHERE status IN ('approved', 'paused');

-- A campaign's figures per reward at the moment it ended ("figures at the end", never settled
-- later), written once by the ending's own transaction. granted: live grants as Redis counted
-- them once claims had stopped; cost: granted x the reward's unit cost; redeemed and persisted
-- (every grant, revoked and failed included, as the campaign view counts it): what the ledger
-- held at that moment (it may still have been catching up; ledger_lag_entries says by how much).
CREATE TABLE campaign_results (
    campaign_id        text NOT NULL REFERENCES campaigns (id),
    reward_id          text NOT NULL,
    granted            bigint NOT NULL,
    redeemed           bigint NOT NULL,
    cost               bigint NOT NULL,
    persisted          bigint NOT NULL,
    ledger_lag_entries bigint NOT NULL,
    ended_at           timestamptz NOT NULL,
    PRIMARY KEY (campaign_id, reward_id)
);

-- Notifications for the bank's webhook, queued in the transaction of what they tell, so none is
-- lost when a process dies. `id` is the delivery id the receiver dedupes on; `dedupe_key` makes
-- each fact queued once (campaign.started:<campaign>, stock.low:<campaign>:<reward>, ...) however
-- many schedulers run. attempts counts attempts begun; next_attempt_at is when the next may
-- begin (a lease while one is under way). Delivered or failed (after the last attempt) is final.
CREATE TABLE notifications (
    id              text PRIMARY KEY,
    kind            text NOT NULL,
    dedupe_key      text NOT NULL UNIQUE,
    payload         jsonb NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    delivered_at    timestamptz,
    failed_at       timestamptz,
    last_error      text
);
CREATE INDEX notifications_due ON notifications (next_attempt_at)
    WHERE delivered_at IS NULL AND failed_at IS NULL;

-- Report rollups: per local day, campaign, reward and channel, what was issued and what became
-- of it, kept by the ledger worker in the transaction that writes the grants and their events
-- (quanyi/ledger/queries.sql roll_up_grants, roll_up_events), so reports never scan `grants`.
-- The right, vendor and branch are the reward's and campaign's, fixed when it was approved.
-- Filled for a ledger that already holds grants by `quanyi reports rebuild`.

CREATE TABLE report_daily (
    day                 date   NOT NULL,
    campaign_id         text   NOT NULL,
    reward_id           text   NOT NULL,
    channel_id          text   NOT NULL,
    right_id            text   NOT NULL,
    vendor_id           text   NOT NULL DEFAULT '',
    branch              text   NOT NULL,
    issued              bigint NOT NULL DEFAULT 0,
    fulfilled           bigint NOT NULL DEFAULT 0,
    redeemed            bigint NOT NULL DEFAULT 0,
    expired             bigint NOT NULL DEFAULT 0,
    revoked             bigint NOT NULL DEFAULT 0,
    failed              bigint NOT NULL DEFAULT 0,
    cost                bigint NOT NULL DEFAULT 0,
    face_value_issued   bigint NOT NULL DEFAULT 0,
    face_value_redeemed bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (day, campaign_id, reward_id, channel_id)
);
CREATE INDEX report_daily_campaign ON report_daily (campaign_id, day);
CREATE INDEX report_daily_branch ON report_daily (branch, day);

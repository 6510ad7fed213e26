-- How many grants of each campaign reward are in each status now, with the reward's right,
-- vendor and face value and the campaign's branch: the outstanding liability (fulfilled, not
-- yet redeemed or expired), breakage and redemption rates without a scan of `grants`. The
-- ledger worker moves a grant's count from its old status to its new one in the transaction
-- that changes the status (quanyi/ledger/queries.sql refresh_status, move_status_counts).

CREATE TABLE report_status (
    campaign_id text   NOT NULL,
    reward_id   text   NOT NULL,
    status      text   NOT NULL,
    right_id    text   NOT NULL,
    vendor_id   text   NOT NULL DEFAULT '',
    branch      text   NOT NULL,
    face_value  bigint NOT NULL,
    grants      bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (campaign_id, reward_id, status)
);

INSERT INTO report_status (campaign_id, reward_id, status, right_id, vendor_id, branch,
                           face_value, grants)
SELECT g.campaign_id, g.reward_id, g.status, min(g.right_id), coalesce(min(r.vendor_id), ''),
       coalesce(min(c.branch), ''), coalesce(min(r.face_value), 0), count(*)
FROM grants g
LEFT JOIN rewards r ON r.campaign_id = g.campaign_id AND r.id = g.reward_id
LEFT JOIN campaigns c ON c.id = g.campaign_id
GROUP BY g.campaign_id, g.reward_id, g.status;

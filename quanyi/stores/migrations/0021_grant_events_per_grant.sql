-- A grant event is keyed by its grant and its outbox entry id. A stream entry id is unique in
-- its own stream only: with several shards (Redis Cluster), two shards' outboxes written in the
-- same millisecond give out the same ids, and keyed by the id alone the second shard's event
-- was taken for a redelivery of the first and dropped. Every event of a grant comes from its
-- campaign's shard, so (grant_id, outbox_id) is unique, and a redelivered entry repeats the
-- same pair (still written once). The key leads with grant_id, so it serves the lookups of a
-- grant's events (refresh_status, events_of_grants, status_drift) that grant_events_grant did.

ALTER TABLE grant_events DROP CONSTRAINT grant_events_pkey;
ALTER TABLE grant_events ADD CONSTRAINT grant_events_pkey PRIMARY KEY (grant_id, outbox_id);
DROP INDEX grant_events_grant;

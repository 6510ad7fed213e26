-- Lanes of a bulk issuance: its frozen member buckets split into ranges that workers (or one
-- worker's concurrent tasks) run side by side, each with a checkpoint of its own. A lane is
-- run by whoever holds its advisory lock; its row says which of its buckets are done, and the
-- job row keeps the counts of every lane (added in the transaction that moves a lane on).
-- Made by the first worker that takes the job up, from the job's checkpoint then (a job that
-- ran before lanes existed goes on from its next_bucket).

CREATE TABLE issuance_lanes (
    job_id text NOT NULL REFERENCES issuance_jobs (id),
    lane integer NOT NULL CHECK (lane >= 0),
    -- Buckets [next_bucket, end_bucket) are left to do.
    next_bucket integer NOT NULL,
    end_bucket integer NOT NULL CHECK (end_bucket >= next_bucket),
    PRIMARY KEY (job_id, lane)
);

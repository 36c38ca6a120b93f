-- What nodes share beyond the registry: the secret they sign their requests to one
-- another with, and the chunks of batch jobs, which any node serving the job's
-- version claims (FOR UPDATE SKIP LOCKED) under a lease that runs out if it stops.
CREATE TABLE cluster_secrets (
    name       TEXT PRIMARY KEY,
    secret     BYTEA NOT NULL CHECK (length(secret) >= 32),
    created_at BIGINT NOT NULL
);
CREATE TABLE job_chunks (
    job_id      TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    seq         BIGINT NOT NULL CHECK (seq >= 0),
    kind        TEXT NOT NULL CHECK (kind IN ('rows', 'assemble')),
    first_row   BIGINT NOT NULL CHECK (first_row >= 0),
    rows        BIGINT NOT NULL CHECK (rows >= 0),
    state       TEXT NOT NULL CHECK (state IN ('queued', 'running', 'done')),
    node        TEXT,
    lease_until BIGINT,
    attempts    BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (job_id, seq)
);
CREATE INDEX job_chunks_open ON job_chunks (job_id, seq) WHERE state <> 'done';
CREATE INDEX job_chunks_by_node ON job_chunks (node) WHERE state = 'running';

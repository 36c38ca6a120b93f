-- The registry every node shares: users, grants, tokens and API keys, OS accounts,
-- services and their versions, jobs, the audit log. Names as in the SQLite schema,
-- except `user` and `grant`, which are reserved words here.
CREATE TABLE users (
    name          TEXT PRIMARY KEY,
    role          TEXT NOT NULL CHECK (role IN ('admin', 'publisher', 'user')),
    password_hash TEXT NOT NULL,
    created_at    BIGINT NOT NULL
);
CREATE TABLE grants (
    user_name  TEXT NOT NULL REFERENCES users (name) ON DELETE CASCADE,
    grant_name TEXT NOT NULL,
    PRIMARY KEY (user_name, grant_name)
);
CREATE TABLE tokens (
    hash       BYTEA PRIMARY KEY CHECK (length(hash) = 32),
    user_name  TEXT NOT NULL REFERENCES users (name) ON DELETE CASCADE,
    kind       TEXT NOT NULL CHECK (kind IN ('access', 'api_key')),
    label      TEXT,
    created_at BIGINT NOT NULL,
    expires_at BIGINT
);
CREATE INDEX tokens_by_user ON tokens (user_name);
CREATE INDEX tokens_by_expiry ON tokens (expires_at) WHERE expires_at IS NOT NULL;
CREATE TABLE os_users (
    uid       BIGINT PRIMARY KEY CHECK (uid >= 0),
    user_name TEXT NOT NULL REFERENCES users (name) ON DELETE CASCADE
);
-- JSON columns are TEXT checked as JSON: jsonb would reorder an object's keys, and a
-- service's declared inputs keep the order they were published in.
CREATE TABLE services (
    name        TEXT NOT NULL,
    version     TEXT NOT NULL,
    owner       TEXT NOT NULL,
    description TEXT NOT NULL,
    code        TEXT NOT NULL,
    function    TEXT NOT NULL,
    inputs      TEXT NOT NULL CHECK (inputs::jsonb IS NOT NULL),
    outputs     TEXT NOT NULL CHECK (outputs::jsonb IS NOT NULL),
    files       TEXT NOT NULL CHECK (files::jsonb IS NOT NULL),
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL,
    retired     BOOLEAN NOT NULL DEFAULT FALSE,
    env         TEXT NOT NULL DEFAULT '{}' CHECK (env::jsonb IS NOT NULL),
    PRIMARY KEY (name, version)
);
CREATE TABLE jobs (
    id            TEXT PRIMARY KEY,
    owner         TEXT NOT NULL,
    service       TEXT NOT NULL,
    version       TEXT NOT NULL,
    state         TEXT NOT NULL,
    rows_total    BIGINT NOT NULL,
    rows_done     BIGINT NOT NULL,
    chunks_total  BIGINT NOT NULL,
    chunks_done   BIGINT NOT NULL,
    chunks_failed BIGINT NOT NULL,
    error         TEXT,
    created_at    BIGINT NOT NULL,
    finished_at   BIGINT
);
CREATE INDEX jobs_by_owner ON jobs (owner);
CREATE INDEX jobs_unfinished ON jobs (created_at) WHERE state IN ('queued', 'running');
CREATE TABLE audit (
    seq        BIGSERIAL PRIMARY KEY,
    at         BIGINT NOT NULL,
    request_id TEXT NOT NULL,
    user_name  TEXT,
    route      TEXT NOT NULL,
    target     TEXT,
    code_hash  TEXT,
    outcome    TEXT NOT NULL
);

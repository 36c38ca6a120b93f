-- The nodes of the cluster: each registers itself and renews its heartbeat.
CREATE TABLE nodes (
    id           TEXT PRIMARY KEY,
    address      TEXT NOT NULL,
    version      TEXT NOT NULL,
    workers      BIGINT NOT NULL,
    busy         BIGINT NOT NULL,
    sessions     BIGINT NOT NULL,
    started_at   BIGINT NOT NULL,
    heartbeat_at BIGINT NOT NULL
);

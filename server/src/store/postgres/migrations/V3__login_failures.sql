-- Failed logins by user name, counted across every node.
CREATE TABLE login_failures (
    user_name TEXT NOT NULL,
    at        BIGINT NOT NULL
);
CREATE INDEX login_failures_by_user ON login_failures (user_name, at);
CREATE INDEX login_failures_by_time ON login_failures (at);

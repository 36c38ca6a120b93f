//! The embedded store: [`SqliteStore`], the [`Store`] kept in one SQLite file in the
//! data folder. Owns the schema, its migrations (keyed by `PRAGMA user_version`) and
//! the mapping between rows and records. It must not hash, check or interpret what it
//! keeps: passwords and tokens arrive already hashed, and names already validated.
//!
//! One connection behind a mutex: every call is a few microseconds, so a pool would
//! only add contention. Writes run in `IMMEDIATE` transactions and the file is in WAL
//! mode, so the admin CLI can change users while a server has the file open.

use std::fs::{DirBuilder, OpenOptions};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use parking_lot::Mutex;
use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSql, ToSqlOutput, Type, ValueRef};
use rusqlite::{params, Connection, OptionalExtension, Row, Transaction, TransactionBehavior};
use serde::de::DeserializeOwned;

use super::{
    AuditEntry, ChunkClaim, ChunkDone, ChunkKind, JobRecord, JobState, NodeRecord, Role,
    ServiceRecord, Store, StoreError, Timestamp, TokenKind, TokenRecord, UserRecord,
};

/// How long a call waits for another process (the admin CLI) holding the write lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Bytes of a token hash that [`Store::tokens_of`] shows (in hex) to tell tokens apart.
const TOKEN_PREFIX_BYTES: usize = 6;

/// `MIGRATIONS[i]` takes the schema from `user_version` `i` to `i + 1`. Append only.
const MIGRATIONS: &[&str] = &[
    SCHEMA_V1, SCHEMA_V2, SCHEMA_V3, SCHEMA_V4, SCHEMA_V5, SCHEMA_V6,
];

/// What nodes share beyond the registry (a store shared by processes on one machine
/// uses them too): the secret nodes sign their requests with, and batch jobs'
/// chunks, claimed under a lease. No foreign key to `jobs`: `put_job` replaces a
/// job's row, which would cascade; `end_job` forgets a job's chunks itself.
const SCHEMA_V6: &str = "
CREATE TABLE cluster_secrets (
    name       TEXT PRIMARY KEY NOT NULL,
    secret     BLOB NOT NULL CHECK (length(secret) >= 32),
    created_at INTEGER NOT NULL
) STRICT;
CREATE TABLE job_chunks (
    job_id      TEXT NOT NULL,
    seq         INTEGER NOT NULL CHECK (seq >= 0),
    kind        TEXT NOT NULL CHECK (kind IN ('rows', 'assemble')),
    first_row   INTEGER NOT NULL CHECK (first_row >= 0),
    rows        INTEGER NOT NULL CHECK (rows >= 0),
    state       TEXT NOT NULL CHECK (state IN ('queued', 'running', 'done')),
    node        TEXT,
    lease_until INTEGER,
    attempts    INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (job_id, seq)
) STRICT;
CREATE INDEX job_chunks_by_node ON job_chunks (node) WHERE state = 'running';
";

/// Failed logins by user name, counted across every process on the store.
const SCHEMA_V5: &str = "
CREATE TABLE login_failures (
    user TEXT NOT NULL,
    at   INTEGER NOT NULL
) STRICT;
CREATE INDEX login_failures_by_user ON login_failures (user, at);
CREATE INDEX login_failures_by_time ON login_failures (at);
";

/// The nodes registered in this store (one, for an embedded store).
const SCHEMA_V4: &str = "
CREATE TABLE nodes (
    id           TEXT PRIMARY KEY NOT NULL,
    address      TEXT NOT NULL,
    version      TEXT NOT NULL,
    workers      INTEGER NOT NULL,
    busy         INTEGER NOT NULL,
    sessions     INTEGER NOT NULL,
    started_at   INTEGER NOT NULL,
    heartbeat_at INTEGER NOT NULL
) STRICT;
";

/// OS accounts whose Unix-socket connections log in as a Rookery user (SO_PEERCRED).
const SCHEMA_V2: &str = "
CREATE TABLE os_users (
    uid  INTEGER PRIMARY KEY NOT NULL CHECK (uid >= 0),
    user TEXT NOT NULL REFERENCES users (name) ON DELETE CASCADE
) STRICT;
";

/// A service's own environment variables (a JSON object of strings).
const SCHEMA_V3: &str = "
ALTER TABLE services ADD COLUMN env TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(env));
";

const SCHEMA_V1: &str = "
CREATE TABLE users (
    name          TEXT PRIMARY KEY NOT NULL,
    role          TEXT NOT NULL CHECK (role IN ('admin', 'publisher', 'user')),
    password_hash TEXT NOT NULL,
    created_at    INTEGER NOT NULL
) STRICT;
CREATE TABLE grants (
    user  TEXT NOT NULL REFERENCES users (name) ON DELETE CASCADE,
    grant TEXT NOT NULL,
    PRIMARY KEY (user, grant)
) STRICT, WITHOUT ROWID;
CREATE TABLE tokens (
    hash       BLOB PRIMARY KEY NOT NULL CHECK (length(hash) = 32),
    user       TEXT NOT NULL REFERENCES users (name) ON DELETE CASCADE,
    kind       TEXT NOT NULL CHECK (kind IN ('access', 'api_key')),
    label      TEXT,
    created_at INTEGER NOT NULL,
    expires_at INTEGER
) STRICT, WITHOUT ROWID;
CREATE INDEX tokens_by_user ON tokens (user);
CREATE INDEX tokens_by_expiry ON tokens (expires_at) WHERE expires_at IS NOT NULL;
CREATE TABLE services (
    name        TEXT NOT NULL,
    version     TEXT NOT NULL,
    owner       TEXT NOT NULL,
    description TEXT NOT NULL,
    code        TEXT NOT NULL,
    function    TEXT NOT NULL,
    inputs      TEXT NOT NULL CHECK (json_valid(inputs)),
    outputs     TEXT NOT NULL CHECK (json_valid(outputs)),
    files       TEXT NOT NULL CHECK (json_valid(files)),
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL,
    retired     INTEGER NOT NULL DEFAULT 0 CHECK (retired IN (0, 1)),
    PRIMARY KEY (name, version)
) STRICT;
CREATE TABLE jobs (
    id            TEXT PRIMARY KEY NOT NULL,
    owner         TEXT NOT NULL,
    service       TEXT NOT NULL,
    version       TEXT NOT NULL,
    state         TEXT NOT NULL,
    rows_total    INTEGER NOT NULL,
    rows_done     INTEGER NOT NULL,
    chunks_total  INTEGER NOT NULL,
    chunks_done   INTEGER NOT NULL,
    chunks_failed INTEGER NOT NULL,
    error         TEXT,
    created_at    INTEGER NOT NULL,
    finished_at   INTEGER
) STRICT;
CREATE INDEX jobs_by_owner ON jobs (owner);
CREATE TABLE audit (
    seq        INTEGER PRIMARY KEY,
    at         INTEGER NOT NULL,
    request_id TEXT NOT NULL,
    user       TEXT,
    route      TEXT NOT NULL,
    target     TEXT,
    code_hash  TEXT,
    outcome    TEXT NOT NULL
) STRICT;
";

const TOKEN_COLUMNS: &str = "hash, user, kind, label, created_at, expires_at";
const SERVICE_COLUMNS: &str = "name, version, owner, description, code, function, \
     inputs, outputs, files, created_at, updated_at, retired, env";
const JOB_COLUMNS: &str = "id, owner, service, version, state, rows_total, rows_done, \
     chunks_total, chunks_done, chunks_failed, error, created_at, finished_at";

/// The [`Store`] on an embedded SQLite database.
#[derive(Debug)]
pub struct SqliteStore {
    conn: Mutex<Connection>,
    /// `None` for an in-memory store.
    path: Option<PathBuf>,
}

impl SqliteStore {
    /// Opens (creating it, mode 0600, and its parent folder, mode 0700, when missing)
    /// the database at `path` and brings its schema up to date.
    pub fn open(path: &Path) -> Result<SqliteStore, StoreError> {
        create_private_file(path)?;
        let conn = Connection::open(path).map_err(backend)?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(backend)?;
        conn.pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get::<_, String>(0))
            .map_err(backend)?;
        // With WAL, NORMAL loses at most the last commits on power loss, never integrity.
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(backend)?;
        Self::init(conn, Some(path.to_path_buf()))
    }

    /// A fresh store that lives as long as the value (tests, throw-away servers).
    pub fn open_in_memory() -> Result<SqliteStore, StoreError> {
        Self::init(Connection::open_in_memory().map_err(backend)?, None)
    }

    /// The database file, or `None` in memory.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    fn init(mut conn: Connection, path: Option<PathBuf>) -> Result<SqliteStore, StoreError> {
        conn.busy_timeout(BUSY_TIMEOUT).map_err(backend)?;
        conn.pragma_update(None, "foreign_keys", true)
            .map_err(backend)?;
        conn.set_prepared_statement_cache_capacity(64);
        migrate(&mut conn)?;
        Ok(SqliteStore {
            conn: Mutex::new(conn),
            path,
        })
    }

    fn read<T>(&self, f: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> Result<T, StoreError> {
        f(&self.conn.lock()).map_err(backend)
    }

    /// Runs `f` in an immediate transaction, committed when `f` succeeds.
    fn write<T>(
        &self,
        f: impl FnOnce(&Transaction<'_>) -> rusqlite::Result<T>,
    ) -> Result<T, StoreError> {
        let mut conn = self.conn.lock();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(backend)?;
        let out = f(&tx).map_err(backend)?;
        tx.commit().map_err(backend)?;
        Ok(out)
    }
}

fn backend(e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(e.to_string())
}

/// What a write found, before it becomes a [`StoreError`] naming the record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Done,
    /// The record (or the user it belongs to) does not exist.
    Missing,
    /// The key is taken.
    Taken,
}

impl Outcome {
    fn of_update(changed: usize) -> Outcome {
        if changed > 0 {
            Outcome::Done
        } else {
            Outcome::Missing
        }
    }

    /// `what` names the record: "user `alice`".
    fn check(self, what: impl FnOnce() -> String) -> Result<(), StoreError> {
        match self {
            Outcome::Done => Ok(()),
            Outcome::Missing => Err(StoreError::NotFound(what())),
            Outcome::Taken => Err(StoreError::Conflict(what())),
        }
    }
}

fn user_named(name: &str) -> impl FnOnce() -> String + '_ {
    move || format!("user `{name}`")
}

/// Creates `path` (mode 0600) and its missing parent folders (mode 0700); leaves an
/// existing file alone.
fn create_private_file(path: &Path) -> Result<(), StoreError> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(parent)
            .map_err(|e| backend(format_args!("{}: {e}", parent.display())))?;
    }
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)
        .map_err(|e| backend(format_args!("{}: {e}", path.display())))?;
    Ok(())
}

/// Applies every migration past the file's `user_version`.
fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    while migrate_once(conn)? {}
    Ok(())
}

/// Applies the next migration in one transaction that also reads the version, so two
/// processes opening a new file do not both create the tables. False when up to date.
fn migrate_once(conn: &mut Connection) -> Result<bool, StoreError> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(backend)?;
    let version: usize = tx
        .pragma_query_value(None, "user_version", |row| row.get(0))
        .map_err(backend)?;
    let Some(sql) = MIGRATIONS.get(version) else {
        return match version > MIGRATIONS.len() {
            true => Err(StoreError::Backend(format!(
                "the database has schema version {version}, newer than this rookery knows ({})",
                MIGRATIONS.len()
            ))),
            false => Ok(false),
        };
    };
    tx.execute_batch(sql).map_err(backend)?;
    tx.pragma_update(None, "user_version", version + 1)
        .map_err(backend)?;
    tx.commit().map_err(backend)?;
    Ok(true)
}

// ---- enums as text ----

fn text_error(what: &str, got: &str) -> FromSqlError {
    FromSqlError::Other(format!("unknown {what} `{got}` in the database").into())
}

impl ToSql for Role {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(self.as_str().into())
    }
}

impl FromSql for Role {
    fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
        let s = value.as_str()?;
        s.parse().map_err(|_| text_error("role", s))
    }
}

fn token_kind_str(kind: TokenKind) -> &'static str {
    match kind {
        TokenKind::Access => "access",
        TokenKind::ApiKey => "api_key",
    }
}

impl ToSql for TokenKind {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(token_kind_str(*self).into())
    }
}

impl FromSql for TokenKind {
    fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
        match value.as_str()? {
            "access" => Ok(TokenKind::Access),
            "api_key" => Ok(TokenKind::ApiKey),
            other => Err(text_error("token kind", other)),
        }
    }
}

fn job_state_str(state: JobState) -> &'static str {
    match state {
        JobState::Queued => "queued",
        JobState::Running => "running",
        JobState::Succeeded => "succeeded",
        JobState::Failed => "failed",
        JobState::Cancelled => "cancelled",
    }
}

impl ToSql for JobState {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(job_state_str(*self).into())
    }
}

impl FromSql for JobState {
    fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
        match value.as_str()? {
            "queued" => Ok(JobState::Queued),
            "running" => Ok(JobState::Running),
            "succeeded" => Ok(JobState::Succeeded),
            "failed" => Ok(JobState::Failed),
            "cancelled" => Ok(JobState::Cancelled),
            other => Err(text_error("job state", other)),
        }
    }
}

/// Column `idx` of `row`, a JSON text, decoded.
fn json_column<T: DeserializeOwned>(row: &Row<'_>, idx: usize) -> rusqlite::Result<T> {
    let text: String = row.get(idx)?;
    serde_json::from_str(&text)
        .map_err(|e| rusqlite::Error::FromSqlConversionFailure(idx, Type::Text, Box::new(e)))
}

fn to_json<T: serde::Serialize>(value: &T) -> rusqlite::Result<String> {
    serde_json::to_string(value).map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))
}

// ---- users and grants ----

fn user_exists(c: &Connection, name: &str) -> rusqlite::Result<bool> {
    c.prepare_cached("SELECT 1 FROM users WHERE name = ?1")?
        .exists([name])
}

fn grants_of(c: &Connection, name: &str) -> rusqlite::Result<Vec<String>> {
    let mut stmt = c.prepare_cached("SELECT grant FROM grants WHERE user = ?1 ORDER BY grant")?;
    let rows = stmt.query_map([name], |row| row.get(0))?;
    rows.collect()
}

/// A user row without its grants.
fn user_row(row: &Row<'_>) -> rusqlite::Result<UserRecord> {
    Ok(UserRecord {
        name: row.get(0)?,
        role: row.get(1)?,
        grants: Vec::new(),
        password_hash: row.get(2)?,
        created_at: row.get(3)?,
    })
}

fn load_user(c: &Connection, name: &str) -> rusqlite::Result<Option<UserRecord>> {
    let found = c
        .prepare_cached("SELECT name, role, password_hash, created_at FROM users WHERE name = ?1")?
        .query_row([name], user_row)
        .optional()?;
    let Some(mut user) = found else {
        return Ok(None);
    };
    user.grants = grants_of(c, name)?;
    Ok(Some(user))
}

fn load_users(c: &Connection) -> rusqlite::Result<Vec<UserRecord>> {
    let mut stmt =
        c.prepare_cached("SELECT name, role, password_hash, created_at FROM users ORDER BY name")?;
    let mut users = stmt
        .query_map([], user_row)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    for user in &mut users {
        user.grants = grants_of(c, &user.name)?;
    }
    Ok(users)
}

fn insert_user(tx: &Transaction<'_>, user: &UserRecord) -> rusqlite::Result<Outcome> {
    let inserted = tx
        .prepare_cached(
            "INSERT INTO users (name, role, password_hash, created_at) VALUES (?1, ?2, ?3, ?4) \
             ON CONFLICT (name) DO NOTHING",
        )?
        .execute(params![
            user.name,
            user.role,
            user.password_hash,
            user.created_at
        ])?;
    if inserted == 0 {
        return Ok(Outcome::Taken);
    }
    for grant in &user.grants {
        insert_grant(tx, &user.name, grant)?;
    }
    Ok(Outcome::Done)
}

fn insert_grant(c: &Connection, name: &str, grant: &str) -> rusqlite::Result<()> {
    c.prepare_cached("INSERT INTO grants (user, grant) VALUES (?1, ?2) ON CONFLICT DO NOTHING")?
        .execute([name, grant])?;
    Ok(())
}

/// Runs an `UPDATE`/`DELETE` of one user; `Missing` when no row matched.
fn change_user(
    tx: &Transaction<'_>,
    sql: &str,
    params: impl rusqlite::Params,
) -> rusqlite::Result<Outcome> {
    Ok(Outcome::of_update(tx.prepare_cached(sql)?.execute(params)?))
}

/// Adds (`add`) or removes a grant; `Missing` when the user does not exist.
fn change_grant(
    tx: &Transaction<'_>,
    name: &str,
    grant: &str,
    add: bool,
) -> rusqlite::Result<Outcome> {
    if !user_exists(tx, name)? {
        return Ok(Outcome::Missing);
    }
    if add {
        insert_grant(tx, name, grant)?;
    } else {
        tx.prepare_cached("DELETE FROM grants WHERE user = ?1 AND grant = ?2")?
            .execute([name, grant])?;
    }
    Ok(Outcome::Done)
}

// ---- tokens ----

fn token_row(row: &Row<'_>) -> rusqlite::Result<([u8; 32], TokenRecord)> {
    let record = TokenRecord {
        user: row.get(1)?,
        kind: row.get(2)?,
        label: row.get(3)?,
        created_at: row.get(4)?,
        expires_at: row.get(5)?,
    };
    Ok((row.get(0)?, record))
}

/// `Missing` when the token's user does not exist, `Taken` when the hash is.
fn insert_token(
    tx: &Transaction<'_>,
    hash: &[u8; 32],
    t: &TokenRecord,
) -> rusqlite::Result<Outcome> {
    if !user_exists(tx, &t.user)? {
        return Ok(Outcome::Missing);
    }
    let sql = format!(
        "INSERT INTO tokens ({TOKEN_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6) \
         ON CONFLICT (hash) DO NOTHING"
    );
    let inserted = tx.prepare_cached(&sql)?.execute(params![
        hash,
        t.user,
        t.kind,
        t.label,
        t.created_at,
        t.expires_at
    ])?;
    Ok(if inserted > 0 {
        Outcome::Done
    } else {
        Outcome::Taken
    })
}

fn load_tokens_of(c: &Connection, user: &str) -> rusqlite::Result<Vec<(String, TokenRecord)>> {
    let sql =
        format!("SELECT {TOKEN_COLUMNS} FROM tokens WHERE user = ?1 ORDER BY created_at, hash");
    let mut stmt = c.prepare_cached(&sql)?;
    let rows = stmt.query_map([user], token_row)?;
    rows.map(|r| r.map(|(hash, t)| (hex::encode(&hash[..TOKEN_PREFIX_BYTES]), t)))
        .collect()
}

// ---- services ----

fn service_row(row: &Row<'_>) -> rusqlite::Result<ServiceRecord> {
    Ok(ServiceRecord {
        name: row.get(0)?,
        version: row.get(1)?,
        owner: row.get(2)?,
        description: row.get(3)?,
        code: row.get(4)?,
        function: row.get(5)?,
        inputs: json_column(row, 6)?,
        outputs: json_column(row, 7)?,
        files: json_column(row, 8)?,
        created_at: row.get(9)?,
        updated_at: row.get(10)?,
        retired: row.get(11)?,
        env: json_column(row, 12)?,
    })
}

fn upsert_service(tx: &Transaction<'_>, s: &ServiceRecord) -> rusqlite::Result<()> {
    let sql = format!(
        "INSERT OR REPLACE INTO services ({SERVICE_COLUMNS}) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)"
    );
    tx.prepare_cached(&sql)?.execute(params![
        s.name,
        s.version,
        s.owner,
        s.description,
        s.code,
        s.function,
        to_json(&s.inputs)?,
        to_json(&s.outputs)?,
        to_json(&s.files)?,
        s.created_at,
        s.updated_at,
        s.retired,
        to_json(&s.env)?,
    ])?;
    Ok(())
}

// ---- jobs and audit ----

fn job_row(row: &Row<'_>) -> rusqlite::Result<JobRecord> {
    Ok(JobRecord {
        id: row.get(0)?,
        owner: row.get(1)?,
        service: row.get(2)?,
        version: row.get(3)?,
        state: row.get(4)?,
        rows_total: row.get(5)?,
        rows_done: row.get(6)?,
        chunks_total: row.get(7)?,
        chunks_done: row.get(8)?,
        chunks_failed: row.get(9)?,
        error: row.get(10)?,
        created_at: row.get(11)?,
        finished_at: row.get(12)?,
    })
}

fn upsert_job(tx: &Transaction<'_>, j: &JobRecord) -> rusqlite::Result<()> {
    let sql = format!(
        "INSERT OR REPLACE INTO jobs ({JOB_COLUMNS}) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)"
    );
    tx.prepare_cached(&sql)?.execute(params![
        j.id,
        j.owner,
        j.service,
        j.version,
        j.state,
        j.rows_total,
        j.rows_done,
        j.chunks_total,
        j.chunks_done,
        j.chunks_failed,
        j.error,
        j.created_at,
        j.finished_at,
    ])?;
    Ok(())
}

fn audit_row(row: &Row<'_>) -> rusqlite::Result<AuditEntry> {
    Ok(AuditEntry {
        at: row.get(0)?,
        request_id: row.get(1)?,
        user: row.get(2)?,
        route: row.get(3)?,
        target: row.get(4)?,
        code_hash: row.get(5)?,
        outcome: row.get(6)?,
    })
}

impl Store for SqliteStore {
    fn create_user(&self, user: &UserRecord) -> Result<(), StoreError> {
        self.write(|tx| insert_user(tx, user))?
            .check(user_named(&user.name))
    }

    fn user(&self, name: &str) -> Result<Option<UserRecord>, StoreError> {
        self.read(|c| load_user(c, name))
    }

    fn users(&self) -> Result<Vec<UserRecord>, StoreError> {
        self.read(load_users)
    }

    fn set_password(&self, name: &str, password_hash: &str) -> Result<(), StoreError> {
        let sql = "UPDATE users SET password_hash = ?2 WHERE name = ?1";
        self.write(|tx| change_user(tx, sql, [name, password_hash]))?
            .check(user_named(name))
    }

    fn set_role(&self, name: &str, role: Role) -> Result<(), StoreError> {
        let sql = "UPDATE users SET role = ?2 WHERE name = ?1";
        self.write(|tx| change_user(tx, sql, params![name, role]))?
            .check(user_named(name))
    }

    fn remove_user(&self, name: &str) -> Result<(), StoreError> {
        // Grants and tokens go with the user: ON DELETE CASCADE.
        let sql = "DELETE FROM users WHERE name = ?1";
        self.write(|tx| change_user(tx, sql, [name]))?
            .check(user_named(name))
    }

    fn grant(&self, name: &str, grant: &str) -> Result<(), StoreError> {
        self.write(|tx| change_grant(tx, name, grant, true))?
            .check(user_named(name))
    }

    fn revoke(&self, name: &str, grant: &str) -> Result<(), StoreError> {
        self.write(|tx| change_grant(tx, name, grant, false))?
            .check(user_named(name))
    }

    fn put_token(&self, hash: &[u8; 32], token: &TokenRecord) -> Result<(), StoreError> {
        match self.write(|tx| insert_token(tx, hash, token))? {
            Outcome::Taken => Err(StoreError::Conflict("token".to_owned())),
            other => other.check(user_named(&token.user)),
        }
    }

    fn token(&self, hash: &[u8; 32]) -> Result<Option<TokenRecord>, StoreError> {
        let sql = format!("SELECT {TOKEN_COLUMNS} FROM tokens WHERE hash = ?1");
        let row = self.read(|c| {
            c.prepare_cached(&sql)?
                .query_row([hash], token_row)
                .optional()
        })?;
        Ok(row.map(|(_, record)| record))
    }

    fn delete_token(&self, hash: &[u8; 32]) -> Result<bool, StoreError> {
        self.write(|tx| {
            Ok(tx
                .prepare_cached("DELETE FROM tokens WHERE hash = ?1")?
                .execute([hash])?
                > 0)
        })
    }

    fn tokens_of(&self, user: &str) -> Result<Vec<(String, TokenRecord)>, StoreError> {
        self.read(|c| load_tokens_of(c, user))
    }

    fn purge_expired_tokens(&self, now: Timestamp) -> Result<usize, StoreError> {
        let sql = "DELETE FROM tokens WHERE expires_at IS NOT NULL AND expires_at < ?1";
        self.write(|tx| tx.prepare_cached(sql)?.execute([now]))
    }

    fn put_service(&self, service: &ServiceRecord) -> Result<(), StoreError> {
        self.write(|tx| upsert_service(tx, service))
    }

    fn service(&self, name: &str, version: &str) -> Result<Option<ServiceRecord>, StoreError> {
        let sql =
            format!("SELECT {SERVICE_COLUMNS} FROM services WHERE name = ?1 AND version = ?2");
        self.read(|c| {
            c.prepare_cached(&sql)?
                .query_row([name, version], service_row)
                .optional()
        })
    }

    fn services(&self) -> Result<Vec<ServiceRecord>, StoreError> {
        let sql = format!(
            "SELECT {SERVICE_COLUMNS} FROM services WHERE retired = 0 \
             ORDER BY name, created_at, version"
        );
        self.read(|c| {
            c.prepare_cached(&sql)?
                .query_map([], service_row)?
                .collect()
        })
    }

    fn retire_service(&self, name: &str, version: &str) -> Result<bool, StoreError> {
        let sql =
            "UPDATE services SET retired = 1 WHERE name = ?1 AND version = ?2 AND retired = 0";
        self.write(|tx| Ok(tx.prepare_cached(sql)?.execute([name, version])? > 0))
    }

    fn put_job(&self, job: &JobRecord) -> Result<(), StoreError> {
        self.write(|tx| upsert_job(tx, job))
    }

    fn job(&self, id: &str) -> Result<Option<JobRecord>, StoreError> {
        let sql = format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = ?1");
        self.read(|c| c.prepare_cached(&sql)?.query_row([id], job_row).optional())
    }

    fn map_os_user(&self, name: &str, uid: u32) -> Result<(), StoreError> {
        if self.user(name)?.is_none() {
            return Err(StoreError::NotFound(format!("user {name}")));
        }
        self.write(|tx| {
            tx.prepare_cached("INSERT OR REPLACE INTO os_users (uid, user) VALUES (?1, ?2)")?
                .execute(params![uid, name])
                .map(drop)
        })
    }

    fn os_user(&self, uid: u32) -> Result<Option<String>, StoreError> {
        self.read(|c| {
            c.prepare_cached("SELECT user FROM os_users WHERE uid = ?1")?
                .query_row([uid], |r| r.get(0))
                .optional()
        })
    }

    fn unfinished_jobs(&self) -> Result<Vec<JobRecord>, StoreError> {
        let sql = format!(
            "SELECT {JOB_COLUMNS} FROM jobs WHERE state IN ('queued', 'running') ORDER BY created_at"
        );
        self.read(|c| {
            c.prepare_cached(&sql)?
                .query_map([], job_row)?
                .collect::<rusqlite::Result<Vec<_>>>()
        })
    }

    fn append_audit(&self, e: &AuditEntry) -> Result<(), StoreError> {
        self.append_audit_batch(std::slice::from_ref(e))
    }

    fn append_audit_batch(&self, entries: &[AuditEntry]) -> Result<(), StoreError> {
        let sql = "INSERT INTO audit (at, request_id, user, route, target, code_hash, outcome) \
                   VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)";
        self.write(|tx| {
            let mut insert = tx.prepare_cached(sql)?;
            for e in entries {
                insert.execute(params![
                    e.at,
                    e.request_id,
                    e.user,
                    e.route,
                    e.target,
                    e.code_hash,
                    e.outcome
                ])?;
            }
            Ok(())
        })
    }

    fn put_node(&self, n: &NodeRecord) -> Result<(), StoreError> {
        self.write(|tx| {
            tx.prepare_cached(
                "INSERT OR REPLACE INTO nodes (id, address, version, workers, busy, sessions, \
                 started_at, heartbeat_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )?
            .execute(params![
                n.id,
                n.address,
                n.version,
                n.workers,
                n.busy,
                n.sessions,
                n.started_at,
                n.heartbeat_at
            ])
            .map(drop)
        })
    }

    fn nodes(&self) -> Result<Vec<NodeRecord>, StoreError> {
        self.read(|c| {
            c.prepare_cached(
                "SELECT id, address, version, workers, busy, sessions, started_at, heartbeat_at \
                 FROM nodes ORDER BY id",
            )?
            .query_map([], |r| {
                Ok(NodeRecord {
                    id: r.get(0)?,
                    address: r.get(1)?,
                    version: r.get(2)?,
                    workers: r.get(3)?,
                    busy: r.get(4)?,
                    sessions: r.get(5)?,
                    started_at: r.get(6)?,
                    heartbeat_at: r.get(7)?,
                })
            })?
            .collect()
        })
    }

    fn record_login_failure(&self, user: &str, at: Timestamp) -> Result<(), StoreError> {
        self.write(|tx| {
            tx.prepare_cached("INSERT INTO login_failures (user, at) VALUES (?1, ?2)")?
                .execute(params![user, at])
                .map(drop)
        })
    }

    fn login_failures_since(&self, user: &str, since: Timestamp) -> Result<u64, StoreError> {
        self.read(|c| {
            c.prepare_cached("SELECT count(*) FROM login_failures WHERE user = ?1 AND at >= ?2")?
                .query_row(params![user, since], |r| r.get(0))
        })
    }

    fn purge_login_failures(&self, before: Timestamp) -> Result<usize, StoreError> {
        self.write(|tx| {
            tx.prepare_cached("DELETE FROM login_failures WHERE at < ?1")?
                .execute([before])
        })
    }

    fn remove_node(&self, id: &str) -> Result<bool, StoreError> {
        self.write(|tx| {
            Ok(tx
                .prepare_cached("DELETE FROM nodes WHERE id = ?1")?
                .execute([id])?
                > 0)
        })
    }

    fn remove_nodes_silent_since(&self, before: Timestamp) -> Result<usize, StoreError> {
        self.write(|tx| {
            tx.prepare_cached("DELETE FROM nodes WHERE heartbeat_at < ?1")?
                .execute([before])
        })
    }

    fn cluster_secret(&self, fresh: &[u8]) -> Result<Vec<u8>, StoreError> {
        self.write(|tx| {
            tx.prepare_cached(
                "INSERT OR IGNORE INTO cluster_secrets (name, secret, created_at) \
                 VALUES ('nodes', ?1, ?2)",
            )?
            .execute(params![fresh, crate::admin::now()])?;
            tx.prepare_cached("SELECT secret FROM cluster_secrets WHERE name = 'nodes'")?
                .query_row([], |r| r.get(0))
        })
    }

    fn put_shared_job(&self, job: &JobRecord, chunks: &[(u64, u64)]) -> Result<(), StoreError> {
        self.write(|tx| {
            upsert_job(tx, job)?;
            let j = job;
            let mut insert = tx.prepare_cached(
                "INSERT INTO job_chunks (job_id, seq, kind, first_row, rows, state) \
                 VALUES (?1, ?2, ?3, ?4, ?5, 'queued')",
            )?;
            for (seq, &(first, rows)) in chunks.iter().enumerate() {
                insert.execute(params![j.id, seq as u64, "rows", first, rows])?;
            }
            if chunks.is_empty() {
                insert.execute(params![j.id, 0u64, "assemble", 0u64, 0u64])?;
            }
            Ok(())
        })
    }

    fn claim_chunk(
        &self,
        node: &str,
        services: &[(String, String)],
        now: Timestamp,
        lease_until: Timestamp,
    ) -> Result<Option<ChunkClaim>, StoreError> {
        // One writer at a time (an immediate transaction): no two claims can pick
        // the same chunk. The service filter is applied here, row by row.
        self.write(|tx| {
            let mut pick = tx.prepare_cached(
                "SELECT c.job_id, c.seq, c.kind, c.first_row, c.rows, c.attempts, \
                   j.service, j.version \
                 FROM job_chunks c JOIN jobs j ON j.id = c.job_id \
                 WHERE j.state IN ('queued', 'running') \
                   AND (c.state = 'queued' OR (c.state = 'running' AND c.lease_until < ?1)) \
                 ORDER BY j.created_at, c.job_id, c.seq",
            )?;
            let mut rows = pick.query([now])?;
            let mut claim = None;
            while let Some(r) = rows.next()? {
                let (service, version): (String, String) = (r.get(6)?, r.get(7)?);
                if !services.iter().any(|(s, v)| *s == service && *v == version) {
                    continue;
                }
                let kind: String = r.get(2)?;
                claim = Some(ChunkClaim {
                    job: r.get(0)?,
                    seq: r.get(1)?,
                    kind: ChunkKind::parse(&kind).ok_or_else(|| {
                        rusqlite::Error::FromSqlConversionFailure(
                            2,
                            Type::Text,
                            Box::new(text_error("chunk kind", &kind)),
                        )
                    })?,
                    first_row: r.get(3)?,
                    rows: r.get(4)?,
                    attempt: r.get::<_, u64>(5)? + 1,
                    service,
                    version,
                });
                break;
            }
            drop(rows);
            let Some(claim) = claim else {
                return Ok(None);
            };
            tx.prepare_cached(
                "UPDATE job_chunks SET state = 'running', node = ?3, lease_until = ?4, \
                 attempts = attempts + 1 WHERE job_id = ?1 AND seq = ?2",
            )?
            .execute(params![claim.job, claim.seq, node, lease_until])?;
            tx.prepare_cached(
                "UPDATE jobs SET state = 'running' WHERE id = ?1 AND state = 'queued'",
            )?
            .execute([&claim.job])?;
            Ok(Some(claim))
        })
    }

    fn renew_chunk(
        &self,
        job: &str,
        seq: u64,
        node: &str,
        lease_until: Timestamp,
    ) -> Result<bool, StoreError> {
        self.write(|tx| {
            tx.prepare_cached(
                "UPDATE job_chunks SET lease_until = ?4 \
                 WHERE job_id = ?1 AND seq = ?2 AND node = ?3 AND state = 'running'",
            )?
            .execute(params![job, seq, node, lease_until])
            .map(|n| n == 1)
        })
    }

    fn chunk_done(&self, job: &str, seq: u64, node: &str) -> Result<ChunkDone, StoreError> {
        self.write(|tx| {
            let done: Option<(String, u64)> = tx
                .prepare_cached(
                    "UPDATE job_chunks SET state = 'done', node = NULL, lease_until = NULL \
                     WHERE job_id = ?1 AND seq = ?2 AND node = ?3 AND state = 'running' \
                     RETURNING kind, rows",
                )?
                .query_row(params![job, seq, node], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()?;
            let Some((kind, rows)) = done else {
                return Ok(ChunkDone::Lost);
            };
            if kind != ChunkKind::Rows.as_str() {
                return Ok(ChunkDone::Counted { last: false });
            }
            let counts: Option<(u64, u64)> = tx
                .prepare_cached(
                    "UPDATE jobs SET rows_done = rows_done + ?2, chunks_done = chunks_done + 1 \
                     WHERE id = ?1 AND state IN ('queued', 'running') \
                     RETURNING chunks_done, chunks_total",
                )?
                .query_row(params![job, rows], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()?;
            let Some((done, total)) = counts else {
                return Ok(ChunkDone::Lost);
            };
            let last = done == total;
            if last {
                tx.prepare_cached(
                    "INSERT OR IGNORE INTO job_chunks (job_id, seq, kind, first_row, rows, state) \
                     VALUES (?1, ?2, 'assemble', 0, 0, 'queued')",
                )?
                .execute(params![job, total])?;
            }
            Ok(ChunkDone::Counted { last })
        })
    }

    fn end_job(
        &self,
        id: &str,
        state: JobState,
        error: Option<&str>,
        failed_chunk: bool,
        at: Timestamp,
    ) -> Result<bool, StoreError> {
        self.write(|tx| {
            let ended = tx
                .prepare_cached(
                    "UPDATE jobs SET state = ?2, error = ?3, finished_at = ?4, \
                     chunks_failed = chunks_failed + ?5 \
                     WHERE id = ?1 AND state IN ('queued', 'running')",
                )?
                .execute(params![id, state, error, at, u64::from(failed_chunk)])?
                == 1;
            if ended {
                tx.prepare_cached("DELETE FROM job_chunks WHERE job_id = ?1")?
                    .execute([id])?;
            }
            Ok(ended)
        })
    }

    fn release_chunks(&self, node: &str) -> Result<usize, StoreError> {
        self.write(|tx| {
            tx.prepare_cached(
                "UPDATE job_chunks SET state = 'queued', node = NULL, lease_until = NULL, \
                 attempts = max(attempts - 1, 0) WHERE node = ?1 AND state = 'running'",
            )?
            .execute([node])
        })
    }

    fn audit_tail(&self, limit: usize) -> Result<Vec<AuditEntry>, StoreError> {
        let sql = "SELECT at, request_id, user, route, target, code_hash, outcome \
                   FROM audit ORDER BY seq DESC LIMIT ?1";
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.read(|c| {
            c.prepare_cached(sql)?
                .query_map([limit], audit_row)?
                .collect()
        })
    }
}

#[cfg(test)]
mod tests;

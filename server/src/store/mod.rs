//! The store: users, tokens, grants, services and their versions, jobs, and the audit
//! log, behind one small trait with two backends: the embedded SQLite one (one
//! node, the default) and PostgreSQL (shared by several nodes). One test suite
//! (`suite.rs`) runs against both. Owns the record types and the trait;
//! it must not know about HTTP or R. Passwords and tokens reach it only as hashes.

mod postgres;
mod sqlite;
#[cfg(test)]
mod suite;

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

pub use postgres::PgStore;
pub use sqlite::SqliteStore;

/// Opens the registry: the PostgreSQL database at `url` when given (shared by
/// several nodes), else the SQLite file `rookery.db` in the data folder `data`.
pub fn open(
    url: Option<&str>,
    data: &std::path::Path,
) -> Result<std::sync::Arc<dyn Store>, StoreError> {
    Ok(match url {
        Some(url) => std::sync::Arc::new(PgStore::connect(url)?),
        None => std::sync::Arc::new(SqliteStore::open(&data.join(STORE_FILE))?),
    })
}

/// The SQLite store's file in the data folder.
pub const STORE_FILE: &str = "rookery.db";

/// `url` with its password (if any) replaced by `***`, for logs and messages.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let (auth, host) = match rest.rsplit_once('@') {
        Some(split) => split,
        None => return url.to_owned(),
    };
    match auth.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None => url.to_owned(),
    }
}

/// Seconds since the Unix epoch.
pub type Timestamp = i64;

/// What a user may do. Grants (`execute`) add to a role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Manages users and may do everything.
    Admin,
    /// Publishes services, opens sessions, runs code.
    Publisher,
    /// Consumes the services it is granted; runs code only with the `execute` grant.
    User,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Publisher => "publisher",
            Role::User => "user",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "admin" => Ok(Role::Admin),
            "publisher" => Ok(Role::Publisher),
            "user" => Ok(Role::User),
            other => Err(format!(
                "unknown role `{other}` (expected admin, publisher or user)"
            )),
        }
    }
}

/// The grant that lets a `user` run arbitrary R code (SQL Server's EXECUTE ANY
/// EXTERNAL SCRIPT).
pub const GRANT_EXECUTE: &str = "execute";

/// The grant that lets a `user` call service `name` (any version): `service:NAME`.
pub fn service_grant(name: &str) -> String {
    format!("service:{name}")
}

/// A user as stored. `password_hash` is an argon2id PHC string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRecord {
    pub name: String,
    pub role: Role,
    pub grants: Vec<String>,
    pub password_hash: String,
    pub created_at: Timestamp,
}

/// Bearer tokens from `POST /login`, and API keys from `rookery key create`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenKind {
    Access,
    ApiKey,
}

/// A token as stored, keyed by the SHA-256 of the token string (never the token).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRecord {
    pub user: String,
    pub kind: TokenKind,
    /// Free text for API keys (what the key is for).
    pub label: Option<String>,
    pub created_at: Timestamp,
    /// `None`: does not expire (API keys may be created without an expiry).
    pub expires_at: Option<Timestamp>,
}

/// One published version of a service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceRecord {
    pub name: String,
    pub version: String,
    pub owner: String,
    pub description: String,
    /// R code run once when the service's workers start (loads the model, defines
    /// the function).
    pub code: String,
    /// The R function called with the input data frame.
    pub function: String,
    /// Declared input: see `formats::schema`.
    pub inputs: serde_json::Value,
    /// Declared output, for the OpenAPI document.
    pub outputs: serde_json::Value,
    /// Names of the model files stored beside the service (under the data folder).
    pub files: Vec<String>,
    /// Environment variables only this service's workers see (secrets, often).
    #[serde(default)]
    pub env: ServiceEnv,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    pub retired: bool,
}

/// A service's own environment variables, by name. Its values are often secrets (a
/// database password the scoring code needs): they reach only the service's zygote
/// and workers, and `Debug` shows the names alone, so no log line or error holds a
/// value. No route returns them.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ServiceEnv(pub std::collections::BTreeMap<String, String>);

impl std::fmt::Debug for ServiceEnv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.0.keys()).finish()
    }
}

/// Where an asynchronous batch job is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    Queued,
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

impl JobState {
    pub fn is_finished(self) -> bool {
        matches!(
            self,
            JobState::Succeeded | JobState::Failed | JobState::Cancelled
        )
    }
}

/// What a chunk of a batch job shared by several nodes stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkKind {
    /// A range of the input's rows, to be scored.
    Rows,
    /// Gluing every chunk's answer into the job's result; queued once the last
    /// rows chunk is done.
    Assemble,
}

impl ChunkKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ChunkKind::Rows => "rows",
            ChunkKind::Assemble => "assemble",
        }
    }

    pub fn parse(s: &str) -> Option<ChunkKind> {
        match s {
            "rows" => Some(ChunkKind::Rows),
            "assemble" => Some(ChunkKind::Assemble),
            _ => None,
        }
    }
}

/// A chunk of a shared batch job, claimed by one node until its lease runs out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkClaim {
    pub job: String,
    /// 0-based; the assemble chunk comes after the last rows chunk.
    pub seq: u64,
    pub kind: ChunkKind,
    /// The input rows it covers (0-based, end-exclusive); `0..0` to assemble.
    pub first_row: u64,
    pub rows: u64,
    /// 1 on the first claim; more when earlier claimers' leases ran out.
    pub attempt: u64,
    pub service: String,
    pub version: String,
}

/// What finishing a chunk did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkDone {
    /// The claim was no longer this node's (its lease ran out and another node took
    /// the chunk, or the job ended): nothing was counted.
    Lost,
    /// Counted once; `last`: it was the job's last rows chunk, and the assemble
    /// chunk is now queued.
    Counted { last: bool },
}

/// A batch job's metadata. Its result lives in a file in the owner's folder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobRecord {
    pub id: String,
    pub owner: String,
    pub service: String,
    pub version: String,
    pub state: JobState,
    pub rows_total: u64,
    pub rows_done: u64,
    pub chunks_total: u64,
    pub chunks_done: u64,
    pub chunks_failed: u64,
    /// Why it failed, or the first failed chunk's R error.
    pub error: Option<String>,
    pub created_at: Timestamp,
    pub finished_at: Option<Timestamp>,
}

impl JobRecord {
    /// A new queued job (a fresh UUID) of `owner` running `service`/`version` over
    /// `rows` rows in `chunks` chunks, created `now`.
    pub fn queued(
        owner: &str,
        service: &str,
        version: &str,
        rows: u64,
        chunks: u64,
        now: Timestamp,
    ) -> JobRecord {
        JobRecord {
            id: uuid::Uuid::new_v4().to_string(),
            owner: owner.to_owned(),
            service: service.to_owned(),
            version: version.to_owned(),
            state: JobState::Queued,
            rows_total: rows,
            rows_done: 0,
            chunks_total: chunks,
            chunks_done: 0,
            chunks_failed: 0,
            error: None,
            created_at: now,
            finished_at: None,
        }
    }
}

/// One line of the audit log: who ran what, and how it ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    pub at: Timestamp,
    pub request_id: String,
    pub user: Option<String>,
    pub route: String,
    /// The session id or `service/version` the request touched.
    pub target: Option<String>,
    /// SHA-256 (hex) of the R code run, when the request ran code.
    pub code_hash: Option<String>,
    /// HTTP status and a short word: `200 ok`, `422 r_error`, ...
    pub outcome: String,
}

/// A node of a cluster as it registered itself, with its last heartbeat.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeRecord {
    /// Unique per server process (a UUID unless `serve --node-id` names it).
    pub id: String,
    /// Where other nodes reach it (`http://HOST:PORT`, `serve --advertise`).
    pub address: String,
    /// Rookery's version.
    pub version: String,
    /// R workers it runs (sessions and services), busy and idle.
    pub workers: u64,
    pub busy: u64,
    /// Sessions open on it.
    pub sessions: u64,
    pub started_at: Timestamp,
    pub heartbeat_at: Timestamp,
}

/// Why a store call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    #[error("{0} not found")]
    NotFound(String),
    #[error("{0} already exists")]
    Conflict(String),
    #[error("store: {0}")]
    Backend(String),
    /// The shared database cannot be reached now (it went away, or every pooled
    /// connection stayed taken); the call may succeed once it is back.
    #[error("the store is unavailable: {0}")]
    Unavailable(String),
}

/// Everything the server keeps. Implementations are internally synchronized and
/// quick (an embedded database: microseconds per call).
pub trait Store: Send + Sync + fmt::Debug + 'static {
    /// Fails with `Conflict` when the name is taken.
    fn create_user(&self, user: &UserRecord) -> Result<(), StoreError>;
    fn user(&self, name: &str) -> Result<Option<UserRecord>, StoreError>;
    /// All users, by name.
    fn users(&self) -> Result<Vec<UserRecord>, StoreError>;
    fn set_password(&self, name: &str, password_hash: &str) -> Result<(), StoreError>;
    fn set_role(&self, name: &str, role: Role) -> Result<(), StoreError>;
    /// Removes the user, its grants and all its tokens and keys.
    fn remove_user(&self, name: &str) -> Result<(), StoreError>;
    /// Idempotent.
    fn grant(&self, name: &str, grant: &str) -> Result<(), StoreError>;
    /// Idempotent.
    fn revoke(&self, name: &str, grant: &str) -> Result<(), StoreError>;
    /// Connections from OS account `uid` on the QAP1 Unix socket log in as `name`
    /// (replaces an earlier mapping of that uid).
    fn map_os_user(&self, name: &str, uid: u32) -> Result<(), StoreError>;
    /// The user OS account `uid` maps to.
    fn os_user(&self, uid: u32) -> Result<Option<String>, StoreError>;

    fn put_token(&self, hash: &[u8; 32], token: &TokenRecord) -> Result<(), StoreError>;
    fn token(&self, hash: &[u8; 32]) -> Result<Option<TokenRecord>, StoreError>;
    /// True when a token was deleted.
    fn delete_token(&self, hash: &[u8; 32]) -> Result<bool, StoreError>;
    /// The user's tokens and keys: (hash prefix in hex, record).
    fn tokens_of(&self, user: &str) -> Result<Vec<(String, TokenRecord)>, StoreError>;
    /// Deletes every token whose expiry is before `now`; returns how many.
    fn purge_expired_tokens(&self, now: Timestamp) -> Result<usize, StoreError>;

    /// Inserts or replaces `(name, version)`.
    fn put_service(&self, service: &ServiceRecord) -> Result<(), StoreError>;
    fn service(&self, name: &str, version: &str) -> Result<Option<ServiceRecord>, StoreError>;
    /// Every version that is not retired, by name then creation.
    fn services(&self) -> Result<Vec<ServiceRecord>, StoreError>;
    /// True when a live version was retired.
    fn retire_service(&self, name: &str, version: &str) -> Result<bool, StoreError>;

    /// Inserts or replaces by id.
    fn put_job(&self, job: &JobRecord) -> Result<(), StoreError>;
    fn job(&self, id: &str) -> Result<Option<JobRecord>, StoreError>;
    /// Jobs still queued or running (after a restart: left behind by a stopped server).
    fn unfinished_jobs(&self) -> Result<Vec<JobRecord>, StoreError>;

    fn append_audit(&self, entry: &AuditEntry) -> Result<(), StoreError>;
    /// Several entries at once (one transaction where the backend has them).
    fn append_audit_batch(&self, entries: &[AuditEntry]) -> Result<(), StoreError> {
        entries.iter().try_for_each(|e| self.append_audit(e))
    }
    /// The newest `limit` entries, newest first.
    fn audit_tail(&self, limit: usize) -> Result<Vec<AuditEntry>, StoreError>;

    /// Registers `node` or renews its heartbeat (by id).
    fn put_node(&self, node: &NodeRecord) -> Result<(), StoreError>;
    /// Every registered node, by id.
    fn nodes(&self) -> Result<Vec<NodeRecord>, StoreError>;
    /// True when the node was registered.
    fn remove_node(&self, id: &str) -> Result<bool, StoreError>;
    /// Removes the nodes whose heartbeat is older than `before`; how many.
    fn remove_nodes_silent_since(&self, before: Timestamp) -> Result<usize, StoreError>;

    /// Counts one failed login for user name `user` at `at` (shared by every node).
    fn record_login_failure(&self, user: &str, at: Timestamp) -> Result<(), StoreError>;
    /// Failed logins for `user` at or after `since`.
    fn login_failures_since(&self, user: &str, since: Timestamp) -> Result<u64, StoreError>;
    /// Forgets failures before `before`; how many.
    fn purge_login_failures(&self, before: Timestamp) -> Result<usize, StoreError>;

    /// The secret nodes sign their requests to one another with: the stored one, or
    /// `fresh` when none is stored yet (the first node to ask sets it).
    fn cluster_secret(&self, fresh: &[u8]) -> Result<Vec<u8>, StoreError>;

    /// Stores `job` (queued) with its rows chunks, `(first_row, rows)` each, in one
    /// transaction: any node serving its version may then claim them.
    fn put_shared_job(&self, job: &JobRecord, chunks: &[(u64, u64)]) -> Result<(), StoreError>;
    /// Claims for `node`, until `lease_until`, the oldest job's next chunk that is
    /// queued or whose lease ran out before `now`, among the jobs of `services`
    /// (`(name, version)`) that are not finished. Nodes claiming at once get
    /// different chunks.
    fn claim_chunk(
        &self,
        node: &str,
        services: &[(String, String)],
        now: Timestamp,
        lease_until: Timestamp,
    ) -> Result<Option<ChunkClaim>, StoreError>;
    /// Extends `node`'s lease of a chunk; false when it is no longer `node`'s (the
    /// job ended, or another node took the chunk after the lease ran out).
    fn renew_chunk(
        &self,
        job: &str,
        seq: u64,
        node: &str,
        lease_until: Timestamp,
    ) -> Result<bool, StoreError>;
    /// Marks `node`'s chunk done and counts its rows in the job, exactly once.
    fn chunk_done(&self, job: &str, seq: u64, node: &str) -> Result<ChunkDone, StoreError>;
    /// Ends an unfinished job (`Succeeded`, `Failed` with `error`, `Cancelled`) and
    /// forgets its chunks; `failed_chunk` counts one failed chunk. False when it
    /// had already ended.
    fn end_job(
        &self,
        id: &str,
        state: JobState,
        error: Option<&str>,
        failed_chunk: bool,
        at: Timestamp,
    ) -> Result<bool, StoreError>;
    /// Hands `node`'s running chunks back to the queue (a node that stops); how many.
    fn release_chunks(&self, node: &str) -> Result<usize, StoreError>;

    /// Whether the store answers now (`/readyz`). An embedded one always does.
    fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

//! The shared store: [`PgStore`], the [`Store`] on PostgreSQL, which every node of a
//! cluster opens at once (`rookery serve --store postgres://...`). Owns the schema
//! (migrations run by refinery, under an advisory lock so that nodes starting
//! together do not race), the connection pool (deadpool) and the mapping between
//! rows and records. Like the SQLite store it does not hash, check or interpret what
//! it keeps.
//!
//! The [`Store`] trait is synchronous, and is called from async handlers and from
//! plain threads alike (QAP1 connections, the audit writer). The pool and its
//! connections therefore live on a small runtime of their own: a call hands its
//! query to that runtime and waits for the answer, so no caller ever needs to be
//! inside (or outside) a runtime, and a slow database holds up the caller, never
//! the server's own runtime threads beyond that call.
//!
//! Failures come in two kinds. The database answering with an error (a constraint,
//! a corrupt row) is [`StoreError::Backend`]; the database out of reach (refused,
//! gone mid-call, no answer within [`CALL_TIMEOUT`], every pooled connection taken)
//! is [`StoreError::Unavailable`], which the server turns into 503 and a false
//! `/readyz` until it is back. The pool drops connections that broke and opens new
//! ones on demand, so recovery needs nothing but the database.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod};
use tokio_postgres::{NoTls, Row};

use super::{
    AuditEntry, ChunkClaim, ChunkDone, ChunkKind, JobRecord, JobState, NodeRecord, Role,
    ServiceRecord, Store, StoreError, Timestamp, TokenKind, TokenRecord, UserRecord,
};

mod migrations {
    refinery::embed_migrations!("src/store/postgres/migrations");
}

/// How long opening a connection may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one store call may take in all (waiting for a connection included).
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// How long `/readyz`'s check of the database may take.
const PING_TIMEOUT: Duration = Duration::from_secs(2);
/// Connections per node. Store calls are short (tokens are cached, the scoring path
/// makes none), so a few serve many requests.
const POOL_SIZE: usize = 8;
/// The advisory lock key held while migrations run ("rookery" in ASCII).
const MIGRATION_LOCK: i64 = 0x0072_6f6f_6b65_7279;
/// Bytes of a token hash that [`Store::tokens_of`] shows (in hex).
const TOKEN_PREFIX_BYTES: usize = 6;

const TOKEN_COLUMNS: &str = "hash, user_name, kind, label, created_at, expires_at";
const SERVICE_COLUMNS: &str = "name, version, owner, description, code, function, \
     inputs, outputs, files, created_at, updated_at, retired, env";
const JOB_COLUMNS: &str = "id, owner, service, version, state, rows_total, rows_done, \
     chunks_total, chunks_done, chunks_failed, error, created_at, finished_at";
const AUDIT_COLUMNS: &str = "at, request_id, user_name, route, target, code_hash, outcome";

type Call<T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send>>;

/// The [`Store`] on a PostgreSQL database shared by every node.
pub struct PgStore {
    pool: Pool,
    /// Runs the pool's connections; `None` once dropped (shut down in the
    /// background, which is allowed from inside another runtime).
    runtime: Option<tokio::runtime::Runtime>,
    handle: tokio::runtime::Handle,
    /// `host:port/db` for messages: never the password.
    shown: String,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore")
            .field("at", &self.shown)
            .finish_non_exhaustive()
    }
}

impl Drop for PgStore {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

impl PgStore {
    /// Connects to the database at `url` (`postgres://USER[:PASSWORD]@HOST:PORT/DB`,
    /// or the key=value form; `ROOKERY_STORE_PASSWORD` in the environment supplies a
    /// password kept out of the URL) and brings its schema up to date. A database
    /// that cannot be reached is an error naming it.
    pub fn connect(url: &str) -> Result<PgStore, StoreError> {
        let mut config: tokio_postgres::Config = url
            .parse()
            .map_err(|e| StoreError::Backend(format!("the store URL does not parse: {e}")))?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        if config.get_application_name().is_none() {
            config.application_name("rookery");
        }
        if let Ok(pw) = std::env::var("ROOKERY_STORE_PASSWORD") {
            config.password(pw);
        }
        let shown = describe(&config);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("rookery-store")
            .enable_all()
            .build()
            .map_err(|e| StoreError::Backend(format!("the store's runtime: {e}")))?;
        let manager = Manager::from_config(
            config,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(POOL_SIZE)
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .wait_timeout(Some(CALL_TIMEOUT))
            .create_timeout(Some(CONNECT_TIMEOUT))
            .recycle_timeout(Some(CONNECT_TIMEOUT))
            .build()
            .map_err(|e| StoreError::Backend(format!("the store's pool: {e}")))?;
        let store = PgStore {
            pool,
            handle: runtime.handle().clone(),
            runtime: Some(runtime),
            shown,
        };
        store.run(|c| Box::pin(migrate(c))).map_err(|e| match e {
            StoreError::Unavailable(m) => {
                StoreError::Unavailable(format!("cannot reach PostgreSQL at {}: {m}", store.shown))
            }
            StoreError::Backend(m) => {
                StoreError::Backend(format!("PostgreSQL at {}: {m}", store.shown))
            }
            other => other,
        })?;
        Ok(store)
    }

    /// `host:port/db`, for messages.
    pub fn shown(&self) -> &str {
        &self.shown
    }

    /// Runs `f` with a pooled connection on the store's runtime and waits for it.
    fn run<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(Object) -> Call<T> + Send + 'static,
    {
        self.run_within(CALL_TIMEOUT, f)
    }

    /// [`PgStore::run`], given up as unavailable after `deadline`.
    fn run_within<T, F>(&self, deadline: Duration, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(Object) -> Call<T> + Send + 'static,
    {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let pool = self.pool.clone();
        self.handle.spawn(async move {
            let call = async move {
                let conn = pool.get().await.map_err(pool_error)?;
                f(conn).await
            };
            let out = match tokio::time::timeout(deadline, call).await {
                Ok(out) => out,
                Err(_) => Err(StoreError::Unavailable(format!(
                    "no answer from the database within {deadline:?}"
                ))),
            };
            let _ = tx.send(out);
        });
        rx.recv()
            .map_err(|_| StoreError::Unavailable("the store is shutting down".into()))?
    }
}

/// `host:port/db` of a connection config.
fn describe(config: &tokio_postgres::Config) -> String {
    use tokio_postgres::config::Host;
    let host = match config.get_hosts().first() {
        Some(Host::Tcp(h)) => h.clone(),
        Some(Host::Unix(p)) => p.display().to_string(),
        None => "localhost".into(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let db = config
        .get_dbname()
        .or(config.get_user())
        .unwrap_or("postgres");
    format!("{host}:{port}/{db}")
}

/// Brings the schema up to date, one node at a time.
async fn migrate(mut conn: Object) -> Result<(), StoreError> {
    conn.execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    let client: &mut tokio_postgres::Client = &mut conn;
    let ran = migrations::migrations::runner()
        .run_async(client)
        .await
        .map_err(|e| StoreError::Backend(format!("migrating the schema: {e}")));
    conn.execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
        .await?;
    ran.map(drop)
}

/// A connection the pool could not hand out: refused by the database (a wrong
/// password, no such database) is a backend error, anything else (unreachable, no
/// free connection in time) is the database out of reach.
fn pool_error(e: deadpool_postgres::PoolError) -> StoreError {
    match e {
        deadpool_postgres::PoolError::Backend(e) => StoreError::from(e),
        other => StoreError::Unavailable(other.to_string()),
    }
}

impl From<tokio_postgres::Error> for StoreError {
    /// The database's own answers are backend errors, except those that say it
    /// cannot serve now (starting up, shutting down, out of connections: SQLSTATE
    /// classes 08, 53 and 57P); a connection that failed or closed is the database
    /// out of reach.
    fn from(e: tokio_postgres::Error) -> Self {
        match e.as_db_error() {
            Some(db) => {
                let (code, text) = (
                    db.code().code(),
                    format!("{}: {}", db.code().code(), db.message()),
                );
                if code.starts_with("08") || code.starts_with("53") || code.starts_with("57P") {
                    StoreError::Unavailable(text)
                } else {
                    StoreError::Backend(text)
                }
            }
            None => StoreError::Unavailable(e.to_string()),
        }
    }
}

fn corrupt(what: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(format!("a row does not decode: {what}"))
}

fn count(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn uncount(row: &Row, idx: usize) -> Result<u64, StoreError> {
    let v: i64 = row.try_get(idx)?;
    u64::try_from(v).map_err(|_| corrupt(format_args!("negative count {v}")))
}

fn json_column<T: serde::de::DeserializeOwned>(row: &Row, idx: usize) -> Result<T, StoreError> {
    let text: String = row.try_get(idx)?;
    serde_json::from_str(&text).map_err(corrupt)
}

fn to_json<T: serde::Serialize>(value: &T) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(|e| StoreError::Backend(e.to_string()))
}

fn not_found(what: String) -> StoreError {
    StoreError::NotFound(what)
}

fn user_named(name: &str) -> String {
    format!("user `{name}`")
}

fn role_of(row: &Row, idx: usize) -> Result<Role, StoreError> {
    let text: String = row.try_get(idx)?;
    text.parse().map_err(corrupt)
}

fn kind_str(kind: TokenKind) -> &'static str {
    match kind {
        TokenKind::Access => "access",
        TokenKind::ApiKey => "api_key",
    }
}

fn kind_of(row: &Row, idx: usize) -> Result<TokenKind, StoreError> {
    let text: String = row.try_get(idx)?;
    match text.as_str() {
        "access" => Ok(TokenKind::Access),
        "api_key" => Ok(TokenKind::ApiKey),
        other => Err(corrupt(format_args!("unknown token kind `{other}`"))),
    }
}

fn state_str(state: JobState) -> &'static str {
    match state {
        JobState::Queued => "queued",
        JobState::Running => "running",
        JobState::Succeeded => "succeeded",
        JobState::Failed => "failed",
        JobState::Cancelled => "cancelled",
    }
}

fn state_of(row: &Row, idx: usize) -> Result<JobState, StoreError> {
    let text: String = row.try_get(idx)?;
    match text.as_str() {
        "queued" => Ok(JobState::Queued),
        "running" => Ok(JobState::Running),
        "succeeded" => Ok(JobState::Succeeded),
        "failed" => Ok(JobState::Failed),
        "cancelled" => Ok(JobState::Cancelled),
        other => Err(corrupt(format_args!("unknown job state `{other}`"))),
    }
}

// ---- rows ----

/// A user row (name, role, password_hash, created_at) without its grants.
fn user_row(row: &Row) -> Result<UserRecord, StoreError> {
    Ok(UserRecord {
        name: row.try_get(0)?,
        role: role_of(row, 1)?,
        grants: Vec::new(),
        password_hash: row.try_get(2)?,
        created_at: row.try_get(3)?,
    })
}

fn token_row(row: &Row) -> Result<([u8; 32], TokenRecord), StoreError> {
    let hash: Vec<u8> = row.try_get(0)?;
    let hash: [u8; 32] = hash
        .try_into()
        .map_err(|_| corrupt("a token hash is not 32 bytes"))?;
    let record = TokenRecord {
        user: row.try_get(1)?,
        kind: kind_of(row, 2)?,
        label: row.try_get(3)?,
        created_at: row.try_get(4)?,
        expires_at: row.try_get(5)?,
    };
    Ok((hash, record))
}

fn service_row(row: &Row) -> Result<ServiceRecord, StoreError> {
    Ok(ServiceRecord {
        name: row.try_get(0)?,
        version: row.try_get(1)?,
        owner: row.try_get(2)?,
        description: row.try_get(3)?,
        code: row.try_get(4)?,
        function: row.try_get(5)?,
        inputs: json_column(row, 6)?,
        outputs: json_column(row, 7)?,
        files: json_column(row, 8)?,
        created_at: row.try_get(9)?,
        updated_at: row.try_get(10)?,
        retired: row.try_get(11)?,
        env: json_column(row, 12)?,
    })
}

/// A job's columns in `JOB_COLUMNS` order, as statement parameters.
struct JobRow<'a> {
    job: &'a JobRecord,
    state: &'static str,
    counts: [i64; 5],
}

impl<'a> JobRow<'a> {
    fn of(job: &'a JobRecord) -> JobRow<'a> {
        JobRow {
            job,
            state: state_str(job.state),
            counts: [
                count(job.rows_total),
                count(job.rows_done),
                count(job.chunks_total),
                count(job.chunks_done),
                count(job.chunks_failed),
            ],
        }
    }

    fn params(&self) -> [&(dyn tokio_postgres::types::ToSql + Sync); 13] {
        let (j, c) = (self.job, &self.counts);
        [
            &j.id,
            &j.owner,
            &j.service,
            &j.version,
            &self.state,
            &c[0],
            &c[1],
            &c[2],
            &c[3],
            &c[4],
            &j.error,
            &j.created_at,
            &j.finished_at,
        ]
    }
}

fn job_row(row: &Row) -> Result<JobRecord, StoreError> {
    Ok(JobRecord {
        id: row.try_get(0)?,
        owner: row.try_get(1)?,
        service: row.try_get(2)?,
        version: row.try_get(3)?,
        state: state_of(row, 4)?,
        rows_total: uncount(row, 5)?,
        rows_done: uncount(row, 6)?,
        chunks_total: uncount(row, 7)?,
        chunks_done: uncount(row, 8)?,
        chunks_failed: uncount(row, 9)?,
        error: row.try_get(10)?,
        created_at: row.try_get(11)?,
        finished_at: row.try_get(12)?,
    })
}

fn audit_row(row: &Row) -> Result<AuditEntry, StoreError> {
    Ok(AuditEntry {
        at: row.try_get(0)?,
        request_id: row.try_get(1)?,
        user: row.try_get(2)?,
        route: row.try_get(3)?,
        target: row.try_get(4)?,
        code_hash: row.try_get(5)?,
        outcome: row.try_get(6)?,
    })
}

async fn grants_of(c: &Object, name: &str) -> Result<Vec<String>, StoreError> {
    let stmt = c
        .prepare_cached("SELECT grant_name FROM grants WHERE user_name = $1 ORDER BY grant_name")
        .await?;
    let rows = c.query(&stmt, &[&name]).await?;
    rows.iter()
        .map(|r| r.try_get(0).map_err(StoreError::from))
        .collect()
}

/// Runs `sql` (an UPDATE or DELETE of one user by `$1`); `NotFound` when no row
/// matched.
async fn change_user(
    c: &Object,
    name: &str,
    sql: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> Result<(), StoreError> {
    let stmt = c.prepare_cached(sql).await?;
    match c.execute(&stmt, params).await? {
        0 => Err(not_found(user_named(name))),
        _ => Ok(()),
    }
}

async fn user_exists(
    c: &deadpool_postgres::Transaction<'_>,
    name: &str,
) -> Result<bool, StoreError> {
    let stmt = c
        .prepare_cached("SELECT 1 FROM users WHERE name = $1 FOR SHARE")
        .await?;
    Ok(c.query_opt(&stmt, &[&name]).await?.is_some())
}

impl Store for PgStore {
    fn create_user(&self, user: &UserRecord) -> Result<(), StoreError> {
        let user = user.clone();
        self.run(move |mut c| {
            Box::pin(async move {
                let tx = c.transaction().await?;
                let insert = tx
                    .prepare_cached(
                        "INSERT INTO users (name, role, password_hash, created_at) \
                         VALUES ($1, $2, $3, $4) ON CONFLICT (name) DO NOTHING",
                    )
                    .await?;
                let role = user.role.as_str();
                let n = tx
                    .execute(
                        &insert,
                        &[&user.name, &role, &user.password_hash, &user.created_at],
                    )
                    .await?;
                if n == 0 {
                    return Err(StoreError::Conflict(user_named(&user.name)));
                }
                let grant = tx
                    .prepare_cached(
                        "INSERT INTO grants (user_name, grant_name) VALUES ($1, $2) \
                         ON CONFLICT DO NOTHING",
                    )
                    .await?;
                for g in &user.grants {
                    tx.execute(&grant, &[&user.name, g]).await?;
                }
                tx.commit().await?;
                Ok(())
            })
        })
    }

    fn user(&self, name: &str) -> Result<Option<UserRecord>, StoreError> {
        let name = name.to_owned();
        self.run(move |c| {
            Box::pin(async move {
                let stmt = c
                    .prepare_cached(
                        "SELECT name, role, password_hash, created_at FROM users WHERE name = $1",
                    )
                    .await?;
                let Some(row) = c.query_opt(&stmt, &[&name]).await? else {
                    return Ok(None);
                };
                let mut user = user_row(&row)?;
                user.grants = grants_of(&c, &name).await?;
                Ok(Some(user))
            })
        })
    }

    fn users(&self) -> Result<Vec<UserRecord>, StoreError> {
        self.run(move |c| {
            Box::pin(async move {
                let stmt = c
                    .prepare_cached(
                        "SELECT name, role, password_hash, created_at FROM users ORDER BY name",
                    )
                    .await?;
                let mut users = c
                    .query(&stmt, &[])
                    .await?
                    .iter()
                    .map(user_row)
                    .collect::<Result<Vec<_>, _>>()?;
                for user in &mut users {
                    user.grants = grants_of(&c, &user.name).await?;
                }
                Ok(users)
            })
        })
    }

    fn set_password(&self, name: &str, password_hash: &str) -> Result<(), StoreError> {
        let (name, hash) = (name.to_owned(), password_hash.to_owned());
        self.run(move |c| {
            Box::pin(async move {
                let sql = "UPDATE users SET password_hash = $2 WHERE name = $1";
                change_user(&c, &name, sql, &[&name, &hash]).await
            })
        })
    }

    fn set_role(&self, name: &str, role: Role) -> Result<(), StoreError> {
        let name = name.to_owned();
        self.run(move |c| {
            Box::pin(async move {
                let sql = "UPDATE users SET role = $2 WHERE name = $1";
                change_user(&c, &name, sql, &[&name, &role.as_str()]).await
            })
        })
    }

    fn remove_user(&self, name: &str) -> Result<(), StoreError> {
        let name = name.to_owned();
        self.run(move |c| {
            Box::pin(async move {
                // Grants, tokens and OS mappings go with the user: ON DELETE CASCADE.
                change_user(&c, &name, "DELETE FROM users WHERE name = $1", &[&name]).await
            })
        })
    }

    fn grant(&self, name: &str, grant: &str) -> Result<(), StoreError> {
        let (name, grant) = (name.to_owned(), grant.to_owned());
        self.run(move |mut c| {
            Box::pin(async move {
                let tx = c.transaction().await?;
                if !user_exists(&tx, &name).await? {
                    return Err(not_found(user_named(&name)));
                }
                let stmt = tx
                    .prepare_cached(
                        "INSERT INTO grants (user_name, grant_name) VALUES ($1, $2) \
                         ON CONFLICT DO NOTHING",
                    )
                    .await?;
                tx.execute(&stmt, &[&name, &grant]).await?;
                tx.commit().await?;
                Ok(())
            })
        })
    }

    fn revoke(&self, name: &str, grant: &str) -> Result<(), StoreError> {
        let (name, grant) = (name.to_owned(), grant.to_owned());
        self.run(move |mut c| {
            Box::pin(async move {
                let tx = c.transaction().await?;
                if !user_exists(&tx, &name).await? {
                    return Err(not_found(user_named(&name)));
                }
                let stmt = tx
                    .prepare_cached("DELETE FROM grants WHERE user_name = $1 AND grant_name = $2")
                    .await?;
                tx.execute(&stmt, &[&name, &grant]).await?;
                tx.commit().await?;
                Ok(())
            })
        })
    }

    fn map_os_user(&self, name: &str, uid: u32) -> Result<(), StoreError> {
        let name = name.to_owned();
        self.run(move |mut c| {
            Box::pin(async move {
                let tx = c.transaction().await?;
                if !user_exists(&tx, &name).await? {
                    return Err(StoreError::NotFound(format!("user {name}")));
                }
                let stmt = tx
                    .prepare_cached(
                        "INSERT INTO os_users (uid, user_name) VALUES ($1, $2) \
                         ON CONFLICT (uid) DO UPDATE SET user_name = EXCLUDED.user_name",
                    )
                    .await?;
                tx.execute(&stmt, &[&i64::from(uid), &name]).await?;
                tx.commit().await?;
                Ok(())
            })
        })
    }

    fn os_user(&self, uid: u32) -> Result<Option<String>, StoreError> {
        self.run(move |c| {
            Box::pin(async move {
                let stmt = c
                    .prepare_cached("SELECT user_name FROM os_users WHERE uid = $1")
                    .await?;
                let row = c.query_opt(&stmt, &[&i64::from(uid)]).await?;
                Ok(row.map(|r| r.try_get(0)).transpose()?)
            })
        })
    }

    fn put_token(&self, hash: &[u8; 32], token: &TokenRecord) -> Result<(), StoreError> {
        let (hash, t) = (*hash, token.clone());
        self.run(move |mut c| {
            Box::pin(async move {
                let tx = c.transaction().await?;
                if !user_exists(&tx, &t.user).await? {
                    return Err(not_found(user_named(&t.user)));
                }
                let sql = format!(
                    "INSERT INTO tokens ({TOKEN_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6) \
                     ON CONFLICT (hash) DO NOTHING"
                );
                let stmt = tx.prepare_cached(&sql).await?;
                let n = tx
                    .execute(
                        &stmt,
                        &[
                            &hash.as_slice(),
                            &t.user,
                            &kind_str(t.kind),
                            &t.label,
                            &t.created_at,
                            &t.expires_at,
                        ],
                    )
                    .await?;
                if n == 0 {
                    return Err(StoreError::Conflict("token".to_owned()));
                }
                tx.commit().await?;
                Ok(())
            })
        })
    }

    fn token(&self, hash: &[u8; 32]) -> Result<Option<TokenRecord>, StoreError> {
        let hash = *hash;
        self.run(move |c| {
            Box::pin(async move {
                let sql = format!("SELECT {TOKEN_COLUMNS} FROM tokens WHERE hash = $1");
                let stmt = c.prepare_cached(&sql).await?;
                let row = c.query_opt(&stmt, &[&hash.as_slice()]).await?;
                row.map(|r| token_row(&r).map(|(_, t)| t)).transpose()
            })
        })
    }

    fn delete_token(&self, hash: &[u8; 32]) -> Result<bool, StoreError> {
        let hash = *hash;
        self.run(move |c| {
            Box::pin(async move {
                let stmt = c
                    .prepare_cached("DELETE FROM tokens WHERE hash = $1")
                    .await?;
                Ok(c.execute(&stmt, &[&hash.as_slice()]).await? > 0)
            })
        })
    }

    fn tokens_of(&self, user: &str) -> Result<Vec<(String, TokenRecord)>, StoreError> {
        let user = user.to_owned();
        self.run(move |c| {
            Box::pin(async move {
                let sql = format!(
                    "SELECT {TOKEN_COLUMNS} FROM tokens WHERE user_name = $1 \
                     ORDER BY created_at, hash"
                );
                let stmt = c.prepare_cached(&sql).await?;
                c.query(&stmt, &[&user])
                    .await?
                    .iter()
                    .map(|r| token_row(r).map(|(h, t)| (hex::encode(&h[..TOKEN_PREFIX_BYTES]), t)))
                    .collect()
            })
        })
    }

    fn purge_expired_tokens(&self, now: Timestamp) -> Result<usize, StoreError> {
        self.run(move |c| {
            Box::pin(async move {
                let stmt = c
                    .prepare_cached(
                        "DELETE FROM tokens WHERE expires_at IS NOT NULL AND expires_at < $1",
                    )
                    .await?;
                let n = c.execute(&stmt, &[&now]).await?;
                Ok(usize::try_from(n).unwrap_or(usize::MAX))
            })
        })
    }

    fn put_service(&self, service: &ServiceRecord) -> Result<(), StoreError> {
        let s = service.clone();
        self.run(move |c| {
            Box::pin(async move {
                let sql = format!(
                    "INSERT INTO services ({SERVICE_COLUMNS}) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) \
                     ON CONFLICT (name, version) DO UPDATE SET \
                     owner = EXCLUDED.owner, description = EXCLUDED.description, \
                     code = EXCLUDED.code, function = EXCLUDED.function, \
                     inputs = EXCLUDED.inputs, outputs = EXCLUDED.outputs, \
                     files = EXCLUDED.files, created_at = EXCLUDED.created_at, \
                     updated_at = EXCLUDED.updated_at, retired = EXCLUDED.retired, \
                     env = EXCLUDED.env"
                );
                let stmt = c.prepare_cached(&sql).await?;
                let (inputs, outputs, files, env) = (
                    to_json(&s.inputs)?,
                    to_json(&s.outputs)?,
                    to_json(&s.files)?,
                    to_json(&s.env)?,
                );
                c.execute(
                    &stmt,
                    &[
                        &s.name,
                        &s.version,
                        &s.owner,
                        &s.description,
                        &s.code,
                        &s.function,
                        &inputs,
                        &outputs,
                        &files,
                        &s.created_at,
                        &s.updated_at,
                        &s.retired,
                        &env,
                    ],
                )
                .await?;
                Ok(())
            })
        })
    }

    fn service(&self, name: &str, version: &str) -> Result<Option<ServiceRecord>, StoreError> {
        let (name, version) = (name.to_owned(), version.to_owned());
        self.run(move |c| {
            Box::pin(async move {
                let sql = format!(
                    "SELECT {SERVICE_COLUMNS} FROM services WHERE name = $1 AND version = $2"
                );
                let stmt = c.prepare_cached(&sql).await?;
                let row = c.query_opt(&stmt, &[&name, &version]).await?;
                row.map(|r| service_row(&r)).transpose()
            })
        })
    }

    fn services(&self) -> Result<Vec<ServiceRecord>, StoreError> {
        self.run(move |c| {
            Box::pin(async move {
                let sql = format!(
                    "SELECT {SERVICE_COLUMNS} FROM services WHERE NOT retired \
                     ORDER BY name, created_at, version"
                );
                let stmt = c.prepare_cached(&sql).await?;
                c.query(&stmt, &[]).await?.iter().map(service_row).collect()
            })
        })
    }

    fn retire_service(&self, name: &str, version: &str) -> Result<bool, StoreError> {
        let (name, version) = (name.to_owned(), version.to_owned());
        self.run(move |c| {
            Box::pin(async move {
                let stmt = c
                    .prepare_cached(
                        "UPDATE services SET retired = TRUE \
                         WHERE name = $1 AND version = $2 AND NOT retired",
                    )
                    .await?;
                Ok(c.execute(&stmt, &[&name, &version]).await? > 0)
            })
        })
    }

    fn put_job(&self, job: &JobRecord) -> Result<(), StoreError> {
        let j = job.clone();
        self.run(move |c| {
            Box::pin(async move {
                let sql = format!(
                    "INSERT INTO jobs ({JOB_COLUMNS}) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) \
                     ON CONFLICT (id) DO UPDATE SET \
                     owner = EXCLUDED.owner, service = EXCLUDED.service, \
                     version = EXCLUDED.version, state = EXCLUDED.state, \
                     rows_total = EXCLUDED.rows_total, rows_done = EXCLUDED.rows_done, \
                     chunks_total = EXCLUDED.chunks_total, chunks_done = EXCLUDED.chunks_done, \
                     chunks_failed = EXCLUDED.chunks_failed, error = EXCLUDED.error, \
                     created_at = EXCLUDED.created_at, finished_at = EXCLUDED.finished_at"
                );
                let stmt = c.prepare_cached(&sql).await?;
                c.execute(&stmt, &JobRow::of(&j).params()).await?;
                Ok(())
            })
        })
    }

    fn job(&self, id: &str) -> Result<Option<JobRecord>, StoreError> {
        let id = id.to_owned();
        self.run(move |c| {
            Box::pin(async move {
                let sql = format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = $1");
                let stmt = c.prepare_cached(&sql).await?;
                let row = c.query_opt(&stmt, &[&id]).await?;
                row.map(|r| job_row(&r)).transpose()
            })
        })
    }

    fn unfinished_jobs(&self) -> Result<Vec<JobRecord>, StoreError> {
        self.run(move |c| {
            Box::pin(async move {
                let sql = format!(
                    "SELECT {JOB_COLUMNS} FROM jobs WHERE state IN ('queued', 'running') \
                     ORDER BY created_at"
                );
                let stmt = c.prepare_cached(&sql).await?;
                c.query(&stmt, &[]).await?.iter().map(job_row).collect()
            })
        })
    }

    fn append_audit(&self, e: &AuditEntry) -> Result<(), StoreError> {
        self.append_audit_batch(std::slice::from_ref(e))
    }

    /// One statement per batch (arrays unnested into rows): one round trip, however
    /// many entries, so the audit of a busy node costs the database little.
    fn append_audit_batch(&self, entries: &[AuditEntry]) -> Result<(), StoreError> {
        if entries.is_empty() {
            return Ok(());
        }
        let at: Vec<i64> = entries.iter().map(|e| e.at).collect();
        let request_id: Vec<String> = entries.iter().map(|e| e.request_id.clone()).collect();
        let user: Vec<Option<String>> = entries.iter().map(|e| e.user.clone()).collect();
        let route: Vec<String> = entries.iter().map(|e| e.route.clone()).collect();
        let target: Vec<Option<String>> = entries.iter().map(|e| e.target.clone()).collect();
        let code_hash: Vec<Option<String>> = entries.iter().map(|e| e.code_hash.clone()).collect();
        let outcome: Vec<String> = entries.iter().map(|e| e.outcome.clone()).collect();
        self.run(move |c| {
            Box::pin(async move {
                // WITH ORDINALITY keeps the batch's order in `seq`.
                let sql = format!(
                    "INSERT INTO audit ({AUDIT_COLUMNS}) \
                     SELECT a, r, u, ro, t, h, o FROM UNNEST($1::bigint[], $2::text[], \
                     $3::text[], $4::text[], $5::text[], $6::text[], $7::text[]) \
                     WITH ORDINALITY AS x(a, r, u, ro, t, h, o, n) ORDER BY n"
                );
                let stmt = c.prepare_cached(&sql).await?;
                c.execute(
                    &stmt,
                    &[
                        &at,
                        &request_id,
                        &user,
                        &route,
                        &target,
                        &code_hash,
                        &outcome,
                    ],
                )
                .await?;
                Ok(())
            })
        })
    }

    fn audit_tail(&self, limit: usize) -> Result<Vec<AuditEntry>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.run(move |c| {
            Box::pin(async move {
                let sql = format!("SELECT {AUDIT_COLUMNS} FROM audit ORDER BY seq DESC LIMIT $1");
                let stmt = c.prepare_cached(&sql).await?;
                c.query(&stmt, &[&limit])
                    .await?
                    .iter()
                    .map(audit_row)
                    .collect()
            })
        })
    }

    fn put_node(&self, node: &NodeRecord) -> Result<(), StoreError> {
        let n = node.clone();
        self.run(move |c| {
            Box::pin(async move {
                let stmt = c
                    .prepare_cached(
                        "INSERT INTO nodes (id, address, version, workers, busy, sessions, \
                         started_at, heartbeat_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
                         ON CONFLICT (id) DO UPDATE SET address = EXCLUDED.address, \
                         version = EXCLUDED.version, workers = EXCLUDED.workers, \
                         busy = EXCLUDED.busy, sessions = EXCLUDED.sessions, \
                         started_at = EXCLUDED.started_at, heartbeat_at = EXCLUDED.heartbeat_at",
                    )
                    .await?;
                c.execute(
                    &stmt,
                    &[
                        &n.id,
                        &n.address,
                        &n.version,
                        &count(n.workers),
                        &count(n.busy),
                        &count(n.sessions),
                        &n.started_at,
                        &n.heartbeat_at,
                    ],
                )
                .await?;
                Ok(())
            })
        })
    }

    fn nodes(&self) -> Result<Vec<NodeRecord>, StoreError> {
        self.run(move |c| {
            Box::pin(async move {
                let stmt = c
                    .prepare_cached(
                        "SELECT id, address, version, workers, busy, sessions, started_at, \
                         heartbeat_at FROM nodes ORDER BY id",
                    )
                    .await?;
                c.query(&stmt, &[])
                    .await?
                    .iter()
                    .map(|r| {
                        Ok(NodeRecord {
                            id: r.try_get(0)?,
                            address: r.try_get(1)?,
                            version: r.try_get(2)?,
                            workers: uncount(r, 3)?,
                            busy: uncount(r, 4)?,
                            sessions: uncount(r, 5)?,
                            started_at: r.try_get(6)?,
                            heartbeat_at: r.try_get(7)?,
                        })
                    })
                    .collect()
            })
        })
    }

    fn record_login_failure(&self, user: &str, at: Timestamp) -> Result<(), StoreError> {
        let user = user.to_owned();
        self.run(move |c| {
            Box::pin(async move {
                let stmt = c
                    .prepare_cached("INSERT INTO login_failures (user_name, at) VALUES ($1, $2)")
                    .await?;
                c.execute(&stmt, &[&user, &at]).await?;
                Ok(())
            })
        })
    }

    fn login_failures_since(&self, user: &str, since: Timestamp) -> Result<u64, StoreError> {
        let user = user.to_owned();
        self.run(move |c| {
            Box::pin(async move {
                let stmt = c
                    .prepare_cached(
                        "SELECT count(*) FROM login_failures WHERE user_name = $1 AND at >= $2",
                    )
                    .await?;
                let row = c.query_one(&stmt, &[&user, &since]).await?;
                uncount(&row, 0)
            })
        })
    }

    fn purge_login_failures(&self, before: Timestamp) -> Result<usize, StoreError> {
        self.run(move |c| {
            Box::pin(async move {
                let stmt = c
                    .prepare_cached("DELETE FROM login_failures WHERE at < $1")
                    .await?;
                let n = c.execute(&stmt, &[&before]).await?;
                Ok(usize::try_from(n).unwrap_or(usize::MAX))
            })
        })
    }

    fn remove_node(&self, id: &str) -> Result<bool, StoreError> {
        let id = id.to_owned();
        self.run(move |c| {
            Box::pin(async move {
                let stmt = c.prepare_cached("DELETE FROM nodes WHERE id = $1").await?;
                Ok(c.execute(&stmt, &[&id]).await? > 0)
            })
        })
    }

    fn remove_nodes_silent_since(&self, before: Timestamp) -> Result<usize, StoreError> {
        self.run(move |c| {
            Box::pin(async move {
                let stmt = c
                    .prepare_cached("DELETE FROM nodes WHERE heartbeat_at < $1")
                    .await?;
                let n = c.execute(&stmt, &[&before]).await?;
                Ok(usize::try_from(n).unwrap_or(usize::MAX))
            })
        })
    }

    fn cluster_secret(&self, fresh: &[u8]) -> Result<Vec<u8>, StoreError> {
        let fresh = fresh.to_vec();
        self.run(move |c| {
            Box::pin(async move {
                let stmt = c
                    .prepare_cached(
                        "INSERT INTO cluster_secrets (name, secret, created_at) \
                         VALUES ('nodes', $1, $2) ON CONFLICT (name) DO NOTHING",
                    )
                    .await?;
                c.execute(&stmt, &[&fresh, &crate::admin::now()]).await?;
                let stmt = c
                    .prepare_cached("SELECT secret FROM cluster_secrets WHERE name = 'nodes'")
                    .await?;
                Ok(c.query_one(&stmt, &[]).await?.try_get(0)?)
            })
        })
    }

    fn put_shared_job(&self, job: &JobRecord, chunks: &[(u64, u64)]) -> Result<(), StoreError> {
        let j = job.clone();
        let (firsts, rows): (Vec<i64>, Vec<i64>) =
            chunks.iter().map(|&(f, n)| (count(f), count(n))).unzip();
        self.run(move |mut c| {
            Box::pin(async move {
                let tx = c.transaction().await?;
                let sql = format!(
                    "INSERT INTO jobs ({JOB_COLUMNS}) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)"
                );
                tx.execute(sql.as_str(), &JobRow::of(&j).params()).await?;
                tx.execute(
                    "INSERT INTO job_chunks (job_id, seq, kind, first_row, rows, state) \
                     SELECT $1, n - 1, 'rows', f, r, 'queued' \
                     FROM UNNEST($2::BIGINT[], $3::BIGINT[]) WITH ORDINALITY AS t(f, r, n)",
                    &[&j.id, &firsts, &rows],
                )
                .await?;
                if firsts.is_empty() {
                    // No rows: only the (empty) result is left to make.
                    tx.execute(
                        "INSERT INTO job_chunks (job_id, seq, kind, first_row, rows, state) \
                         VALUES ($1, 0, 'assemble', 0, 0, 'queued')",
                        &[&j.id],
                    )
                    .await?;
                }
                tx.commit().await?;
                Ok(())
            })
        })
    }

    fn claim_chunk(
        &self,
        node: &str,
        services: &[(String, String)],
        now: Timestamp,
        lease_until: Timestamp,
    ) -> Result<Option<ChunkClaim>, StoreError> {
        if services.is_empty() {
            return Ok(None);
        }
        let node = node.to_owned();
        let (names, versions): (Vec<String>, Vec<String>) = services.iter().cloned().unzip();
        self.run(move |mut c| {
            Box::pin(async move {
                let tx = c.transaction().await?;
                let stmt = tx
                    .prepare_cached(
                        "WITH pick AS ( \
                           SELECT c.job_id, c.seq, j.service, j.version \
                           FROM job_chunks c JOIN jobs j ON j.id = c.job_id \
                           WHERE j.state IN ('queued', 'running') \
                             AND (c.state = 'queued' \
                                  OR (c.state = 'running' AND c.lease_until < $2)) \
                             AND (j.service, j.version) IN \
                                 (SELECT s, v FROM UNNEST($4::TEXT[], $5::TEXT[]) AS t(s, v)) \
                           ORDER BY j.created_at, c.job_id, c.seq \
                           LIMIT 1 \
                           FOR UPDATE OF c SKIP LOCKED) \
                         UPDATE job_chunks c SET state = 'running', node = $1, \
                           lease_until = $3, attempts = c.attempts + 1 \
                         FROM pick WHERE c.job_id = pick.job_id AND c.seq = pick.seq \
                         RETURNING c.job_id, c.seq, c.kind, c.first_row, c.rows, c.attempts, \
                           pick.service, pick.version",
                    )
                    .await?;
                let Some(row) = tx
                    .query_opt(&stmt, &[&node, &now, &lease_until, &names, &versions])
                    .await?
                else {
                    return Ok(None);
                };
                let kind: String = row.try_get(2)?;
                let claim = ChunkClaim {
                    job: row.try_get(0)?,
                    seq: uncount(&row, 1)?,
                    kind: ChunkKind::parse(&kind)
                        .ok_or_else(|| corrupt(format_args!("unknown chunk kind `{kind}`")))?,
                    first_row: uncount(&row, 3)?,
                    rows: uncount(&row, 4)?,
                    attempt: uncount(&row, 5)?,
                    service: row.try_get(6)?,
                    version: row.try_get(7)?,
                };
                let stmt = tx
                    .prepare_cached(
                        "UPDATE jobs SET state = 'running' WHERE id = $1 AND state = 'queued'",
                    )
                    .await?;
                tx.execute(&stmt, &[&claim.job]).await?;
                tx.commit().await?;
                Ok(Some(claim))
            })
        })
    }

    fn renew_chunk(
        &self,
        job: &str,
        seq: u64,
        node: &str,
        lease_until: Timestamp,
    ) -> Result<bool, StoreError> {
        let (job, node) = (job.to_owned(), node.to_owned());
        self.run(move |c| {
            Box::pin(async move {
                let stmt = c
                    .prepare_cached(
                        "UPDATE job_chunks SET lease_until = $4 \
                         WHERE job_id = $1 AND seq = $2 AND node = $3 AND state = 'running'",
                    )
                    .await?;
                Ok(c.execute(&stmt, &[&job, &count(seq), &node, &lease_until])
                    .await?
                    == 1)
            })
        })
    }

    fn chunk_done(&self, job: &str, seq: u64, node: &str) -> Result<ChunkDone, StoreError> {
        let (job, node) = (job.to_owned(), node.to_owned());
        self.run(move |mut c| {
            Box::pin(async move {
                let tx = c.transaction().await?;
                let stmt = tx
                    .prepare_cached(
                        "UPDATE job_chunks SET state = 'done', node = NULL, lease_until = NULL \
                         WHERE job_id = $1 AND seq = $2 AND node = $3 AND state = 'running' \
                         RETURNING kind, rows",
                    )
                    .await?;
                let Some(row) = tx.query_opt(&stmt, &[&job, &count(seq), &node]).await? else {
                    return Ok(ChunkDone::Lost);
                };
                let kind: String = row.try_get(0)?;
                if kind != ChunkKind::Rows.as_str() {
                    tx.commit().await?;
                    return Ok(ChunkDone::Counted { last: false });
                }
                let rows: i64 = row.try_get(1)?;
                let stmt = tx
                    .prepare_cached(
                        "UPDATE jobs SET rows_done = rows_done + $2, \
                         chunks_done = chunks_done + 1 \
                         WHERE id = $1 AND state IN ('queued', 'running') \
                         RETURNING chunks_done, chunks_total",
                    )
                    .await?;
                let Some(row) = tx.query_opt(&stmt, &[&job, &rows]).await? else {
                    return Ok(ChunkDone::Lost);
                };
                let (done, total) = (uncount(&row, 0)?, uncount(&row, 1)?);
                let last = done == total;
                if last {
                    let stmt = tx
                        .prepare_cached(
                            "INSERT INTO job_chunks (job_id, seq, kind, first_row, rows, state) \
                             VALUES ($1, $2, 'assemble', 0, 0, 'queued') \
                             ON CONFLICT DO NOTHING",
                        )
                        .await?;
                    tx.execute(&stmt, &[&job, &count(total)]).await?;
                }
                tx.commit().await?;
                Ok(ChunkDone::Counted { last })
            })
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
        let (id, error) = (id.to_owned(), error.map(str::to_owned));
        self.run(move |mut c| {
            Box::pin(async move {
                let tx = c.transaction().await?;
                let stmt = tx
                    .prepare_cached(
                        "UPDATE jobs SET state = $2, error = $3, finished_at = $4, \
                         chunks_failed = chunks_failed + $5 \
                         WHERE id = $1 AND state IN ('queued', 'running')",
                    )
                    .await?;
                let failed = i64::from(failed_chunk);
                let ended = tx
                    .execute(&stmt, &[&id, &state_str(state), &error, &at, &failed])
                    .await?
                    == 1;
                if ended {
                    let stmt = tx
                        .prepare_cached("DELETE FROM job_chunks WHERE job_id = $1")
                        .await?;
                    tx.execute(&stmt, &[&id]).await?;
                }
                tx.commit().await?;
                Ok(ended)
            })
        })
    }

    fn release_chunks(&self, node: &str) -> Result<usize, StoreError> {
        let node = node.to_owned();
        self.run(move |c| {
            Box::pin(async move {
                let stmt = c
                    .prepare_cached(
                        "UPDATE job_chunks SET state = 'queued', node = NULL, \
                         lease_until = NULL, attempts = GREATEST(attempts - 1, 0) \
                         WHERE node = $1 AND state = 'running'",
                    )
                    .await?;
                Ok(c.execute(&stmt, &[&node]).await? as usize)
            })
        })
    }

    fn ping(&self) -> Result<(), StoreError> {
        self.run_within(PING_TIMEOUT, move |c| {
            Box::pin(async move {
                c.simple_query("SELECT 1").await?;
                Ok(())
            })
        })
    }
}

#[cfg(test)]
pub(crate) mod fixture;
#[cfg(test)]
mod tests;

//! Interactive sessions: each holds one R worker forked for it alone (pristine, and
//! never shared), working in the session's GUID folder inside its owner's folder.
//! Owns opening, executing, reading objects, idle expiry and closing. A session whose
//! worker died or timed out gets a new worker in the same folder: its objects are
//! lost, its files are kept, and the caller is told.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use rookery_engine::confine::Confinement;
use rookery_engine::{CallOptions, Error as EngineError, Evaluation, Pool, Session, Value};
use uuid::Uuid;

use super::Error;
use crate::admin::now;
use crate::confine::{Confiner, Lease};
use crate::files::{ConfinedDir, UserDirs};
use crate::store::Timestamp;

use super::blocking;
use super::ready::ReadySessions;
use super::start::{start_session, start_worker, Started};

/// One open session.
#[derive(Debug)]
pub struct SessionEntry {
    /// Its folder's name (a GUID).
    pub id: Uuid,
    /// Its id in the API: the UUID, or in a cluster `NODE.UUID` (the node that holds
    /// its worker; see `forward.rs`).
    pub name: String,
    pub owner: String,
    pub dir: ConfinedDir,
    pub created_at: Timestamp,
    last_used: AtomicI64,
    worker: Arc<tokio::sync::Mutex<Option<Session>>>,
    /// How its workers are locked in (`None`: confinement is off).
    spec: Option<Arc<Confinement>>,
    /// The owner's worker account, held until the session closes.
    lease: Mutex<Option<Lease>>,
    /// The largest result one of its calls may return, in bytes (the owner's
    /// `limits.max_result_bytes`; 0: no cap).
    pub max_result_bytes: u64,
}

impl SessionEntry {
    pub fn last_used(&self) -> Timestamp {
        self.last_used.load(Ordering::Relaxed)
    }

    fn touch(&self) {
        self.last_used.store(now(), Ordering::Relaxed);
    }
}

/// Open sessions, and sessions being opened (counted against the limits while their
/// worker starts, so concurrent opens cannot overshoot them).
#[derive(Debug, Default)]
struct Registry {
    open: HashMap<Uuid, Arc<SessionEntry>>,
    opening: HashMap<String, usize>,
}

/// A place held for a session being opened; given back on drop.
struct Reservation<'a> {
    sessions: &'a Sessions,
    owner: String,
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        let mut reg = self.sessions.registry.lock();
        if let Some(n) = reg.opening.get_mut(&self.owner) {
            *n -= 1;
            if *n == 0 {
                reg.opening.remove(&self.owner);
            }
        }
    }
}

/// Every open session, by id.
#[derive(Debug)]
pub struct Sessions {
    pool: Pool,
    dirs: Arc<UserDirs>,
    confiner: Arc<Confiner>,
    registry: Mutex<Registry>,
    /// Each user's next session, prepared ahead.
    ready: Arc<ReadySessions>,
    per_user: usize,
    total: usize,
    idle: Duration,
    timeout: Duration,
    /// In a cluster, this node's id: it prefixes the sessions' ids.
    node: Option<String>,
}

impl Sessions {
    /// `pool` forks each session's worker; its own warm workers are not used. Up to
    /// `pool_config.session_ready_users` users get their next session prepared
    /// ahead (see `engine/ready.rs`).
    pub fn new(
        pool: Pool,
        dirs: Arc<UserDirs>,
        confiner: Arc<Confiner>,
        limits: &crate::config::Limits,
        pool_config: &crate::config::PoolConfig,
    ) -> Sessions {
        let ready = ReadySessions::new(
            pool.clone(),
            dirs.clone(),
            confiner.clone(),
            pool_config.session_ready_users,
            Duration::from_millis(pool_config.session_ready_ms),
        );
        Sessions {
            pool,
            dirs,
            confiner,
            registry: Mutex::new(Registry::default()),
            ready,
            per_user: limits.sessions_per_user,
            total: limits.sessions_total,
            idle: Duration::from_secs(limits.session_idle_secs),
            timeout: Duration::from_secs(limits.call_timeout_secs),
            node: None,
        }
    }

    /// In a cluster: session ids name node `node` (`NODE.UUID`).
    pub fn on_node(mut self, node: String) -> Sessions {
        self.node = Some(node);
        self
    }

    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// Opens a session for `owner`: the owner's worker account (leased, or shared
    /// with their other sessions), a GUID folder, its own temp dir, and a pristine
    /// worker locked into them before it runs anything.
    /// Opens a session for `owner`, whose calls may return at most
    /// `max_result_bytes` each.
    pub async fn open(
        &self,
        owner: &str,
        max_result_bytes: u64,
    ) -> Result<Arc<SessionEntry>, Error> {
        let _place = self.reserve(owner)?;
        let (
            id,
            Started {
                lease,
                dir,
                spec,
                worker,
            },
        ) = match self.ready.take_or_wait(owner).await {
            Some(ready) => (ready.id, ready.started),
            None => {
                let id = Uuid::new_v4();
                let user = self.dirs.user(owner)?;
                let (confiner, pool) = (self.confiner.clone(), self.pool.clone());
                let who = owner.to_owned();
                // One hop to a blocking thread for everything that waits: the lease,
                // the folders, the worker.
                let started =
                    blocking(move || start_session(&confiner, &pool, &user, &who, &id)).await??;
                (id, started)
            }
        };
        self.ready.prepare(owner);
        let entry = Arc::new(SessionEntry {
            id,
            name: match &self.node {
                Some(node) => format!("{node}.{id}"),
                None => id.to_string(),
            },
            owner: owner.to_owned(),
            dir,
            created_at: now(),
            last_used: AtomicI64::new(now()),
            worker: Arc::new(tokio::sync::Mutex::new(Some(worker))),
            spec,
            lease: Mutex::new(lease),
            max_result_bytes,
        });
        self.registry.lock().open.insert(id, entry.clone());
        Ok(entry)
    }

    /// Holds a place for a new session of `owner` if the limits allow one more.
    fn reserve(&self, owner: &str) -> Result<Reservation<'_>, Error> {
        let mut reg = self.registry.lock();
        let opening = reg.opening.get(owner).copied().unwrap_or(0);
        let mine = reg.open.values().filter(|s| s.owner == owner).count() + opening;
        if mine >= self.per_user {
            return Err(Error::Conflict(format!(
                "user `{owner}` already has {mine} open sessions (the limit); close one first"
            )));
        }
        if reg.open.len() + reg.opening.values().sum::<usize>() >= self.total {
            return Err(Error::Busy);
        }
        *reg.opening.entry(owner.to_owned()).or_default() += 1;
        Ok(Reservation {
            sessions: self,
            owner: owner.to_owned(),
        })
    }

    /// The session `id` if `caller` may reach it (its owner, or an admin). Someone
    /// else's session is reported exactly like a missing one.
    pub fn get(
        &self,
        id: &str,
        caller: &crate::auth::AuthUser,
    ) -> Result<Arc<SessionEntry>, Error> {
        let missing = || Error::not_found(format!("session `{id}`"));
        let uuid = match (&self.node, crate::forward::split_session_id(id)) {
            (Some(me), Some((node, uuid))) if node == me => uuid,
            (None, None) => id,
            _ => return Err(missing()),
        };
        let id = Uuid::parse_str(uuid).map_err(|_| missing())?;
        let entry = self
            .registry
            .lock()
            .open
            .get(&id)
            .cloned()
            .ok_or_else(missing)?;
        if !caller.owns(&entry.owner) {
            return Err(missing());
        }
        entry.touch();
        Ok(entry)
    }

    /// The sessions `caller` owns (all of them for an admin).
    pub fn list(&self, caller: &crate::auth::AuthUser) -> Vec<Arc<SessionEntry>> {
        let mut list: Vec<_> = self
            .registry
            .lock()
            .open
            .values()
            .filter(|s| caller.owns(&s.owner))
            .cloned()
            .collect();
        list.sort_by_key(|s| s.created_at);
        list
    }

    /// Runs `code` in the session. Calls to one session queue behind each other.
    pub async fn execute(&self, entry: &SessionEntry, code: String) -> Result<Evaluation, Error> {
        let opts = CallOptions {
            timeout: Some(self.timeout),
            cancel: None,
            max_result_bytes: Some(entry.max_result_bytes),
        };
        let result = self
            .with_worker(entry, move |s| s.eval_with(&code, &opts))
            .await;
        entry.touch();
        result
    }

    /// Binds `name` to `value` in the session.
    pub async fn assign(
        &self,
        entry: &SessionEntry,
        name: String,
        value: Value,
    ) -> Result<(), Error> {
        let result = self
            .with_worker(entry, move |s| s.assign(&name, &value))
            .await;
        entry.touch();
        result
    }

    /// The value bound to `name` in the session.
    pub async fn object(&self, entry: &SessionEntry, name: String) -> Result<Value, Error> {
        if !is_r_name(&name) {
            return Err(Error::BadInput(format!(
                "`{name}` is not an R variable name"
            )));
        }
        let probe = format!("exists({name:?}, inherits = FALSE)");
        let exists = self.with_worker(entry, move |s| s.eval(&probe)).await?;
        if exists
            .value
            .as_logicals()
            .and_then(|l| l.first()?.to_option())
            != Some(true)
        {
            return Err(Error::not_found(format!("object `{name}`")));
        }
        self.with_worker(entry, move |s| s.get(&name)).await
    }

    /// Runs `f` on the session's worker on the blocking pool (see [`on_worker`]).
    async fn with_worker<T: Send + 'static>(
        &self,
        entry: &SessionEntry,
        f: impl FnOnce(&mut Session) -> Result<T, EngineError> + Send + 'static,
    ) -> Result<T, Error> {
        let mut guard = entry.worker.clone().lock_owned().await;
        let pool = self.pool.clone();
        let path = entry.dir.path();
        let spec = entry.spec.clone();
        blocking(move || on_worker(&pool, &path, spec.as_deref(), &mut guard, f)).await?
    }

    /// [`Sessions::execute`] for a caller that is already on a blocking thread (a
    /// QAP1 connection): no hop to another thread. Never call it from async code.
    pub fn execute_blocking(&self, entry: &SessionEntry, code: &str) -> Result<Evaluation, Error> {
        self.execute_bound_blocking(entry, &[], code, None)
    }

    /// [`Sessions::execute_blocking`] with `bindings` bound first, in the same trip
    /// to the worker, and the OOB messages the code sends handed to `oob` (a QAP1
    /// connection's relay to its client, see [`rookery_engine::Session::eval_bound`]).
    pub fn execute_bound_blocking(
        &self,
        entry: &SessionEntry,
        bindings: &[(&str, &Value)],
        code: &str,
        oob: Option<&mut rookery_engine::OobSink<'_>>,
    ) -> Result<Evaluation, Error> {
        let opts = CallOptions {
            timeout: Some(self.timeout),
            cancel: None,
            max_result_bytes: Some(entry.max_result_bytes),
        };
        let mut guard = entry.worker.blocking_lock();
        let spec = entry.spec.as_deref();
        let result = on_worker(&self.pool, &entry.dir.path(), spec, &mut guard, |s| {
            s.eval_bound(code, bindings, &opts, oob)
        });
        entry.touch();
        result
    }

    /// The longest a session's call may run.
    pub fn call_timeout(&self) -> Duration {
        self.timeout
    }

    /// [`Sessions::assign`] from a blocking thread (see [`Sessions::execute_blocking`]).
    pub fn assign_blocking(
        &self,
        entry: &SessionEntry,
        name: &str,
        value: &Value,
    ) -> Result<(), Error> {
        let mut guard = entry.worker.blocking_lock();
        let spec = entry.spec.as_deref();
        let result = on_worker(&self.pool, &entry.dir.path(), spec, &mut guard, |s| {
            s.assign(name, value)
        });
        entry.touch();
        result
    }

    /// Lets the session's worker serve a QAP1 socket itself until it hands the
    /// connection back ([`Session::serve_qap`]); from a blocking thread (a QAP1
    /// connection's). A worker lost to a timeout or a crash is replaced in the same
    /// folder, as after any call.
    pub fn serve_qap_blocking(
        &self,
        entry: &SessionEntry,
        socket: std::os::fd::BorrowedFd<'_>,
        options: rookery_engine::qap::direct::QapServe,
    ) -> Result<rookery_engine::qap::direct::QapYield, QapPassError> {
        let mut guard = entry.worker.blocking_lock();
        let spec = entry.spec.as_deref();
        let path = entry.dir.path();
        if guard.is_none() {
            *guard = Some(
                start_worker(&self.pool, &path, spec).map_err(|e| QapPassError {
                    error: e.into(),
                    in_flight: false,
                    replaced: false,
                })?,
            );
        }
        let session = guard.as_mut().expect("set above");
        let result = session.serve_qap(socket, options, Some(self.timeout));
        entry.touch();
        result.map_err(|f| {
            let lost = matches!(
                f.error,
                EngineError::Timeout { .. } | EngineError::WorkerDied { .. }
            );
            if lost {
                *guard = start_worker(&self.pool, &path, spec).ok();
            }
            QapPassError {
                error: f.error.into(),
                in_flight: f.in_flight,
                replaced: lost && guard.is_some(),
            }
        })
    }

    /// Closes the session: stops its worker (and everything it started), removes
    /// its folder and temp dir, and lets go of the owner's worker account (returned
    /// to the pool once the owner's last session is closed and cleaned up).
    pub async fn close(&self, entry: &SessionEntry) -> Result<(), Error> {
        self.registry.lock().open.remove(&entry.id);
        let worker = entry.worker.clone();
        blocking(move || drop(worker.blocking_lock().take())).await?;
        let user = self.dirs.user(&entry.owner)?;
        let removed = user.remove_session(&entry.id);
        let _ = user.remove_temp(&entry.id);
        drop(entry.lease.lock().take());
        removed?;
        Ok(())
    }

    /// Closes every session idle for longer than the configured TTL; returns how many.
    pub async fn expire_idle(&self) -> usize {
        let cutoff = now() - self.idle.as_secs() as i64;
        let stale: Vec<_> = self
            .registry
            .lock()
            .open
            .values()
            .filter(|s| s.last_used() < cutoff)
            .cloned()
            .collect();
        for s in &stale {
            if let Err(e) = self.close(s).await {
                tracing::warn!(session = %s.id, error = %e, "closing an idle session failed");
            }
        }
        stale.len()
    }

    pub fn count(&self) -> usize {
        self.registry.lock().open.len()
    }

    /// Closes everything, ready sessions too (server shutdown).
    pub async fn close_all(&self) {
        let ready = self.ready.clone();
        let _ = blocking(move || ready.close()).await;
        let all: Vec<_> = self.registry.lock().open.values().cloned().collect();
        for s in &all {
            let _ = self.close(s).await;
        }
    }

    /// How many sessions wait, made ready ahead for their owner's next open.
    pub fn ready_count(&self) -> usize {
        self.ready.waiting()
    }

    /// The id of the session made ready for `owner`'s next open, if one waits.
    pub fn ready_for(&self, owner: &str) -> Option<Uuid> {
        self.ready.waiting_for(owner)
    }
}

/// Runs `f` on a session's worker (starting one if the last one was lost). If the
/// worker is gone afterwards (timeout, crash, cancel), a new one is started in the
/// same folder so the next call works; the error still reaches this caller.
fn on_worker<T>(
    pool: &Pool,
    dir: &std::path::Path,
    spec: Option<&Confinement>,
    slot: &mut Option<Session>,
    f: impl FnOnce(&mut Session) -> Result<T, EngineError>,
) -> Result<T, Error> {
    if slot.is_none() {
        *slot = Some(start_worker(pool, dir, spec)?);
    }
    let session = slot.as_mut().expect("set above");
    let result = f(session);
    if matches!(
        result,
        Err(EngineError::Timeout { .. } | EngineError::WorkerDied { .. } | EngineError::Cancelled)
    ) {
        *slot = start_worker(pool, dir, spec).ok();
    }
    result.map_err(Error::from)
}

/// Why a pass of QAP1 direct mode failed ([`Sessions::serve_qap_blocking`]).
#[derive(Debug)]
pub struct QapPassError {
    pub error: Error,
    /// The client waits for the answer to a call (the worker died or timed out in
    /// it): it is owed a status.
    pub in_flight: bool,
    /// The session has a new worker (its objects are gone): the connection goes on.
    pub replaced: bool,
}

pub use rookery_engine::is_r_name;

#[cfg(test)]
mod tests {
    use super::is_r_name;

    #[test]
    fn r_names() {
        for ok in ["x", "model_1", ".hidden", "a.b"] {
            assert!(is_r_name(ok), "{ok}");
        }
        for bad in ["", "1x", "_x", "a b", "x;y", ".1", "a$b", "`x`"] {
            assert!(!is_r_name(bad), "{bad}");
        }
    }
}

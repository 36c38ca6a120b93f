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

use crate::admin::now;
use crate::confine::{Confiner, Lease};
use crate::error::AppError;
use crate::files::{ConfinedDir, UserDirs};
use crate::store::Timestamp;

use super::blocking;
use super::ready::ReadySessions;

/// One open session.
#[derive(Debug)]
pub struct SessionEntry {
    pub id: Uuid,
    pub owner: String,
    pub dir: ConfinedDir,
    pub created_at: Timestamp,
    last_used: AtomicI64,
    worker: Arc<tokio::sync::Mutex<Option<Session>>>,
    /// How its workers are locked in (`None`: confinement is off).
    spec: Option<Arc<Confinement>>,
    /// The owner's worker account, held until the session closes.
    lease: Mutex<Option<Lease>>,
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
}

impl Sessions {
    /// `pool` forks each session's worker; its own warm workers are not used. Up to
    /// `pool_config.session_ready_users` users get their next session prepared
    /// ahead (see [`super::ready`]).
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
        }
    }

    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// Opens a session for `owner`: the owner's worker account (leased, or shared
    /// with their other sessions), a GUID folder, its own temp dir, and a pristine
    /// worker locked into them before it runs anything.
    pub async fn open(&self, owner: &str) -> Result<Arc<SessionEntry>, AppError> {
        let _place = self.reserve(owner)?;
        let (id, (lease, dir, spec, session)) = match self.ready.take_or_wait(owner).await {
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
            owner: owner.to_owned(),
            dir,
            created_at: now(),
            last_used: AtomicI64::new(now()),
            worker: Arc::new(tokio::sync::Mutex::new(Some(session))),
            spec,
            lease: Mutex::new(lease),
        });
        self.registry.lock().open.insert(id, entry.clone());
        Ok(entry)
    }

    /// Holds a place for a new session of `owner` if the limits allow one more.
    fn reserve(&self, owner: &str) -> Result<Reservation<'_>, AppError> {
        let mut reg = self.registry.lock();
        let opening = reg.opening.get(owner).copied().unwrap_or(0);
        let mine = reg.open.values().filter(|s| s.owner == owner).count() + opening;
        if mine >= self.per_user {
            return Err(AppError::Conflict(format!(
                "user `{owner}` already has {mine} open sessions (the limit); close one first"
            )));
        }
        if reg.open.len() + reg.opening.values().sum::<usize>() >= self.total {
            return Err(AppError::Busy);
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
    ) -> Result<Arc<SessionEntry>, AppError> {
        let missing = || AppError::not_found(format!("session `{id}`"));
        let id = Uuid::parse_str(id).map_err(|_| missing())?;
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
    pub async fn execute(
        &self,
        entry: &SessionEntry,
        code: String,
    ) -> Result<Evaluation, AppError> {
        let opts = CallOptions {
            timeout: Some(self.timeout),
            cancel: None,
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
    ) -> Result<(), AppError> {
        let result = self
            .with_worker(entry, move |s| s.assign(&name, &value))
            .await;
        entry.touch();
        result
    }

    /// The value bound to `name` in the session.
    pub async fn object(&self, entry: &SessionEntry, name: String) -> Result<Value, AppError> {
        if !is_r_name(&name) {
            return Err(AppError::BadRequest(format!(
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
            return Err(AppError::not_found(format!("object `{name}`")));
        }
        self.with_worker(entry, move |s| s.get(&name)).await
    }

    /// Runs `f` on the session's worker on the blocking pool (see [`on_worker`]).
    async fn with_worker<T: Send + 'static>(
        &self,
        entry: &SessionEntry,
        f: impl FnOnce(&mut Session) -> Result<T, EngineError> + Send + 'static,
    ) -> Result<T, AppError> {
        let mut guard = entry.worker.clone().lock_owned().await;
        let pool = self.pool.clone();
        let path = entry.dir.path();
        let spec = entry.spec.clone();
        blocking(move || on_worker(&pool, &path, spec.as_deref(), &mut guard, f)).await?
    }

    /// [`Sessions::execute`] for a caller that is already on a blocking thread (a
    /// QAP1 connection): no hop to another thread. Never call it from async code.
    pub fn execute_blocking(
        &self,
        entry: &SessionEntry,
        code: &str,
    ) -> Result<Evaluation, AppError> {
        let opts = CallOptions {
            timeout: Some(self.timeout),
            cancel: None,
        };
        let mut guard = entry.worker.blocking_lock();
        let spec = entry.spec.as_deref();
        let result = on_worker(&self.pool, &entry.dir.path(), spec, &mut guard, |s| {
            s.eval_with(code, &opts)
        });
        entry.touch();
        result
    }

    /// [`Sessions::assign`] from a blocking thread (see [`Sessions::execute_blocking`]).
    pub fn assign_blocking(
        &self,
        entry: &SessionEntry,
        name: &str,
        value: &Value,
    ) -> Result<(), AppError> {
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
    pub async fn close(&self, entry: &SessionEntry) -> Result<(), AppError> {
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
) -> Result<T, AppError> {
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
    result.map_err(AppError::from)
}

/// Why a pass of QAP1 direct mode failed ([`Sessions::serve_qap_blocking`]).
#[derive(Debug)]
pub struct QapPassError {
    pub error: AppError,
    /// The client waits for the answer to a call (the worker died or timed out in
    /// it): it is owed a status.
    pub in_flight: bool,
    /// The session has a new worker (its objects are gone): the connection goes on.
    pub replaced: bool,
}

/// What a new session is made of.
pub(super) type Started = (
    Option<Lease>,
    ConfinedDir,
    Option<Arc<Confinement>>,
    Session,
);

/// Leases `owner`'s account, makes the session's folders and hands them to it, and
/// starts its worker (confined when confinement is on). Undoes the folders on
/// failure. Blocking.
pub(super) fn start_session(
    confiner: &Confiner,
    pool: &Pool,
    user: &crate::files::UserDir,
    owner: &str,
    id: &Uuid,
) -> Result<Started, AppError> {
    let lease = confiner.lease_user(owner, &user.path())?;
    let dir = user.create_session(id)?;
    let undo = |e: AppError| {
        let _ = user.remove_session(id);
        let _ = user.remove_temp(id);
        e
    };
    let (dir, spec) = match &lease {
        None => (dir, None),
        Some(lease) => {
            let temp = prepare_folders(user, id, lease).map_err(undo)?;
            let dir = match lease.account() {
                Some(a) => dir.owned_by(a.uid, a.gid),
                None => dir,
            };
            let spec = Arc::new(confiner.session_spec(lease, &dir.path(), &temp));
            (dir, Some(spec))
        }
    };
    let session = start_worker(pool, &dir.path(), spec.as_deref()).map_err(|e| undo(e.into()))?;
    Ok((lease, dir, spec, session))
}

/// Hands the session's folders to the lease's account (the server created them),
/// and creates the session's temp dir. Returns the temp dir.
fn prepare_folders(
    user: &crate::files::UserDir,
    id: &Uuid,
    lease: &Lease,
) -> Result<std::path::PathBuf, AppError> {
    let temp = user.create_temp(id)?;
    if let Some(a) = lease.account() {
        let root = user.path();
        let folders = [
            root.clone(),
            root.join("sessions"),
            root.join("sessions").join(id.to_string()),
            user.temp_root(),
            temp.clone(),
        ];
        for f in &folders {
            std::os::unix::fs::lchown(f, Some(a.uid), Some(a.gid)).map_err(|e| {
                AppError::Internal(format!("handing {} to {}: {e}", f.display(), a.name))
            })?;
        }
    }
    Ok(temp)
}

/// A worker forked for one session, locked into `spec` (when confinement is on)
/// and working in `dir`.
fn start_worker(
    pool: &Pool,
    dir: &std::path::Path,
    spec: Option<&Confinement>,
) -> Result<Session, EngineError> {
    let mut session = pool.fresh_session()?;
    if let Some(spec) = spec {
        session.confine(spec)?;
        return Ok(session);
    }
    let dir = dir.to_str().ok_or_else(|| {
        EngineError::Spawn(format!("session folder {} is not UTF-8", dir.display()))
    })?;
    session.eval(&format!("setwd({dir:?}); invisible(NULL)"))?;
    Ok(session)
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

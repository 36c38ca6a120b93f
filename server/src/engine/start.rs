//! How a session is started: the owner's worker account leased, the GUID folder and
//! temp dir made and handed to it, and a pristine worker locked into them. Used by
//! [`super::sessions`] to open a session on demand and by [`super::ready`] to make
//! one ready ahead; it must not know either's bookkeeping.

use std::sync::Arc;

use rookery_engine::confine::Confinement;
use rookery_engine::{Error as EngineError, Pool, Session};
use uuid::Uuid;

use super::Error;
use crate::confine::{Confiner, Lease};
use crate::files::ConfinedDir;

/// What a new session is made of.
pub(super) struct Started {
    /// The owner's worker account, while confinement is on.
    pub lease: Option<Lease>,
    /// The session's GUID folder.
    pub dir: ConfinedDir,
    /// What the worker is locked into, while confinement is on.
    pub spec: Option<Arc<Confinement>>,
    /// The engine session: the worker forked for this session alone.
    pub worker: Session,
}

/// Leases `owner`'s account, makes the session's folders and hands them to it, and
/// starts its worker (confined when confinement is on). Undoes the folders on
/// failure. Blocking.
pub(super) fn start_session(
    confiner: &Confiner,
    pool: &Pool,
    user: &crate::files::UserDir,
    owner: &str,
    id: &Uuid,
) -> Result<Started, Error> {
    let lease = confiner.lease_user(owner, &user.path())?;
    let dir = user.create_session(id)?;
    let undo = |e: Error| {
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
    let worker = start_worker(pool, &dir.path(), spec.as_deref()).map_err(|e| undo(e.into()))?;
    Ok(Started {
        lease,
        dir,
        spec,
        worker,
    })
}

/// Hands the session's folders to the lease's account (the server created them),
/// and creates the session's temp dir. Returns the temp dir.
fn prepare_folders(
    user: &crate::files::UserDir,
    id: &Uuid,
    lease: &Lease,
) -> Result<std::path::PathBuf, Error> {
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
                Error::Internal(format!("handing {} to {}: {e}", f.display(), a.name))
            })?;
        }
    }
    Ok(temp)
}

/// A worker forked for one session, locked into `spec` (when confinement is on)
/// and working in `dir`.
pub(super) fn start_worker(
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

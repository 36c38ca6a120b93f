//! Sessions made ready ahead: when a user opens a session, the next one is prepared
//! in the background (account leased, GUID folder and temp dir made and handed to the
//! account, a pre-forked worker confined into them), so that the user's next open,
//! typically a QAP1 client reconnecting for its next request, only takes it.
//!
//! ```text
//!  open(alice) ─▶ take alice's ready session, or start one inline
//!              └▶ (background) start the next one ─▶ ready[alice]
//!                                                    │ unused for `ttl`
//!                                                    ▼
//!                                     discarded: worker killed, folders removed,
//!                                     lease let go (it lingers, then is cleaned)
//! ```
//!
//! A ready session is exactly what an inline open would make (a pristine worker
//! forked for it alone, its own folders), only earlier; it is handed to its owner
//! and no one else. At most one per user and `max_users` in all, so that the
//! processes and accounts held ahead stay bounded.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use uuid::Uuid;

use super::start::{start_session, Started};
use crate::confine::Confiner;
use crate::files::UserDirs;

/// What a ready session's worker runs once before it waits.
const WARM_UP: &str = "1 + 1";

/// A session prepared for its owner's next open.
pub(super) struct Ready {
    pub id: Uuid,
    pub started: Started,
    made: Instant,
}

/// One user's slot: a session being prepared (its sender says `true` once that is
/// over, whether it worked or not), or one waiting.
enum Slot {
    Preparing(tokio::sync::watch::Receiver<bool>),
    Waiting(Box<Ready>),
}

/// What [`ReadySessions::take`] found.
pub(super) enum Found {
    Ready(Box<Ready>),
    /// One is on its way: wait for it (it started earlier than an inline open
    /// would), then take again.
    Coming(tokio::sync::watch::Receiver<bool>),
    None,
}

/// The sessions made ready ahead, one per user at most.
pub(super) struct ReadySessions {
    pool: rookery_engine::Pool,
    dirs: Arc<UserDirs>,
    confiner: Arc<Confiner>,
    slots: Mutex<HashMap<String, Slot>>,
    max_users: usize,
    ttl: Duration,
    closed: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for ReadySessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadySessions")
            .field("users", &self.slots.lock().len())
            .field("max_users", &self.max_users)
            .field("ttl", &self.ttl)
            .finish()
    }
}

impl ReadySessions {
    pub fn new(
        pool: rookery_engine::Pool,
        dirs: Arc<UserDirs>,
        confiner: Arc<Confiner>,
        max_users: usize,
        ttl: Duration,
    ) -> Arc<ReadySessions> {
        Arc::new(ReadySessions {
            pool,
            dirs,
            confiner,
            slots: Mutex::new(HashMap::new()),
            max_users,
            ttl,
            closed: Default::default(),
        })
    }

    /// `owner`'s ready session if one is waiting, or a way to wait for the one being
    /// prepared.
    pub fn take(&self, owner: &str) -> Found {
        let mut slots = self.slots.lock();
        match slots.get(owner) {
            Some(Slot::Preparing(done)) => Found::Coming(done.clone()),
            Some(Slot::Waiting(_)) => match slots.remove(owner) {
                Some(Slot::Waiting(ready)) => Found::Ready(ready),
                _ => unreachable!("checked above"),
            },
            None => Found::None,
        }
    }

    /// [`ReadySessions::take`], waiting for a session on its way. A session whose
    /// worker died while it waited is discarded, not handed out.
    pub async fn take_or_wait(self: &Arc<Self>, owner: &str) -> Option<Box<Ready>> {
        let ready = match self.take(owner) {
            Found::Ready(r) => r,
            Found::Coming(mut done) => {
                let _ = done.wait_for(|over| *over).await;
                match self.take(owner) {
                    Found::Ready(r) => r,
                    _ => return None,
                }
            }
            Found::None => return None,
        };
        if ready.started.worker.is_alive() {
            return Some(ready);
        }
        let (this, owner) = (self.clone(), owner.to_owned());
        tokio::task::spawn_blocking(move || this.discard(&owner, *ready));
        None
    }

    /// Starts preparing a session for `owner` on the blocking pool, unless one is
    /// already there or on its way, or `max_users` users have one. Also discards
    /// sessions left waiting past the TTL whose timer did not run (it lives on the
    /// runtime that prepared them). Call it from within the runtime.
    pub fn prepare(self: &Arc<Self>, owner: &str) {
        if self.max_users == 0 || self.closed.load(std::sync::atomic::Ordering::Acquire) {
            return;
        }
        let (done, stale) = {
            let mut slots = self.slots.lock();
            let stale = self.remove_stale(&mut slots);
            let done = if slots.contains_key(owner) || slots.len() >= self.max_users {
                None
            } else {
                let (done, waiters) = tokio::sync::watch::channel(false);
                slots.insert(owner.to_owned(), Slot::Preparing(waiters));
                Some(done)
            };
            (done, stale)
        };
        if done.is_none() && stale.is_empty() {
            return;
        }
        let (this, owner) = (self.clone(), owner.to_owned());
        let runtime = tokio::runtime::Handle::current();
        let timer = runtime.clone();
        runtime.spawn_blocking(move || {
            for (who, ready) in stale {
                this.discard(&who, ready);
            }
            if let Some(done) = done {
                this.make_ready(&owner, &done, &timer);
            }
        });
    }

    /// Prepares `owner`'s session (blocking) and leaves it waiting, with a timer that
    /// discards it after the TTL; `done` tells the waiters it is over.
    fn make_ready(
        self: &Arc<Self>,
        owner: &str,
        done: &tokio::sync::watch::Sender<bool>,
        timer: &tokio::runtime::Handle,
    ) {
        let id = Uuid::new_v4();
        let started = self
            .dirs
            .user(owner)
            .map_err(super::Error::from)
            .and_then(|user| start_session(&self.confiner, &self.pool, &user, owner, &id));
        let give_up = |why: &dyn std::fmt::Display| {
            // Nothing is lost: the next open starts its session inline and reports
            // the reason to its caller.
            tracing::debug!(user = %owner, error = %why, "no session made ready");
            self.slots.lock().remove(owner);
            let _ = done.send(true);
        };
        let mut ready = match started {
            Ok(started) => Ready {
                id,
                started,
                made: Instant::now(),
            },
            Err(e) => return give_up(&e),
        };
        // A first call faults in the pages every call touches (the parser's, the
        // allocator's, the reply region's): here, rather than in the owner's first
        // request. It binds nothing.
        if let Err(e) = ready.started.worker.eval(WARM_UP) {
            give_up(&e);
            return self.discard(owner, ready);
        }
        ready.made = Instant::now();
        let mut slots = self.slots.lock();
        if self.closed.load(std::sync::atomic::Ordering::Acquire) {
            slots.remove(owner);
            drop(slots);
            let _ = done.send(true);
            self.discard(owner, ready);
            return;
        }
        slots.insert(owner.to_owned(), Slot::Waiting(Box::new(ready)));
        drop(slots);
        let _ = done.send(true);
        timer.spawn(self.clone().expire_later(owner.to_owned(), id));
    }

    /// Takes the sessions that waited past the TTL out of `slots`.
    fn remove_stale(&self, slots: &mut HashMap<String, Slot>) -> Vec<(String, Ready)> {
        let stale: Vec<String> = slots
            .iter()
            .filter(|(_, s)| matches!(s, Slot::Waiting(r) if r.made.elapsed() >= self.ttl))
            .map(|(owner, _)| owner.clone())
            .collect();
        stale
            .into_iter()
            .filter_map(|owner| match slots.remove(&owner) {
                Some(Slot::Waiting(r)) => Some((owner, *r)),
                _ => None,
            })
            .collect()
    }

    /// The id of the session waiting for `owner`, if one is.
    pub fn waiting_for(&self, owner: &str) -> Option<Uuid> {
        match self.slots.lock().get(owner) {
            Some(Slot::Waiting(r)) => Some(r.id),
            _ => None,
        }
    }

    /// Discards `owner`'s ready session `id` if it is still waiting after the TTL.
    async fn expire_later(self: Arc<Self>, owner: String, id: Uuid) {
        tokio::time::sleep(self.ttl).await;
        let stale = {
            let mut slots = self.slots.lock();
            match slots.get(&owner) {
                Some(Slot::Waiting(r)) if r.id == id && r.made.elapsed() >= self.ttl => {
                    slots.remove(&owner)
                }
                _ => None,
            }
        };
        if let Some(Slot::Waiting(ready)) = stale {
            let this = self.clone();
            let _ = tokio::task::spawn_blocking(move || this.discard(&owner, *ready)).await;
        }
    }

    /// Ends a ready session that will not be used: its worker (and everything it
    /// started), its folder and temp dir; its lease is let go. Blocking.
    pub fn discard(&self, owner: &str, ready: Ready) {
        let Started { lease, worker, .. } = ready.started;
        drop(worker);
        if let Ok(user) = self.dirs.user(owner) {
            let _ = user.remove_session(&ready.id);
            let _ = user.remove_temp(&ready.id);
        }
        drop(lease);
    }

    /// Discards every ready session and prepares no more (server shutdown). Blocking.
    pub fn close(&self) {
        self.closed
            .store(true, std::sync::atomic::Ordering::Release);
        let waiting: Vec<(String, Ready)> = self
            .slots
            .lock()
            .drain()
            .filter_map(|(owner, slot)| match slot {
                Slot::Waiting(r) => Some((owner, *r)),
                Slot::Preparing(_) => None,
            })
            .collect();
        for (owner, ready) in waiting {
            self.discard(&owner, ready);
        }
    }

    /// How many sessions are waiting.
    pub fn waiting(&self) -> usize {
        self.slots
            .lock()
            .values()
            .filter(|s| matches!(s, Slot::Waiting(_)))
            .count()
    }
}

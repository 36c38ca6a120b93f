//! The pool's bookkeeping: idle workers, checkout with a bounded wait queue, checkin
//! with recycling, and the spawner thread that keeps the pool at its size.
//!
//! ```text
//!              checkout (LIFO: the hottest worker)         checkin
//!  callers ──▶ [ idle: w3 w1 ] ──pop──▶ caller ... ──▶ healthy? ──yes──▶ push idle
//!     │ none idle: wait (≤ max_queue callers, ≤ queue_timeout) → Busy     │ no (died, timed
//!     ▼                                                                   │ out, dirty, N calls)
//!  spawner thread ◀─────────── "live < size" ◀──────── retire, live -= 1 ◀┘
//!     └─ zygote.spawn() → await Ready → push idle, live += 1
//! ```
//!
//! Owns the counts (`live` = idle + checked out + being spawned) and the invariants
//! between them, and the zygote the pool forks from: a zygote that has ended (the
//! OOM killer, a crash, a stray signal) is replaced by a new one, started as the
//! first was, before the next fork ([`Shared::live_zygote`]). It must not talk to
//! R: calls go through [`super::worker_conn`].

use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use parking_lot::{Condvar, Mutex};

use super::worker_conn::WorkerConn;
use super::zygote_handle::Zygote;
use super::PoolConfig;
use crate::Error;

#[derive(Default)]
pub(crate) struct State {
    pub idle: Vec<WorkerConn>,
    /// Forked and ready, not yet counted in `live`: promoted the moment a worker is
    /// retired, so a crash costs no fork on anyone's critical path.
    pub spares: Vec<WorkerConn>,
    /// Workers that exist or are being spawned.
    pub live: usize,
    /// Workers checked out by callers.
    pub out: usize,
    /// Callers waiting for a worker.
    pub waiting: usize,
    pub closed: bool,
    /// The last spawn failure, cleared by the next success.
    pub spawn_error: Option<String>,
    pub spawned: u64,
    pub retired: u64,
}

pub(crate) struct Shared {
    /// The zygote new workers are forked from.
    zygote: Mutex<Arc<Zygote>>,
    /// How to start another one when it is gone; held while one starts.
    restart: Mutex<ZygoteStart>,
    /// Zygotes started after the first.
    restarts: std::sync::atomic::AtomicU64,
    pub config: PoolConfig,
    pub state: Mutex<State>,
    pub available: Condvar,
    pub respawn: Sender<()>,
}

/// What a zygote is started from (see [`Zygote::start`]).
pub(crate) struct ZygoteStart {
    pub program: std::path::PathBuf,
    pub config: crate::child::zygote::ZygoteConfig,
    pub env: Vec<(std::ffi::OsString, std::ffi::OsString)>,
    pub timeout: Duration,
}

impl Shared {
    pub fn new(
        zygote: Zygote,
        start: ZygoteStart,
        config: PoolConfig,
        respawn: Sender<()>,
    ) -> Shared {
        Shared {
            zygote: Mutex::new(Arc::new(zygote)),
            restart: Mutex::new(start),
            restarts: Default::default(),
            config,
            state: Mutex::new(State::default()),
            available: Condvar::new(),
            respawn,
        }
    }

    /// The current zygote.
    pub fn zygote(&self) -> Arc<Zygote> {
        Arc::clone(&self.zygote.lock())
    }

    /// Zygotes started after the first, each because the one before had ended.
    pub fn zygote_restarts(&self) -> u64 {
        self.restarts.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The zygote to fork from: the current one, or, when it has ended, a new one
    /// started in its place (R, preloads and init again). Workers of the old one
    /// serve on; each keeps the zygote that reaps it.
    pub fn live_zygote(&self) -> Result<Arc<Zygote>, Error> {
        let current = self.zygote();
        if !current.is_gone() {
            return Ok(current);
        }
        let start = self.restart.lock();
        let current = self.zygote();
        if !current.is_gone() {
            // Another thread replaced it while this one waited.
            return Ok(current);
        }
        tracing::warn!(
            pid = current.pid(),
            "the zygote has ended; starting another"
        );
        let fresh = Zygote::start(&start.program, &start.config, &start.env, start.timeout)?;
        tracing::info!(old = current.pid(), new = fresh.pid(), "zygote replaced");
        self.restarts
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let fresh = Arc::new(fresh);
        *self.zygote.lock() = Arc::clone(&fresh);
        Ok(fresh)
    }

    /// Takes an idle worker, waiting in the bounded queue if none is idle.
    pub fn checkout(&self) -> Result<WorkerConn, Error> {
        let mut st = self.state.lock();
        if st.closed {
            return Err(Error::Closed);
        }
        if let Some(w) = st.idle.pop() {
            st.out += 1;
            return Ok(w);
        }
        if st.waiting >= self.config.max_queue {
            return Err(Error::Busy {
                waited: Duration::ZERO,
                waiting: st.waiting,
            });
        }
        let started = Instant::now();
        let deadline = started + self.config.queue_timeout;
        st.waiting += 1;
        let result = loop {
            if st.closed {
                break Err(Error::Closed);
            }
            if let Some(w) = st.idle.pop() {
                st.out += 1;
                break Ok(w);
            }
            if st.live == 0 {
                if let Some(e) = &st.spawn_error {
                    break Err(Error::Spawn(e.clone()));
                }
            }
            if self.available.wait_until(&mut st, deadline).timed_out() {
                break Err(Error::Busy {
                    waited: started.elapsed(),
                    waiting: st.waiting - 1,
                });
            }
        };
        st.waiting -= 1;
        result
    }

    /// Returns a worker after a call: back to the idle stack if it may serve again,
    /// otherwise retired and replaced.
    pub fn checkin(&self, mut w: WorkerConn) {
        let max_calls = self.config.max_calls;
        let recycle = w.broken || w.retire.is_some() || max_calls.is_some_and(|n| w.calls >= n);
        let mut st = self.state.lock();
        st.out -= 1;
        if recycle || st.closed {
            st.live -= 1;
            st.retired += 1;
            let replace = !st.closed;
            if replace {
                if let Some(spare) = st.spares.pop() {
                    st.idle.push(spare);
                    st.live += 1;
                }
            }
            drop(st);
            if let Some(reason) = &w.retire {
                tracing::debug!(pid = w.pid, reason, "retiring worker");
            }
            w.retire();
            if replace {
                let _ = self.respawn.send(());
            }
        } else {
            st.idle.push(w);
            drop(st);
        }
        self.available.notify_all();
    }

    /// Spawns one worker and waits until it is ready.
    pub fn spawn_one(&self) -> Result<WorkerConn, Error> {
        let mut zygote = self.live_zygote()?;
        let spawned = match zygote.spawn(self.config.cpu_for_next()) {
            // It ended between the check and the fork.
            Err(_) if zygote.is_gone() => {
                zygote = self.live_zygote()?;
                zygote.spawn(self.config.cpu_for_next())?
            }
            other => other?,
        };
        let mut w = WorkerConn::await_ready(spawned, &zygote, self.config.start_timeout)?;
        if self.config.worker_cgroups {
            // Moving a process between cgroups (v1) waits for an RCU grace period,
            // about 10 ms: done here, off the path of the call that will use it.
            let name = format!("w{}-{}", zygote.pid(), w.pid);
            let placed = crate::confine::Cgroup::create(&name, u64::MAX, u64::MAX).and_then(|c| {
                let c = c.ok_or_else(|| std::io::Error::other("no usable cgroup hierarchy"))?;
                c.join(w.pid)?;
                Ok(c)
            });
            match placed {
                Ok(c) => w.cgroup = Some(c),
                Err(e) => {
                    w.kill();
                    return Err(Error::Spawn(format!("worker cgroup: {e}")));
                }
            }
        }
        Ok(w)
    }
}

/// Keeps the pool at its size: spawns whenever `live` drops below it.
pub(crate) fn spawner(shared: Weak<Shared>, wake: Receiver<()>) {
    while wake.recv().is_ok() {
        let Some(shared) = shared.upgrade() else {
            return;
        };
        while let Some(slot) = reserve_slot(&shared) {
            match shared.spawn_one() {
                Ok(mut w) => {
                    let mut st = shared.state.lock();
                    st.spawn_error = None;
                    st.spawned += 1;
                    match (st.closed, slot) {
                        (true, _) => {
                            st.live -= usize::from(slot == Slot::Live);
                            drop(st);
                            w.retire();
                        }
                        (false, Slot::Live) => st.idle.push(w),
                        (false, Slot::Spare) => st.spares.push(w),
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, "cannot spawn a worker");
                    let mut st = shared.state.lock();
                    st.live -= usize::from(slot == Slot::Live);
                    st.spawn_error = Some(e.to_string());
                    drop(st);
                    shared.available.notify_all();
                    std::thread::sleep(Duration::from_millis(100));
                    let _ = shared.respawn.send(());
                    break;
                }
            }
            shared.available.notify_all();
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    Live,
    Spare,
}

/// What to spawn next, if anything: a worker while the pool is below its size
/// (counted in `live` at once), then spares.
fn reserve_slot(shared: &Arc<Shared>) -> Option<Slot> {
    let mut st = shared.state.lock();
    if st.closed {
        return None;
    }
    if st.live < shared.config.workers {
        st.live += 1;
        return Some(Slot::Live);
    }
    (st.spares.len() < shared.config.spares).then_some(Slot::Spare)
}

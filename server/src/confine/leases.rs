//! Leases of worker accounts: Launchpad's mapping of a user to one low-privilege
//! account for the lifetime of their requests.
//!
//! Owns which account serves which key (`user:NAME` for a user's sessions,
//! `service:NAME@VERSION` for a service's pool), the memory + pids cgroup of a
//! service's lease, and the clean-up that returns an account to the pool. Parallel requests
//! of one key share its lease (a count); when the last one ends (and after a short
//! linger, in which the same key may take it back at no cost), one background
//! thread kills every process left in the lease's cgroup and of its uid, wipes the
//! lease's temp folders, and only then frees the account. A lock file per account
//! (`flock`, released by the kernel if this process dies) keeps two servers on one
//! machine from leasing the same account.

use std::collections::{HashMap, HashSet, VecDeque};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};
use rookery_engine::confine::Cgroup;

use super::accounts::Account;

/// Where the per-account lock files live (root only).
pub const LOCK_DIR: &str = "/run/rookery/accounts";

/// The account pool of one server.
#[derive(Debug)]
pub struct Leases {
    accounts: Vec<Account>,
    lock_dir: PathBuf,
    memory_max: u64,
    pids_max: u64,
    /// How long a lease with no holder is kept before its clean-up, so a client that
    /// reconnects at once (QAP1 clients often connect per call) finds it ready.
    linger: Duration,
    /// Lingering leases, in release order, for the one thread that ends them.
    expiries: Mutex<Option<std::sync::mpsc::Sender<Expiry>>>,
    state: Mutex<State>,
    freed: Condvar,
}

#[derive(Debug, Default)]
struct State {
    free: VecDeque<usize>,
    active: HashMap<String, Active>,
    /// Keys whose last lease is being cleaned up: a new lease for one of them waits,
    /// so the clean-up never wipes the new lease's files.
    cleaning: HashSet<String>,
}

#[derive(Debug)]
struct Active {
    account: usize,
    holders: usize,
    /// Bumped each time the lease is taken again while it lingers.
    generation: u64,
    lock: File,
    cgroup: Option<Arc<Cgroup>>,
    wipe: Vec<PathBuf>,
}

/// A lease whose last holder left: ended at `due` unless taken again meanwhile
/// (its generation then moves on).
#[derive(Debug)]
struct Expiry {
    key: String,
    generation: u64,
    due: Instant,
}

/// One holder's share of a lease; the last drop starts the clean-up.
#[derive(Debug)]
pub struct Lease {
    leases: Option<Arc<Leases>>,
    key: String,
    account: Option<Account>,
    cgroup: Option<Arc<Cgroup>>,
}

impl Lease {
    /// A lease with no account and no cgroup (an unprivileged server).
    pub fn unprivileged() -> Lease {
        Lease {
            leases: None,
            key: String::new(),
            account: None,
            cgroup: None,
        }
    }

    pub fn account(&self) -> Option<&Account> {
        self.account.as_ref()
    }

    /// The cgroup folders a worker of this lease joins.
    pub fn cgroup_dirs(&self) -> Vec<PathBuf> {
        self.cgroup
            .as_ref()
            .map_or_else(Vec::new, |c| c.dirs().to_vec())
    }

    /// Times the lease's memory limit was hit so far.
    pub fn memory_events(&self) -> u64 {
        self.cgroup.as_ref().map_or(0, |c| c.memory_events())
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(leases) = self.leases.take() {
            leases.release(&self.key);
        }
    }
}

impl Leases {
    /// A pool over `accounts`. Takes each account's lock once to kill what a crashed
    /// server may have left running under it.
    pub fn new(
        accounts: Vec<Account>,
        memory_max: u64,
        pids_max: u64,
        linger: Duration,
    ) -> std::io::Result<Leases> {
        let lock_dir = PathBuf::from(LOCK_DIR);
        if !accounts.is_empty() {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&lock_dir)?;
        }
        let leases = Leases {
            state: Mutex::new(State {
                free: (0..accounts.len()).collect(),
                ..State::default()
            }),
            accounts,
            lock_dir,
            memory_max,
            pids_max,
            linger,
            expiries: Mutex::new(None),
            freed: Condvar::new(),
        };
        leases.sweep();
        Ok(leases)
    }

    pub fn accounts(&self) -> &[Account] {
        &self.accounts
    }

    /// (accounts leased now, accounts in the pool).
    pub fn in_use(&self) -> (usize, usize) {
        let st = self.state.lock();
        (st.active.len() + st.cleaning.len(), self.accounts.len())
    }

    /// Kills processes of accounts no other server holds (left by a crash).
    fn sweep(&self) {
        let mut uids = Vec::new();
        for a in &self.accounts {
            if let Ok(lock) = self.try_lock(a) {
                uids.push(a.uid);
                Cgroup::remove_stale(&a.name);
                drop(lock);
            }
        }
        if !uids.is_empty() {
            kill_uids(&uids, Duration::from_secs(5));
        }
    }

    fn try_lock(&self, account: &Account) -> std::io::Result<File> {
        let path = self.lock_dir.join(format!("{}.lock", account.name));
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)?;
        rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive)?;
        Ok(file)
    }

    /// Joins `key`'s lease, or leases a free account for it, waiting up to `wait`
    /// for one. A new lease gets its cgroup (`with_cgroup`: one for all its
    /// workers, which join it), and `prepare` runs (under the pool's
    /// lock, so a parallel request of the same key waits for it) to hand the key's
    /// folders to the account. `wipe` folders are emptied when the lease ends.
    pub fn acquire(
        self: &Arc<Self>,
        key: &str,
        wait: Duration,
        with_cgroup: bool,
        wipe: &[PathBuf],
        prepare: impl FnOnce(&Account) -> std::io::Result<()>,
    ) -> Result<Lease, String> {
        let deadline = Instant::now() + wait;
        let mut st = self.state.lock();
        loop {
            if let Some(active) = st.active.get_mut(key) {
                if active.holders == 0 {
                    active.generation += 1;
                }
                active.holders += 1;
                return Ok(self.share(key, active));
            }
            if st.cleaning.contains(key) {
                if self.freed.wait_until(&mut st, deadline).timed_out() {
                    return Err(format!(
                        "the previous lease of {key} is still being cleaned up"
                    ));
                }
                continue;
            }
            let mut tried = 0;
            while tried < st.free.len() {
                let i = st.free.pop_front().expect("checked");
                let account = &self.accounts[i];
                match self.try_lock(account) {
                    Ok(lock) => {
                        let cgroup = if with_cgroup {
                            Cgroup::create(&account.name, self.memory_max, self.pids_max)
                                .map_err(|e| format!("cgroup for {}: {e}", account.name))
                        } else {
                            Ok(None)
                        };
                        let cgroup = match cgroup {
                            Ok(c) => c.map(Arc::new),
                            Err(e) => {
                                st.free.push_back(i);
                                return Err(e);
                            }
                        };
                        if let Err(e) = prepare(account) {
                            drop(cgroup);
                            st.free.push_back(i);
                            return Err(format!("handing folders to {}: {e}", account.name));
                        }
                        let active = Active {
                            account: i,
                            holders: 1,
                            generation: 0,
                            lock,
                            cgroup,
                            wipe: wipe.to_vec(),
                        };
                        let lease = self.share(key, &active);
                        st.active.insert(key.to_owned(), active);
                        return Ok(lease);
                    }
                    // Another server on this machine holds it.
                    Err(_) => {
                        st.free.push_back(i);
                        tried += 1;
                    }
                }
            }
            if self.freed.wait_until(&mut st, deadline).timed_out() {
                return Err(format!(
                    "all {} worker accounts are in use; retry shortly (create more with \
                     `rookery accounts create --count N`)",
                    self.accounts.len()
                ));
            }
        }
    }

    fn share(self: &Arc<Self>, key: &str, active: &Active) -> Lease {
        Lease {
            leases: Some(self.clone()),
            key: key.to_owned(),
            account: Some(self.accounts[active.account].clone()),
            cgroup: active.cgroup.clone(),
        }
    }

    fn release(self: &Arc<Self>, key: &str) {
        let mut st = self.state.lock();
        let Some(active) = st.active.get_mut(key) else {
            return;
        };
        active.holders -= 1;
        if active.holders > 0 {
            return;
        }
        let expiry = Expiry {
            key: key.to_owned(),
            generation: active.generation,
            due: Instant::now() + self.linger,
        };
        drop(st);
        let mut expiries = self.expiries.lock();
        if expiries.is_none() {
            *expiries = self.start_expirer();
        }
        let sent = expiries.as_ref().is_some_and(|tx| tx.send(expiry).is_ok());
        if !sent {
            tracing::error!(
                key,
                "cannot hand a lease to its clean-up; the account stays leased"
            );
        }
    }

    /// Starts the thread that ends lingering leases, oldest first. It holds the
    /// pool weakly; leases still lingering when the pool drops are ended by `Drop`.
    fn start_expirer(self: &Arc<Self>) -> Option<std::sync::mpsc::Sender<Expiry>> {
        let (tx, rx) = std::sync::mpsc::channel::<Expiry>();
        let leases = Arc::downgrade(self);
        std::thread::Builder::new()
            .name("rookery-lease-expiry".into())
            .spawn(move || {
                for expiry in rx {
                    std::thread::sleep(expiry.due.saturating_duration_since(Instant::now()));
                    match leases.upgrade() {
                        Some(leases) => leases.expire(&expiry.key, Some(expiry.generation)),
                        None => return,
                    }
                }
            })
            .ok()
            .map(|_| tx)
    }

    /// Ends `key`'s lease if no one holds it (and, with `generation`, if no one took
    /// it again since that release).
    fn expire(&self, key: &str, generation: Option<u64>) {
        let mut st = self.state.lock();
        let idle = st
            .active
            .get(key)
            .is_some_and(|a| a.holders == 0 && generation.unwrap_or(a.generation) == a.generation);
        if !idle {
            return; // taken again while it lingered
        }
        let active = st.active.remove(key).expect("present");
        st.cleaning.insert(key.to_owned());
        drop(st);
        self.clean_up(key, active);
    }

    /// Ends a lease: no process of it may remain, nor its temp files; then the
    /// account goes back to the pool. An account that cannot be emptied is kept
    /// out of the pool (and logged) rather than handed to someone else.
    fn clean_up(&self, key: &str, active: Active) {
        let account = &self.accounts[active.account];
        let mut clean = true;
        if let Some(cgroup) = active.cgroup {
            // The last holder's workers may still be exiting: wait for them first.
            clean &= cgroup.kill_all(Duration::from_secs(10));
            drop(cgroup);
        }
        clean &= kill_uids(&[account.uid], Duration::from_secs(10));
        for dir in &active.wipe {
            wipe(dir);
        }
        let mut st = self.state.lock();
        st.cleaning.remove(key);
        if clean {
            st.free.push_back(active.account);
            drop(active.lock);
        } else {
            tracing::error!(
                account = %account.name,
                "processes of a worker account survived SIGKILL; it stays out of the pool"
            );
            std::mem::forget(active.lock);
        }
        drop(st);
        self.freed.notify_all();
    }
}

impl Drop for Leases {
    /// Every remaining lease lingers (a holder would keep the pool alive): end
    /// them now rather than leave their processes and files behind.
    fn drop(&mut self) {
        let keys: Vec<String> = self.state.get_mut().active.keys().cloned().collect();
        for key in keys {
            self.expire(&key, None);
        }
    }
}

/// Removes everything inside `dir` (not `dir` itself), never following links.
fn wipe(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
        let _ = if is_dir {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
    }
}

/// SIGKILLs every process whose real or effective uid is in `uids`, until none is
/// left or `wait` passes. True when none is left.
pub fn kill_uids(uids: &[u32], wait: Duration) -> bool {
    let deadline = Instant::now() + wait;
    loop {
        let found = processes_of(uids);
        if found.is_empty() {
            return true;
        }
        for pid in found {
            if let Some(pid) = rustix::process::Pid::from_raw(pid) {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
            }
        }
        if Instant::now() >= deadline {
            return processes_of(uids).is_empty();
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Processes whose real or effective uid is in `uids`, zombies included (they
/// count against `RLIMIT_NPROC` until a subreaper reaps them).
pub fn processes_of(uids: &[u32]) -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
                return false;
            };
            let uid_line = status.lines().find_map(|l| l.strip_prefix("Uid:"));
            uid_line.is_some_and(|l| {
                l.split_whitespace()
                    .take(2)
                    .filter_map(|u| u.parse::<u32>().ok())
                    .any(|u| uids.contains(&u))
            })
        })
        .collect()
}

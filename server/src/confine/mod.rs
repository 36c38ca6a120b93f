//! Confinement policy: which worker runs as whom, sees which folders, and within
//! which limits (the `[confine]` section of the config).
//!
//! Owns the server's side of issue-5 confinement: probing what this machine can
//! enforce at start-up (and saying so), refusing untrusted work below the
//! configured floor, leasing worker accounts per user and per service
//! ([`leases`]), handing a user's folder to the leased account, and building the
//! engine's [`Confinement`] for a session's worker or a service's zygote. The
//! system calls themselves are the engine's (`rookery_engine::confine`).
//!
//! ```text
//!  session of alice ──▶ lease "user:alice" ──▶ rookery-w3 (uid 997); users/alice/ chowned
//!  session of alice ──▶   (shared)               to it, 0700; each worker its own cgroup
//!  service rf@1     ──▶ lease "service:rf@1" ─▶ rookery-w4 + cgroup rookery/rookery-w4 for
//!                                                its zygote and workers; model folder read-only
//!  last holder gone ──▶ kill cgroup + uid, wipe users/alice/tmp, account back to the pool
//! ```

pub mod accounts;
pub mod leases;

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rookery_engine::confine::{probe, Confinement, Identity, ResourceLimits, Support};
use serde::Deserialize;

use crate::engine::Error;
pub use accounts::Account;
pub use leases::Lease;
use leases::Leases;

/// `[confine]`: how workers that run users' code are locked in.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConfineConfig {
    /// Confine workers that run users' or publishers' code (default on). Turning it
    /// off is for a single trusted user on a private machine; it is logged loudly.
    pub enabled: bool,
    /// Worker accounts are the `/etc/passwd` users named `<prefix><n>` (made by
    /// `rookery accounts create`). Used when the server runs as root.
    pub account_prefix: String,
    /// Refuse untrusted work unless the kernel enforces at least this Landlock ABI
    /// (1: files; 4: also TCP; 6: also abstract sockets and signals).
    pub min_landlock_abi: u8,
    /// Install the seccomp deny list in every confined worker.
    pub seccomp: bool,
    /// Per-worker address space (`RLIMIT_AS`), MiB: R reports a clean error past it.
    pub address_space_mib: u64,
    /// Per-worker CPU seconds (0: none; call deadlines still apply).
    pub cpu_seconds: u64,
    /// Largest file a worker may write, MiB.
    pub file_size_mib: u64,
    /// Open files per worker.
    pub open_files: u64,
    /// Processes per worker account (`RLIMIT_NPROC`; root servers only).
    pub processes: u64,
    /// Memory cgroup limit, MiB: per session worker (each has its own cgroup), and
    /// for all the workers of a service version together.
    pub memory_mib: u64,
    /// Processes (pids cgroup), counted like `memory_mib`.
    pub pids: u64,
    /// How long a request waits for a free worker account, in milliseconds.
    pub lease_wait_ms: u64,
    /// How long an account stays with a user after their last session ends before
    /// it is emptied and returned (their workers are already gone): a client that
    /// reconnects at once skips the clean-up. Milliseconds.
    pub lease_linger_ms: u64,
    /// Variables of the server's environment passed through to every worker, by
    /// name. Nothing else of it reaches them beyond what R needs (`PATH`, the locale,
    /// `TZ`, `R_*`: see the engine's `worker_env`), so the server's own secrets never
    /// show in users' `Sys.getenv()`.
    pub env: Vec<String>,
    /// Per-service overrides, by service name.
    pub services: HashMap<String, ServiceConfine>,
}

/// `[confine.services.NAME]`: what one service's workers may do beyond the default.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServiceConfine {
    /// TCP ports its workers may connect to (default none: no network).
    pub tcp_connect: Vec<u16>,
    pub address_space_mib: Option<u64>,
    pub cpu_seconds: Option<u64>,
    pub memory_mib: Option<u64>,
}

impl Default for ConfineConfig {
    fn default() -> Self {
        ConfineConfig {
            enabled: true,
            account_prefix: accounts::DEFAULT_PREFIX.to_owned(),
            min_landlock_abi: 1,
            seccomp: true,
            address_space_mib: 8192,
            cpu_seconds: 0,
            file_size_mib: 1024,
            open_files: 256,
            processes: 128,
            memory_mib: 8192,
            pids: 256,
            lease_wait_ms: 10_000,
            lease_linger_ms: 1_000,
            env: Vec::new(),
            services: HashMap::new(),
        }
    }
}

/// The server's confinement state: what is enforced, and the account pool.
#[derive(Debug)]
pub struct Confiner {
    config: ConfineConfig,
    support: Support,
    leases: Arc<Leases>,
    /// Why untrusted work is refused on this machine, if it is.
    refusal: Option<String>,
    /// `<data>/tmp`, the parent of services' temp dirs.
    temp_root: PathBuf,
}

impl Confiner {
    /// Probes the machine and sets up the account pool for the data folder `data`.
    pub fn open(config: &ConfineConfig, data: &Path) -> Result<Confiner, String> {
        let support = probe();
        let accounts = if config.enabled && support.root {
            accounts::discover(&config.account_prefix, Path::new("/etc/passwd"))
                .map_err(|e| format!("reading /etc/passwd: {e}"))?
        } else {
            Vec::new()
        };
        let temp_root = data.join("tmp");
        let mut refusal = None;
        if config.enabled {
            if support.landlock_abi < config.min_landlock_abi {
                refusal = Some(format!(
                    "this kernel's Landlock ABI is {}, below the configured floor {} \
                     ([confine] min_landlock_abi): untrusted R code is refused rather than \
                     run unconfined",
                    support.landlock_abi, config.min_landlock_abi
                ));
            } else if support.root && accounts.is_empty() {
                refusal = Some(format!(
                    "the server runs as root but there are no worker accounts \
                     (`{}0`, ...): create them with `rookery accounts create --count 16`; \
                     untrusted R code never runs as root",
                    config.account_prefix
                ));
            }
            if !accounts.is_empty() {
                open_path_for_accounts(data).map_err(|e| format!("data folder: {e}"))?;
            }
        }
        make_dir(&temp_root, if accounts.is_empty() { 0o700 } else { 0o711 })
            .map_err(|e| format!("{}: {e}", temp_root.display()))?;
        let linger = Duration::from_millis(config.lease_linger_ms);
        let leases = Leases::new(accounts, config.memory_mib << 20, config.pids, linger)
            .map_err(|e| format!("worker account locks: {e}"))?;
        Ok(Confiner {
            config: config.clone(),
            support,
            leases: Arc::new(leases),
            refusal,
            temp_root,
        })
    }

    /// What is enforced, one line per layer, for the start-up log.
    pub fn describe(&self) -> Vec<String> {
        if !self.config.enabled {
            return vec![
                "confinement DISABLED ([confine] enabled = false): users' R code runs with \
                 the server's rights"
                    .into(),
            ];
        }
        let mut lines = self.support.describe();
        if self.support.root {
            lines[0] = format!(
                "worker accounts: {} (`{}N`)",
                self.leases.accounts().len(),
                self.config.account_prefix
            );
        }
        lines.push(format!(
            "Landlock floor: ABI {} ({})",
            self.config.min_landlock_abi,
            if self.refusal.is_some() {
                "NOT met"
            } else {
                "met"
            }
        ));
        if let Some(why) = &self.refusal {
            lines.push(format!("untrusted work REFUSED: {why}"));
        }
        lines
    }

    pub fn enabled(&self) -> bool {
        self.config.enabled
    }

    /// (accounts leased now, accounts in the pool).
    pub fn accounts_in_use(&self) -> (usize, usize) {
        self.leases.in_use()
    }

    fn check(&self) -> Result<(), Error> {
        match &self.refusal {
            Some(why) => Err(Error::Confinement(why.clone())),
            None => Ok(()),
        }
    }

    /// Whether session workers get a cgroup each (root, a usable hierarchy, worker
    /// accounts): the sessions pool is built with `worker_cgroups` then.
    pub fn worker_cgroups(&self) -> bool {
        self.config.enabled
            && self.support.root
            && self.support.cgroups.is_some()
            && !self.leases.accounts().is_empty()
    }

    fn lease(
        &self,
        key: &str,
        with_cgroup: bool,
        wipe: &[PathBuf],
        give: &[PathBuf],
    ) -> Result<Option<Lease>, Error> {
        if !self.config.enabled {
            return Ok(None);
        }
        self.check()?;
        if self.leases.accounts().is_empty() {
            return Ok(Some(Lease::unprivileged()));
        }
        let wait = Duration::from_millis(self.config.lease_wait_ms);
        self.leases
            .acquire(key, wait, with_cgroup, wipe, |account| {
                give.iter().try_for_each(|dir| chown_tree(dir, account))
            })
            .map(Some)
            .map_err(Error::Confinement)
    }

    /// Leases the account for `user`'s sessions (blocking: it may wait for a free
    /// account, and hands `user_dir` to it). `None` when confinement is off.
    pub fn lease_user(&self, user: &str, user_dir: &Path) -> Result<Option<Lease>, Error> {
        let tmp = user_dir.join("tmp");
        // Session workers have a cgroup each (see `worker_cgroups`).
        self.lease(
            &format!("user:{user}"),
            false,
            &[tmp],
            &[user_dir.to_path_buf()],
        )
    }

    /// The confinement of one session's worker: read-write in `job` and `temp`.
    /// Its memory and process limits go to the worker's own cgroup.
    pub fn session_spec(&self, lease: &Lease, job: &Path, temp: &Path) -> Confinement {
        let mut spec = Confinement::for_job(job, temp);
        self.fill(&mut spec, lease, None);
        if self.worker_cgroups() {
            spec.cgroup_limits = Some((self.config.memory_mib << 20, self.config.pids));
        }
        spec
    }

    /// Leases the account of service `name@version` for as long as its pool lives,
    /// hands it the revision's model folder `model_dir` (0700: no other account can
    /// read it) and makes the pool's temp dir `<data>/tmp/<tag>`. Returns the lease
    /// and the temp dir; `None` when confinement is off.
    pub fn lease_service(
        &self,
        name: &str,
        version: &str,
        tag: &str,
        model_dir: &Path,
    ) -> Result<Option<(Lease, PathBuf)>, Error> {
        if !self.config.enabled {
            return Ok(None);
        }
        let internal =
            |what: &Path, e: std::io::Error| Error::Internal(format!("{}: {e}", what.display()));
        let temp = self.temp_root.join(tag);
        make_dir(&temp, 0o700).map_err(|e| internal(&temp, e))?;
        // A service's zygote joins the lease's cgroup; its workers are born in it.
        let lease = match self.lease(&format!("service:{name}@{version}"), true, &[], &[]) {
            Ok(Some(lease)) => lease,
            Ok(None) => return Ok(None),
            Err(e) => {
                let _ = std::fs::remove_dir_all(&temp);
                return Err(e);
            }
        };
        if let Some(account) = lease.account() {
            // services/ NAME/ VERSION/: traverse only; the revision: the account's.
            for dir in model_dir.ancestors().skip(1).take(3) {
                std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o711))
                    .map_err(|e| internal(dir, e))?;
            }
            std::fs::set_permissions(model_dir, std::fs::Permissions::from_mode(0o700))
                .map_err(|e| internal(model_dir, e))?;
            for dir in [model_dir, &temp] {
                chown_tree(dir, account).map_err(|e| internal(dir, e))?;
            }
        }
        Ok(Some((lease, temp)))
    }

    /// The confinement of a service's zygote (and so its workers): its model folder
    /// read-only and its working directory, its temp dir read-write, the network
    /// its `[confine.services.NAME]` entry allows.
    pub fn service_spec(
        &self,
        lease: &Lease,
        name: &str,
        model_dir: &Path,
        temp: &Path,
    ) -> Confinement {
        let mut spec = Confinement {
            read_only: vec![model_dir.to_path_buf()],
            read_write: vec![temp.to_path_buf()],
            workdir: Some(model_dir.to_path_buf()),
            temp_dir: Some(temp.to_path_buf()),
            seccomp: true,
            ..Confinement::default()
        };
        self.fill(&mut spec, lease, self.config.services.get(name));
        spec
    }

    fn fill(&self, spec: &mut Confinement, lease: &Lease, service: Option<&ServiceConfine>) {
        let c = &self.config;
        let mib = |n: u64| (n > 0).then_some(n << 20);
        spec.identity = lease.account().map(|a| Identity {
            uid: a.uid,
            gid: a.gid,
        });
        spec.user_name = lease.account().map(|a| a.name.clone());
        spec.cgroups = lease.cgroup_dirs();
        spec.min_landlock_abi = c.min_landlock_abi;
        spec.seccomp = c.seccomp;
        spec.limits = ResourceLimits {
            address_space: mib(service
                .and_then(|s| s.address_space_mib)
                .unwrap_or(c.address_space_mib)),
            cpu_seconds: Some(service.and_then(|s| s.cpu_seconds).unwrap_or(c.cpu_seconds))
                .filter(|&n| n > 0),
            file_size: mib(c.file_size_mib),
            open_files: Some(c.open_files).filter(|&n| n > 0),
            processes: Some(c.processes).filter(|&n| n > 0),
        };
        spec.tcp_connect = service.map_or_else(Vec::new, |s| s.tcp_connect.clone());
    }
}

/// Worker accounts must reach `<data>/users/<user>` (and nothing else there): every
/// ancestor of the data folder must let others traverse it, and the data folder and
/// `users/` become 0711 (traverse, no listing). The store stays 0600.
fn open_path_for_accounts(data: &Path) -> std::io::Result<()> {
    let data = data.canonicalize()?;
    for dir in data.ancestors().skip(1) {
        let mode = std::fs::metadata(dir)?.permissions().mode();
        if mode & 0o001 == 0 {
            return Err(std::io::Error::other(format!(
                "worker accounts cannot reach {} because {} (mode {:o}) is not traversable \
                 by others: choose a data folder elsewhere (e.g. /var/lib/rookery) or \
                 chmod o+x {}",
                data.display(),
                dir.display(),
                mode & 0o7777,
                dir.display()
            )));
        }
    }
    for dir in [data.clone(), data.join("users")] {
        if dir.exists() {
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o711))?;
        }
    }
    Ok(())
}

fn make_dir(dir: &Path, mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    match std::fs::DirBuilder::new().mode(mode).create(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => Err(e),
        _ => std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode)),
    }
}

/// Hands `root` and everything under it to `account`, never following a link.
fn chown_tree(root: &Path, account: &Account) -> std::io::Result<()> {
    std::os::unix::fs::lchown(root, Some(account.uid), Some(account.gid))?;
    let meta = std::fs::symlink_metadata(root)?;
    if !meta.is_dir() {
        return Ok(());
    }
    for entry in std::fs::read_dir(root)? {
        let entry = entry?;
        let path = entry.path();
        if entry.file_type()?.is_dir() {
            chown_tree(&path, account)?;
        } else {
            std::os::unix::fs::lchown(&path, Some(account.uid), Some(account.gid))?;
        }
    }
    Ok(())
}

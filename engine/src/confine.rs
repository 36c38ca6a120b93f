//! Confinement of workers that run untrusted R code: what the host asks for, what
//! the kernel offers, and the cgroups that bound a group of workers.
//!
//! Owns the description a worker applies to itself before its first line of user
//! code ([`Confinement`]: identity, Landlock folders, seccomp, rlimits, cgroups,
//! temp dir), the start-up probe of which layers this kernel and this process can
//! enforce ([`probe`]), and [`Cgroup`], a memory + pids cgroup (v2 when it has
//! controllers, else v1) that the host creates per lease and empties afterwards.
//! The worker side (the system calls, in the documented order) is in
//! `child::confine`; which uid a worker gets is the caller's business (the server
//! leases worker accounts).

use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// An OS identity to run as (the host must be root to switch to it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    pub uid: u32,
    pub gid: u32,
}

/// Resource limits (`setrlimit`), each `None` to leave it as inherited.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResourceLimits {
    /// Address space in bytes (`RLIMIT_AS`): past it R reports "cannot allocate
    /// vector of size ..." as an ordinary error.
    pub address_space: Option<u64>,
    /// CPU seconds (`RLIMIT_CPU`); the hard limit is 5 s above, then SIGKILL.
    pub cpu_seconds: Option<u64>,
    /// Largest file the worker may write, in bytes (`RLIMIT_FSIZE`; writes past it
    /// fail with EFBIG, SIGXFSZ is ignored).
    pub file_size: Option<u64>,
    /// Open files (`RLIMIT_NOFILE`).
    pub open_files: Option<u64>,
    /// Processes of the worker's uid (`RLIMIT_NPROC`). Only applied with an
    /// [`Identity`]: without one the count would include the host's own processes.
    pub processes: Option<u64>,
}

impl Default for ResourceLimits {
    fn default() -> Self {
        ResourceLimits {
            address_space: Some(8 << 30),
            cpu_seconds: None,
            file_size: Some(1 << 30),
            open_files: Some(256),
            processes: Some(64),
        }
    }
}

/// Everything a worker applies to itself before it runs a caller's code. Applied
/// once, for the rest of the worker's life; it cannot be undone, so a confined
/// worker is never given to anyone else.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Confinement {
    /// Switch to this uid/gid with no supplementary groups. `None`: keep the host's
    /// identity (an unprivileged host; Landlock and seccomp still apply).
    pub identity: Option<Identity>,
    /// The worker's `USER` and `LOGNAME` (the worker account's name), replacing the
    /// host's.
    pub user_name: Option<String>,
    /// Folders the worker may read, write, create and delete in (the job folder and
    /// the temp dir). Everything else outside R's runtime is invisible.
    pub read_write: Vec<PathBuf>,
    /// Extra folders or files it may read (a service's model files).
    pub read_only: Vec<PathBuf>,
    /// The working directory (inside `read_write`).
    pub workdir: Option<PathBuf>,
    /// R's temp dir (inside `read_write`; created if missing). Every worker needs
    /// its own: the zygote's is shared and owned by the host's identity.
    pub temp_dir: Option<PathBuf>,
    /// TCP ports the worker may connect to. Empty: no network at all (no `socket()`
    /// of any family, no TCP bind or connect).
    pub tcp_connect: Vec<u16>,
    pub limits: ResourceLimits,
    /// cgroup folders the worker joins (it writes its pid to `cgroup.procs`).
    pub cgroups: Vec<PathBuf>,
    /// Limits written to the worker's own cgroup (pools with
    /// `PoolBuilder::worker_cgroups`) before it is confined: (memory bytes, pids).
    pub cgroup_limits: Option<(u64, u64)>,
    /// Refuse to run unless the kernel enforces at least this Landlock ABI
    /// (0: Landlock optional; the worker still applies what the kernel has).
    pub min_landlock_abi: u8,
    /// Install the seccomp deny list.
    pub seccomp: bool,
}

impl Confinement {
    /// The standard set for a job: runtime read-only, `job` read-write with its own
    /// temp dir `temp`, seccomp on, default limits, no network.
    pub fn for_job(job: &Path, temp: &Path) -> Confinement {
        Confinement {
            read_write: vec![job.to_path_buf(), temp.to_path_buf()],
            workdir: Some(job.to_path_buf()),
            temp_dir: Some(temp.to_path_buf()),
            seccomp: true,
            ..Confinement::default()
        }
    }
}

/// What this kernel and this process can enforce, probed at start-up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Support {
    /// The kernel's Landlock ABI (0: none).
    pub landlock_abi: u8,
    /// seccomp filters are available.
    pub seccomp: bool,
    /// The host runs as root, so workers can switch to worker accounts and join cgroups.
    pub root: bool,
    /// Which cgroup hierarchy [`Cgroup`] would use, if any.
    pub cgroups: Option<CgroupKind>,
}

impl Support {
    /// One line per layer, for the start-up log.
    pub fn describe(&self) -> Vec<String> {
        let on = |b: bool| if b { "active" } else { "inactive" };
        let landlock = match self.landlock_abi {
            0 => "Landlock: inactive (not in this kernel)".to_string(),
            n if n < 4 => format!("Landlock: ABI {n} (files only; no TCP rules, no scopes)"),
            n if n < 6 => format!("Landlock: ABI {n} (files and TCP; no scopes)"),
            n => format!("Landlock: ABI {n} (files, TCP, abstract sockets and signals)"),
        };
        vec![
            format!(
                "worker accounts: {}",
                if self.root {
                    "active (running as root)"
                } else {
                    "inactive (not root: workers keep the server's uid)"
                }
            ),
            landlock,
            format!("seccomp deny list: {}", on(self.seccomp)),
            match (&self.cgroups, self.root) {
                (Some(kind), true) => format!("memory and pids cgroups: active ({kind:?})"),
                (_, false) => "memory and pids cgroups: inactive (not root)".to_string(),
                (None, true) => "memory and pids cgroups: inactive (no controllers)".to_string(),
            },
            "rlimits (address space, CPU, file size, open files): active".to_string(),
        ]
    }
}

/// Probes the kernel (Landlock ABI, seccomp), our privileges and the cgroup mounts.
pub fn probe() -> Support {
    let seccomp = std::fs::read_to_string("/proc/self/status")
        .is_ok_and(|s| s.lines().any(|l| l.starts_with("Seccomp:")));
    Support {
        landlock_abi: crate::child::fork::landlock_abi(),
        seccomp,
        root: rustix::process::geteuid().is_root(),
        cgroups: CgroupKind::detect(),
    }
}

/// Which cgroup hierarchy holds the memory and pids controllers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum CgroupKind {
    /// The unified hierarchy at `/sys/fs/cgroup`, with both controllers.
    V2,
    /// Separate `memory` and `pids` hierarchies under `/sys/fs/cgroup`.
    V1,
}

const CGROUP_ROOT: &str = "/sys/fs/cgroup";

impl CgroupKind {
    fn detect() -> Option<CgroupKind> {
        let root = Path::new(CGROUP_ROOT);
        if let Ok(controllers) = std::fs::read_to_string(root.join("cgroup.controllers")) {
            let has = |c: &str| controllers.split_whitespace().any(|x| x == c);
            if has("memory") && has("pids") {
                return Some(CgroupKind::V2);
            }
        }
        let v1 = |c: &str| root.join(c).join("cgroup.procs").exists();
        (v1("memory") && v1("pids")).then_some(CgroupKind::V1)
    }
}

/// A memory + pids cgroup (and cpu, where the host has that controller, so the
/// group shares CPU as one entity) for one worker or a group of workers, removed on
/// drop after every process in it is killed.
#[derive(Debug)]
pub struct Cgroup {
    kind: CgroupKind,
    /// One folder (v2) or two (v1: memory, pids).
    dirs: Vec<PathBuf>,
}

impl Cgroup {
    /// Creates `rookery/<name>` with the given limits. `Ok(None)` when this host has
    /// no usable hierarchy or is not root.
    pub fn create(name: &str, memory_max: u64, pids_max: u64) -> io::Result<Option<Cgroup>> {
        if name.is_empty() || name.contains('/') || name.starts_with('.') {
            return Err(io::Error::other(format!("bad cgroup name `{name}`")));
        }
        if !rustix::process::geteuid().is_root() {
            return Ok(None);
        }
        let Some(kind) = CgroupKind::detect() else {
            return Ok(None);
        };
        let root = Path::new(CGROUP_ROOT);
        let group = match kind {
            CgroupKind::V2 => {
                let parent = root.join("rookery");
                std::fs::create_dir_all(&parent)?;
                // Controllers must be enabled in every ancestor's subtree_control.
                std::fs::write(root.join("cgroup.subtree_control"), "+memory +pids")?;
                std::fs::write(parent.join("cgroup.subtree_control"), "+memory +pids")?;
                // The cpu controller, where there is one, makes the group one entity
                // for the scheduler (see the v1 branch); optional.
                let _ = std::fs::write(root.join("cgroup.subtree_control"), "+cpu");
                let _ = std::fs::write(parent.join("cgroup.subtree_control"), "+cpu");
                weigh_parent_once(&parent.join("cpu.weight"), 100, 10_000);
                let dir = parent.join(name);
                create_fresh(&dir)?;
                std::fs::write(dir.join("memory.max"), limit_text(memory_max))?;
                std::fs::write(dir.join("memory.swap.max"), "0").ok();
                std::fs::write(dir.join("pids.max"), limit_text(pids_max))?;
                Cgroup {
                    kind,
                    dirs: vec![dir],
                }
            }
            CgroupKind::V1 => {
                let memory = root.join("memory/rookery").join(name);
                let pids = root.join("pids/rookery").join(name);
                create_fresh(&memory)?;
                create_fresh(&pids)?;
                std::fs::write(
                    memory.join("memory.limit_in_bytes"),
                    memory_limit_text(kind, memory_max),
                )?;
                std::fs::write(pids.join("pids.max"), limit_text(pids_max))?;
                let mut dirs = vec![memory, pids];
                // With the cpu controller the group competes for CPU as one entity,
                // so a fork bomb's hundred busy processes get one group's share, not
                // a hundred tasks' worth (optional: not every host mounts it).
                if root.join("cpu/cgroup.procs").exists() {
                    weigh_parent_once(&root.join("cpu/rookery/cpu.shares"), 1024, 262_144);
                    let cpu = root.join("cpu/rookery").join(name);
                    if create_fresh(&cpu).is_ok() {
                        dirs.push(cpu);
                    }
                }
                Cgroup { kind, dirs }
            }
        };
        Ok(Some(group))
    }

    /// The `rookery/` folders of each hierarchy this host uses.
    fn parents() -> Vec<PathBuf> {
        let root = Path::new(CGROUP_ROOT);
        match CgroupKind::detect() {
            Some(CgroupKind::V2) => vec![root.join("rookery")],
            Some(CgroupKind::V1) => vec![
                root.join("memory/rookery"),
                root.join("pids/rookery"),
                root.join("cpu/rookery"),
            ],
            None => vec![],
        }
    }

    /// Removes `rookery/<name>` left by a host that died, killing what is still
    /// in it. For a name no live host uses (the caller holds its lock).
    pub fn remove_stale(name: &str) {
        let dirs: Vec<PathBuf> = Cgroup::parents().iter().map(|p| p.join(name)).collect();
        if dirs.iter().any(|d| d.exists()) && rustix::process::geteuid().is_root() {
            if let Some(kind) = CgroupKind::detect() {
                drop(Cgroup { kind, dirs });
            }
        }
    }

    /// Removes worker groups (`rookery/w<zygote>-<pid>`) whose zygote is gone.
    pub fn sweep_stale_workers() {
        let mut stale = std::collections::BTreeSet::new();
        for parent in Cgroup::parents() {
            let Ok(entries) = std::fs::read_dir(&parent) else {
                continue;
            };
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                let zygote = name
                    .strip_prefix('w')
                    .and_then(|rest| rest.split_once('-'))
                    .and_then(|(z, _)| z.parse::<u32>().ok());
                if zygote.is_some_and(|z| !Path::new(&format!("/proc/{z}")).exists()) {
                    stale.insert(name);
                }
            }
        }
        for name in stale {
            Cgroup::remove_stale(&name);
        }
    }

    /// Moves process `pid` into the group.
    pub fn join(&self, pid: u32) -> io::Result<()> {
        for dir in &self.dirs {
            std::fs::write(dir.join("cgroup.procs"), pid.to_string())?;
        }
        Ok(())
    }

    /// Sets the group's memory limit (bytes) and process limit.
    pub fn set_limits(&self, memory_max: u64, pids_max: u64) -> io::Result<()> {
        let (memory, pids) = match self.kind {
            CgroupKind::V2 => (
                self.dirs[0].join("memory.max"),
                self.dirs[0].join("pids.max"),
            ),
            CgroupKind::V1 => (
                self.dirs[0].join("memory.limit_in_bytes"),
                self.dirs[1].join("pids.max"),
            ),
        };
        std::fs::write(memory, memory_limit_text(self.kind, memory_max))?;
        std::fs::write(pids, limit_text(pids_max))
    }

    /// The folders a worker joins (see [`Confinement::cgroups`]).
    pub fn dirs(&self) -> &[PathBuf] {
        &self.dirs
    }

    pub fn kind(&self) -> CgroupKind {
        self.kind
    }

    /// The processes in the group now.
    pub fn pids(&self) -> Vec<u32> {
        let mut pids: Vec<u32> = self
            .dirs
            .iter()
            .filter_map(|d| std::fs::read_to_string(d.join("cgroup.procs")).ok())
            .flat_map(|s| {
                s.lines()
                    .filter_map(|l| l.trim().parse().ok())
                    .collect::<Vec<_>>()
            })
            .collect();
        pids.sort_unstable();
        pids.dedup();
        pids
    }

    /// Times the memory limit was hit (v1 `failcnt`, v2 `max` events).
    pub fn memory_events(&self) -> u64 {
        let dir = &self.dirs[0];
        let text = match self.kind {
            CgroupKind::V1 => std::fs::read_to_string(dir.join("memory.failcnt")).ok(),
            CgroupKind::V2 => std::fs::read_to_string(dir.join("memory.events"))
                .ok()
                .and_then(|t| {
                    t.lines()
                        .find_map(|l| l.strip_prefix("max ").map(str::to_owned))
                }),
        };
        text.and_then(|t| t.trim().parse().ok()).unwrap_or(0)
    }

    /// SIGKILLs every process in the group until none is left (a fork bomb may fork
    /// while it is being killed) or `wait` passes. True when the group is empty.
    pub fn kill_all(&self, wait: Duration) -> bool {
        let deadline = Instant::now() + wait;
        loop {
            if self.kind == CgroupKind::V2
                && std::fs::write(self.dirs[0].join("cgroup.kill"), "1").is_ok()
            {
                // One write kills the whole group atomically.
            } else {
                for pid in self.pids() {
                    if let Some(pid) = rustix::process::Pid::from_raw(pid as i32) {
                        let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
                    }
                }
            }
            if self.pids().is_empty() {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        self.kill_all(Duration::from_secs(5));
        for dir in &self.dirs {
            // A killed process leaves the group only once reaped; retry briefly.
            for _ in 0..500 {
                match std::fs::remove_dir(dir) {
                    Err(e) if e.raw_os_error() == Some(rustix::io::Errno::BUSY.raw_os_error()) => {
                        std::thread::sleep(Duration::from_millis(2))
                    }
                    _ => break,
                }
            }
        }
    }
}

/// A limit as cgroup files take it: `max` for none.
fn limit_text(n: u64) -> String {
    if n == u64::MAX {
        "max".into()
    } else {
        n.to_string()
    }
}

/// Gives the `rookery` cpu group the weight of one busy process per CPU (`unit`
/// each, at most `max`), once per process. Every worker's group sits under it, so
/// without this all of them together would weigh as much as one other process of
/// the host, and a host busy with other work would squeeze every worker into one
/// CPU's worth; with it, Rookery competes like the processes it replaces (Rserve's
/// one per connection) up to the machine's size, and its workers share that fairly.
fn weigh_parent_once(file: &Path, unit: u64, max: u64) {
    static DONE: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    DONE.get_or_init(|| {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as u64;
        let _ = std::fs::write(file, (unit * cpus).min(max).to_string());
    });
}

/// A memory limit as the hierarchy takes it (v1 says "none" with -1).
fn memory_limit_text(kind: CgroupKind, n: u64) -> String {
    match (kind, n) {
        (CgroupKind::V1, u64::MAX) => "-1".into(),
        _ => limit_text(n),
    }
}

/// Creates `dir` (and its parents); a leftover from a crashed host is emptied and
/// reused.
fn create_fresh(dir: &Path) -> io::Result<()> {
    match std::fs::create_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_reports_every_layer() {
        let s = probe();
        let lines = s.describe();
        assert_eq!(lines.len(), 5);
        assert!(lines[1].starts_with("Landlock"));
        // This project's machines have Landlock; a kernel without it reports 0.
        assert!(s.landlock_abi <= 64);
    }

    #[test]
    fn cgroup_names_are_checked() {
        for bad in ["", "a/b", "..", ".x"] {
            assert!(Cgroup::create(bad, 1 << 30, 64).is_err(), "{bad}");
        }
    }
}

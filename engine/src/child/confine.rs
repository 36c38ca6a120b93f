//! The worker's side of confinement: the system calls that lock a forked worker in,
//! in the order of `docs/isolation.md`, before its first line of user code.
//!
//! Owns [`apply`]: cgroups, rlimits, identity, Landlock, seccomp. The filters are
//! compiled once in the zygote ([`prepare`]) and inherited by every fork, so a
//! worker only installs them. R-level steps (temp dir, working directory) are the
//! caller's (`child::Worker::confine`), after this returns.

use std::collections::BTreeMap;
use std::io;
use std::path::Path;
use std::sync::OnceLock;

use landlock::{
    Access, AccessFs, AccessNet, CompatLevel, Compatible, NetPort, PathBeneath, PathFd, Ruleset,
    RulesetAttr, RulesetCreatedAttr, RulesetStatus, Scope, ABI,
};
use rustix::process::{Resource, Rlimit};
use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule,
};

use crate::confine::Confinement;

use super::fork;

/// The newest Landlock ABI this code asks for (the crate downgrades to the kernel's).
const ABI_WANTED: ABI = ABI::V7;

/// Folders of R's runtime and the system it needs, read + execute.
const RUNTIME_DIRS: &[&str] = &[
    "/usr",
    "/lib",
    "/lib64",
    "/bin",
    "/sbin",
    "/etc/R",
    "/etc/alternatives",
    "/etc/ssl",
    "/etc/fonts",
];

/// Single files of /etc, read only. Never all of /etc (`/etc/shadow`).
const ETC_FILES: &[&str] = &[
    "/etc/ld.so.cache",
    "/etc/localtime",
    "/etc/timezone",
    "/etc/passwd",
    "/etc/group",
    "/etc/nsswitch.conf",
    "/etc/os-release",
    "/etc/mime.types",
];

/// Devices, read + write.
const DEVICES: &[&str] = &["/dev/null", "/dev/zero", "/dev/urandom", "/dev/random"];

/// The compiled seccomp programs: clone3 -> ENOSYS (so glibc falls back to clone,
/// which the deny list can inspect), and the deny list (EPERM) with and without
/// TCP sockets.
struct Filters {
    clone3: BpfProgram,
    no_network: BpfProgram,
    tcp: BpfProgram,
}

static FILTERS: OnceLock<Result<Filters, String>> = OnceLock::new();

/// Compiles the seccomp programs. Called in the zygote before it forks, so workers
/// share the result instead of compiling it each (≈ 0.2 ms).
pub(crate) fn prepare() {
    FILTERS.get_or_init(compile_filters);
}

/// Applies `spec` to this process (single-threaded: a fresh worker, or a zygote
/// before it runs init code), then points R's temp dir, `TMPDIR` and `HOME` at the
/// job's temp dir (created if missing), sets `USER`/`LOGNAME` to the account's name,
/// and moves to its working directory.
pub(crate) fn enter(r: rookery_ffi::RToken<'_>, spec: &Confinement) -> io::Result<()> {
    apply(spec)?;
    // What the worker creates is its account's alone, whatever the server's umask.
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
    if let Some(temp) = &spec.temp_dir {
        match std::fs::create_dir(temp) {
            Err(e) if e.kind() != io::ErrorKind::AlreadyExists => {
                return Err(ctx(e, &format!("creating temp dir {}", temp.display())))
            }
            _ => {}
        }
        rookery_ffi::set_temp_dir(r, temp).map_err(io::Error::other)?;
        std::env::set_var("TMPDIR", temp);
        std::env::set_var("HOME", spec.workdir.as_ref().unwrap_or(temp));
    }
    if let Some(name) = &spec.user_name {
        std::env::set_var("USER", name);
        std::env::set_var("LOGNAME", name);
    }
    if let Some(dir) = &spec.workdir {
        std::env::set_current_dir(dir)
            .map_err(|e| ctx(e, &format!("working directory {}", dir.display())))?;
    }
    Ok(())
}

/// The system-call part of [`enter`]: cgroups, rlimits, identity, Landlock, seccomp.
fn apply(spec: &Confinement) -> io::Result<()> {
    for dir in &spec.cgroups {
        std::fs::write(dir.join("cgroup.procs"), std::process::id().to_string())
            .map_err(|e| ctx(e, &format!("joining cgroup {}", dir.display())))?;
    }
    set_limits(spec)?;
    if let Some(id) = spec.identity {
        use rustix::process::{Gid, Uid};
        if id.uid == 0 {
            return Err(io::Error::other(
                "refusing to run user code as root (uid 0)",
            ));
        }
        let uid = Uid::from_raw(id.uid);
        let gid = Gid::from_raw(id.gid);
        rustix::thread::set_thread_groups(&[]).map_err(|e| ctx(e.into(), "setgroups"))?;
        rustix::thread::set_thread_res_gid(gid, gid, gid)
            .map_err(|e| ctx(e.into(), "setresgid"))?;
        rustix::thread::set_thread_res_uid(uid, uid, uid)
            .map_err(|e| ctx(e.into(), "setresuid"))?;
    }
    landlock(spec)?;
    if let Some(filter) = DenyList::of(spec) {
        install_seccomp(filter)?;
    }
    Ok(())
}

/// Which of the two seccomp deny lists a confined process installs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) enum DenyList {
    /// `socket()` denied outright.
    NoNetwork,
    /// `socket()` allowed for AF_INET/AF_INET6 stream sockets only (a service with
    /// `tcp_connect` ports; Landlock limits which ports).
    TcpOnly,
}

impl DenyList {
    /// The filter `spec` asks for, if any.
    pub fn of(spec: &Confinement) -> Option<Self> {
        match (spec.seccomp, spec.tcp_connect.is_empty()) {
            (false, _) => None,
            (true, true) => Some(DenyList::NoNetwork),
            (true, false) => Some(DenyList::TcpOnly),
        }
    }
}

/// Installs the seccomp deny list `filter` (after the `clone3` filter).
pub(crate) fn install_seccomp(filter: DenyList) -> io::Result<()> {
    let filters = FILTERS
        .get_or_init(compile_filters)
        .as_ref()
        .map_err(|e| io::Error::other(e.clone()))?;
    let deny = match filter {
        DenyList::TcpOnly => &filters.tcp,
        DenyList::NoNetwork => &filters.no_network,
    };
    let fail = |e: seccompiler::Error| io::Error::other(format!("seccomp: {e}"));
    seccompiler::apply_filter(&filters.clone3).map_err(fail)?;
    seccompiler::apply_filter(deny).map_err(fail)
}

fn ctx(e: io::Error, what: &str) -> io::Error {
    io::Error::new(e.kind(), format!("{what}: {e}"))
}

fn set_limits(spec: &Confinement) -> io::Result<()> {
    let l = &spec.limits;
    let set = |resource: Resource, soft: u64, hard: u64, name: &str| {
        rustix::process::setrlimit(
            resource,
            Rlimit {
                current: Some(soft),
                maximum: Some(hard),
            },
        )
        .map_err(|e| ctx(e.into(), &format!("setrlimit {name}")))
    };
    if let Some(n) = l.address_space {
        set(Resource::As, n, n, "AS")?;
    }
    if let Some(n) = l.cpu_seconds {
        set(Resource::Cpu, n, n + 5, "CPU")?;
    }
    if let Some(n) = l.file_size {
        fork::ignore_sigxfsz()?;
        set(Resource::Fsize, n, n, "FSIZE")?;
    }
    if let Some(n) = l.open_files {
        set(Resource::Nofile, n, n, "NOFILE")?;
    }
    if let (Some(n), Some(_)) = (l.processes, spec.identity) {
        set(Resource::Nproc, n, n, "NPROC")?;
    }
    set(Resource::Core, 0, 0, "CORE")
}

fn landlock(spec: &Confinement) -> io::Result<()> {
    let kernel = fork::landlock_abi();
    if kernel < spec.min_landlock_abi {
        return Err(io::Error::other(format!(
            "this kernel's Landlock ABI is {kernel}, below the required {}: refusing to run \
             untrusted code",
            spec.min_landlock_abi
        )));
    }
    if kernel == 0 {
        return Ok(());
    }
    let err = |e: landlock::RulesetError| io::Error::other(format!("Landlock: {e}"));
    let abi = ABI_WANTED;
    let read = AccessFs::from_read(abi);
    let all = AccessFs::from_all(abi);
    let mut ruleset = Ruleset::default()
        .set_compatibility(CompatLevel::BestEffort)
        .handle_access(all)
        .map_err(err)?
        .handle_access(AccessNet::from_all(abi))
        .map_err(err)?
        .scope(Scope::from_all(abi))
        .map_err(err)?
        .create()
        .map_err(err)?;
    let mut rule = |path: &Path, access| -> io::Result<()> {
        match PathFd::new(path) {
            Ok(fd) => {
                (&mut ruleset)
                    .add_rule(PathBeneath::new(fd, access))
                    .map_err(err)?;
                Ok(())
            }
            // A runtime path this system does not have (/lib64 on arm64).
            Err(_) if !path.exists() => Ok(()),
            Err(e) => Err(io::Error::other(format!(
                "Landlock rule {}: {e}",
                path.display()
            ))),
        }
    };
    for p in RUNTIME_DIRS.iter().chain(ETC_FILES) {
        rule(Path::new(p), read)?;
    }
    for p in DEVICES {
        rule(Path::new(p), read | AccessFs::WriteFile)?;
    }
    for p in &spec.read_only {
        rule(p, read)?;
    }
    for p in &spec.read_write {
        rule(p, all)?;
    }
    for port in &spec.tcp_connect {
        (&mut ruleset)
            .add_rule(NetPort::new(*port, AccessNet::ConnectTcp))
            .map_err(err)?;
    }
    let status = ruleset.restrict_self().map_err(err)?;
    if status.ruleset == RulesetStatus::NotEnforced {
        return Err(io::Error::other("Landlock ruleset not enforced"));
    }
    Ok(())
}

fn compile_filters() -> Result<Filters, String> {
    let arch = std::env::consts::ARCH
        .try_into()
        .map_err(|e| format!("seccomp arch: {e:?}"))?;
    let build =
        |rules: BTreeMap<i64, Vec<SeccompRule>>, errno: i32| -> Result<BpfProgram, String> {
            SeccompFilter::new(
                rules,
                SeccompAction::Allow,
                SeccompAction::Errno(errno as u32),
                arch,
            )
            .and_then(|f| f.try_into())
            .map_err(|e| format!("seccomp filter: {e}"))
        };
    let clone3 = build(
        [(libc::SYS_clone3, vec![])].into_iter().collect(),
        libc::ENOSYS,
    )?;
    let no_network = build(deny_rules(false)?, libc::EPERM)?;
    let tcp = build(deny_rules(true)?, libc::EPERM)?;
    Ok(Filters {
        clone3,
        no_network,
        tcp,
    })
}

/// The deny list of isolation.md, step 8.
fn deny_rules(tcp: bool) -> Result<BTreeMap<i64, Vec<SeccompRule>>, String> {
    let err = |e: seccompiler::BackendError| format!("seccomp rule: {e}");
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = [
        // Namespaces, mounts, root changes.
        libc::SYS_unshare,
        libc::SYS_setns,
        libc::SYS_mount,
        libc::SYS_umount2,
        libc::SYS_pivot_root,
        libc::SYS_chroot,
        libc::SYS_open_tree,
        libc::SYS_move_mount,
        libc::SYS_fsopen,
        libc::SYS_fsmount,
        // Other processes' memory and handles.
        libc::SYS_ptrace,
        libc::SYS_process_vm_readv,
        libc::SYS_process_vm_writev,
        libc::SYS_pidfd_getfd,
        libc::SYS_kcmp,
        // Kernel attack surface nobody's R code needs.
        libc::SYS_keyctl,
        libc::SYS_add_key,
        libc::SYS_request_key,
        libc::SYS_bpf,
        libc::SYS_perf_event_open,
        libc::SYS_userfaultfd,
        libc::SYS_io_uring_setup,
        libc::SYS_io_uring_enter,
        libc::SYS_io_uring_register,
        libc::SYS_kexec_load,
        libc::SYS_kexec_file_load,
        libc::SYS_init_module,
        libc::SYS_finit_module,
        libc::SYS_delete_module,
        libc::SYS_open_by_handle_at,
        libc::SYS_name_to_handle_at,
        libc::SYS_swapon,
        libc::SYS_swapoff,
        libc::SYS_reboot,
        libc::SYS_acct,
        libc::SYS_quotactl,
        libc::SYS_personality,
        // Leaving the worker's process group would hide a process from the kill
        // that ends a job.
        libc::SYS_setsid,
        libc::SYS_setpgid,
    ]
    .into_iter()
    .map(|n| (n, vec![]))
    .collect();
    // clone with any namespace flag.
    let ns_flags = [
        libc::CLONE_NEWNS,
        libc::CLONE_NEWUSER,
        libc::CLONE_NEWPID,
        libc::CLONE_NEWNET,
        libc::CLONE_NEWIPC,
        libc::CLONE_NEWUTS,
        libc::CLONE_NEWCGROUP,
        0x80, // CLONE_NEWTIME
    ];
    let clone_rules = ns_flags
        .iter()
        .map(|&flag| {
            let flag = flag as u64;
            SeccompCondition::new(
                0,
                SeccompCmpArgLen::Qword,
                SeccompCmpOp::MaskedEq(flag),
                flag,
            )
            .and_then(|c| SeccompRule::new(vec![c]))
            .map_err(err)
        })
        .collect::<Result<Vec<_>, _>>()?;
    rules.insert(libc::SYS_clone, clone_rules);
    // socket(): no family at all without network; with TCP ports allowed, only
    // AF_INET/AF_INET6 stream sockets (Landlock then picks the ports; it does not
    // control UDP, so datagram sockets stay denied).
    let socket_rules = if tcp {
        let family_is = |fam: i32| {
            SeccompCondition::new(0, SeccompCmpArgLen::Dword, SeccompCmpOp::Ne, fam as u64)
        };
        let not_inet = SeccompRule::new(vec![
            family_is(libc::AF_INET).map_err(err)?,
            family_is(libc::AF_INET6).map_err(err)?,
        ])
        .map_err(err)?;
        // The type's low bits (SOCK_NONBLOCK / SOCK_CLOEXEC are high flags).
        let not_stream = SeccompRule::new(vec![SeccompCondition::new(
            1,
            SeccompCmpArgLen::Dword,
            SeccompCmpOp::MaskedEq(0xf),
            libc::SOCK_DGRAM as u64,
        )
        .map_err(err)?])
        .map_err(err)?;
        let raw = SeccompRule::new(vec![SeccompCondition::new(
            1,
            SeccompCmpArgLen::Dword,
            SeccompCmpOp::MaskedEq(0xf),
            libc::SOCK_RAW as u64,
        )
        .map_err(err)?])
        .map_err(err)?;
        vec![not_inet, not_stream, raw]
    } else {
        vec![]
    };
    rules.insert(libc::SYS_socket, socket_rules);
    Ok(rules)
}

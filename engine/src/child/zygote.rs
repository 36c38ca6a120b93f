//! The zygote: a process that starts R once, runs the pool's preload and init steps,
//! and then forks a worker whenever the host asks for one.
//!
//! Owns the zygote's side of the control protocol and its main loop. It must stay
//! single-threaded (it forks), so it never starts a thread, and it runs only trusted
//! code (the pool's init steps), never a caller's.
//!
//! ```text
//!  host (any number of threads)            zygote (one thread)              workers
//!  Command + pre_exec: control on fd 3 ──▶ run_zygote_if_requested()
//!  Start(config) ────────────────────────▶ start R, preload, init, gc,
//!                                          snapshot state ◀─ Started
//!  Spawn + [socket, mailbox, region,
//!          handoff] ─────────────────────▶ fork ──────────────────────────▶ worker_main
//!                          Spawned + [pidfd] ◀─ pidfd_open(child)
//!                          Exited{status}   ◀─ child's pidfd readable: waitpid
//!  close control ────────────────────────▶ SIGKILL every worker, reap, exit
//! ```
//!
//! Control messages are postcard packets on a `SOCK_SEQPACKET` socket, so that the
//! fds travelling with a message (`SCM_RIGHTS`) stay attached to it (see
//! [`crate::packet`]).

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::Instant;

use rookery_ffi::{QuitBehaviour, RToken, StartOptions, Value};
use rustix::event::{PollFd, PollFlags};
use rustix::process::{Pid, PidfdFlags, Signal, WaitOptions};
use serde::{Deserialize, Serialize};

use super::fork::{self, Forked};
use super::WorkerConfig;
use crate::channel::LinkFds;
use crate::packet::{recv_packet, send_packet};

/// The environment variable that tells a process it is a zygote.
pub const ZYGOTE_ENV: &str = "ROOKERY_ZYGOTE";

/// How the zygote prepares R before it forks.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct ZygoteConfig {
    pub r_args: Vec<String>,
    pub preload: Vec<String>,
    pub init: Vec<InitStep>,
    pub worker: WorkerConfig,
    /// Confinement the zygote enters after R starts and before preload and init, so
    /// that init code and every worker forked afterwards run inside it.
    pub confine: Option<crate::confine::Confinement>,
}

/// One init step, run in the global environment, in order.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum InitStep {
    Code(String),
    File(PathBuf),
}

/// Host -> zygote.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum ToZygote {
    Start(Box<ZygoteConfig>),
    /// Fork a worker; carries the worker's link fds `[socket, mailbox, region,
    /// handoff]`.
    Spawn {
        cpu: Option<usize>,
    },
}

/// Zygote -> host.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum FromZygote {
    Started {
        pid: u32,
        millis: f64,
    },
    StartFailed {
        error: String,
    },
    /// Carries the worker's pidfd.
    Spawned {
        pid: u32,
    },
    SpawnFailed {
        error: String,
    },
    Exited {
        pid: u32,
        code: Option<i32>,
        signal: Option<i32>,
    },
}

/// If this process was started as a pool's zygote, runs the zygote and exits;
/// otherwise returns at once.
///
/// Call it first thing in `main`, before any thread exists, in every program that
/// builds a [`crate::Pool`] (the pool re-executes the program in zygote mode):
///
/// ```no_run
/// // The first line of `main`:
/// rookery_engine::run_zygote_if_requested();
/// // ... then the application: tokio runtime, pool, etc.
/// ```
pub fn run_zygote_if_requested() {
    if std::env::var_os(ZYGOTE_ENV).is_none() {
        return;
    }
    let code = match fork::take_control_fd() {
        Ok(control) => zygote_main(control),
        Err(e) => {
            eprintln!("rookery zygote: no control socket on fd 3: {e}");
            2
        }
    };
    std::process::exit(code)
}

struct Child {
    pid: Pid,
    pidfd: OwnedFd,
}

fn zygote_main(control: OwnedFd) -> i32 {
    // Before its workers, after the server, for the OOM killer (see `crate::oom`).
    // Raising is always allowed; a failure only leaves the server's value.
    let _ = crate::oom::set_own(crate::oom::ZYGOTE);
    let config = match recv_packet::<ToZygote>(control.as_fd()) {
        Ok(Some((ToZygote::Start(config), _))) => config,
        _ => return 2,
    };
    let started = Instant::now();
    let r = match prepare_r(&config) {
        Ok(r) => r,
        Err(error) => {
            let _ = send_packet(control.as_fd(), &FromZygote::StartFailed { error }, &[]);
            return 1;
        }
    };
    let ready = FromZygote::Started {
        pid: std::process::id(),
        millis: started.elapsed().as_secs_f64() * 1e3,
    };
    if send_packet(control.as_fd(), &ready, &[]).is_err() {
        return 1;
    }
    let tmp_base = rookery_ffi::temp_dir(r);
    let mut children = Vec::new();
    // Workers of a confined zygote install its seccomp filter themselves, after
    // their own set-up (which needs `setsid`, a call the filter denies).
    let mut worker = config.worker.clone();
    worker.seccomp = config
        .confine
        .as_ref()
        .and_then(super::confine::DenyList::of);
    let _ = serve(r, &control, &worker, &tmp_base, &mut children);
    stop_children(&mut children, &tmp_base);
    0
}

/// Starts R and runs preload and init; any failure is reported as text.
fn prepare_r(config: &ZygoteConfig) -> Result<RToken<'static>, String> {
    let opts = StartOptions {
        args: config.r_args.clone(),
        quit: QuitBehaviour::Exit,
        ..StartOptions::default()
    };
    let r = rookery_ffi::start(&opts).map_err(|e| format!("starting R: {e}"))?;
    if let Some(spec) = &config.confine {
        let spec = crate::confine::Confinement {
            seccomp: false,
            ..spec.clone()
        };
        super::confine::enter(r, &spec).map_err(|e| format!("confining the zygote: {e}"))?;
    }
    for package in &config.preload {
        let args = [
            ("package", &Value::scalar_string(package.as_str())),
            ("character.only", &Value::scalar_bool(true)),
        ];
        r.call("library", &args)
            .map_err(|e| format!("loading package {package}: {e}"))?;
    }
    for step in &config.init {
        let done = match step {
            InitStep::Code(code) => r.eval_str(code, None),
            InitStep::File(path) => r.source_file(path, None),
        };
        done.map_err(|e| format!("init step failed: {e}"))?;
    }
    // A full collection now makes everything old generation: the workers' minor
    // collections then leave these pages shared instead of copying them.
    r.eval_str("invisible(gc(full = TRUE))", None)
        .map_err(|e| format!("gc: {e}"))?;
    r.snapshot_state()
        .map_err(|e| format!("state snapshot: {e}"))?;
    super::confine::prepare();
    // Huge pages make each fork copy a few page-table entries per 2 MiB of R's heap
    // instead of 512 (a worker's fork: 0.80 -> 0.43 ms median).
    fork::collapse_heap();
    Ok(r)
}

fn serve(
    r: RToken<'static>,
    control: &OwnedFd,
    config: &WorkerConfig,
    tmp_base: &Path,
    children: &mut Vec<Child>,
) -> io::Result<()> {
    // Orphans of a worker (what its `system()` calls left running, a fork bomb's
    // children) come to us instead of init, so they are reaped promptly and never
    // linger as zombies that count against their uid's process limit.
    rustix::process::set_child_subreaper(Some(rustix::process::getpid()))?;
    let orphan_sweep = rustix::event::Timespec {
        tv_sec: 0,
        tv_nsec: 100_000_000,
    };
    loop {
        let mut fds = Vec::with_capacity(1 + children.len());
        fds.push(PollFd::new(control, PollFlags::IN));
        fds.extend(
            children
                .iter()
                .map(|c| PollFd::new(&c.pidfd, PollFlags::IN)),
        );
        match rustix::event::poll(&mut fds, Some(&orphan_sweep)) {
            Ok(_) => {}
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
        let control_ready = !fds[0].revents().is_empty();
        drop(fds);
        reap(control.as_fd(), children, tmp_base);
        if control_ready {
            match recv_packet::<ToZygote>(control.as_fd())? {
                None => return Ok(()),
                Some((ToZygote::Spawn { cpu }, fds)) => {
                    spawn(r, control.as_fd(), fds, config, cpu, tmp_base, children)?
                }
                Some((ToZygote::Start(_), _)) => {}
            }
        }
    }
}

/// Reaps every exited child: our workers (reported to the host) and adopted orphans.
fn reap(control: BorrowedFd<'_>, children: &mut Vec<Child>, tmp_base: &Path) {
    // `wait` is waitpid(-1): any child (`waitpid(None)` would be our process group only).
    while let Ok(Some((pid, status))) = rustix::process::wait(WaitOptions::NOHANG) {
        if let Some(i) = children.iter().position(|c| c.pid == pid) {
            let child = children.swap_remove(i);
            // Whatever the worker started goes with it: its process group (which
            // confined code cannot leave). The number still names that group while
            // any member lives, so this reaches no one else.
            let _ = rustix::process::kill_process_group(pid, Signal::KILL);
            let (code, signal) = (status.exit_status(), status.terminating_signal());
            report_exit(control, &child, code, signal, tmp_base);
        }
    }
}

#[expect(unsafe_code, reason = "the zygote's one call to fork")]
fn spawn(
    r: RToken<'static>,
    control: BorrowedFd<'_>,
    fds: Vec<OwnedFd>,
    config: &WorkerConfig,
    cpu: Option<usize>,
    tmp_base: &Path,
    children: &mut Vec<Child>,
) -> io::Result<()> {
    let Ok([socket, mailbox, region, handoff]) = <[OwnedFd; 4]>::try_from(fds) else {
        let error = "spawn request without its four link fds".to_string();
        return send_packet(control, &FromZygote::SpawnFailed { error }, &[]);
    };
    let link = LinkFds {
        socket,
        mailbox,
        region,
        handoff,
    };
    // SAFETY: the zygote is single-threaded (it never starts a thread), and the child
    // branch below ends in `worker_main`, which leaves only through `exit_now`.
    match unsafe { fork::fork() } {
        Err(e) => {
            let error = format!("fork: {e}");
            send_packet(control, &FromZygote::SpawnFailed { error }, &[])
        }
        Ok(Forked::Child) => super::worker_main(r, link, config, cpu, tmp_base),
        Ok(Forked::Parent(pid)) => {
            drop(link);
            let pidfd = rustix::process::pidfd_open(pid, PidfdFlags::empty())?;
            let theirs = pidfd.try_clone()?;
            children.push(Child { pid, pidfd });
            let msg = FromZygote::Spawned {
                pid: pid.as_raw_nonzero().get() as u32,
            };
            send_packet(control, &msg, &[theirs.as_fd()])
        }
    }
}

fn report_exit(
    control: BorrowedFd<'_>,
    child: &Child,
    code: Option<i32>,
    signal: Option<i32>,
    tmp_base: &Path,
) {
    let pid = child.pid.as_raw_nonzero().get() as u32;
    remove_temp_dirs(pid, tmp_base);
    let _ = send_packet(control, &FromZygote::Exited { pid, code, signal }, &[]);
}

/// Removes worker `pid`'s temp dirs: the one under the zygote's, and a confined
/// pool worker's own.
fn remove_temp_dirs(pid: u32, tmp_base: &Path) {
    let _ = std::fs::remove_dir_all(super::worker_temp_dir(tmp_base, pid));
}

/// The host went away: kill every worker (and anything it started), reap, clean up.
fn stop_children(children: &mut Vec<Child>, tmp_base: &Path) {
    for child in children.iter() {
        let _ = rustix::process::kill_process_group(child.pid, Signal::KILL);
        let _ = rustix::process::pidfd_send_signal(&child.pidfd, Signal::KILL);
    }
    for child in children.drain(..) {
        let _ = rustix::process::waitpid(Some(child.pid), WaitOptions::empty());
        remove_temp_dirs(child.pid.as_raw_nonzero().get() as u32, tmp_base);
    }
}

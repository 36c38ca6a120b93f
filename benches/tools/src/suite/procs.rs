//! The processes `rookery bench` starts (Rserve, plumber, `rookery serve`, an R for
//! mclapply): each is held by a [`Managed`] guard that stops its whole process group on
//! drop, and a Ctrl-C (or SIGTERM) handler stops every live one before the command exits.
//!
//! It owns process lifetimes and loopback ports only: what each peer runs is in
//! `peers.rs`. Every child gets its own process group, so one signal reaches its
//! helpers too (rookery's zygote and workers, Rserve's per-connection forks).

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::Child;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use rustix::process::{kill_process_group, Pid, Signal};

/// Process groups of the live children, for the Ctrl-C handler.
static LIVE: Mutex<Vec<i32>> = Mutex::new(Vec::new());

/// The scratch folder, removed by the Ctrl-C handler too (exit skips destructors).
static SCRATCH: Mutex<Option<PathBuf>> = Mutex::new(None);

/// How long a stopped child gets between SIGTERM and SIGKILL.
const GRACE: Duration = Duration::from_secs(3);

/// Installs the handler that stops every live child on Ctrl-C or SIGTERM, then exits
/// with status 130. Call once, before starting any child.
pub fn stop_children_on_interrupt() -> anyhow::Result<()> {
    ctrlc::set_handler(|| {
        eprintln!("bench: interrupted, stopping the servers it started");
        let groups = LIVE.lock().map(|g| g.clone()).unwrap_or_default();
        for group in groups {
            signal_group(group, Signal::KILL);
        }
        if let Some(dir) = SCRATCH.lock().ok().and_then(|mut s| s.take()) {
            let _ = std::fs::remove_dir_all(dir);
        }
        std::process::exit(130);
    })
    .context("installing the Ctrl-C handler")
}

fn signal_group(group: i32, signal: Signal) {
    if let Some(pid) = Pid::from_raw(group) {
        // The group may be gone already; nothing else to do then.
        let _ = kill_process_group(pid, signal);
    }
}

/// A started process group, stopped (SIGTERM, then SIGKILL after [`GRACE`]) on drop.
#[derive(Debug)]
pub struct Managed {
    pub name: &'static str,
    /// The process we spawned, when it is the group's leader and still ours to reap.
    child: Option<Child>,
    group: i32,
}

impl Managed {
    /// Takes charge of `child`, which was spawned with `process_group(0)`.
    pub fn spawned(name: &'static str, child: Child) -> Managed {
        let group = i32::try_from(child.id()).unwrap_or(0);
        Managed::register(name, Some(child), group)
    }

    /// Takes charge of a daemon's process group (Rserve calls setsid: its group is its pid).
    pub fn daemon(name: &'static str, pid: i32) -> Managed {
        Managed::register(name, None, pid)
    }

    fn register(name: &'static str, child: Option<Child>, group: i32) -> Managed {
        if let Ok(mut live) = LIVE.lock() {
            live.push(group);
        }
        Managed { name, child, group }
    }

    pub fn child_mut(&mut self) -> Option<&mut Child> {
        self.child.as_mut()
    }

    /// Fails when the process we spawned has already exited.
    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        if let Some(child) = &mut self.child {
            if let Some(status) = child.try_wait()? {
                bail!("{} exited early ({status})", self.name);
            }
        }
        Ok(())
    }

    fn alive(&mut self) -> bool {
        match &mut self.child {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => Pid::from_raw(self.group)
                .is_some_and(|p| rustix::process::test_kill_process(p).is_ok()),
        }
    }
}

impl Drop for Managed {
    fn drop(&mut self) {
        signal_group(self.group, Signal::TERM);
        let start = Instant::now();
        while self.alive() && start.elapsed() < GRACE {
            std::thread::sleep(Duration::from_millis(20));
        }
        signal_group(self.group, Signal::KILL);
        if let Some(child) = &mut self.child {
            let _ = child.wait();
        }
        if let Ok(mut live) = LIVE.lock() {
            live.retain(|g| *g != self.group);
        }
    }
}

/// A port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> anyhow::Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(listener.local_addr()?.port())
}

/// Waits until `addr` accepts a connection, or `proc` dies, or `timeout` passes.
pub fn wait_listening(
    addr: SocketAddr,
    proc: &mut Managed,
    timeout: Duration,
) -> anyhow::Result<()> {
    let start = Instant::now();
    while start.elapsed() < timeout {
        proc.check_alive()?;
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    bail!("{} did not listen on {addr} within {timeout:?}", proc.name)
}

/// A private scratch folder, removed on drop.
#[derive(Debug)]
pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new() -> anyhow::Result<Scratch> {
        let nonce = format!("{:x}", random_u64()?);
        let dir =
            std::env::temp_dir().join(format!("rookery-bench-{}-{nonce}", std::process::id()));
        std::fs::create_dir(&dir).with_context(|| format!("creating {}", dir.display()))?;
        if let Ok(mut registered) = SCRATCH.lock() {
            *registered = Some(dir.clone());
        }
        Ok(Scratch(dir))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if let Ok(mut registered) = SCRATCH.lock() {
            registered.take();
        }
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// 64 random bits from the kernel.
pub fn random_u64() -> anyhow::Result<u64> {
    use std::io::Read;
    let mut buf = [0u8; 8];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut buf)?;
    Ok(u64::from_le_bytes(buf))
}

//! `Zygote`: the host's handle to the zygote process.
//!
//! Owns the zygote's lifetime (started by re-executing a program, see
//! [`crate::run_zygote_if_requested`]), spawn requests, and the exit statuses the
//! zygote reports for workers it reaps. It must not talk to workers: a spawned
//! worker's link goes straight to the pool.
//!
//! Any host thread may call [`Zygote::spawn`]; requests are serialized by a lock,
//! and one reader thread takes every packet the zygote sends, so an exit report can
//! arrive while a spawn is in flight.

use std::collections::HashMap;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use parking_lot::{Condvar, Mutex};

use crate::channel::{Channel, LinkFds};
use crate::child::fork;
use crate::child::zygote::{FromZygote, ToZygote, ZygoteConfig, ZYGOTE_ENV};
use crate::packet::{recv_packet, send_packet};
use crate::Error;

/// How a worker ended, as the zygote saw it when it reaped the process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ExitInfo {
    pub code: Option<i32>,
    pub signal: Option<i32>,
}

/// A freshly forked worker, before its first message.
pub(crate) struct Spawned {
    pub pid: u32,
    pub pidfd: OwnedFd,
    pub channel: Channel,
}

#[derive(Default)]
struct Exits {
    by_pid: HashMap<u32, ExitInfo>,
    /// The zygote's control socket closed: no more reports will come.
    gone: bool,
}

pub(crate) struct Zygote {
    control: OwnedFd,
    process: Mutex<std::process::Child>,
    pid: u32,
    spawn_lock: Mutex<()>,
    replies: Receiver<FromZygote>,
    exits: Arc<(Mutex<Exits>, Condvar)>,
    /// Reply fds (pidfds) travel beside their message.
    reply_fds: Receiver<Vec<OwnedFd>>,
    spin: Duration,
    max_payload: usize,
    /// How long start-up (R, preload, init) took in the zygote.
    pub startup: Duration,
}

impl Zygote {
    /// Starts `program` in zygote mode, with exactly the environment `env`, and
    /// waits until R is ready in it.
    pub fn start(
        program: &Path,
        config: &ZygoteConfig,
        env: &[(std::ffi::OsString, std::ffi::OsString)],
        start_timeout: Duration,
    ) -> Result<Zygote, Error> {
        let spawn_err = |what: &str, e: std::io::Error| Error::Spawn(format!("{what}: {e}"));
        let (host, child) = rustix::net::socketpair(
            rustix::net::AddressFamily::UNIX,
            rustix::net::SocketType::SEQPACKET,
            rustix::net::SocketFlags::CLOEXEC,
            None,
        )
        .map_err(|e| spawn_err("socketpair", e.into()))?;
        let mut cmd = Command::new(program);
        cmd.env_clear()
            .envs(env.iter().map(|(k, v)| (k, v)))
            .env(ZYGOTE_ENV, "1")
            .stdin(Stdio::null());
        let process = fork::spawn_with_control_fd(&mut cmd, &child)
            .map_err(|e| spawn_err(&format!("starting {}", program.display()), e))?;
        drop(child);
        let pid = process.id();
        let start = ToZygote::Start(Box::new(config.clone()));
        send_packet(host.as_fd(), &start, &[]).map_err(|e| spawn_err("configuring zygote", e))?;

        let (reply_tx, replies) = crossbeam_channel::unbounded();
        let (fds_tx, reply_fds) = crossbeam_channel::unbounded();
        let exits = Arc::new((Mutex::new(Exits::default()), Condvar::new()));
        let reader_socket = host
            .try_clone()
            .map_err(|e| spawn_err("cloning control socket", e))?;
        let reader_exits = Arc::clone(&exits);
        std::thread::Builder::new()
            .name("rookery-zygote-reader".into())
            .spawn(move || read_loop(reader_socket, reply_tx, fds_tx, reader_exits))
            .map_err(|e| spawn_err("starting reader thread", e))?;

        let mut zygote = Zygote {
            control: host,
            process: Mutex::new(process),
            pid,
            spawn_lock: Mutex::new(()),
            replies,
            exits,
            reply_fds,
            spin: config.worker.spin,
            max_payload: config.worker.max_payload,
            startup: Duration::ZERO,
        };
        zygote.startup = zygote.await_started(program, start_timeout)?;
        Ok(zygote)
    }

    fn await_started(&self, program: &Path, timeout: Duration) -> Result<Duration, Error> {
        match self.replies.recv_timeout(timeout) {
            Ok(FromZygote::Started { millis, .. }) => Ok(Duration::from_secs_f64(millis / 1e3)),
            Ok(FromZygote::StartFailed { error }) => Err(Error::Spawn(error)),
            Ok(other) => Err(Error::Spawn(format!("unexpected zygote message {other:?}"))),
            Err(_) => {
                self.kill();
                Err(Error::Spawn(format!(
                    "{} did not start as a zygote within {timeout:?}: call \
                     rookery_engine::run_zygote_if_requested() first thing in its main()",
                    program.display()
                )))
            }
        }
    }

    /// Forks a new worker. Returns once the zygote reports the fork; the worker
    /// announces itself on its channel when it is ready.
    pub fn spawn(&self, cpu: Option<usize>) -> Result<Spawned, Error> {
        let (channel, fds) = Channel::create(self.spin, self.max_payload)
            .map_err(|e| Error::Spawn(format!("link: {e}")))?;
        let LinkFds {
            socket,
            mailbox,
            region,
            handoff,
        } = &fds;
        let _serial = self.spawn_lock.lock();
        let sent = send_packet(
            self.control.as_fd(),
            &ToZygote::Spawn { cpu },
            &[
                socket.as_fd(),
                mailbox.as_fd(),
                region.as_fd(),
                handoff.as_fd(),
            ],
        );
        sent.map_err(|e| Error::Spawn(format!("the zygote is gone: {e}")))?;
        drop(fds);
        match self.replies.recv_timeout(Duration::from_secs(30)) {
            Ok(FromZygote::Spawned { pid }) => {
                let pidfd = self
                    .reply_fds
                    .recv_timeout(Duration::from_secs(1))
                    .ok()
                    .and_then(|mut fds| fds.pop())
                    .ok_or_else(|| Error::Spawn("spawn reply without a pidfd".into()))?;
                Ok(Spawned {
                    pid,
                    pidfd,
                    channel,
                })
            }
            Ok(FromZygote::SpawnFailed { error }) => Err(Error::Spawn(error)),
            Ok(other) => Err(Error::Spawn(format!("unexpected zygote reply {other:?}"))),
            Err(_) => Err(Error::Spawn(
                "the zygote did not answer a spawn request".into(),
            )),
        }
    }

    /// The exit status of worker `pid`, waiting up to `wait` for the zygote to reap it.
    pub fn exit_status(&self, pid: u32, wait: Duration) -> Option<ExitInfo> {
        let deadline = Instant::now() + wait;
        let (lock, cond) = &*self.exits;
        let mut exits = lock.lock();
        loop {
            if let Some(info) = exits.by_pid.remove(&pid) {
                return Some(info);
            }
            if exits.gone || cond.wait_until(&mut exits, deadline).timed_out() {
                return exits.by_pid.remove(&pid);
            }
        }
    }

    /// Forgets the exit status of a worker that was retired on purpose.
    pub fn forget(&self, pid: u32) {
        self.exits.0.lock().by_pid.remove(&pid);
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Whether the zygote has ended (killed, crashed): it forks nothing more.
    pub fn is_gone(&self) -> bool {
        self.exits.0.lock().gone || !matches!(self.process.lock().try_wait(), Ok(None))
    }

    /// Closes the control socket (the zygote then kills and reaps every worker and
    /// exits) and waits for the zygote, killing it if it does not exit in `grace`.
    pub fn shut_down(&self, grace: Duration) {
        let _ = rustix::net::shutdown(&self.control, rustix::net::Shutdown::Both);
        let deadline = Instant::now() + grace;
        let mut process = self.process.lock();
        while Instant::now() < deadline {
            if let Ok(Some(_)) = process.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        let _ = process.kill();
        let _ = process.wait();
    }

    fn kill(&self) {
        let mut process = self.process.lock();
        let _ = process.kill();
        let _ = process.wait();
    }
}

impl std::fmt::Debug for Zygote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Zygote")
            .field("pid", &self.pid)
            .finish_non_exhaustive()
    }
}

impl Drop for Zygote {
    fn drop(&mut self) {
        self.shut_down(Duration::from_secs(5));
    }
}

fn read_loop(
    socket: OwnedFd,
    replies: Sender<FromZygote>,
    reply_fds: Sender<Vec<OwnedFd>>,
    exits: Arc<(Mutex<Exits>, Condvar)>,
) {
    while let Ok(Some((msg, fds))) = recv_packet::<FromZygote>(socket.as_fd()) {
        match msg {
            FromZygote::Exited { pid, code, signal } => {
                let (lock, cond) = &*exits;
                let mut exits = lock.lock();
                // Statuses of workers retired on purpose are never collected.
                if exits.by_pid.len() >= 4096 {
                    exits.by_pid.clear();
                }
                exits.by_pid.insert(pid, ExitInfo { code, signal });
                drop(exits);
                cond.notify_all();
            }
            other => {
                if matches!(other, FromZygote::Spawned { .. }) {
                    let _ = reply_fds.send(fds);
                }
                if replies.send(other).is_err() {
                    break;
                }
            }
        }
    }
    let (lock, cond) = &*exits;
    lock.lock().gone = true;
    cond.notify_all();
}

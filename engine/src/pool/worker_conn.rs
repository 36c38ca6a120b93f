//! `WorkerConn`: the parent's end of one worker: its channel, its pidfd, and the
//! rules for a call that goes wrong.
//!
//! Owns one request/response exchange at a time, with the deadline (interrupt, then
//! SIGKILL after the grace period), cancellation, and death detection (the pidfd
//! becomes readable, or the socket closes). It must not decide what happens to the
//! worker afterwards: it marks itself `broken` or records the worker's `retire`
//! reason, and the pool replaces it.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rookery_ffi::{OobFailure, OobKind, OobRequest, Output, Value};
use rustix::process::Signal;

use super::deadline::{Deadline, Overdue};
use super::zygote_handle::{Spawned, Zygote};
use crate::cancel::CancelHandle;
use crate::channel::{Channel, Received, Watch};
use crate::protocol::{self, OobRefusal, ProtocolError, Request, Response};
use crate::shm::ShmRegion;
use crate::Error;
use crate::OobSink;

/// Limits of one call.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits<'a> {
    pub timeout: Option<Duration>,
    pub grace: Duration,
    pub cancel: Option<&'a CancelHandle>,
}

/// A successful answer.
#[derive(Debug)]
pub(crate) struct Answer {
    pub value: Value,
    pub visible: bool,
    pub output: Output,
}

#[derive(Debug)]
pub(crate) struct WorkerConn {
    pub pid: u32,
    pidfd: OwnedFd,
    channel: Channel,
    next_id: u64,
    /// Calls served.
    pub calls: u64,
    /// Set when the worker asked to be retired.
    pub retire: Option<String>,
    /// Set when the worker cannot be trusted with another call (died, timed out,
    /// cancelled, protocol error).
    pub broken: bool,
    /// Set when the worker died before it took the last request (it died while
    /// idle): the request can go to another worker as if nothing happened.
    pub undelivered: bool,
    /// The worker's own memory + pids cgroup (pools built with
    /// `PoolBuilder::worker_cgroups`); emptied and removed when this drops.
    pub cgroup: Option<crate::confine::Cgroup>,
    /// The zygote that forked it, which reaps it and reports how it ended (not
    /// necessarily the pool's current one: see `Shared::live_zygote`).
    pub zygote: Arc<Zygote>,
}

impl WorkerConn {
    /// Waits for a freshly forked worker's `Ready`.
    pub fn await_ready(
        spawned: Spawned,
        zygote: &Arc<Zygote>,
        timeout: Duration,
    ) -> Result<Self, Error> {
        let mut conn = WorkerConn {
            pid: spawned.pid,
            pidfd: spawned.pidfd,
            channel: spawned.channel,
            next_id: 1,
            calls: 0,
            retire: None,
            broken: false,
            undelivered: false,
            cgroup: None,
            zygote: Arc::clone(zygote),
        };
        let deadline = Some(Instant::now() + timeout);
        let watch = Watch::exit(conn.pidfd.as_fd());
        match conn.channel.recv::<Response>(watch, deadline) {
            Ok(Received::Message(Response::Ready { .. })) => {
                // First in line for the OOM killer, whether or not the worker could
                // say so itself (a confined one cannot reach /proc).
                let _ = crate::oom::set_for(conn.pid, crate::oom::WORKER);
                Ok(conn)
            }
            Ok(Received::Hangup | Received::PeerExited) => Err(conn.death("starting")),
            Ok(other) => {
                conn.kill();
                Err(Error::Spawn(format!(
                    "worker {} did not start: {other:?}",
                    conn.pid
                )))
            }
            Err(e) => {
                conn.kill();
                Err(Error::Spawn(format!("worker {}: {e}", conn.pid)))
            }
        }
    }

    /// Sends the request `build` makes and waits for its answer within `limits`.
    pub fn request(
        &mut self,
        limits: Limits<'_>,
        build: impl FnOnce(u64, &mut ShmRegion) -> Result<Request, ProtocolError>,
    ) -> Result<Answer, Error> {
        self.request_with_oob(limits, None, build)
    }

    /// [`WorkerConn::request`], with the OOB messages the call's R code sends
    /// (Rserve's `self.oobSend`, `self.oobMessage`) given to `oob`; without one,
    /// each is refused with an R error in the call.
    pub fn request_with_oob(
        &mut self,
        limits: Limits<'_>,
        mut oob: Option<&mut OobSink<'_>>,
        build: impl FnOnce(u64, &mut ShmRegion) -> Result<Request, ProtocolError>,
    ) -> Result<Answer, Error> {
        let id = self.next_id;
        self.next_id += 1;
        if let Err(e) = self.channel.send(|region| build(id, region)) {
            return Err(self.send_failure(e));
        }
        let started = Instant::now();
        let mut deadline = limits.timeout.map(|t| Deadline::new(t, limits.grace));
        loop {
            let watch = Watch {
                exit: Some(self.pidfd.as_fd()),
                cancel: limits.cancel.map(|c| c.fd()),
            };
            let wake = deadline.as_ref().map(|d| d.next_check(started));
            let response = self.channel.recv::<Response>(watch, wake);
            if let Some(d) = deadline.as_mut().filter(|d| d.interrupted()) {
                if !matches!(response, Ok(Received::TimedOut)) {
                    // R unwound (or the worker died) after the interrupt: the call
                    // timed out all the same, and the worker is replaced.
                    return Err(self.timed_out(d.timeout()));
                }
            }
            match response {
                Ok(Received::Message(Response::Oob {
                    id: asked,
                    message,
                    code,
                    value,
                })) if asked == id => {
                    let reply = self.relay_oob(oob.as_deref_mut(), message, code, &value);
                    let inline = protocol::DEFAULT_INLINE_LIMIT;
                    let sent = self.channel.send(|region| {
                        let reply = match reply {
                            Ok(Some(v)) => match protocol::put_value(&v, region, inline) {
                                Ok(p) => Ok(Some(p)),
                                Err(e) => Err(OobRefusal {
                                    gone: false,
                                    message: format!("the client's OOB reply: {e}"),
                                }),
                            },
                            Ok(None) => Ok(None),
                            Err(refusal) => Err(refusal),
                        };
                        Ok(Request::OobReply { id, reply })
                    });
                    if let Err(e) = sent {
                        return Err(self.send_failure(e));
                    }
                }
                Ok(Received::Message(response)) => return self.answer(id, response),
                Ok(Received::Hangup | Received::PeerExited) => return Err(self.death("call")),
                Ok(Received::Cancelled) => return Err(self.stop(limits.grace, Error::Cancelled)),
                Ok(Received::TimedOut) => {
                    let Some(d) = deadline.as_mut() else {
                        continue;
                    };
                    match d.check(Some(started.elapsed()), Instant::now()) {
                        Overdue::No => {}
                        Overdue::Interrupt => self.interrupt(),
                        Overdue::Kill => return Err(self.timed_out(d.timeout())),
                    }
                }
                Err(e) => {
                    self.broken = true;
                    self.kill();
                    return Err(Error::Protocol(e.to_string()));
                }
            }
        }
    }

    /// Hands one OOB message of the running call to `oob`, or refuses it.
    fn relay_oob(
        &mut self,
        oob: Option<&mut OobSink<'_>>,
        message: bool,
        code: u32,
        value: &protocol::Payload,
    ) -> Result<Option<Value>, OobRefusal> {
        let refused = |message: String| OobRefusal {
            gone: false,
            message,
        };
        let Some(sink) = oob else {
            return Err(refused(crate::child::OOB_NOT_ALLOWED.into()));
        };
        let value = protocol::take_value(value, self.channel.region())
            .map_err(|e| refused(format!("the OOB message: {e}")))?;
        let kind = if message {
            OobKind::Message
        } else {
            OobKind::Send
        };
        sink(OobRequest { kind, code, value }).map_err(|failure| match failure {
            OobFailure::Gone(message) => OobRefusal {
                gone: true,
                message,
            },
            OobFailure::Refused(message) => refused(message),
            OobFailure::Interrupted => refused("interrupted".into()),
        })
    }

    fn answer(&mut self, id: u64, response: Response) -> Result<Answer, Error> {
        if response.id() != Some(id) {
            self.broken = true;
            self.kill();
            return Err(Error::Protocol(format!(
                "answer {:?} does not match request {id}",
                response.id()
            )));
        }
        self.calls += 1;
        match response {
            Response::Ok {
                value,
                visible,
                output,
                retire,
                ..
            } => {
                self.retire = retire;
                match protocol::take_value(&value, self.channel.region()) {
                    Ok(value) => Ok(Answer {
                        value,
                        visible,
                        output,
                    }),
                    Err(e) => {
                        self.broken = true;
                        Err(Error::Protocol(e.to_string()))
                    }
                }
            }
            Response::Err { error, retire, .. } => {
                self.retire = retire;
                Err(Error::R(error))
            }
            Response::Qap { .. } | Response::Oob { .. } => {
                self.broken = true;
                self.kill();
                Err(Error::Protocol(
                    "a QAP1 answer or OOB message for another request".into(),
                ))
            }
            Response::Ready { .. } => unreachable!("Ready carries no id"),
        }
    }

    /// Hands `socket` to the worker and lets it serve the QAP1 connection until it
    /// gives it back (see [`crate::qap::direct`]). While it runs a call of its own
    /// past `limits.timeout`, the call is interrupted (R unwinds, the client gets an
    /// error, the worker serves on); if R does not unwind within `limits.grace`, the
    /// worker is killed and this returns [`Error::Timeout`].
    pub fn serve_qap(
        &mut self,
        limits: Limits<'_>,
        socket: BorrowedFd<'_>,
        options: crate::qap::direct::QapServe,
    ) -> Result<crate::qap::direct::QapYield, crate::qap::direct::QapFailed> {
        use crate::qap::direct::{QapFailed, QapTurn, QapYield};
        let idle = |error| QapFailed {
            error,
            in_flight: false,
        };
        use protocol::QapTurnWire;
        /// How often the deadline of a call the worker runs is checked.
        const TICK: Duration = Duration::from_millis(50);
        let id = self.next_id;
        self.next_id += 1;
        if let Err(e) = self.channel.send_fd(socket) {
            return Err(idle(self.send_failure(ProtocolError::Io(e))));
        }
        if let Err(e) = self.channel.send(|_| Ok(Request::ServeQap { id, options })) {
            return Err(idle(self.send_failure(e)));
        }
        let mut deadline = limits.timeout.map(|t| Deadline::new(t, limits.grace));
        loop {
            let watch = Watch::exit(self.pidfd.as_fd());
            let response = self
                .channel
                .recv::<Response>(watch, Some(Instant::now() + TICK));
            match response {
                Ok(Received::Message(Response::Qap {
                    id: answered,
                    turn,
                    notes,
                    requests,
                })) if answered == id => {
                    let turn = match turn {
                        QapTurnWire::Message { command, payload } => {
                            match protocol::take_bytes(payload, self.channel.region()) {
                                Ok(payload) => QapTurn::Message { command, payload },
                                Err(e) => {
                                    self.broken = true;
                                    self.kill();
                                    return Err(idle(Error::Protocol(e.to_string())));
                                }
                            }
                        }
                        QapTurnWire::Closed { reason } => QapTurn::Closed { reason },
                        QapTurnWire::Notes => QapTurn::Notes,
                    };
                    return Ok(QapYield {
                        turn,
                        notes,
                        requests,
                    });
                }
                Ok(Received::Message(other)) => {
                    self.broken = true;
                    self.kill();
                    return Err(idle(Error::Protocol(format!(
                        "answer {:?} does not match QAP1 request {id}",
                        other.id()
                    ))));
                }
                Ok(Received::Hangup | Received::PeerExited | Received::Cancelled) => {
                    // The stamp outlives the worker: it tells whether it died in a call.
                    let in_flight = self.channel.busy_for().is_some();
                    let error = self.death("qap");
                    return Err(QapFailed { error, in_flight });
                }
                Ok(Received::TimedOut) => {
                    let Some(d) = deadline.as_mut() else {
                        continue;
                    };
                    match d.check(self.channel.busy_for(), Instant::now()) {
                        Overdue::No => {}
                        Overdue::Interrupt => self.interrupt(),
                        Overdue::Kill => {
                            return Err(QapFailed {
                                error: self.timed_out(d.timeout()),
                                in_flight: true,
                            })
                        }
                    }
                }
                Err(e) => {
                    self.broken = true;
                    self.kill();
                    return Err(idle(Error::Protocol(e.to_string())));
                }
            }
        }
    }

    /// A request that could not be sent: too large (the worker is fine, nothing was
    /// published), or the link is gone.
    fn send_failure(&mut self, e: ProtocolError) -> Error {
        match e {
            ProtocolError::Shm(_)
            | ProtocolError::FrameTooLarge { .. }
            | ProtocolError::Codec(_) => Error::R(rookery_ffi::Error::InvalidValue(format!(
                "request too large: {e}"
            ))),
            _ => self.death("send"),
        }
    }

    /// The worker died: ask the zygote how.
    fn death(&mut self, _during: &str) -> Error {
        self.broken = true;
        self.undelivered = !self.channel.delivered();
        self.kill();
        // An undelivered request is retried elsewhere; nobody needs the status.
        let wait = if self.undelivered {
            Duration::ZERO
        } else {
            Duration::from_secs(2)
        };
        let status = self.zygote.exit_status(self.pid, wait);
        Error::WorkerDied {
            pid: self.pid,
            code: status.and_then(|s| s.code),
            signal: status.and_then(|s| s.signal),
        }
    }

    /// Interrupts the call, gives R `grace` to unwind, then kills the worker.
    fn stop(&mut self, grace: Duration, why: Error) -> Error {
        self.interrupt();
        let deadline = Some(Instant::now() + grace);
        let _ = self
            .channel
            .recv::<Response>(Watch::exit(self.pidfd.as_fd()), deadline);
        self.end();
        why
    }

    /// SIGINT to the worker: R unwinds the call at its next interrupt check.
    fn interrupt(&self) {
        let _ = rustix::process::pidfd_send_signal(&self.pidfd, Signal::INT);
    }

    /// A call past its deadline: the worker is killed and replaced.
    fn timed_out(&mut self, after: Duration) -> Error {
        self.end();
        Error::Timeout { after }
    }

    /// Kills a worker that cannot be trusted with another call; nobody waits for
    /// its exit status.
    fn end(&mut self) {
        self.broken = true;
        self.kill();
        self.zygote.forget(self.pid);
    }

    /// SIGKILL to the worker and its process group (anything it started).
    pub fn kill(&self) {
        // Only while the worker is alive (or an unreaped zombie) is its pid sure to
        // still name its own process group.
        if !self.wait_exit(Duration::ZERO) {
            if let Some(pid) = rustix::process::Pid::from_raw(self.pid as i32) {
                let _ = rustix::process::kill_process_group(pid, Signal::KILL);
            }
        }
        let _ = rustix::process::pidfd_send_signal(&self.pidfd, Signal::KILL);
    }

    /// Asks the worker to exit; it needs no answer. Closing the link on drop ends a
    /// worker that missed the message.
    pub fn retire(&mut self) {
        if self.broken {
            self.kill();
        } else {
            let _ = self.channel.send(|_| Ok(Request::Shutdown));
        }
        self.zygote.forget(self.pid);
    }

    /// Waits up to `wait` for the worker process to end.
    pub fn wait_exit(&self, wait: Duration) -> bool {
        let mut fds = [rustix::event::PollFd::new(
            &self.pidfd,
            rustix::event::PollFlags::IN,
        )];
        let timeout = rustix::event::Timespec::try_from(wait).ok();
        matches!(rustix::event::poll(&mut fds, timeout.as_ref()), Ok(n) if n > 0)
    }
}

//! OOB messages from R code in a worker (Rserve's `self.oobSend` and
//! `self.oobMessage`; the native side is rookery-ffi's `oob`): how each reaches the
//! client while the call that sent it waits.
//!
//! - Through the server ([`over_link`]): the message goes over the link as
//!   [`Response::Oob`] and the worker waits for [`Request::OobReply`]. The server
//!   writes it to the client (and reads the client's reply to an `oobMessage`), or
//!   refuses it where no client can take one (HTTP sessions, services, batch, or
//!   `[qap] oob` off). Every message waits for its answer, so the shared region
//!   is never written by both sides at once.
//! - In QAP1 direct mode ([`Direct`]): the worker holds the client's socket and
//!   writes the message itself, then reads the reply, waking every 50 ms to see
//!   whether the call's deadline interrupted it (R then unwinds, and the connection
//!   is shut down: a late reply would be read as a command).

use std::os::fd::AsFd;
use std::time::Duration;

use rookery_ffi::{OobFailure, OobKind, OobRequest, RToken};

use super::sockio::{read_appending, read_head, write_all, Head};
use crate::channel::{Channel, Received, Watch};
use crate::protocol::{self, Request, Response};
use crate::qap::direct;
use crate::qap::frame::{Header, HEADER_LEN};
use crate::qap::sexp::Strings;
use crate::Value;

/// Sends `req` to the server as part of request `id` and waits for its answer.
pub(super) fn over_link(
    channel: &mut Channel,
    id: u64,
    inline: usize,
    req: OobRequest,
) -> Result<Option<Value>, OobFailure> {
    channel
        .send(|region| {
            Ok(Response::Oob {
                id,
                message: req.kind == OobKind::Message,
                code: req.code,
                value: protocol::put_value(&req.value, region, inline)?,
            })
        })
        .map_err(|e| OobFailure::Refused(format!("the OOB message was not sent: {e}")))?;
    loop {
        match channel.recv::<Request>(Watch::default(), None) {
            Ok(Received::Message(Request::OobReply {
                id: answered,
                reply,
            })) if answered == id => {
                return match reply {
                    Ok(Some(payload)) => protocol::take_value(&payload, channel.region())
                        .map(Some)
                        .map_err(|e| OobFailure::Refused(format!("the OOB reply: {e}"))),
                    Ok(None) => Ok(None),
                    Err(refusal) if refusal.gone => Err(OobFailure::Gone(refusal.message)),
                    Err(refusal) => Err(OobFailure::Refused(refusal.message)),
                };
            }
            Ok(Received::Message(other)) => {
                return Err(OobFailure::Refused(format!(
                    "the server sent {other:?} instead of the OOB reply"
                )))
            }
            Ok(Received::Hangup) => return Err(OobFailure::Gone("the server is gone".into())),
            Ok(Received::PeerExited | Received::Cancelled | Received::TimedOut) => {}
            Err(e) => return Err(OobFailure::Refused(format!("the OOB reply: {e}"))),
        }
    }
}

/// What a worker serving a QAP1 client directly needs to send R code's OOB
/// messages itself.
#[derive(Debug)]
pub(super) struct Direct {
    /// The client's socket (a duplicate, for the pass).
    pub socket: std::fs::File,
    pub strings: Strings,
    /// `[qap] oob`: without it, every message is refused.
    pub allowed: bool,
    pub max_message: u64,
    /// How long a reply may stall once it has started.
    pub stall: Duration,
}

impl Direct {
    pub fn relay(&self, r: RToken<'_>, req: OobRequest) -> Result<Option<Value>, OobFailure> {
        if !self.allowed {
            return Err(OobFailure::Refused(NOT_ALLOWED.into()));
        }
        let message = req.kind == OobKind::Message;
        let bytes = direct::oob_message(message, req.code, &req.value, self.strings)
            .map_err(|e| OobFailure::Refused(format!("the OOB message cannot carry it: {e}")))?;
        let socket = self.socket.as_fd();
        write_all(socket, &bytes)
            .map_err(|e| OobFailure::Gone(format!("the client is gone: {e}")))?;
        if !message {
            return Ok(None);
        }
        let mut head = [0u8; HEADER_LEN];
        loop {
            // Wait in short steps: the call's deadline interrupts (SIGINT) and the
            // worker must unwind well within the server's grace period.
            let mut fds = [rustix::event::PollFd::new(
                &socket,
                rustix::event::PollFlags::IN,
            )];
            let ready = rustix::event::poll(&mut fds, Some(&WAIT_STEP));
            if rookery_ffi::interrupt_pending(r) {
                return Err(self.broken(OobFailure::Interrupted));
            }
            if !matches!(ready, Ok(n) if n > 0) {
                continue;
            }
            match read_head(socket, &mut head, self.stall) {
                Ok(Head::Full) => break,
                Ok(Head::Quiet) => {}
                Ok(Head::Eof) => {
                    return Err(OobFailure::Gone(
                        "the client closed the connection before replying".into(),
                    ))
                }
                Err(e) => return Err(self.broken(OobFailure::Gone(format!("the OOB reply: {e}")))),
            }
        }
        let header = Header::try_from_bytes(&head, self.max_message)
            .map_err(|e| self.broken(OobFailure::Refused(format!("the OOB reply: {e}"))))?;
        let mut payload = Vec::new();
        read_appending(&self.socket, &mut payload, header.len as usize, self.stall)
            .map_err(|e| self.broken(OobFailure::Gone(format!("the OOB reply: {e}"))))?;
        direct::oob_reply_value(&payload, self.strings)
            .map(Some)
            .map_err(|e| OobFailure::Refused(format!("the client's OOB reply: {e}")))
    }

    /// A reply that was not read whole leaves the stream out of step: the
    /// connection's reading side is shut down, so the call's answer still goes out
    /// and the pass then ends when its next read finds EOF.
    fn broken(&self, failure: OobFailure) -> OobFailure {
        let _ = rustix::net::shutdown(&self.socket, rustix::net::Shutdown::Read);
        failure
    }
}

/// How often a wait for the client's reply checks for an interrupt.
const WAIT_STEP: rustix::event::Timespec = rustix::event::Timespec {
    tv_sec: 0,
    tv_nsec: 50_000_000,
};

/// Why R code may not send OOB messages on this connection.
pub(crate) const NOT_ALLOWED: &str = "self.oobSend and self.oobMessage work only in code a \
     QAP1 client runs, on a server started with [qap] oob = true";

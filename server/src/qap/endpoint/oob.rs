//! OOB messages from R code through the connection thread (Rserve's
//! `self.oobSend` and `self.oobMessage`, with `[qap] oob = true`): while a call runs
//! on the session's worker, each message it sends reaches this relay, which writes
//! it to the client and, for `oobMessage`, reads the client's reply (one message of
//! any command whose first parameter is a DT_SEXP or DT_STRING, as Rserve reads it).
//! In direct mode the worker does the same itself (`rookery-engine`'s `child::oob`).
//!
//! The reply is awaited up to the call's timeout (the call is stopped then anyway),
//! and once it has begun it must arrive within the read deadline and the message
//! size limit. A client that breaks off, or whose reply is not read whole, leaves
//! the stream out of step: the relay marks it, and the connection ends after the
//! call's answer.

use std::io::Write;
use std::time::{Duration, Instant};

use rookery_engine::qap::direct;
use rookery_engine::{OobFailure, OobKind, OobRequest, Value};

use super::super::frame::{Header, HEADER_LEN};
use super::super::sexp::Strings;
use super::super::stream::Stream;

pub(super) struct Relay<'a> {
    pub stream: &'a mut Stream,
    pub strings: Strings,
    /// The largest reply accepted.
    pub max_message: u64,
    /// How long the client may take to start its reply.
    pub wait: Duration,
    /// How long a reply may take once begun.
    pub read_timeout: Duration,
    /// Set when the stream is out of step and the connection must end.
    pub broken: bool,
}

impl Relay<'_> {
    pub fn relay(&mut self, req: OobRequest) -> Result<Option<Value>, OobFailure> {
        let message = req.kind == OobKind::Message;
        let bytes = direct::oob_message(message, req.code, &req.value, self.strings)
            .map_err(|e| OobFailure::Refused(format!("the OOB message cannot carry it: {e}")))?;
        if let Err(e) = self
            .stream
            .write_all(&bytes)
            .and_then(|()| self.stream.flush())
        {
            self.broken = true;
            return Err(OobFailure::Gone(format!("the client is gone: {e}")));
        }
        if !message {
            return Ok(None);
        }
        let payload = self.read_reply().map_err(|e| {
            self.broken = true;
            OobFailure::Gone(format!("the client's OOB reply: {e}"))
        })?;
        direct::oob_reply_value(&payload, self.strings)
            .map(Some)
            .map_err(|e| OobFailure::Refused(format!("the client's OOB reply: {e}")))
    }

    fn read_reply(&mut self) -> std::io::Result<Vec<u8>> {
        let mut head = [0u8; HEADER_LEN];
        self.stream.set_read_timeout(Some(self.wait))?;
        self.stream.read_first(&mut head[..1])?;
        let deadline = Instant::now() + self.read_timeout;
        self.stream.read_by(&mut head[1..], deadline)?;
        let header =
            Header::try_from_bytes(&head, self.max_message).map_err(std::io::Error::other)?;
        let mut payload = Vec::new();
        self.stream
            .read_growing(&mut payload, header.len as usize, deadline)?;
        Ok(payload)
    }
}

//! Detach and attach (qap1.md §11.2): `CMD_detachSession` parks the connection's
//! session under a random 32-byte key and tells the client a resume port; a new
//! connection to that port that sends exactly the key, from the same address, gets
//! the session back (a bare RESP_OK header, no ID string). Keys come from the OS
//! CSPRNG and are single use; a parked session still expires with the idle TTL.
//! `CMD_detachedVoidEval` parks the same way, then runs its code while detached; an
//! attach waits for that evaluation and its bare reply header is the evaluation's
//! status (RESP_OK, or RESP_ERR with the parse status or 127).

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use super::{Connection, End};
use crate::auth::AuthUser;
use crate::engine::SessionEntry;
use crate::qap::frame::Param;
use crate::qap::frame::{self, dt, resp, status};
use crate::qap::stream::Stream;

/// Sessions waiting to be attached, by key.
#[derive(Debug, Default)]
pub struct Detached {
    parked: Mutex<HashMap<[u8; 32], Parked>>,
    /// Where clients resume (set when the listener is bound).
    port: Mutex<Option<u16>>,
}

#[derive(Debug)]
struct Parked {
    user: AuthUser,
    session: Arc<SessionEntry>,
    peer: IpAddr,
    until: Instant,
    /// The detached evaluation's reply word, once it has finished.
    outcome: Option<Arc<Outcome>>,
}

/// The reply word of a detached evaluation, which an attach waits for.
#[derive(Debug, Default)]
struct Outcome {
    word: Mutex<Option<u32>>,
    done: Condvar,
}

impl Outcome {
    fn set(&self, word: u32) {
        *self.word.lock() = Some(word);
        self.done.notify_all();
    }

    fn wait(&self) -> u32 {
        let mut word = self.word.lock();
        loop {
            if let Some(w) = *word {
                return w;
            }
            self.done.wait(&mut word);
        }
    }
}

impl Detached {
    pub fn set_port(&self, port: u16) {
        *self.port.lock() = Some(port);
    }

    fn park(&self, parked: Parked) -> [u8; 32] {
        let key: [u8; 32] = rand::random();
        let mut map = self.parked.lock();
        let now = Instant::now();
        map.retain(|_, p| p.until > now);
        map.insert(key, parked);
        key
    }

    /// The session parked under `key`, if `peer` is the address that parked it.
    fn take(&self, key: &[u8; 32], peer: IpAddr) -> Option<Parked> {
        let mut map = self.parked.lock();
        let parked = map.remove(key)?;
        (parked.peer == peer && parked.until > Instant::now()).then_some(parked)
    }
}

impl Connection {
    /// `CMD_detachSession`: park the session, answer with the resume port and key,
    /// close the socket but keep the session.
    pub(super) fn detach(&mut self) -> Result<(), End> {
        match self.park_session(None)? {
            Some(_) => Err(End::Close),
            None => Ok(()),
        }
    }

    /// `CMD_detachedVoidEval`: answered like a detach at once (and the socket closed),
    /// then the code runs in the parked session; its status goes to the attach.
    pub(super) fn detached_void_eval(&mut self, params: &[Param<'_>]) -> Result<(), End> {
        let Some(code) = self.text(params.first()) else {
            return self.reply_err(status::INV_PAR);
        };
        let outcome = Arc::new(Outcome::default());
        let Some(entry) = self.park_session(Some(outcome.clone()))? else {
            return Ok(());
        };
        self.stream = Stream::Gone;
        self.audit("CMD_detachedVoidEval", Some(&code), &entry);
        let word = match self.state.sessions.execute_blocking(&entry, &code) {
            Ok(_) => resp::OK,
            Err(e) => {
                self.log_failure(&e);
                frame::resp_err(super::r_status(&e))
            }
        };
        outcome.set(word);
        Err(End::Close)
    }

    /// Parks the session and answers with the resume port and key; the session lives
    /// on without this connection. `None` when there is nothing to park (answered
    /// ERR_detach_failed).
    fn park_session(
        &mut self,
        outcome: Option<Arc<Outcome>>,
    ) -> Result<Option<Arc<SessionEntry>>, End> {
        let detached = self.qap.detached.clone();
        let port = *detached.port.lock();
        let (Some(port), Some(user), Some(session)) =
            (port, self.user.clone(), self.session.clone())
        else {
            self.reply_err(status::DETACH_FAILED)?;
            return Ok(None);
        };
        let ttl = Duration::from_secs(self.state.config.limits.session_idle_secs);
        let key = detached.park(Parked {
            user,
            session: session.clone(),
            peer: self.peer,
            until: Instant::now() + ttl,
            outcome,
        });
        let mut payload = Vec::new();
        frame::push_int_param(&mut payload, i32::from(port));
        frame::push_param(&mut payload, dt::BYTESTREAM, &key);
        self.reply_ok(&payload)?;
        tracing::info!(conn = %self.id, session = %session.id, "QAP1 session detached");
        self.session = None;
        Ok(Some(session))
    }

    /// A connection to the resume port: the 32-byte key, then normal QAP1 on the
    /// attached session. A wrong key, another address or an expired session closes it.
    pub(super) fn attach(mut self) {
        let mut key = [0u8; 32];
        if self.stream.read_exact(&mut key).is_err() {
            return;
        }
        let Some(parked) = self.qap.detached.take(&key, self.peer) else {
            tracing::warn!(conn = %self.id, peer = %self.peer, "QAP1 attach refused");
            return;
        };
        if self
            .state
            .sessions
            .get(&parked.session.id.to_string(), &parked.user)
            .is_err()
        {
            return;
        }
        let word = parked.outcome.as_ref().map_or(resp::OK, |o| o.wait());
        let header = frame::Header::new(word, 0).to_bytes();
        if self.stream.write_all(&header).is_err() {
            return;
        }
        tracing::info!(conn = %self.id, session = %parked.session.id, "QAP1 session attached");
        self.user = Some(parked.user);
        self.session = Some(parked.session);
        self.serve_attached();
    }
}

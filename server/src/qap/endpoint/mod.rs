//! The QAP1 endpoint: Rserve's protocol for unmodified Rserve clients (RSclient,
//! pyRserve, REngine), with the security Rserve lacks. Owns the listeners (loopback
//! TCP, Unix socket) and one connection's life:
//!
//! ```text
//!  accept ─▶ ID string (always asks for a login: ARpt) ─▶ CMD_login (argon2id store,
//!  rate limited; a failure closes the connection) ─▶ a session: one forked worker in
//!  the user's GUID folder ─▶ eval / voidEval / setSEXP / assignSEXP ... ─▶ close:
//!  the session's worker and folder are gone
//! ```
//!
//! Each connection runs on its own blocking thread (R calls block) and reaches R only
//! through [`crate::engine::Sessions`], so QAP1 sessions count against the same
//! per-user limits as HTTP sessions and show up in `GET /api/v1/sessions`.
//! R errors keep Rserve's status 127 for compatibility; their message goes to the
//! server log with the request id instead of being lost, and with `qap_oob_errors`
//! to the client too, in an OOB_SEND message (code 127) just before the status.
//! Loopback peers may be logged in as an opt-in anonymous identity (`listen`).

use std::io::{self, Write};
use std::net::IpAddr;
use std::sync::Arc;

use tokio::runtime::Handle;

mod detach;
mod expr;
mod files;
mod listen;
mod ocap;
mod oob;

pub use detach::Detached;

pub use listen::listen;

/// What the QAP1 endpoint owns: its TLS set-up, its secure-login key, the detached
/// sessions waiting to be attached, and the `CMD_shutdown` signal. Built once from
/// the config; the HTTP side never touches it.
#[derive(Debug, Default)]
pub struct QapState {
    /// TLS for QAP1 (the `[tls]` certificate), when configured.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// QAP1 sessions detached and waiting to be attached.
    pub detached: Arc<Detached>,
    /// The QAP1 secure-login key, when configured.
    pub key: Option<Arc<super::seclogin::LoginKey>>,
    /// Told when an admin sends QAP1's `CMD_shutdown`: the server then stops as on
    /// SIGTERM.
    pub shutdown: tokio::sync::Notify,
}

impl QapState {
    /// Loads the secure-login key and the TLS certificate the config names.
    pub fn new(config: &crate::config::Config) -> Result<QapState, String> {
        let key = match &config.qap.rsa_key {
            Some(path) => Some(Arc::new(super::seclogin::LoginKey::load(path)?)),
            None => None,
        };
        let tls = match &config.tls {
            Some(tls) => Some(super::stream::server_config(&tls.cert, &tls.key)?),
            None => None,
        };
        Ok(QapState {
            tls,
            key,
            ..QapState::default()
        })
    }
}

use super::frame::{self, cmd, dt, resp, status, Header, Param, HEADER_LEN};
use super::seclogin::AUTHKEY_LEN;
use super::sexp;
use super::stream::Stream;
use crate::auth::cache::HashersBusy;
use crate::auth::{AuthUser, Credential};
use crate::engine::SessionEntry;
use crate::engine::{Error, RFailureKind};
use crate::inflight::Reservation;
use crate::state::AppState;
use files::OpenFile;
use listen::idle_timeout;
use rookery_engine::qap::direct::{self, QapServe, QapTurn};

/// The ID string: protocol 0103, a login is always required, plaintext offered
/// (on loopback, Unix sockets and TLS only; see `Config::check`).
pub const ID_STRING_AUTH: [u8; 32] = *b"Rsrv0103QAP1\r\n\r\nARpt----------\r\n";

/// The OOB message word for an R error's message: OOB_SEND with user code 127.
pub use direct::OOB_ERROR;

/// A direct-mode pass with a quiet client ends after this long, so the server
/// checks its idle deadline and other callers of the session get a turn.
const DIRECT_QUIET: std::time::Duration = std::time::Duration::from_secs(1);

/// Message buffers up to this capacity are kept for the next message (1e6 doubles
/// are 8 MB); larger ones are freed, so an idle connection holds at most twice this.
const RETAIN: usize = 16 << 20;

/// Replies whose value encodes to more than this hold their bytes in the budget of
/// bytes in flight while they are built and written (as streamed HTTP answers do).
const REPLY_BUDGET_ABOVE: u64 = 1 << 20;

/// How long a large reply waits for room in that budget before it is refused.
const REPLY_BUDGET_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// Rserve's status for an R error in `CMD_serEval` / `serEEval` / `serAssign`
/// (`SET_STAT(RESP_ERR, Rerr)` with `Rerr` = 1), unlike CMD_eval's 127.
const SER_R_ERROR: u8 = 1;

/// Rserve's status when `serialize()` gave no raw vector (`Rerr` = -2).
const SER_NOT_RAW: u8 = 0x7e;

/// The ID string for this connection: `TLS\n` first when `CMD_switch "TLS"` is
/// offered, `ARpt` when a login is required (qap1.md §2.1).
fn id_string(login: bool, tls_switch: bool) -> [u8; 32] {
    let mut id = *b"Rsrv0103QAP1\r\n\r\n--------------\r\n";
    let mut at = 16;
    for (on, attr) in [(tls_switch, b"TLS\n"), (login, b"ARpt")] {
        if on {
            id[at..at + 4].copy_from_slice(attr);
            at += 4;
        }
    }
    id
}

/// What one connection needs besides its socket.
#[derive(Debug)]
pub struct Connection {
    stream: Stream,
    state: AppState,
    qap: Arc<QapState>,
    runtime: Handle,
    peer: IpAddr,
    id: String,
    user: Option<AuthUser>,
    session: Option<Arc<SessionEntry>>,
    /// Set when the kernel vouched for the peer (a mapped uid on the Unix socket).
    preauth: Option<AuthUser>,
    /// The nonce handed out by `CMD_keyReq`, which `CMD_secLogin` must carry.
    authkey: Option<[u8; AUTHKEY_LEN]>,
    /// The file of the file commands, inside the session's folder.
    file: Option<OpenFile>,
    /// Requests read so far: `{id}-{requests}` is the current request's id (audit,
    /// log).
    requests: u64,
    /// Buffers kept between messages (up to [`RETAIN`] bytes), so a large transfer
    /// does not fault in fresh pages each time.
    inbuf: Vec<u8>,
    outbuf: Vec<u8>,
    /// How strings travel (`CMD_setEncoding`): code, names and values.
    strings: sexp::Strings,
    /// The current message's bytes, held in the budget of bytes in flight until it
    /// has been answered.
    message_held: Option<Reservation>,
}

/// Why a connection ends.
#[derive(Debug)]
enum End {
    /// The client closed the socket, or it broke.
    Io(io::Error),
    /// We answered and close it (failed login, oversized message, shutdown).
    Close,
}

impl From<io::Error> for End {
    fn from(e: io::Error) -> Self {
        End::Io(e)
    }
}

impl Connection {
    pub fn new(
        stream: Stream,
        state: AppState,
        qap: Arc<QapState>,
        runtime: Handle,
        peer: IpAddr,
    ) -> Self {
        Connection {
            stream,
            state,
            qap,
            runtime,
            peer,
            id: uuid::Uuid::new_v4().to_string(),
            user: None,
            session: None,
            preauth: None,
            authkey: None,
            file: None,
            requests: 0,
            inbuf: Vec::new(),
            outbuf: Vec::new(),
            strings: sexp::Strings::Utf8,
            message_held: None,
        }
    }

    /// A connection already authenticated by its peer credentials: no login asked.
    pub fn preauthenticated(mut self, user: AuthUser) -> Self {
        self.preauth = Some(user);
        self
    }

    /// Serves the connection until the client leaves; then closes its session.
    pub fn serve(mut self) {
        let end = self.run();
        self.finish(end);
    }

    /// Serves an attached session (no ID string: the session is already there).
    fn serve_attached(mut self) {
        let end = self.serve_messages();
        self.finish(end);
    }

    /// Serves messages until the connection ends: through the session's worker in
    /// direct mode when it can (see [`Connection::direct_pass`]), else one by one.
    fn serve_messages(&mut self) -> End {
        let mut quiet_since = std::time::Instant::now();
        loop {
            let before = self.requests;
            let next = if self.direct_ok() {
                self.direct_pass()
            } else {
                self.one_message()
            };
            if let Err(end) = next {
                return end;
            }
            if self.requests != before {
                quiet_since = std::time::Instant::now();
            } else if quiet_since.elapsed() >= idle_timeout(&self.state) {
                return End::Io(io::ErrorKind::TimedOut.into());
            }
        }
    }

    /// Whether the session's worker may serve the socket itself: direct mode is on,
    /// there is a session, and the stream is plain TCP or a Unix socket.
    fn direct_ok(&self) -> bool {
        self.state.config.qap.direct && self.session.is_some() && self.stream.plain_fd().is_some()
    }

    /// One pass of direct mode: the worker serves the socket until it hands the
    /// connection back; its notes go to the audit log (each call's code) and the
    /// server log (each failure, with the request id). A handed-back message is
    /// dispatched here as usual. A call that timed out or lost its worker is answered
    /// here with status 127 (the session has a new worker); a worker lost between
    /// calls is replaced without a word to the client, as it expects none.
    fn direct_pass(&mut self) -> Result<(), End> {
        let entry = self.session();
        let options = QapServe {
            strings: self.strings,
            oob_errors: self.state.config.qap.oob_errors,
            oob: self.state.config.qap.oob,
            max_result: entry.max_result_bytes,
            max_message: self.state.config.limits.qap_max_message_bytes,
            idle: DIRECT_QUIET.min(idle_timeout(&self.state)),
            stall: self.state.config.limits.read_timeout(),
            requests: self.requests,
        };
        let fd = self
            .stream
            .plain_fd()
            .expect("direct_ok checked the stream");
        let result = self.state.sessions.serve_qap_blocking(&entry, fd, options);
        let yielded = match result {
            Ok(y) => y,
            Err(f) if f.in_flight => {
                // The call's answer, which the client waits for.
                self.requests += 1;
                return self.r_failure(&f.error);
            }
            Err(f) => {
                // Lost between calls: nothing is owed; go on with the new worker, or
                // end the connection when there is none.
                self.log_failure(&f.error);
                return if f.replaced { Ok(()) } else { Err(End::Close) };
            }
        };
        for note in &yielded.notes {
            let request = format!("{}-{}", self.id, note.request);
            let route = if note.command == cmd::SET_SEXP {
                "CMD_setSEXP"
            } else {
                "CMD_eval"
            };
            self.audit_as(&request, route, note.text.as_deref(), &entry);
            if let Some(error) = &note.error {
                tracing::info!(request = %request, user = ?self.user.as_ref().map(|u| &u.name), error = %error, "QAP1 call failed");
            }
        }
        self.requests = yielded.requests;
        match yielded.turn {
            QapTurn::Message { command, payload } => {
                let done = self.dispatch(command, &payload);
                if payload.capacity() <= RETAIN {
                    self.inbuf = payload;
                }
                done
            }
            QapTurn::Notes => Ok(()),
            QapTurn::Closed { reason } => {
                tracing::debug!(conn = %self.id, reason = %reason, "QAP1 connection ended in direct mode");
                Err(End::Close)
            }
        }
    }

    /// Closes the connection's session, unless it was detached.
    fn finish(mut self, end: End) {
        // The client is told at once; closing the session (stopping its worker) follows.
        self.stream = Stream::Gone;
        if let Some(s) = self.session.take() {
            let sessions = self.state.sessions.clone();
            let _ = self.runtime.block_on(sessions.close(&s));
        }
        match end {
            End::Io(e) if e.kind() == io::ErrorKind::UnexpectedEof => {}
            End::Io(e) => tracing::debug!(conn = %self.id, error = %e, "QAP1 connection ended"),
            End::Close => {}
        }
    }

    fn run(&mut self) -> End {
        let preauth = self.preauth.take();
        let switchable = self.qap.tls.is_some() && matches!(self.stream, Stream::Tcp(_));
        let id = id_string(preauth.is_none(), switchable);
        if let Err(e) = self.stream.write_all(&id) {
            return End::Io(e);
        }
        if let Some(user) = preauth {
            if let Err(end) = self.start_session(user) {
                return end;
            }
        }
        self.serve_messages()
    }

    fn one_message(&mut self) -> Result<(), End> {
        let (command, payload) = self.read_message()?;
        self.requests += 1;
        let done = self.dispatch(command, &payload);
        self.message_held = None;
        if payload.capacity() <= RETAIN {
            self.inbuf = payload;
        }
        done
    }

    /// Whose budget of bytes in flight this connection's messages and replies count
    /// against: its user's, or before a login (and in OCAP mode) its address's.
    fn budget_owner(&self) -> String {
        match &self.user {
            Some(u) => u.name.clone(),
            None => format!("peer:{}", self.peer),
        }
    }

    /// The current request's id: the connection id and the request's number.
    fn request_id(&self) -> String {
        format!("{}-{}", self.id, self.requests)
    }

    /// The next request: its command and payload. A header announcing more than the
    /// size limit is answered (ERR_data_overflow) and the connection closed, before
    /// any of the payload is read.
    ///
    /// Between messages the connection may stay quiet up to its idle deadline (before
    /// a login: the read deadline); once a message has begun, all of it must arrive
    /// within `limits.read_timeout_secs`, and its buffer grows only with the bytes
    /// that arrive.
    ///
    /// Before a login a message may hold [`PRE_LOGIN_MAX_MESSAGE`] bytes at most (a
    /// login, a key request, a switch to TLS are a few hundred), so a client that has
    /// not proved who it is cannot make the server hold much.
    fn read_message(&mut self) -> Result<(u32, Vec<u8>), End> {
        let limits = &self.state.config.limits;
        let (quiet, max) = match self.session {
            Some(_) => (idle_timeout(&self.state), limits.qap_max_message_bytes),
            None => (limits.read_timeout(), PRE_LOGIN_MAX_MESSAGE),
        };
        self.read_message_after(quiet, max)
    }

    /// [`Connection::read_message`] with the first byte awaited up to `quiet` and at
    /// most `max` bytes of payload. While the payload arrives it counts against the
    /// user's bytes in flight (a connection without a user: its address's), and past
    /// that budget the message is refused (ERR_data_overflow) before it is read.
    fn read_message_after(
        &mut self,
        quiet: std::time::Duration,
        max: u64,
    ) -> Result<(u32, Vec<u8>), End> {
        let mut head = [0u8; HEADER_LEN];
        self.stream.set_read_timeout(Some(quiet))?;
        self.stream.read_first(&mut head[..1])?;
        let deadline = std::time::Instant::now() + self.state.config.limits.read_timeout();
        self.stream.read_by(&mut head[1..], deadline)?;
        let header = match Header::try_from_bytes(&head, max) {
            Ok(h) => h,
            Err(e) => {
                self.reply_err(e.status())?;
                return Err(End::Close);
            }
        };
        let owner = self.budget_owner();
        let mut held = self.state.inflight.reservation(&owner);
        if let Err(over) = held.grow(header.len) {
            let whose = if over.server {
                "the server"
            } else {
                "the user"
            };
            tracing::warn!(conn = %self.id, user = %owner, declared = header.len, held = over.held,
                limit = over.limit, "QAP1 message refused: too many bytes in flight for {whose}");
            self.reply_err(status::DATA_OVERFLOW)?;
            return Err(End::Close);
        }
        let mut payload = std::mem::take(&mut self.inbuf);
        payload.clear();
        self.stream
            .read_growing(&mut payload, header.len as usize, deadline)?;
        self.message_held = Some(held);
        Ok((header.cmd, payload))
    }

    fn dispatch(&mut self, command: u32, payload: &[u8]) -> Result<(), End> {
        if frame::is_special(command) {
            return match (&self.session, command) {
                (None, _) => {
                    self.reply_err(status::AUTH_FAILED)?;
                    Err(End::Close)
                }
                (Some(_), cmd::SER_EVAL | cmd::SER_EEVAL | cmd::SER_ASSIGN) => {
                    self.serialized(command, payload)
                }
                (Some(_), _) => self.reply_err(status::INV_CMD),
            };
        }
        let params = match frame::decode_params(payload) {
            Ok(p) => p,
            Err(e) => return self.reply_err(e.status()),
        };
        if self.session.is_none() {
            // As Rserve: the first message must be a login; anything else is refused
            // and the connection closed.
            return match command {
                cmd::LOGIN => self.login(&params),
                cmd::SWITCH => self.switch(&params),
                cmd::KEY_REQ => self.key_request(&params),
                cmd::SEC_LOGIN => self.secure_login(&params),
                _ => {
                    self.reply_err(status::AUTH_FAILED)?;
                    Err(End::Close)
                }
            };
        }
        match command {
            // As Rserve: a second login is not a command.
            cmd::LOGIN => self.reply_err(status::INV_CMD),
            cmd::EVAL => self.eval(&params, true),
            cmd::VOID_EVAL => self.eval(&params, false),
            cmd::SET_SEXP => self.set_sexp(&params, false),
            cmd::ASSIGN_SEXP => self.set_sexp(&params, true),
            cmd::OPEN_FILE | cmd::CREATE_FILE | cmd::REMOVE_FILE => {
                self.file_by_name(command, &params)
            }
            cmd::CLOSE_FILE => self.close_file(),
            cmd::READ_FILE => self.read_file(&params),
            cmd::WRITE_FILE => self.write_file(&params),
            cmd::SET_BUFFER_SIZE => self.with_int(&params, |_| Ok(())),
            cmd::SET_ENCODING => self.set_encoding(&params),
            cmd::SHUTDOWN => self.shutdown(),
            cmd::DETACH_SESSION => self.detach(),
            cmd::DETACHED_VOID_EVAL => self.detached_void_eval(&params),
            cmd::KEY_REQ | cmd::SEC_LOGIN => self.reply_err(status::UNAVAILABLE),
            cmd::SWITCH => self.switch(&params),
            cmd::CTRL_EVAL | cmd::CTRL_SOURCE | cmd::CTRL_SHUTDOWN => {
                self.reply_err(status::UNSUPPORTED_CMD)
            }
            _ => self.reply_err(status::INV_CMD),
        }
    }

    /// `CMD_switch "TLS"`: OK in the clear, then TLS on the same socket.
    fn switch(&mut self, params: &[Param<'_>]) -> Result<(), End> {
        if params.first().and_then(|p| p.as_str().ok()).as_deref() != Some("TLS") {
            return self.reply_err(status::UNSUPPORTED_CMD);
        }
        let Some(config) = self.qap.tls.clone() else {
            return self.reply_err(status::DISABLED);
        };
        if !matches!(self.stream, Stream::Tcp(_)) {
            return self.reply_err(status::UNSUPPORTED_CMD);
        }
        self.reply_ok(&[])?;
        self.stream.upgrade(config)?;
        Ok(())
    }

    /// `CMD_keyReq "rsa-authkey"`: a fresh nonce and the public key (raw payload). One
    /// per connection, as Rserve: a second one closes it.
    fn key_request(&mut self, params: &[Param<'_>]) -> Result<(), End> {
        let Some(key) = self.qap.key.clone() else {
            return self.reply_err(status::UNAVAILABLE);
        };
        if params.first().and_then(|p| p.as_str().ok()).as_deref() != Some("rsa-authkey") {
            return self.reply_err(status::INV_PAR);
        }
        if self.authkey.is_some() {
            self.reply_err(status::SECURITY_CLOSE)?;
            return Err(End::Close);
        }
        let nonce: [u8; AUTHKEY_LEN] = std::array::from_fn(|_| rand::random());
        self.authkey = Some(nonce);
        self.send(resp::OK, &key.key_block(&nonce))
    }

    /// `CMD_secLogin`: the RSA blocks must open with this connection's nonce; then the
    /// credentials go through the same checks as a plaintext login.
    fn secure_login(&mut self, params: &[Param<'_>]) -> Result<(), End> {
        let opened = match (&self.qap.key, self.authkey.take(), params.first()) {
            (Some(key), Some(nonce), Some(p)) if p.dt == dt::BYTESTREAM => key.open(p.data, &nonce),
            _ => None,
        };
        let Some((name, pw)) = opened else {
            tracing::warn!(conn = %self.id, peer = %self.peer, "QAP1 secure login did not open");
            self.reply_err(status::AUTH_FAILED)?;
            return Err(End::Close);
        };
        self.check_credentials(&name, &pw)
    }

    /// `CMD_login` with `user\npassword`: checked against the store (argon2id), rate
    /// limited; a failure is answered and the connection closed.
    fn login(&mut self, params: &[Param<'_>]) -> Result<(), End> {
        let Some(text) = params.first().and_then(|p| p.as_str().ok()) else {
            return self.reply_err(status::INV_PAR);
        };
        let (name, pw) = text.split_once('\n').unwrap_or((text.as_str(), ""));
        let pw = pw.split(['\n', '\r']).next().unwrap_or("");
        self.check_credentials(name, pw)
    }

    fn check_credentials(&mut self, name: &str, pw: &str) -> Result<(), End> {
        let limiter = self.state.limiter.clone();
        if limiter.check(name, self.peer).is_err() {
            tracing::warn!(conn = %self.id, user = %name, peer = %self.peer, "QAP1 login rate limited");
            self.reply_err(status::AUTH_FAILED)?;
            return Err(End::Close);
        }
        let verified = match self.verify(name, pw) {
            Ok(user) => user,
            Err(busy) => {
                tracing::warn!(conn = %self.id, user = %name, error = %busy, "QAP1 login not checked");
                self.reply_err(status::SESSION_BUSY)?;
                return Err(End::Close);
            }
        };
        let Some(user) = verified else {
            limiter.record_failure(name, self.peer);
            tracing::warn!(conn = %self.id, user = %name, peer = %self.peer, "failed QAP1 login");
            self.reply_err(status::AUTH_FAILED)?;
            return Err(End::Close);
        };
        self.start_session(user)?;
        self.reply_ok(&[])
    }

    /// Opens the connection's session for `user` (who must be allowed to run code);
    /// on failure answers with the reason's status and closes.
    fn start_session(&mut self, user: AuthUser) -> Result<(), End> {
        if user.require_execute().is_err() {
            self.reply_err(status::ACCESS_DENIED)?;
            return Err(End::Close);
        }
        let sessions = self.state.sessions.clone();
        let cap = self.state.config.limits.max_result_bytes_for(user.role);
        match self.runtime.block_on(sessions.open(&user.name, cap)) {
            Ok(entry) => {
                tracing::info!(conn = %self.id, user = %user.name, session = %entry.name, "QAP1 session");
                self.session = Some(entry);
                self.user = Some(user);
                Ok(())
            }
            Err(e) => {
                tracing::warn!(conn = %self.id, user = %user.name, error = %e, "no QAP1 session");
                self.reply_err(status::SESSION_BUSY)?;
                Err(End::Close)
            }
        }
    }

    /// The user, if `pw` is theirs; `Err` when no hasher was free to check it.
    fn verify(&self, name: &str, pw: &str) -> Result<Option<AuthUser>, HashersBusy> {
        let record = self.state.store.user(name).ok().flatten();
        let ok = match &record {
            Some(u) => self.state.verified.verify(name, pw, &u.password_hash)?,
            None => {
                self.state.verified.verify_unknown(pw)?;
                false
            }
        };
        Ok(record.filter(|_| ok).map(auth_user))
    }

    fn session(&self) -> Arc<SessionEntry> {
        self.session
            .clone()
            .expect("dispatch checks the login first")
    }

    /// `CMD_eval` / `CMD_voidEval` with a DT_STRING of R code, or with a DT_SEXP
    /// holding a QAP-encoded expression (see [`expr`]).
    fn eval(&mut self, params: &[Param<'_>], answer: bool) -> Result<(), End> {
        if let Some(p) = params.first().filter(|p| p.dt == dt::SEXP) {
            return self.eval_expr(p.data, answer);
        }
        let Some(code) = self.text(params.first()) else {
            return self.reply_err(status::INV_PAR);
        };
        let entry = self.session();
        self.audit("CMD_eval", Some(&code), &entry);
        let (result, broken) = self.execute(&entry, &[], &code);
        self.eval_answer(result, answer)?;
        close_if(broken)
    }

    /// Binds `bindings` and runs `code` in the session, in one trip to its worker.
    /// With `[qap] oob`, the OOB messages its R code sends reach the client through
    /// an [`oob::Relay`] while the call waits; the flag says whether that left the
    /// stream out of step (the connection then ends after the answer).
    fn execute(
        &mut self,
        entry: &SessionEntry,
        bindings: &[(&str, &rookery_engine::Value)],
        code: &str,
    ) -> (Result<rookery_engine::Evaluation, Error>, bool) {
        let sessions = &self.state.sessions;
        if !self.state.config.qap.oob {
            let result = sessions.execute_bound_blocking(entry, bindings, code, None);
            return (result, false);
        }
        let limits = &self.state.config.limits;
        let mut relay = oob::Relay {
            stream: &mut self.stream,
            strings: self.strings,
            max_message: limits.qap_max_message_bytes,
            wait: sessions.call_timeout(),
            read_timeout: limits.read_timeout(),
            broken: false,
        };
        let result = sessions.execute_bound_blocking(
            entry,
            bindings,
            code,
            Some(&mut |req| relay.relay(req)),
        );
        (result, relay.broken)
    }

    /// A QAP-encoded expression: decoded (a malformed one is ERR_inv_par, as on
    /// Rserve), rebuilt and evaluated in the session; an R error is status 127.
    fn eval_expr(&mut self, bytes: &[u8], answer: bool) -> Result<(), End> {
        let tree = match rookery_qap::expr::decode_expr(bytes, self.strings) {
            Ok(e) => expr::node(&e),
            Err(e) => {
                tracing::info!(conn = %self.id, error = %e, "QAP1 expression did not decode");
                return self.reply_err(e.status());
            }
        };
        let entry = self.session();
        self.audit("CMD_eval (QAP-encoded)", None, &entry);
        let (result, broken) = self.execute(&entry, &[(expr::NODE_VAR, &tree)], expr::EVAL_CODE);
        self.eval_answer(result, answer)?;
        close_if(broken)
    }

    fn eval_answer(
        &mut self,
        result: Result<rookery_engine::Evaluation, Error>,
        answer: bool,
    ) -> Result<(), End> {
        match result {
            Ok(ev) if answer => self.reply_value(&ev.value),
            Ok(_) => self.reply_ok(&[]),
            Err(e) => self.r_failure(&e),
        }
    }

    /// `CMD_setSEXP` (a name) / `CMD_assignSEXP` (an R target such as `x$a`), then a
    /// DT_SEXP value or a DT_STRING (a length-1 character vector).
    fn set_sexp(&mut self, params: &[Param<'_>], parse_target: bool) -> Result<(), End> {
        let (Some(target), Some(value)) = (params.first(), params.get(1)) else {
            return self.reply_err(status::INV_PAR);
        };
        let Some(target) = self.text(Some(target)) else {
            return self.reply_err(status::INV_PAR);
        };
        let value = match direct::decode_value(value, self.strings) {
            Ok(v) => v,
            Err(e) => return self.reply_err(e.status()),
        };
        let entry = self.session();
        let sessions = &self.state.sessions;
        let result = if crate::engine::is_r_name(&target) {
            sessions.assign_blocking(&entry, &target, &value)
        } else if parse_target {
            let code =
                format!("{target} <- .rookery_qap_value; rm(.rookery_qap_value); invisible()");
            sessions
                .assign_blocking(&entry, ".rookery_qap_value", &value)
                .and_then(|()| sessions.execute_blocking(&entry, &code).map(drop))
        } else {
            return self.reply_err(status::INV_PAR);
        };
        match result {
            Ok(()) => self.reply_ok(&[]),
            Err(e) => self.r_failure(&e),
        }
    }

    /// `CMD_serEval` / `CMD_serEEval` / `CMD_serAssign` (what RSclient's `RS.eval`
    /// and `RS.assign` send): the payload is R's `serialize()` of a call (or of
    /// `list(name, value)`); R itself unserializes and evaluates it in the session, and
    /// the answer is the raw serialization of the result. As Rserve (Rserv.c): the
    /// value is put into a `serialize(value, NULL)` call, so a call or symbol it
    /// evaluated to is evaluated once more; serAssign evaluates `` `<-`(name, value) ``,
    /// so a call given as the value is evaluated, not stored; an R error is status 1
    /// (Rserve's, not CMD_eval's 127). A payload that does not unserialize is status
    /// 1 too, where Rserve sends no answer at all and the client hangs.
    fn serialized(&mut self, command: u32, payload: &[u8]) -> Result<(), End> {
        let code = match command {
            cmd::SER_EVAL => {
                "tryCatch(eval(call('serialize', eval(unserialize(.rookery_qap_ser)), NULL)), \
                 finally = rm(.rookery_qap_ser))"
            }
            cmd::SER_EEVAL => {
                "tryCatch(eval(call('serialize', eval(eval(unserialize(.rookery_qap_ser))), NULL)), \
                 finally = rm(.rookery_qap_ser))"
            }
            _ => {
                "tryCatch({ .rookery_qap_l <- unserialize(.rookery_qap_ser); \
                 if (!is.list(.rookery_qap_l) || length(.rookery_qap_l) < 2L) \
                 stop('serAssign needs list(name, value)'); \
                 eval(call('<-', .rookery_qap_l[[1]], .rookery_qap_l[[2]])); NULL }, \
                 finally = rm(list = intersect(c('.rookery_qap_l', '.rookery_qap_ser'), \
                 ls(all.names = TRUE))))"
            }
        };
        let entry = self.session();
        self.audit("CMD_serEval", None, &entry);
        let raw = rookery_engine::Value::raw(payload.to_vec());
        let (result, broken) = self.execute(&entry, &[(".rookery_qap_ser", &raw)], code);
        self.answer_serialized(command, result)?;
        close_if(broken)
    }

    fn answer_serialized(
        &mut self,
        command: u32,
        result: Result<rookery_engine::Evaluation, Error>,
    ) -> Result<(), End> {
        match result {
            Ok(ev) if command == cmd::SER_ASSIGN => {
                drop(ev);
                self.reply_ok(&[])
            }
            Ok(ev) => match ev.value.data {
                rookery_engine::value::Data::Raw(bytes) => self.reply_ok(&bytes),
                _ => self.reply_err(SER_NOT_RAW),
            },
            Err(e @ Error::ResultTooLarge { .. }) => self.r_failure(&e),
            Err(e) => {
                self.log_failure(&e);
                if self.state.config.qap.oob_errors {
                    self.send_oob_error(&e)?;
                }
                self.reply_err(SER_R_ERROR)
            }
        }
    }

    fn with_int(
        &mut self,
        params: &[Param<'_>],
        f: impl FnOnce(i32) -> Result<(), u8>,
    ) -> Result<(), End> {
        match params.first().map(Param::as_int) {
            Some(Ok(v)) => match f(v) {
                Ok(()) => self.reply_ok(&[]),
                Err(code) => self.reply_err(code),
            },
            _ => self.reply_err(status::INV_PAR),
        }
    }

    /// `utf8` and `native` (UTF-8 here), or `latin1`: code and strings from the client
    /// are read as Latin-1, and strings to it are written in Latin-1.
    fn set_encoding(&mut self, params: &[Param<'_>]) -> Result<(), End> {
        self.strings = match params.first().and_then(|p| p.as_str().ok()).as_deref() {
            Some("utf8" | "native") => sexp::Strings::Utf8,
            Some("latin1") => sexp::Strings::Latin1,
            _ => return self.reply_err(status::INV_PAR),
        };
        self.reply_ok(&[])
    }

    /// A DT_STRING parameter as text, in the connection's string encoding.
    fn text(&self, p: Option<&Param<'_>>) -> Option<String> {
        let bytes = p?.as_string_bytes().ok()?;
        Some(self.strings.text(bytes))
    }

    /// `CMD_shutdown`: admins only (answered, then the server shuts down as on
    /// SIGTERM); anyone else gets Rserve's answer when shutdown is disabled.
    fn shutdown(&mut self) -> Result<(), End> {
        if !self.user.as_ref().is_some_and(AuthUser::is_admin) {
            return self.reply_err(status::DISABLED);
        }
        tracing::warn!(conn = %self.id, user = ?self.user.as_ref().map(|u| &u.name), "QAP1 shutdown by an admin");
        self.reply_ok(&[])?;
        self.qap.shutdown.notify_one();
        Err(End::Close)
    }

    /// An R failure: Rserve's status (parse status, or 127) for compatibility; the
    /// message in the log under the request id, and (with `qap_oob_errors`) to the
    /// client in an OOB_SEND message just before the status.
    fn r_failure(&mut self, e: &Error) -> Result<(), End> {
        self.log_failure(e);
        if self.state.config.qap.oob_errors {
            self.send_oob_error(e)?;
        }
        if let Error::ResultTooLarge { bytes, .. } = e {
            return self.reply_too_big(*bytes);
        }
        self.reply_err(r_status(e))
    }

    /// Rserve's answer to a result past its `maxsendbuf`: ERR_object_too_big with
    /// the size as a raw u32 (saturated) for a payload.
    fn reply_too_big(&mut self, bytes: u64) -> Result<(), End> {
        let size = u32::try_from(bytes).unwrap_or(u32::MAX);
        self.send(frame::resp_err(status::OBJECT_TOO_BIG), &size.to_le_bytes())
    }

    fn log_failure(&self, e: &Error) {
        tracing::info!(request = %self.request_id(), user = ?self.user.as_ref().map(|u| &u.name), error = %e, "QAP1 call failed");
    }

    /// OOB_SEND with user code 127 (the status that follows) and the R error's
    /// message as a length-1 character vector.
    fn send_oob_error(&mut self, e: &Error) -> Result<(), End> {
        let message = match e {
            Error::R(f) => f.message.clone(),
            other => other.to_string(),
        };
        self.stream
            .write_all(&direct::oob_error_message(&message, self.strings))?;
        self.stream.flush()?;
        Ok(())
    }

    fn audit(&self, route: &str, code: Option<&str>, entry: &SessionEntry) {
        self.audit_as(&self.request_id(), route, code, entry);
    }

    fn audit_as(&self, request_id: &str, route: &str, code: Option<&str>, entry: &SessionEntry) {
        self.state.audit.record(crate::audit::Entry {
            request_id,
            user: self.user.as_ref().map(|u| u.name.as_str()),
            route,
            target: Some(entry.name.clone()),
            code,
            outcome: "qap".into(),
        });
    }

    /// RESP_OK with one DT_SEXP parameter holding `value`, encoded straight into the
    /// connection's reply buffer behind room for the headers, then written at once:
    /// no further copy of the object, whatever its size.
    ///
    /// A reply over [`REPLY_BUDGET_ABOVE`] holds the value and its encoding (twice
    /// its encoded size) in the caller's and the server's budget of bytes in flight
    /// until it is written, waiting up to [`REPLY_BUDGET_WAIT`] for room; past that
    /// it is ERR_out_of_mem (Rserve's answer when it cannot allocate a send buffer),
    /// and the connection and its session stay open for a retry.
    fn reply_value(&mut self, value: &rookery_engine::Value) -> Result<(), End> {
        let size = rookery_engine::value::codec::encoded_len(value) as u64;
        let _held = if size > REPLY_BUDGET_ABOVE {
            let mut held = self.state.inflight.reservation(&self.budget_owner());
            if let Err(over) = held.grow_blocking(2 * size, REPLY_BUDGET_WAIT) {
                let whose = if over.server {
                    "the server"
                } else {
                    "the user"
                };
                tracing::warn!(conn = %self.id, user = %self.budget_owner(), bytes = 2 * size,
                    held = over.held, limit = over.limit,
                    "QAP1 reply refused: too many bytes in flight for {whose}");
                return self.reply_err(status::OUT_OF_MEM);
            }
            Some(held)
        } else {
            None
        };
        let mut buf = std::mem::take(&mut self.outbuf);
        let sent = match direct::encode_value_reply(&mut buf, value, self.strings) {
            Ok(start) => self
                .stream
                .write_all(&buf[start..])
                .and_then(|()| self.stream.flush())
                .map_err(End::from),
            Err(e) => self.r_failure(&Error::Internal(e.to_string())),
        };
        if buf.capacity() <= RETAIN {
            self.outbuf = buf;
        }
        sent
    }

    fn reply_ok(&mut self, payload: &[u8]) -> Result<(), End> {
        self.send(resp::OK, payload)
    }

    fn reply_err(&mut self, code: u8) -> Result<(), End> {
        self.send(frame::resp_err(code), &[])
    }

    fn send(&mut self, word: u32, payload: &[u8]) -> Result<(), End> {
        let message = frame::encode_message(word, 0, payload);
        self.stream.write_all(&message)?;
        self.stream.flush()?;
        Ok(())
    }
}

/// Ends the connection (after its answer) when an OOB relay left the stream out of
/// step.
fn close_if(broken: bool) -> Result<(), End> {
    if broken {
        Err(End::Close)
    } else {
        Ok(())
    }
}

/// Largest message a connection may send before it has logged in.
pub const PRE_LOGIN_MAX_MESSAGE: u64 = 64 << 10;

/// Rserve's status for a failed call, the one mapping from the engine layer's errors
/// to QAP1's: the parse status for a parse error, else 127 (Rserve answers every
/// other failure, R's or its own, with 127; clients know no finer status).
fn r_status(e: &Error) -> u8 {
    match e.r_failure(RFailureKind::Parse) {
        Some(_) => status::PARSE_ERROR,
        None => status::R_ERROR,
    }
}

fn auth_user(u: crate::store::UserRecord) -> AuthUser {
    AuthUser {
        name: u.name,
        role: u.role,
        grants: u.grants,
        credential: Credential::Password,
    }
}

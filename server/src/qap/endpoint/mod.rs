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
//! server log with the connection id instead of being lost.

use std::io::{self, Read, Write};
use std::net::IpAddr;
use std::sync::Arc;

use tokio::runtime::Handle;

mod detach;
mod files;
mod listen;
mod ocap;

pub use detach::Detached;

pub use listen::listen;

use super::frame::{self, cmd, dt, resp, status, Header, Param, QapError, HEADER_LEN};
use super::seclogin::AUTHKEY_LEN;
use super::sexp;
use super::stream::Stream;
use crate::auth::{password, AuthUser};
use crate::engine::SessionEntry;
use crate::error::AppError;
use crate::state::AppState;
use crate::store::TokenKind;
use files::OpenFile;

/// The ID string: protocol 0103, a login is always required, plaintext offered
/// (on loopback, Unix sockets and TLS only; see `Config::check`).
pub const ID_STRING_AUTH: [u8; 32] = *b"Rsrv0103QAP1\r\n\r\nARpt----------\r\n";

/// Replies up to this size are assembled into one buffer and written at once.
const SMALL_REPLY: usize = 64 << 10;

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
    pub fn new(stream: Stream, state: AppState, runtime: Handle, peer: IpAddr) -> Self {
        Connection {
            stream,
            state,
            runtime,
            peer,
            id: uuid::Uuid::new_v4().to_string(),
            user: None,
            session: None,
            preauth: None,
            authkey: None,
            file: None,
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
        let end = loop {
            if let Err(end) = self.one_message() {
                break end;
            }
        };
        self.finish(end);
    }

    /// Closes the connection's session, unless it was detached.
    fn finish(mut self, end: End) {
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
        let switchable = self.state.qap_tls.is_some() && matches!(self.stream, Stream::Tcp(_));
        let id = id_string(preauth.is_none(), switchable);
        if let Err(e) = self.stream.write_all(&id) {
            return End::Io(e);
        }
        if let Some(user) = preauth {
            if let Err(end) = self.start_session(user) {
                return end;
            }
        }
        loop {
            if let Err(end) = self.one_message() {
                return end;
            }
        }
    }

    fn one_message(&mut self) -> Result<(), End> {
        let (command, payload) = self.read_message()?;
        self.dispatch(command, &payload)
    }

    /// The next request: its command and payload. A header announcing more than the
    /// size limit is answered (ERR_data_overflow) and the connection closed, before
    /// any of the payload is read.
    fn read_message(&mut self) -> Result<(u32, Vec<u8>), End> {
        let mut head = [0u8; HEADER_LEN];
        self.stream.read_exact(&mut head)?;
        let max = self.state.config.limits.qap_max_message_bytes;
        let header = match Header::try_from_bytes(&head, max) {
            Ok(h) => h,
            Err(e) => {
                self.reply_err(e.status())?;
                return Err(End::Close);
            }
        };
        let mut payload = vec![0u8; header.len as usize];
        self.stream.read_exact(&mut payload)?;
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
        let Some(config) = self.state.qap_tls.clone() else {
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
        let Some(key) = self.state.qap_key.clone() else {
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
        let opened = match (&self.state.qap_key, self.authkey.take(), params.first()) {
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
        let Some(user) = self.verify(name, pw) else {
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
        match self.runtime.block_on(sessions.open(&user.name)) {
            Ok(entry) => {
                tracing::info!(conn = %self.id, user = %user.name, session = %entry.id, "QAP1 session");
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

    fn verify(&self, name: &str, pw: &str) -> Option<AuthUser> {
        let record = self.state.store.user(name).ok().flatten();
        let ok = match &record {
            Some(u) => self.state.verified.verify(name, pw, &u.password_hash),
            None => {
                password::verify_dummy(pw);
                false
            }
        };
        record.filter(|_| ok).map(auth_user)
    }

    fn session(&self) -> Arc<SessionEntry> {
        self.session
            .clone()
            .expect("dispatch checks the login first")
    }

    /// `CMD_eval` / `CMD_voidEval` with a DT_STRING of R code.
    fn eval(&mut self, params: &[Param<'_>], answer: bool) -> Result<(), End> {
        let Some(code) = params.first().and_then(|p| p.as_str().ok()) else {
            return self.reply_err(status::INV_PAR);
        };
        let entry = self.session();
        self.audit("CMD_eval", Some(&code), &entry);
        let result = self.state.sessions.execute_blocking(&entry, &code);
        match result {
            Ok(ev) if answer => match sexp::encode(&ev.value) {
                Ok(bytes) => self.reply_sexp(&bytes),
                Err(e) => self.r_failure(&AppError::Internal(e.to_string())),
            },
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
        let Ok(target) = target.as_str() else {
            return self.reply_err(status::INV_PAR);
        };
        let value = match decode_value(value) {
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
    /// the answer is the raw serialization of the result. A payload that does not
    /// unserialize is an R error (status 127), not a hang as in Rserve.
    fn serialized(&mut self, command: u32, payload: &[u8]) -> Result<(), End> {
        let code = match command {
            cmd::SER_EVAL => "serialize(eval(unserialize(.rookery_qap_ser)), NULL)",
            cmd::SER_EEVAL => "serialize(eval(eval(unserialize(.rookery_qap_ser))), NULL)",
            _ => {
                "{ .rookery_qap_l <- unserialize(.rookery_qap_ser); \
                 assign(.rookery_qap_l[[1]], .rookery_qap_l[[2]]); \
                 rm(.rookery_qap_l, .rookery_qap_ser); NULL }"
            }
        };
        let entry = self.session();
        self.audit("CMD_serEval", None, &entry);
        let sessions = &self.state.sessions;
        let raw = rookery_engine::Value::raw(payload.to_vec());
        let result = sessions
            .assign_blocking(&entry, ".rookery_qap_ser", &raw)
            .and_then(|()| sessions.execute_blocking(&entry, code));
        match result {
            Ok(ev) if command == cmd::SER_ASSIGN => {
                drop(ev);
                self.reply_ok(&[])
            }
            Ok(ev) => match ev.value.data {
                rookery_engine::value::Data::Raw(bytes) => self.reply_ok(&bytes),
                _ => self.r_failure(&AppError::Internal("serialize() gave no raw vector".into())),
            },
            Err(e) => self.r_failure(&e),
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

    /// Strings are always UTF-8 here; `native` and `utf8` are accepted, `latin1` is not.
    fn set_encoding(&mut self, params: &[Param<'_>]) -> Result<(), End> {
        match params.first().and_then(|p| p.as_str().ok()).as_deref() {
            Some("utf8" | "native") => self.reply_ok(&[]),
            _ => self.reply_err(status::INV_PAR),
        }
    }

    /// Shutting the server down is not a client's business: refused for everyone
    /// (Rserve's answer when shutdown is disabled). Admins stop the service itself.
    fn shutdown(&mut self) -> Result<(), End> {
        self.reply_err(status::DISABLED)
    }

    /// An R failure: Rserve's status (parse status, or 127) for compatibility, and
    /// the message in the log under the connection id.
    fn r_failure(&mut self, e: &AppError) -> Result<(), End> {
        let code = match e {
            AppError::R(f) if f.kind == "parse_error" => status::PARSE_ERROR,
            _ => status::R_ERROR,
        };
        tracing::info!(conn = %self.id, user = ?self.user.as_ref().map(|u| &u.name), error = %e, "QAP1 call failed");
        self.reply_err(code)
    }

    fn audit(&self, route: &str, code: Option<&str>, entry: &SessionEntry) {
        self.state.audit.record(crate::audit::Entry {
            request_id: &self.id,
            user: self.user.as_ref().map(|u| u.name.as_str()),
            route,
            target: Some(entry.id.to_string()),
            code,
            outcome: "qap".into(),
        });
    }

    /// RESP_OK with one DT_SEXP parameter holding `object`. A large object is written
    /// after the headers instead of being copied into one message buffer (results can
    /// be hundreds of MB); a small one goes out in a single write.
    fn reply_sexp(&mut self, object: &[u8]) -> Result<(), End> {
        let mut head = Vec::with_capacity(HEADER_LEN + 8 + object.len().min(SMALL_REPLY));
        let mut param = Vec::with_capacity(8);
        frame::push_item_header(&mut param, dt::SEXP, dt::LARGE, object.len() as u64);
        let total = (param.len() + object.len()) as u64;
        head.extend_from_slice(&Header::new(resp::OK, total).to_bytes());
        head.extend_from_slice(&param);
        if object.len() <= SMALL_REPLY {
            head.extend_from_slice(object);
            self.stream.write_all(&head)?;
        } else {
            self.stream.write_all(&head)?;
            self.stream.write_all(object)?;
        }
        self.stream.flush()?;
        Ok(())
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

fn auth_user(u: crate::store::UserRecord) -> AuthUser {
    AuthUser {
        name: u.name,
        role: u.role,
        grants: u.grants,
        via: TokenKind::Access,
        token_hash: [0; 32],
    }
}

fn decode_value(p: &Param<'_>) -> Result<rookery_engine::Value, QapError> {
    match p.dt {
        dt::STRING => Ok(rookery_engine::Value::strings([p.as_str()?])),
        _ => sexp::decode(p.as_sexp()?),
    }
}

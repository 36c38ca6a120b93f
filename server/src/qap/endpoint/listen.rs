//! The QAP1 listeners: loopback TCP, TLS from the first byte, and a Unix socket whose
//! peers may be logged in by their kernel-verified credentials. With `qap_anonymous`,
//! loopback TCP and Unix-socket peers without a mapped uid are logged in as that
//! (non-admin) user: an opt-in for benchmark clients that cannot log in. Each accepted
//! connection gets its own blocking thread (R calls block).

use std::io;
use std::net::IpAddr;
use std::time::Duration;

use tokio::runtime::Handle;

use std::sync::Arc;

use super::{auth_user, Connection, QapState};
use crate::auth::AuthUser;
use crate::qap::stream::Stream;
use crate::state::AppState;
use crate::store::Role;

/// The user a Unix-socket peer's uid is mapped to (`rookery user map-os-user`).
fn peer_user(stream: &std::os::unix::net::UnixStream, state: &AppState) -> Option<AuthUser> {
    let uid = rustix::net::sockopt::socket_peercred(stream)
        .ok()?
        .uid
        .as_raw();
    let name = state.store.os_user(uid).ok().flatten()?;
    let user = state.store.user(&name).ok().flatten()?;
    tracing::info!(uid, user = %name, "QAP1 peer authenticated by its credentials");
    Some(auth_user(user))
}

/// The anonymous identity (`[qap] anonymous`), checked at start-up: an existing user
/// who is not an admin. Logged as a warning, since it skips the login.
fn check_anonymous(state: &AppState) -> io::Result<()> {
    let Some(name) = &state.config.qap.anonymous else {
        return Ok(());
    };
    let refuse = |why: String| Err(io::Error::new(io::ErrorKind::InvalidInput, why));
    match state.store.user(name) {
        Ok(Some(u)) if u.role == Role::Admin => refuse(format!(
            "[qap] anonymous (--qap-anonymous): `{name}` is an admin; name a low-privilege user"
        )),
        Ok(Some(_)) => {
            tracing::warn!(
                user = %name,
                "QAP1 ANONYMOUS IDENTITY: connections on the loopback QAP1 listener and the \
                 Unix socket are logged in as this user without a password"
            );
            Ok(())
        }
        Ok(None) => refuse(format!(
            "[qap] anonymous (--qap-anonymous): no user `{name}`"
        )),
        Err(e) => refuse(format!("[qap] anonymous (--qap-anonymous): {e}")),
    }
}

/// The anonymous identity for a connection from `peer`: only on loopback, only while
/// the user exists and is not an admin.
fn anonymous_user(state: &AppState, peer: IpAddr) -> Option<AuthUser> {
    let name = state.config.qap.anonymous.as_ref()?;
    if !peer.is_loopback() {
        return None;
    }
    let user = state.store.user(name).ok().flatten()?;
    (user.role != Role::Admin).then(|| auth_user(user))
}

/// The read deadline of an idle connection.
pub(super) fn idle_timeout(state: &AppState) -> Duration {
    Duration::from_secs(state.config.limits.session_idle_secs.max(1))
}

/// Starts the configured QAP1 listeners on the current runtime; returns the bound
/// TCP address (port 0 in the config picks a free one).
pub async fn listen(
    state: AppState,
    qap: Arc<QapState>,
) -> io::Result<Option<std::net::SocketAddr>> {
    check_anonymous(&state)?;
    let mut bound = None;
    if let Some(addr) = state.config.qap.listen {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        bound = Some(listener.local_addr()?);
        tokio::spawn(accept_tcp(listener, state.clone(), qap.clone(), false));
        // Detached sessions resume on a port of the same (loopback) address.
        let resume = tokio::net::TcpListener::bind((addr.ip(), 0)).await?;
        qap.detached.set_port(resume.local_addr()?.port());
        tokio::spawn(accept_resume(resume, state.clone(), qap.clone()));
    }
    if let Some(addr) = state.config.qap.tls {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        tracing::info!(addr = %listener.local_addr()?, "QAP1 over TLS listening");
        tokio::spawn(accept_tcp(listener, state.clone(), qap.clone(), true));
    }
    if let Some(oc) = state.config.qap.ocap.clone() {
        let listener = tokio::net::TcpListener::bind(oc.listen).await?;
        tracing::info!(addr = %listener.local_addr()?, service = %oc.service, "QAP1 OCAP listening");
        tokio::spawn(accept_ocap(
            listener,
            state.clone(),
            qap.clone(),
            oc.service,
        ));
    }
    if let Some(path) = &state.config.qap.unix {
        let _ = std::fs::remove_file(path);
        let listener = tokio::net::UnixListener::bind(path)?;
        std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o666))?;
        tokio::spawn(accept_unix(listener, state.clone(), qap.clone()));
    }
    Ok(bound)
}

async fn accept_tcp(
    listener: tokio::net::TcpListener,
    state: AppState,
    qap: Arc<QapState>,
    tls: bool,
) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "QAP1 accept failed");
                continue;
            }
        };
        let Ok(stream) = blocking_stream(stream.into_std(), &state) else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let stream = match (tls, &qap.tls) {
            (true, Some(config)) => match Stream::tls(stream, config.clone()) {
                Ok(s) => s,
                Err(_) => continue,
            },
            _ => Stream::Tcp(stream),
        };
        // The TLS listener may face the network: never anonymous there.
        spawn_connection(stream, state.clone(), qap.clone(), peer.ip(), !tls);
    }
}

async fn accept_resume(listener: tokio::net::TcpListener, state: AppState, qap: Arc<QapState>) {
    accept_plain(listener, state, qap, |conn| conn.attach()).await;
}

async fn accept_ocap(
    listener: tokio::net::TcpListener,
    state: AppState,
    qap: Arc<QapState>,
    service: String,
) {
    let (name, version) = service.split_once('/').unwrap_or((&service, ""));
    let (name, version) = (name.to_owned(), version.to_owned());
    accept_plain(listener, state, qap, move |conn| {
        conn.serve_ocap(&name, &version)
    })
    .await;
}

/// Accepts plain TCP connections and runs `serve` on each, on its own blocking thread.
async fn accept_plain(
    listener: tokio::net::TcpListener,
    state: AppState,
    qap: Arc<QapState>,
    serve: impl Fn(Connection) + Clone + Send + 'static,
) {
    loop {
        let Ok((stream, peer)) = listener.accept().await else {
            continue;
        };
        let Ok(stream) = blocking_stream(stream.into_std(), &state) else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let runtime = Handle::current();
        let (state, qap, conn_runtime, serve) =
            (state.clone(), qap.clone(), runtime.clone(), serve.clone());
        runtime.spawn_blocking(move || {
            serve(Connection::new(
                Stream::Tcp(stream),
                state,
                qap,
                conn_runtime,
                peer.ip(),
            ));
        });
    }
}

async fn accept_unix(listener: tokio::net::UnixListener, state: AppState, qap: Arc<QapState>) {
    loop {
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                tracing::warn!(error = %e, "QAP1 accept failed");
                continue;
            }
        };
        let Ok(stream) = blocking_stream(stream.into_std(), &state) else {
            continue;
        };
        let runtime = Handle::current();
        let (state, qap, conn_runtime) = (state.clone(), qap.clone(), runtime.clone());
        runtime.spawn_blocking(move || {
            // Store look-ups block: they run here, not on the accept loop.
            let loopback = IpAddr::from([127, 0, 0, 1]);
            let preauth = peer_user(&stream, &state).or_else(|| anonymous_user(&state, loopback));
            let stream = Stream::Unix(stream);
            let conn = Connection::new(stream, state, qap, conn_runtime, loopback);
            match preauth {
                Some(user) => conn.preauthenticated(user).serve(),
                None => conn.serve(),
            }
        });
    }
}

/// A socket in blocking mode with the read deadline on reads until a login (the
/// connection then sets its own per message) and on each write, so a client that
/// stops reading its replies holds the connection no longer than that either.
fn blocking_stream<S: BlockingSocket>(stream: io::Result<S>, state: &AppState) -> io::Result<S> {
    let stream = stream?;
    stream.set_nonblocking(false)?;
    let deadline = state.config.limits.read_timeout();
    stream.set_read_timeout(Some(deadline))?;
    stream.set_write_timeout(Some(deadline))?;
    Ok(stream)
}

/// Serves a TCP connection on its own blocking thread; with `anonymous`, a loopback
/// peer is logged in as the anonymous identity, when one is configured.
fn spawn_connection(
    stream: Stream,
    state: AppState,
    qap: Arc<QapState>,
    peer: IpAddr,
    anonymous: bool,
) {
    let runtime = Handle::current();
    let conn_runtime = runtime.clone();
    runtime.spawn_blocking(move || {
        let preauth = anonymous.then(|| anonymous_user(&state, peer)).flatten();
        let conn = Connection::new(stream, state, qap, conn_runtime, peer);
        match preauth {
            Some(user) => conn.preauthenticated(user).serve(),
            None => conn.serve(),
        }
    });
}

/// The two socket kinds, for [`blocking_stream`].
trait BlockingSocket {
    fn set_nonblocking(&self, on: bool) -> io::Result<()>;
    fn set_read_timeout(&self, t: Option<Duration>) -> io::Result<()>;
    fn set_write_timeout(&self, t: Option<Duration>) -> io::Result<()>;
}

impl BlockingSocket for std::net::TcpStream {
    fn set_nonblocking(&self, on: bool) -> io::Result<()> {
        std::net::TcpStream::set_nonblocking(self, on)
    }
    fn set_read_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        std::net::TcpStream::set_read_timeout(self, t)
    }
    fn set_write_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        std::net::TcpStream::set_write_timeout(self, t)
    }
}

impl BlockingSocket for std::os::unix::net::UnixStream {
    fn set_nonblocking(&self, on: bool) -> io::Result<()> {
        std::os::unix::net::UnixStream::set_nonblocking(self, on)
    }
    fn set_read_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        std::os::unix::net::UnixStream::set_read_timeout(self, t)
    }
    fn set_write_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        std::os::unix::net::UnixStream::set_write_timeout(self, t)
    }
}

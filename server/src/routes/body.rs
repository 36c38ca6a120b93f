//! Request bodies and request context: JSON with the parser's message on error, raw
//! bytes with the size limit reported as 413, large bodies decoded as they arrive
//! ([`decode_arriving`]) or written to a file as they arrive ([`into_file`]), the
//! request id, the client address. Every way of reading a body keeps the same
//! limits: `limits.max_body_bytes` (413), `limits.read_timeout_secs` (408) and the
//! caller's bytes in flight (429).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use axum::body::Bytes;
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap};
use bytes::BytesMut;
use serde::de::DeserializeOwned;

use crate::auth::AuthUser;
use crate::error::AppError;
use crate::inflight::Reservation;
use crate::state::AppState;

/// The raw body, with a clear 413 beyond the configured limit (at once when the
/// declared `Content-Length` is already beyond it: see [`refuse_oversized`]) and a
/// 408 when all of it has not arrived within `limits.read_timeout_secs`. While it
/// arrives it counts against its caller's bytes in flight
/// (`limits.max_inflight_bytes_per_user`, 429 beyond: see [`crate::inflight`]).
#[derive(Debug)]
pub struct RawBody(pub Bytes);

impl FromRequest<AppState> for RawBody {
    type Rejection = AppError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, AppError> {
        let limit = state.config.limits.max_body_bytes;
        // Counted against the caller's bytes in flight while it arrives (the
        // AuthUser extractor, run before, leaves the caller in the extensions).
        let mut held = req
            .extensions()
            .get::<AuthUser>()
            .map(|u| state.inflight.reservation(&u.name));
        let read = gather(req.into_body(), limit, held.as_mut());
        within_read_deadline(state, read).await.map(RawBody)
    }
}

/// The whole body, read as [`RawBody`] reads it, for a handler that decides only
/// after its own checks how to read the body.
pub async fn read_whole(
    state: &AppState,
    user: &str,
    body: axum::body::Body,
) -> Result<Bytes, AppError> {
    let mut held = state.inflight.reservation(user);
    let read = gather(body, state.config.limits.max_body_bytes, Some(&mut held));
    within_read_deadline(state, read).await
}

async fn gather(
    mut body: axum::body::Body,
    limit: usize,
    mut held: Option<&mut Reservation>,
) -> Result<Bytes, AppError> {
    let mut whole = Gather::default();
    while let Some(chunk) =
        next_chunk(&mut body, limit, held.as_deref_mut(), &mut whole.len).await?
    {
        whole.push(chunk);
    }
    Ok(whole.into_bytes())
}

/// `read`, or 408 when it takes longer than `limits.read_timeout_secs`.
async fn within_read_deadline<T>(
    state: &AppState,
    read: impl std::future::Future<Output = Result<T, AppError>>,
) -> Result<T, AppError> {
    let deadline = state.config.limits.read_timeout();
    match tokio::time::timeout(deadline, read).await {
        Err(_) => Err(AppError::RequestTimeout(deadline)),
        Ok(read) => read,
    }
}

/// A body's chunks gathered into one buffer; a body of one chunk (most) is kept
/// as it came, without a copy.
#[derive(Default)]
struct Gather {
    first: Option<Bytes>,
    rest: BytesMut,
    /// Bytes gathered (and so far read: [`next_chunk`] counts here).
    len: usize,
}

impl Gather {
    fn push(&mut self, chunk: Bytes) {
        match self.first.take() {
            None if self.rest.is_empty() => self.first = Some(chunk),
            None => self.rest.extend_from_slice(&chunk),
            Some(f) => {
                self.rest.extend_from_slice(&f);
                self.rest.extend_from_slice(&chunk);
            }
        }
    }

    fn into_bytes(self) -> Bytes {
        self.first.unwrap_or_else(|| self.rest.freeze())
    }
}

/// Bodies up to this size are read whole, then decoded; past it, a JSON table is
/// decoded while the rest still arrives ([`decode_arriving`]).
pub const DECODE_WHOLE_UP_TO: usize = 1 << 20;

/// What [`decode_arriving`] hands its decoder: the whole body (small ones), or a
/// reader of the body as it arrives (large ones).
pub enum Arriving<'a> {
    Whole(&'a [u8]),
    Reader(&'a mut (dyn std::io::Read + Send)),
}

/// Reads a body with [`RawBody`]'s limits (413, 408, the caller's bytes in flight
/// counted as they arrive) and gives it to `decode`: whole, on this thread, when
/// it is small (a scoring call of a few rows pays no thread hop), or, once more
/// than [`DECODE_WHOLE_UP_TO`] bytes have come, as a reader on a blocking thread,
/// fed a chunk at a time while the rest arrives. Then the text is never whole in
/// the server's memory, only what `decode` builds from it. If the body breaks a
/// limit midway, that is the answer, whatever `decode` made of the part it saw.
pub async fn decode_arriving<T, F>(
    state: &AppState,
    user: &str,
    body: axum::body::Body,
    decode: F,
) -> Result<T, AppError>
where
    T: Send + 'static,
    F: FnOnce(Arriving<'_>) -> Result<T, AppError> + Send + 'static,
{
    let held = state.inflight.reservation(user);
    let read = feed(body, state.config.limits.max_body_bytes, held, decode);
    within_read_deadline(state, read).await
}

async fn feed<T, F>(
    mut body: axum::body::Body,
    limit: usize,
    mut held: Reservation,
    decode: F,
) -> Result<T, AppError>
where
    T: Send + 'static,
    F: FnOnce(Arriving<'_>) -> Result<T, AppError> + Send + 'static,
{
    // Small bodies: whole.
    let mut head = Gather::default();
    while head.len <= DECODE_WHOLE_UP_TO {
        match next_chunk(&mut body, limit, Some(&mut held), &mut head.len).await? {
            Some(chunk) => head.push(chunk),
            None => return decode(Arriving::Whole(&head.into_bytes())),
        }
    }
    let mut len = head.len;
    // Large ones: decoded while they arrive.
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(8);
    let decoder = tokio::task::spawn_blocking(move || {
        let mut input = ChannelReader {
            rx,
            at: Bytes::new(),
        };
        decode(Arriving::Reader(&mut input))
    });
    let mut chunk = Some(head.into_bytes());
    let fed = loop {
        let Some(c) = chunk.take() else {
            break Ok(());
        };
        if tx.send(Ok(c)).await.is_err() {
            // The decoder stopped early (bad JSON): its error is the answer.
            break Ok(());
        }
        match next_chunk(&mut body, limit, Some(&mut held), &mut len).await {
            Ok(c) => chunk = c,
            Err(e) => {
                let _ = tx.send(Err(std::io::Error::other(e.to_string()))).await;
                break Err(e);
            }
        }
    };
    drop(tx);
    let decoded = decoder
        .await
        .map_err(|e| AppError::Internal(format!("the body's decoder failed: {e}")))?;
    fed?;
    decoded
}

/// A blocking reader of the chunks [`feed`] sends.
struct ChannelReader {
    rx: tokio::sync::mpsc::Receiver<std::io::Result<Bytes>>,
    at: Bytes,
}

impl std::io::Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.at.is_empty() {
            match self.rx.blocking_recv() {
                None => return Ok(0),
                Some(chunk) => self.at = chunk?,
            }
        }
        let n = buf.len().min(self.at.len());
        buf[..n].copy_from_slice(&self.at[..n]);
        bytes::Buf::advance(&mut self.at, n);
        Ok(n)
    }
}

/// The body's next chunk of data, `None` at its end: never past `limit` bytes in
/// all (413; `len` counts them), each chunk taken from the caller's bytes in flight
/// first (429).
async fn next_chunk(
    body: &mut axum::body::Body,
    limit: usize,
    held: Option<&mut Reservation>,
    len: &mut usize,
) -> Result<Option<Bytes>, AppError> {
    use http_body_util::BodyExt;
    while let Some(frame) = body.frame().await {
        let frame = frame
            .map_err(|e| AppError::BadRequest(format!("cannot read the request body: {e}")))?;
        let Ok(chunk) = frame.into_data() else {
            continue;
        };
        if chunk.len() > limit - *len {
            return Err(AppError::TooLarge(limit));
        }
        if let Some(r) = held {
            r.grow(chunk.len() as u64).map_err(AppError::from)?;
        }
        *len += chunk.len();
        return Ok(Some(chunk));
    }
    Ok(None)
}

/// Bytes of a body kept in memory before they are written to its file.
const FILE_PIECE: usize = 1 << 20;

/// Writes a body to the file `create` opens, a piece of at most about [`FILE_PIECE`]
/// bytes at a time as it arrives, so an upload holds a piece of memory, not the
/// whole file. The limits are those of [`RawBody`]: `limit` bytes (413), all of it
/// within `limits.read_timeout_secs` (408), and the piece in memory counted in the
/// caller's bytes in flight (429). The file takes its place only when the whole body
/// has arrived; a refused or broken upload leaves the old file, if any, untouched.
pub async fn into_file<F>(
    state: &AppState,
    user: &str,
    body: axum::body::Body,
    create: F,
) -> Result<(), AppError>
where
    F: FnOnce() -> Result<crate::files::NewFile, crate::files::FileError> + Send + 'static,
{
    let write = write_pieces(
        state,
        user,
        body,
        state.config.limits.max_body_bytes,
        create,
    );
    within_read_deadline(state, write).await
}

async fn write_pieces<F>(
    state: &AppState,
    user: &str,
    mut body: axum::body::Body,
    limit: usize,
    create: F,
) -> Result<(), AppError>
where
    F: FnOnce() -> Result<crate::files::NewFile, crate::files::FileError> + Send + 'static,
{
    use crate::engine::blocking;
    let mut file = blocking(create).await??;
    let mut piece = BytesMut::new();
    let mut held = state.inflight.reservation(user);
    let mut len = 0usize;
    loop {
        let chunk = next_chunk(&mut body, limit, Some(&mut held), &mut len).await?;
        let done = chunk.is_none();
        if let Some(chunk) = chunk {
            piece.extend_from_slice(&chunk);
        }
        if piece.len() >= FILE_PIECE || (done && !piece.is_empty()) {
            let out = piece.split().freeze();
            file = blocking(move || file.write_all(&out).map(|()| file)).await??;
            // The piece is on disk: its bytes are no longer in flight.
            held = state.inflight.reservation(user);
        }
        if done {
            return Ok(blocking(move || file.commit()).await??);
        }
    }
}

/// Middleware: a request whose `Content-Length` is beyond `limits.max_body_bytes`
/// is answered 413 before any of its body is read, whatever the route.
pub async fn refuse_oversized(
    axum::extract::State(limit): axum::extract::State<usize>,
    req: Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    match declared {
        Some(len) if len > limit as u64 => AppError::TooLarge(limit).into_response(),
        _ => next.run(req).await,
    }
}

/// A JSON body; malformed JSON is a 400 carrying serde_json's message (with line and
/// column). The content type is not required to be `application/json`.
#[derive(Debug)]
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for JsonBody<T> {
    type Rejection = AppError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, AppError> {
        let RawBody(bytes) = RawBody::from_request(req, state).await?;
        parse_json(&bytes).map(JsonBody)
    }
}

/// Parses a JSON document, naming what is wrong and where.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, AppError> {
    serde_json::from_slice(bytes).map_err(|e| AppError::BadRequest(format!("invalid JSON: {e}")))
}

/// The request id set by the request-id layer (`x-request-id`).
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

impl<S: Send + Sync> FromRequestParts<S> for RequestId {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let id = parts
            .headers
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-");
        Ok(RequestId(id.to_owned()))
    }
}

/// The client's address (loopback when the server runs without connection info, as
/// in tests driving the router directly).
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr(pub IpAddr);

impl FromRequestParts<AppState> for ClientAddr {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map_or(IpAddr::V4(Ipv4Addr::LOCALHOST), |c| c.0.ip());
        Ok(ClientAddr(client_addr(
            peer,
            &parts.headers,
            &state.config.trusted_proxies,
        )))
    }
}

/// The client's address: the peer's, unless the peer is a trusted proxy (a load
/// balancer in front of the nodes); then the nearest address in `X-Forwarded-For`
/// that is not a trusted proxy itself. A header from anyone else is ignored, so a
/// client cannot pick the address its failed logins count against.
pub fn client_addr(peer: IpAddr, headers: &HeaderMap, trusted: &[IpAddr]) -> IpAddr {
    let trusted_peer = |a: &IpAddr| trusted.contains(&a.to_canonical());
    if !trusted_peer(&peer) {
        return peer;
    }
    let forwarded = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|a| a.trim().parse::<IpAddr>().ok())
        .collect::<Vec<_>>();
    forwarded
        .into_iter()
        .rev()
        .find(|a| !trusted_peer(a))
        .unwrap_or(peer)
}

/// The media type of the body, without parameters, lower-cased.
pub fn content_type(headers: &HeaderMap) -> String {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwarded_addresses_count_only_from_trusted_proxies() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let mut headers = HeaderMap::new();
        headers.insert("x-forwarded-for", "6.6.6.6, 10.1.2.3".parse().unwrap());
        let proxy = [ip("127.0.0.1")];
        assert_eq!(
            client_addr(ip("127.0.0.1"), &headers, &proxy),
            ip("10.1.2.3")
        );
        assert_eq!(
            client_addr(ip("192.0.2.9"), &headers, &proxy),
            ip("192.0.2.9"),
            "a header from an untrusted peer is ignored"
        );
        assert_eq!(client_addr(ip("127.0.0.1"), &headers, &[]), ip("127.0.0.1"));
        // Proxies in the chain are skipped; junk or no header leaves the peer.
        let two = [ip("127.0.0.1"), ip("10.1.2.3")];
        assert_eq!(client_addr(ip("127.0.0.1"), &headers, &two), ip("6.6.6.6"));
        headers.insert("x-forwarded-for", "not an address".parse().unwrap());
        assert_eq!(
            client_addr(ip("127.0.0.1"), &headers, &proxy),
            ip("127.0.0.1")
        );
        assert_eq!(
            client_addr(ip("::ffff:127.0.0.1"), &HeaderMap::new(), &proxy),
            ip("::ffff:127.0.0.1")
        );
    }
}

//! Streamed JSON answers: a large value's JSON text goes to the socket as it is
//! encoded, in chunks of [`CHUNK`] bytes (chunked transfer encoding), so an answer
//! in flight holds the value and a few chunks, never the whole text (which is two
//! to three times the value for numbers). The encoder runs on a blocking thread and
//! hands chunks over a bounded channel: a slow client slows the encoder instead of
//! filling memory, and a client that goes away stops it. Small answers (the common
//! case: a scoring call for a few rows) are built in memory and sent with a length,
//! which costs less than a thread hop. Files ([`file`]) go out the same way, read a
//! chunk at a time.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::body::{Body, Bytes};
use axum::http::{header, HeaderValue};
use axum::response::Response;
use tokio::sync::mpsc;

/// Bytes per chunk.
const CHUNK: usize = 64 << 10;
/// Chunks encoded ahead of the socket.
const AHEAD: usize = 4;
/// Answers whose value takes more than this (as it left the worker) are streamed.
const STREAM_ABOVE: usize = 1 << 20;

/// How long a large answer waits for room in the server's budget of bytes in
/// flight before it is refused (503 `memory_busy`).
const BUDGET_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// A `200 application/json` answer whose body `write` produces from a value of
/// `size` bytes (as it left the worker). A large one is streamed, and holds `size`
/// of the caller's and the server's budget of bytes in flight until it is sent
/// (waiting up to a second for room, then refused); a small one is built in memory.
pub(crate) async fn json<F>(
    inflight: &std::sync::Arc<crate::inflight::InFlight>,
    user: &str,
    size: usize,
    write: F,
) -> Result<Response, crate::error::AppError>
where
    F: FnOnce(&mut dyn io::Write) -> io::Result<()> + Send + 'static,
{
    let streamed = size > STREAM_ABOVE;
    let body = if streamed {
        let mut held = inflight.reservation(user);
        held.grow_within(size as u64, BUDGET_WAIT).await?;
        let (tx, rx) = mpsc::channel(AHEAD);
        tokio::task::spawn_blocking(move || {
            // Given back once the last chunk is handed to the socket's side.
            let _held = held;
            let mut out = ChunkWriter {
                buf: Vec::with_capacity(CHUNK),
                tx,
            };
            let done = write(&mut out).and_then(|()| out.send());
            if let Err(e) = done {
                if e.kind() != io::ErrorKind::BrokenPipe {
                    tracing::warn!(error = %e, "a streamed answer failed midway");
                    let _ = out.tx.blocking_send(Err(e));
                }
            }
        });
        Body::new(Chunks { rx, len: None })
    } else {
        let mut out = Vec::new();
        // Writing to a Vec fails only if the value cannot be written at all.
        if let Err(e) = write(&mut out) {
            tracing::warn!(error = %e, "an answer could not be written");
        }
        Body::from(out)
    };
    let mut response = Response::new(body);
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Ok(response)
}

/// A `200 application/octet-stream` answer with the file's `len` bytes, read on a
/// blocking thread a chunk at a time, at most [`AHEAD`] chunks ahead of the socket.
/// A file that changes length while it is sent ends the answer early (the client
/// sees a short body, not a wrong one).
pub(crate) fn file(mut file: std::fs::File, len: u64) -> Response {
    use std::io::Read;
    let (tx, rx) = mpsc::channel(AHEAD);
    tokio::task::spawn_blocking(move || {
        let mut left = len;
        while left > 0 {
            let mut buf = vec![0; CHUNK.min(usize::try_from(left).unwrap_or(CHUNK))];
            let chunk = match file.read(&mut buf) {
                Ok(0) => Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the file got shorter while it was sent",
                )),
                Ok(n) => {
                    buf.truncate(n);
                    left -= n as u64;
                    Ok(Bytes::from(buf))
                }
                Err(e) => Err(e),
            };
            let failed = chunk.is_err();
            if tx.blocking_send(chunk).is_err() || failed {
                return;
            }
        }
    });
    let mut response = Response::new(Body::new(Chunks { rx, len: Some(len) }));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    response
}

/// Collects the encoder's output into chunks and sends each when full.
struct ChunkWriter {
    buf: Vec<u8>,
    tx: mpsc::Sender<io::Result<Bytes>>,
}

impl ChunkWriter {
    fn send(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK));
        self.tx
            .blocking_send(Ok(Bytes::from(chunk)))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the client went away"))
    }
}

impl io::Write for ChunkWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= CHUNK {
            self.send()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The body: the chunks as they come, until the encoder is done; `len` when the
/// whole length is known before the first chunk (then it is sent as
/// `Content-Length`, not chunked).
struct Chunks {
    rx: mpsc::Receiver<io::Result<Bytes>>,
    len: Option<u64>,
}

impl http_body::Body for Chunks {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, io::Error>>> {
        self.rx
            .poll_recv(cx)
            .map(|chunk| chunk.map(|c| c.map(http_body::Frame::data)))
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.len.map_or_else(
            http_body::SizeHint::default,
            http_body::SizeHint::with_exact,
        )
    }
}

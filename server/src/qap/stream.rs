//! The byte stream under a QAP1 connection: TCP, a Unix socket, or TLS over TCP
//! (from the first byte on the TLS listener, or after `CMD_switch "TLS"`). Owns the
//! switch and the TLS set-up (the `[tls]` certificate, rustls with ring); the
//! connection logic sees only `Read + Write`.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ServerConfig, ServerConnection, StreamOwned};

/// One connection's transport.
#[derive(Debug)]
pub enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
    Tls(Box<StreamOwned<ServerConnection, TcpStream>>),
    /// Only while switching.
    Gone,
}

impl Stream {
    /// Wraps a TCP stream in TLS (the handshake happens on the first read or write).
    pub fn tls(tcp: TcpStream, config: Arc<ServerConfig>) -> io::Result<Stream> {
        let conn = ServerConnection::new(config).map_err(io::Error::other)?;
        Ok(Stream::Tls(Box::new(StreamOwned::new(conn, tcp))))
    }

    /// Switches a plain TCP stream to TLS (`CMD_switch "TLS"`); anything else stays.
    pub fn upgrade(&mut self, config: Arc<ServerConfig>) -> io::Result<bool> {
        match std::mem::replace(self, Stream::Gone) {
            Stream::Tcp(tcp) => {
                *self = Stream::tls(tcp, config)?;
                Ok(true)
            }
            other => {
                *self = other;
                Ok(false)
            }
        }
    }

    /// The socket, for a plain (TCP or Unix) stream: what QAP1 direct mode hands to
    /// a worker.
    pub fn plain_fd(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        use std::os::fd::AsFd;
        match self {
            Stream::Tcp(s) => Some(s.as_fd()),
            Stream::Unix(s) => Some(s.as_fd()),
            Stream::Tls(_) | Stream::Gone => None,
        }
    }

    pub fn is_tls(&self) -> bool {
        matches!(self, Stream::Tls(_))
    }

    /// Sets the socket's receive timeout (for TLS, the TCP socket's under it).
    pub fn set_read_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.set_read_timeout(t),
            Stream::Unix(s) => s.set_read_timeout(t),
            Stream::Tls(s) => s.sock.set_read_timeout(t),
            Stream::Gone => Ok(()),
        }
    }

    /// Fills `buf`, waiting up to the receive timeout for each read: the first byte
    /// of a message. `UnexpectedEof` when the client has closed.
    pub fn read_first(&mut self, buf: &mut [u8]) -> io::Result<()> {
        self.read_exact(buf).map_err(timed_out)
    }

    /// Fills `buf` by `deadline`, however the bytes trickle in.
    pub fn read_by(&mut self, buf: &mut [u8], deadline: Instant) -> io::Result<()> {
        let mut at = 0;
        while at < buf.len() {
            self.set_read_timeout(Some(time_left(deadline)?))?;
            match self.read(&mut buf[at..]) {
                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(n) => at += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(timed_out(e)),
            }
        }
        Ok(())
    }

    /// Appends `len` bytes to `buf` by `deadline`. The buffer grows with the bytes
    /// that arrive, a step at a time, never by what the header declared: a client
    /// that announces a large message and sends little makes the server reserve little.
    pub fn read_growing(
        &mut self,
        buf: &mut Vec<u8>,
        len: usize,
        deadline: Instant,
    ) -> io::Result<()> {
        const STEP: usize = 64 << 10;
        let want = buf.len() + len;
        while buf.len() < want {
            self.set_read_timeout(Some(time_left(deadline)?))?;
            let start = buf.len();
            buf.resize(start + (want - start).min(STEP), 0);
            let read = self.read(&mut buf[start..]);
            buf.truncate(start + *read.as_ref().unwrap_or(&0));
            match read {
                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(timed_out(e)),
            }
        }
        Ok(())
    }

    fn inner(&mut self) -> io::Result<&mut dyn ReadWrite> {
        match self {
            Stream::Tcp(s) => Ok(s),
            Stream::Unix(s) => Ok(s),
            Stream::Tls(s) => Ok(s.as_mut()),
            Stream::Gone => Err(io::Error::from(io::ErrorKind::NotConnected)),
        }
    }
}

/// What is left until `deadline`; `TimedOut` once it has passed.
fn time_left(deadline: Instant) -> io::Result<Duration> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(io::ErrorKind::TimedOut.into());
    }
    Ok(left)
}

/// A receive timeout reads as `WouldBlock` on Linux; call it what it is.
fn timed_out(e: io::Error) -> io::Error {
    match e.kind() {
        io::ErrorKind::WouldBlock => io::ErrorKind::TimedOut.into(),
        _ => e,
    }
}

trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner()?.read(buf)
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.inner()?.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner()?.flush()
    }
}

/// A rustls server configuration from PEM certificate chain and key files.
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, String> {
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("{}: {e}", cert.display()))?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| format!("{}: {e}", key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .and_then(|b| b.with_no_client_auth().with_single_cert(chain, key))
        .map(Arc::new)
        .map_err(|e| format!("TLS: {e}"))
}

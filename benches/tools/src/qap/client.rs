//! The blocking QAP1 client of `rookery bench qap`: where the server is, the ID string
//! and login, and one connection sending eval / setSEXP and reading the answers.

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;

use anyhow::{anyhow, bail, ensure, Context};
use rookery_engine::value::Value;
use rookery_qap::frame::{self, cmd, resp, status, Header, HEADER_LEN};
use rookery_qap::sexp;

use super::{QapArgs, IO_TIMEOUT, MAX_RESPONSE, PASSWORD_ENV};

/// Where the server is and who to log in as.
#[derive(Debug)]
pub(super) struct Target {
    endpoint: Endpoint,
    login: Option<Login>,
}

#[derive(Debug, Clone)]
pub(super) enum Endpoint {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

#[derive(Debug, Clone)]
pub(super) struct Login {
    user: String,
    password: String,
}

impl Target {
    pub(super) fn from_args(args: &QapArgs) -> anyhow::Result<Target> {
        let endpoint = match (&args.target, &args.unix) {
            (Some(addr), _) => Endpoint::Tcp(resolve(addr)?),
            (None, Some(path)) => Endpoint::Unix(path.clone()),
            (None, None) => bail!("give --target HOST:PORT or --unix PATH"),
        };
        let login = args.user.clone().map(|user| Login {
            user,
            password: std::env::var(args.password_env.unwrap_or(PASSWORD_ENV)).unwrap_or_default(),
        });
        Ok(Target { endpoint, login })
    }

    /// A connection that has read the ID string and logged in when asked to.
    pub(super) fn open(&self) -> anyhow::Result<Conn> {
        let stream = self
            .endpoint
            .connect()
            .with_context(|| format!("cannot connect to {}", self.endpoint))?;
        let mut conn = Conn {
            stream,
            buf: Vec::new(),
        };
        let id = conn
            .read_id()
            .with_context(|| format!("{}", self.endpoint))?;
        conn.authenticate(&id, self.login.as_ref())?;
        Ok(conn)
    }
}

pub(super) fn resolve(addr: &str) -> anyhow::Result<SocketAddr> {
    let mut addrs = addr
        .to_socket_addrs()
        .with_context(|| format!("bad --target {addr:?} (want HOST:PORT)"))?;
    addrs
        .next()
        .with_context(|| format!("{addr} has no address"))
}

impl Endpoint {
    pub(super) fn connect(&self) -> io::Result<Stream> {
        match self {
            Endpoint::Tcp(addr) => {
                let s = TcpStream::connect_timeout(addr, IO_TIMEOUT)?;
                s.set_nodelay(true)?;
                s.set_read_timeout(Some(IO_TIMEOUT))?;
                s.set_write_timeout(Some(IO_TIMEOUT))?;
                Ok(Stream::Tcp(s))
            }
            Endpoint::Unix(path) => {
                let s = UnixStream::connect(path)?;
                s.set_read_timeout(Some(IO_TIMEOUT))?;
                s.set_write_timeout(Some(IO_TIMEOUT))?;
                Ok(Stream::Unix(s))
            }
        }
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Tcp(addr) => write!(f, "{addr}"),
            Endpoint::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

/// A connected socket of either kind.
#[derive(Debug)]
pub(super) enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(buf),
            Stream::Unix(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write(buf),
            Stream::Unix(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.flush(),
            Stream::Unix(s) => s.flush(),
        }
    }
}

/// The login a server's ID string asks for (qap1.md §2.1, §8).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Auth {
    None,
    Plaintext,
    /// Only unix-crypt (`ARuc`) is offered, which this client does not speak.
    CryptOnly,
}

pub(super) fn auth_of(id: &[u8; 32]) -> Auth {
    let mut words = id[12..].chunks_exact(4);
    if words.clone().any(|w| w == b"ARpt") {
        Auth::Plaintext
    } else if words.any(|w| w.starts_with(b"AR")) {
        Auth::CryptOnly
    } else {
        Auth::None
    }
}

/// Checks the first bytes a server sent: a classic QAP1 ID string, version 0103.
pub(super) fn check_id(id: &[u8]) -> anyhow::Result<()> {
    ensure!(
        !id.starts_with(b"RsOC"),
        "the server is in OCAP mode (no ID string); only classic QAP1 is supported"
    );
    let text = String::from_utf8_lossy(id);
    let is_qap = id.len() == 32 && id.starts_with(b"Rsrv") && &id[8..12] == b"QAP1";
    ensure!(
        is_qap,
        "not a QAP1 server: expected a 32-byte ID string \"Rsrv0103QAP1...\", got {} bytes {text:?}",
        id.len()
    );
    ensure!(
        &id[4..8] == b"0103",
        "unsupported QAP1 version in ID string {text:?} (need 0103)"
    );
    Ok(())
}

/// Requests larger than this go out as a header write and a payload write.
const LARGE_REQUEST: usize = 64 << 10;

/// One open QAP1 connection.
#[derive(Debug)]
pub(super) struct Conn {
    stream: Stream,
    /// The last payload's buffer, reused so a large answer does not fault in fresh
    /// pages each time (what any tuned client does; Rserve's and Rookery's figures
    /// both benefit).
    buf: Vec<u8>,
}

impl Conn {
    /// Reads up to 32 bytes (fewer if the peer closes) and checks them.
    pub(super) fn read_id(&mut self) -> anyhow::Result<[u8; 32]> {
        let mut id = [0; 32];
        let mut got = 0;
        while got < id.len() {
            match self.stream.read(&mut id[got..]) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(read_error(&e, "the ID string")),
            }
        }
        check_id(&id[..got])?;
        Ok(id)
    }

    pub(super) fn authenticate(
        &mut self,
        id: &[u8; 32],
        login: Option<&Login>,
    ) -> anyhow::Result<()> {
        let text = String::from_utf8_lossy(id);
        match (auth_of(id), login) {
            (Auth::None, _) => Ok(()),
            (Auth::Plaintext, Some(login)) => self.login(login),
            (Auth::Plaintext, None) => bail!(
                "the server requires authentication (ID string {text:?}): pass --user NAME \
                 and the password in {PASSWORD_ENV}"
            ),
            (Auth::CryptOnly, _) => bail!(
                "the server requires authentication but offers no plaintext login \
                 (ID string {text:?}); only ARpt is supported (Rserve: `plaintext enable`)"
            ),
        }
    }

    pub(super) fn login(&mut self, login: &Login) -> anyhow::Result<()> {
        let mut p = Vec::new();
        let text = format!("{}\n{}", login.user, login.password);
        frame::push_string_param(&mut p, text.as_bytes());
        self.request(cmd::LOGIN, &p)
            .with_context(|| format!("CMD_login as {:?}", login.user))?;
        Ok(())
    }

    /// Evaluates `1+1` and checks the answer is the double 2.
    pub(super) fn eval_1p1(&mut self) -> anyhow::Result<()> {
        let v = self.eval("1+1")?;
        ensure!(
            v.as_doubles() == Some(&[2.0][..]),
            "`1+1` gave {}",
            describe(&v)
        );
        Ok(())
    }

    /// CMD_eval of `code`: the one DT_SEXP of the answer, decoded.
    pub(super) fn eval(&mut self, code: &str) -> anyhow::Result<Value> {
        let mut p = Vec::new();
        frame::push_string_param(&mut p, code.as_bytes());
        let step = || format!("CMD_eval `{code}`");
        let payload = self.request(cmd::EVAL, &p).with_context(step)?;
        let value = decode_value(&payload).with_context(step);
        self.buf = payload;
        value
    }

    /// CMD_voidEval of `code`.
    pub(super) fn void_eval(&mut self, code: &str) -> anyhow::Result<()> {
        let mut p = Vec::new();
        frame::push_string_param(&mut p, code.as_bytes());
        self.request(cmd::VOID_EVAL, &p)
            .with_context(|| format!("CMD_voidEval `{code}`"))?;
        Ok(())
    }

    /// Sends one request and returns the payload of its RESP_OK answer, skipping OOB
    /// sends (which need no reply) that arrive first.
    pub(super) fn request(&mut self, command: u32, payload: &[u8]) -> anyhow::Result<Vec<u8>> {
        let sent = if payload.len() <= LARGE_REQUEST {
            self.stream
                .write_all(&frame::encode_message(command, 0, payload))
        } else {
            // The header, then the payload where it is: no copy of a large request.
            let head = Header::new(command, payload.len() as u64).to_bytes();
            self.stream
                .write_all(&head)
                .and_then(|()| self.stream.write_all(payload))
        };
        sent.map_err(|e| anyhow!("sending the request: {e}"))?;
        loop {
            let (head, body) = self.read_message()?;
            if head.cmd & resp::CMD_OOB == 0 {
                return check_ok(head.cmd, body);
            }
            ensure!(
                head.cmd & !0xfff == resp::OOB_SEND,
                "the server sent an OOB message 0x{:08x} that needs a reply (unsupported)",
                head.cmd
            );
        }
    }

    pub(super) fn read_message(&mut self) -> anyhow::Result<(Header, Vec<u8>)> {
        let mut head = [0; HEADER_LEN];
        self.read_full(&mut head, "the response header")?;
        let head = Header::try_from_bytes(&head, MAX_RESPONSE)
            .map_err(|e| anyhow!("bad response header: {e}"))?;
        let mut body = std::mem::take(&mut self.buf);
        body.clear();
        body.resize(usize::try_from(head.len)?, 0);
        self.read_full(&mut body, "the response payload")?;
        Ok((head, body))
    }

    pub(super) fn read_full(&mut self, buf: &mut [u8], what: &str) -> anyhow::Result<()> {
        self.stream
            .read_exact(buf)
            .map_err(|e| read_error(&e, what))
    }
}

/// A read failure in words: closed, timed out, or the OS's reason.
pub(super) fn read_error(e: &io::Error, what: &str) -> anyhow::Error {
    match e.kind() {
        io::ErrorKind::UnexpectedEof => anyhow!("the server closed the connection before {what}"),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => {
            anyhow!(
                "timed out after {} s waiting for {what}",
                IO_TIMEOUT.as_secs()
            )
        }
        _ => anyhow!("reading {what}: {e}"),
    }
}

/// The payload of RESP_OK, or an error naming the ERR status.
pub(super) fn check_ok(word: u32, payload: Vec<u8>) -> anyhow::Result<Vec<u8>> {
    if word == resp::OK {
        return Ok(payload);
    }
    ensure!(
        word & 0x00ff_ffff == resp::ERR,
        "unexpected response word 0x{word:08x}"
    );
    let code = frame::status_of(word);
    bail!(
        "the server answered ERR status 0x{code:02x} ({})",
        status_name(code)
    )
}

pub(super) fn status_name(code: u8) -> &'static str {
    match code {
        status::PARSE_INCOMPLETE => "R parse: incomplete input",
        status::PARSE_ERROR => "R parse error",
        status::AUTH_FAILED => "authentication failed",
        status::INV_CMD => "invalid command",
        status::INV_PAR => "invalid parameter",
        status::DATA_OVERFLOW => "request too large",
        status::OBJECT_TOO_BIG => "result too big for the send buffer",
        status::OUT_OF_MEM => "server out of memory",
        status::DISABLED => "disabled on this server",
        status::R_ERROR => "R error",
        _ => "see qap1.md §4",
    }
}

/// The single DT_SEXP parameter of an eval answer, decoded.
pub(super) fn decode_value(payload: &[u8]) -> anyhow::Result<Value> {
    let params = frame::decode_params(payload).map_err(|e| anyhow!("decoding the answer: {e}"))?;
    let [param] = params.as_slice() else {
        bail!("expected one DT_SEXP parameter, got {}", params.len());
    };
    let bytes = param
        .as_sexp()
        .map_err(|e| anyhow!("decoding the answer: {e}"))?;
    sexp::decode(bytes).map_err(|e| anyhow!("decoding the answer: {e}"))
}

/// A short description of a value for error messages.
pub(super) fn describe(v: &Value) -> String {
    format!("a {} of length {}", v.data.type_name(), v.len())
}

//! A real Rserve for the tests that compare with it: the installed package's daemon
//! (Debian r-cran-rserve, which scripts/install-deps installs) on a free loopback port,
//! optionally with a config file or a Unix socket, killed by its pidfile on drop; and
//! a tiny blocking QAP1 client built only on Rookery's codec, for Rserve and Rookery.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rookery_engine::value::Value;
use rookery_server::qap::frame::{self, cmd, dt, resp, Header, QapError, HEADER_LEN};
use rookery_server::qap::sexp;

/// A running Rserve daemon, killed (by the pid it wrote) on drop.
pub struct Rserve {
    pid: i32,
    pub port: u16,
    pub dir: PathBuf,
}

impl Drop for Rserve {
    fn drop(&mut self) {
        if let Some(pid) = rustix::process::Pid::from_raw(self.pid) {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Rserve {
    /// Starts the installed Rserve with `conf` as its configuration file (`{dir}` in it
    /// stands for the daemon's own temporary directory); with `unix`, it listens on
    /// `socket()` instead of TCP.
    pub fn start(conf: &str, unix: bool) -> Rserve {
        let port = free_port();
        let dir = std::env::temp_dir().join(format!("rookery-qapb-{}-{port}", std::process::id()));
        std::fs::create_dir_all(dir.join("wd")).expect("temp dir");
        let conf = conf.replace("{dir}", &dir.to_string_lossy());
        std::fs::write(dir.join("conf"), conf).expect("conf file");
        let mut cmd = Command::new("R");
        cmd.arg("CMD").arg(rserve_binary()).arg("--no-save");
        cmd.args(["--RS-port", &port.to_string(), "--RS-conf"])
            .arg(dir.join("conf"));
        cmd.arg("--RS-pidfile").arg(dir.join("pid"));
        cmd.arg("--RS-workdir").arg(dir.join("wd"));
        if unix {
            cmd.arg("--RS-socket").arg(dir.join("sock"));
        }
        let status = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("R CMD Rserve runs");
        assert!(status.success(), "Rserve failed to start: {status}");
        let pid = wait_for_pid(&dir, port, unix);
        Rserve { pid, port, dir }
    }

    pub fn target(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.join("sock")
    }
}

/// The Rserve executable of the installed R package (scripts/install-deps installs it).
fn rserve_binary() -> PathBuf {
    let out = Command::new("Rscript")
        .args([
            "-e",
            r#"cat(system.file("libs", "Rserve", package = "Rserve"))"#,
        ])
        .stderr(Stdio::null())
        .output()
        .expect("Rscript runs");
    let path = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    assert!(
        path.is_file(),
        "Rserve is not installed (Debian r-cran-rserve; run scripts/install-deps)"
    );
    path
}

pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

/// Waits until the daemon has written its pid and accepts connections.
fn wait_for_pid(dir: &Path, port: u16, unix: bool) -> i32 {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let pid = std::fs::read_to_string(dir.join("pid"))
            .ok()
            .and_then(|s| s.trim().parse().ok());
        let up = if unix {
            UnixStream::connect(dir.join("sock")).is_ok()
        } else {
            TcpStream::connect(("127.0.0.1", port)).is_ok()
        };
        if let (Some(pid), true) = (pid, up) {
            return pid;
        }
        assert!(Instant::now() < deadline, "Rserve did not come up");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A tiny blocking QAP1 client built only on the codec.
pub struct QapClient {
    s: TcpStream,
}

/// A response: its header word and payload.
pub struct Reply {
    pub cmd: u32,
    pub payload: Vec<u8>,
}

impl QapClient {
    /// Connects to a QAP1 server on loopback `port`; returns the client and the
    /// server's ID string.
    pub fn open(port: u16) -> (QapClient, [u8; 32]) {
        let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        let mut id = [0; 32];
        s.read_exact(&mut id).expect("ID string");
        (QapClient { s }, id)
    }

    /// A client on a connection that already speaks QAP1 (a resumed session).
    pub fn from_stream(s: TcpStream) -> QapClient {
        QapClient { s }
    }

    /// Whether the server has closed the connection (a read returns end of file).
    pub fn is_closed(&mut self) -> bool {
        let mut b = [0u8; 1];
        matches!(self.s.read(&mut b), Ok(0))
    }

    pub fn request(&mut self, command: u32, payload: &[u8]) -> Reply {
        self.send(command, payload);
        self.read_reply()
    }

    /// Sends one message and reads nothing.
    pub fn send(&mut self, command: u32, payload: &[u8]) {
        self.s
            .write_all(&frame::encode_message(command, 0, payload))
            .expect("send");
    }

    /// The next message from the server (a response, or an OOB message before one).
    pub fn read_reply(&mut self) -> Reply {
        let mut head = [0; HEADER_LEN];
        self.s.read_exact(&mut head).expect("response header");
        let head = Header::try_from_bytes(&head, 1 << 30).expect("header");
        let mut payload = vec![0; usize::try_from(head.len).unwrap()];
        self.s.read_exact(&mut payload).expect("payload");
        Reply {
            cmd: head.cmd,
            payload,
        }
    }

    /// CMD_eval of `code`: the raw payload, or the error status.
    pub fn eval_payload(&mut self, code: &str) -> Result<Vec<u8>, u8> {
        let mut p = Vec::new();
        frame::push_string_param(&mut p, code.as_bytes());
        let reply = self.request(cmd::EVAL, &p);
        if reply.cmd == resp::OK {
            Ok(reply.payload)
        } else {
            Err(frame::status_of(reply.cmd))
        }
    }

    pub fn eval(&mut self, code: &str) -> Result<Value, QapError> {
        let payload = self.eval_payload(code).expect("eval succeeds");
        decode_payload(&payload)
    }

    /// Sends `v` under `name` with `command` (CMD_setSEXP or CMD_assignSEXP).
    pub fn assign(&mut self, command: u32, name: &str, v: &Value) {
        let mut p = Vec::new();
        frame::push_string_param(&mut p, name.as_bytes());
        frame::push_param(&mut p, dt::SEXP, &sexp::encode(v).expect("encodes"));
        let reply = self.request(command, &p);
        assert_eq!(reply.cmd, resp::OK, "assigning {name}");
    }
}

pub fn decode_payload(payload: &[u8]) -> Result<Value, QapError> {
    let params = frame::decode_params(payload)?;
    assert_eq!(params.len(), 1, "one DT_SEXP parameter");
    sexp::decode(params[0].as_sexp()?)
}

/// `CMD_detachedVoidEval` of `code` on `c`, then the attach to the port the reply
/// names: the resumed connection and the word of the bare header it got (the
/// detached evaluation's status). The same steps for Rserve and Rookery.
pub fn detached_void_eval(mut c: QapClient, code: &str) -> (TcpStream, u32) {
    let mut p = Vec::new();
    frame::push_string_param(&mut p, code.as_bytes());
    let reply = c.request(cmd::DETACHED_VOID_EVAL, &p);
    assert_eq!(reply.cmd, resp::OK, "detachedVoidEval answered");
    let params = frame::decode_params(&reply.payload).expect("port and key");
    let port = u16::try_from(params[0].as_int().expect("a port")).expect("a port");
    let key = params[1].data.to_vec();
    assert_eq!(key.len(), 32, "a 32-byte key");
    assert!(c.is_closed(), "the connection closes at once");
    let mut back = TcpStream::connect(("127.0.0.1", port)).expect("resume port");
    back.set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    back.write_all(&key).expect("key");
    let mut head = [0u8; HEADER_LEN];
    back.read_exact(&mut head).expect("attach reply");
    (back, u32::from_le_bytes(head[..4].try_into().unwrap()))
}

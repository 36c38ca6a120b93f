//! The QAP1 endpoint against a real R: the ID string asks for a login, a failed login
//! closes the connection, a session per connection (visible over HTTP, gone after),
//! eval / voidEval / setSEXP / assignSEXP, Rserve's statuses for R errors and bad
//! input, and `rookery bench qap` driving a real `rookery serve --qap`.

use std::io::Write;
use std::net::TcpStream;

use rookery_engine::Value;
use rookery_server::qap::endpoint::ID_STRING_AUTH;
use rookery_server::qap::frame::{self, cmd, resp, status};
use rookery_server::store::Role;
use rookery_server::Server;

use crate::rserve::{decode_payload, QapClient};

/// A server with a QAP1 listener on a free loopback port, its runtime, and the port.
fn qap_server() -> (Server, tempfile::TempDir, tokio::runtime::Runtime, u16) {
    let (server, data) =
        super::server_with(|c| c.qap.listen = Some("127.0.0.1:0".parse().unwrap()));
    let (rt, port) = listening(&server);
    (server, data, rt, port)
}

/// Starts `server`'s QAP1 listeners on a new runtime; returns it and the TCP port.
fn listening(server: &Server) -> (tokio::runtime::Runtime, u16) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let addr = rt
        .block_on(server.listen_qap())
        .unwrap()
        .expect("a TCP listener");
    (rt, addr.port())
}

fn login(c: &mut QapClient, user: &str, password: &str) -> u32 {
    let mut p = Vec::new();
    frame::push_string_param(&mut p, format!("{user}\n{password}").as_bytes());
    c.request(cmd::LOGIN, &p).cmd
}

fn eval(c: &mut QapClient, code: &str) -> Result<Value, u8> {
    c.eval_payload(code)
        .map(|p| decode_payload(&p).expect("decodes"))
}

#[test]
fn a_logged_in_connection_is_a_session_that_speaks_rserve() {
    let (server, _data, rt, port) = qap_server();
    let (mut c, id) = QapClient::open(port);
    assert_eq!(id, ID_STRING_AUTH);
    assert!(std::str::from_utf8(&id).unwrap().contains("ARpt"));
    // As Rserve: anything but a login first is refused and the connection closed.
    assert_eq!(
        c.eval_payload("1+1"),
        Err(status::AUTH_FAILED),
        "eval before login"
    );
    assert!(c.is_closed());
    let (mut c, _) = QapClient::open(port);
    assert_eq!(login(&mut c, "pub", super::PASSWORD), resp::OK);
    assert_eq!(
        frame::status_of(login(&mut c, "pub", super::PASSWORD)),
        status::INV_CMD,
        "a second login is not a command"
    );
    let sessions = server.state.sessions.clone();
    assert_eq!(sessions.count(), 1, "the connection holds a session");
    assert_eq!(eval(&mut c, "1+1"), Ok(Value::doubles(vec![2.0])));
    // A result past 16 MB: the DT_SEXP and XT headers take their large forms.
    let big: Vec<f64> = (1..=2_100_000).map(f64::from).collect();
    assert_eq!(
        eval(&mut c, "as.double(seq_len(2100000))"),
        Ok(Value::doubles(big))
    );
    // setSEXP, then assignSEXP with a target that is R code.
    let frame_value = Value::data_frame(vec![
        ("a".into(), Value::integers(vec![1, 2, 3])),
        ("b".into(), Value::strings(["p", "q", "r"])),
    ])
    .unwrap();
    c.assign(cmd::SET_SEXP, "d", &frame_value);
    assert_eq!(eval(&mut c, "d"), Ok(frame_value));
    c.assign(cmd::ASSIGN_SEXP, "names(d)", &Value::strings(["x", "y"]));
    assert_eq!(eval(&mut c, "names(d)"), Ok(Value::strings(["x", "y"])));
    // voidEval answers an empty OK; state is kept between calls.
    let mut p = Vec::new();
    frame::push_string_param(&mut p, b"k <- 41");
    let reply = c.request(cmd::VOID_EVAL, &p);
    assert_eq!((reply.cmd, reply.payload.len()), (resp::OK, 0));
    assert_eq!(eval(&mut c, "k + 1"), Ok(Value::doubles(vec![42.0])));
    // Rserve's statuses: R error 127, parse error 3, and the session goes on.
    assert_eq!(eval(&mut c, "stop('boom')"), Err(status::R_ERROR));
    assert_eq!(eval(&mut c, "1 +* 2"), Err(status::PARSE_ERROR));
    assert_eq!(eval(&mut c, "k"), Ok(Value::doubles(vec![41.0])));
    // Unknown commands, bad parameters, shutdown.
    assert_eq!(frame::status_of(c.request(0x99, &[]).cmd), status::INV_CMD);
    let mut int_param = Vec::new();
    frame::push_int_param(&mut int_param, 7);
    assert_eq!(
        frame::status_of(c.request(cmd::EVAL, &int_param).cmd),
        status::INV_PAR
    );
    assert_eq!(
        frame::status_of(c.request(cmd::SHUTDOWN, &[]).cmd),
        status::DISABLED
    );
    assert_eq!(c.request(cmd::SET_BUFFER_SIZE, &int_param).cmd, resp::OK);
    drop(c);
    // The session (worker and folder) ends with the connection.
    for _ in 0..100 {
        if sessions.count() == 0 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_eq!(sessions.count(), 0);
    drop(rt);
}

#[test]
fn failed_logins_close_the_connection_and_users_need_the_execute_right() {
    let (server, _data, _rt, port) = qap_server();
    let store = server.state.store.as_ref();
    rookery_server::admin::add_user(store, "plain", Role::User, super::PASSWORD).unwrap();
    let (mut c, _) = QapClient::open(port);
    assert_eq!(
        frame::status_of(login(&mut c, "pub", "wrong password")),
        status::AUTH_FAILED
    );
    assert!(c.is_closed(), "a failed login closes the connection");
    let (mut c, _) = QapClient::open(port);
    assert_eq!(
        frame::status_of(login(&mut c, "nobody", "whatever pw")),
        status::AUTH_FAILED
    );
    let (mut c, _) = QapClient::open(port);
    assert_eq!(
        frame::status_of(login(&mut c, "plain", super::PASSWORD)),
        status::ACCESS_DENIED,
        "a user without the execute grant runs no code"
    );
    assert_eq!(server.state.sessions.count(), 0);
}

#[test]
fn oversized_messages_are_refused_before_they_are_read() {
    let (_server, _data, _rt, port) = qap_server();
    let (mut c, _) = QapClient::open(port);
    assert_eq!(login(&mut c, "pub", super::PASSWORD), resp::OK);
    // A header announcing 2^40 bytes: ERR_data_overflow, then the connection closes.
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let mut id = [0u8; 32];
    std::io::Read::read_exact(&mut s, &mut id).unwrap();
    let head = frame::Header::new(cmd::EVAL, 1 << 40).to_bytes();
    s.write_all(&head).unwrap();
    let mut reply = [0u8; 16];
    std::io::Read::read_exact(&mut s, &mut reply).unwrap();
    let word = u32::from_le_bytes(reply[..4].try_into().unwrap());
    assert_eq!(frame::status_of(word), status::DATA_OVERFLOW);
    // The first connection is unaffected.
    assert_eq!(eval(&mut c, "2 * 21"), Ok(Value::doubles(vec![42.0])));
}

/// `rookery serve` on loopback with a QAP1 listener, 32 sessions per user, and
/// `extra` flags; returns the child, its remaining output lines, and the QAP1
/// address.
/// Runs `rookery bench qap` with `args` then `more` (the password in
/// ROOKERY_QAP_PASSWORD when given), which must succeed.
fn bench_qap(args: &[&str], more: &[&str], password: Option<&str>) -> std::process::Output {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_rookery"));
    cmd.args(["bench", "qap"]).args(args).args(more);
    if let Some(pw) = password {
        cmd.env("ROOKERY_QAP_PASSWORD", pw);
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn serve_qap(
    data: &std::path::Path,
    extra: &[&str],
) -> (
    std::process::Child,
    std::io::Lines<std::io::BufReader<std::process::ChildStdout>>,
    String,
) {
    let config = data.join("rookery.toml");
    std::fs::write(&config, "[limits]\nsessions_per_user = 32\n").unwrap();
    let mut args: Vec<&std::ffi::OsStr> = ["--listen", "127.0.0.1:0", "--qap", "127.0.0.1:0"]
        .iter()
        .map(|a| a.as_ref())
        .collect();
    args.extend([
        "--config".as_ref(),
        config.as_os_str(),
        "--data".as_ref(),
        data.as_os_str(),
    ]);
    args.extend(extra.iter().map(std::ffi::OsStr::new));
    let (child, mut lines) = super::spawn_serve(&args);
    let _http = lines.next().unwrap().unwrap();
    let qap = lines.next().unwrap().unwrap();
    let addr = qap
        .strip_prefix("rookery QAP1 listening on ")
        .expect(&qap)
        .to_owned();
    (child, lines, addr)
}

#[test]
fn bench_qap_drives_a_real_rookery_serve() {
    let data = tempfile::tempdir().unwrap();
    super::cli_add_user(data.path(), "ada", "publisher", "ada-password-1");
    let (child, _lines, addr) = serve_qap(data.path(), &[]);
    let out = bench_qap(
        &[
            "--target", &addr, "--user", "ada", "--json", "--calls", "50",
        ],
        &[
            "--warmup-calls",
            "5",
            "--connects",
            "3",
            "--repeats",
            "2",
            "--duration",
            "200ms",
        ],
        Some("ada-password-1"),
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        report["eval_1p1_p50_us"].as_f64().unwrap() > 0.0,
        "{report}"
    );
    assert!(
        report["evals_per_s"]["16"].as_f64().unwrap() > 0.0,
        "{report}"
    );
    super::stop_server(child);
}

/// pyRserve 1.0.4 from PyPI (scripts/install-deps puts it in target/pyvenv), which has
/// no login command: on the Unix socket the kernel's peer credentials log it in.
#[test]
fn pyrserve_logs_in_by_peer_credentials_on_the_unix_socket() {
    let python = concat!(env!("CARGO_MANIFEST_DIR"), "/target/pyvenv/bin/python");
    assert!(
        std::path::Path::new(python).exists(),
        "pyRserve is missing: run scripts/install-deps"
    );
    let sock_dir = tempfile::tempdir().unwrap();
    let sock = sock_dir.path().join("qap.sock");
    let (server, _data) = super::server_with(|c| c.qap.unix = Some(sock.clone()));
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(server.listen_qap()).unwrap();
    // An unmapped uid is asked to log in.
    let mut raw = std::os::unix::net::UnixStream::connect(&sock).unwrap();
    let mut id = [0u8; 32];
    std::io::Read::read_exact(&mut raw, &mut id).unwrap();
    assert_eq!(id, ID_STRING_AUTH);
    drop(raw);
    let uid = rustix::process::getuid().as_raw();
    server.state.store.map_os_user("pub", uid).unwrap();
    let script = r#"
import sys, numpy, pyRserve
conn = pyRserve.connect(unix_socket=sys.argv[1])
print("two", conn.eval("1+1"))
conn.r.x = numpy.array([1.5, 2.5, 4.0])
print("sum", conn.eval("sum(x)"))
print("who", conn.eval("basename(dirname(dirname(getwd())))"))
try:
    conn.eval('stop("boom")')
    print("error", "none")
except Exception as e:
    print("error", type(e).__name__, e)
print("after", conn.eval("length(x)"))
conn.close()
"#;
    let text = super::run_ok(python, &["-c".as_ref(), script.as_ref(), sock.as_os_str()]);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "two 2.0", "{text}");
    assert_eq!(lines[1], "sum 8.0", "{text}");
    assert_eq!(
        lines[2], "who pub",
        "the session works in pub's folder: {text}"
    );
    // pyRserve asks for geterrmessage() after status 127: R's message reaches it.
    assert!(
        lines[3].starts_with("error REvalError") && lines[3].contains("boom"),
        "{text}"
    );
    assert_eq!(lines[4], "after 3", "{text}");
}

/// RSclient (Debian r-cran-rsclient) logs in only with RSA secure login
/// (`RS.authkey` + `RS.login`): with a key in the config it works unmodified.
#[test]
fn rsclient_logs_in_with_the_rsa_secure_login() {
    let keys = tempfile::tempdir().unwrap();
    let key = keys.path().join("qap.pem");
    let made = std::process::Command::new("openssl")
        .args(["genrsa", "-out"])
        .arg(&key)
        .arg("2048")
        .output()
        .expect("openssl (scripts/install-deps installs it)");
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let (server, _data) = super::server_with(|c| {
        c.qap.listen = Some("127.0.0.1:0".parse().unwrap());
        c.qap.rsa_key = Some(key.clone());
    });
    let (_rt, port) = listening(&server);
    let script = format!(
        r#"
library(RSclient)
c <- RS.connect(port = {port}L)
k <- RS.authkey(c)
invisible(RS.login(c, "pub", "{pw}", authkey = k))
cat("two", RS.eval(c, 1 + 1), "\n")
invisible(RS.assign(c, "x", c(1.5, 2.5, 4)))
cat("sum", RS.eval(c, sum(x)), "\n")
r <- try(RS.eval(c, stop("boom")), silent = TRUE)
cat("error", inherits(r, "try-error"), "\n")
cat("after", RS.eval(c, length(x)), "\n")
invisible(RS.close(c))
bad <- RS.connect(port = {port}L)
k <- RS.authkey(bad)
r <- try(RS.login(bad, "pub", "not the password", authkey = k), silent = TRUE)
cat("wrong", inherits(r, "try-error"), "\n")
"#,
        port = port,
        pw = super::PASSWORD
    );
    let text = super::run_ok("Rscript", &["-e".as_ref(), script.as_ref()]);
    let lines: Vec<&str> = text.lines().map(str::trim).collect();
    assert_eq!(
        lines,
        ["two 2", "sum 8", "error TRUE", "after 3", "wrong TRUE"],
        "{text}"
    );
}

fn string_param(s: &str) -> Vec<u8> {
    let mut p = Vec::new();
    frame::push_string_param(&mut p, s.as_bytes());
    p
}

/// The file commands work in the session's folder, and nowhere else.
#[test]
fn file_commands_stay_in_the_session_folder() {
    let (_server, _data, _rt, port) = qap_server();
    let (mut c, _) = QapClient::open(port);
    assert_eq!(login(&mut c, "pub", super::PASSWORD), resp::OK);
    assert_eq!(
        frame::status_of(c.request(cmd::READ_FILE, &[]).cmd),
        status::NOT_OPEN
    );
    // Client -> file -> R.
    assert_eq!(
        c.request(cmd::CREATE_FILE, &string_param("in/notes.txt"))
            .cmd,
        resp::OK
    );
    for part in [&b"first line\n"[..], b"second line\n"] {
        let mut p = Vec::new();
        frame::push_bytes_param(&mut p, part);
        assert_eq!(c.request(cmd::WRITE_FILE, &p).cmd, resp::OK);
    }
    assert_eq!(c.request(cmd::CLOSE_FILE, &[]).cmd, resp::OK);
    assert_eq!(
        eval(&mut c, "readLines('in/notes.txt')"),
        Ok(Value::strings(["first line", "second line"]))
    );
    // R -> file -> client, in pieces.
    eval(&mut c, "writeLines(c('abc', 'def'), 'out.txt')").unwrap();
    assert_eq!(
        c.request(cmd::OPEN_FILE, &string_param("out.txt")).cmd,
        resp::OK
    );
    let mut read = Vec::new();
    loop {
        let mut p = Vec::new();
        frame::push_int_param(&mut p, 3);
        let reply = c.request(cmd::READ_FILE, &p);
        assert_eq!(reply.cmd, resp::OK);
        if reply.payload.is_empty() {
            break;
        }
        read.extend(reply.payload);
    }
    assert_eq!(read, b"abc\ndef\n");
    assert_eq!(c.request(cmd::CLOSE_FILE, &[]).cmd, resp::OK);
    // Nothing outside the folder: `..`, absolute paths, a link R made to the outside.
    eval(&mut c, "file.symlink('/etc/hostname', 'peek')").unwrap();
    for bad in ["../x", "/etc/hostname", "peek"] {
        for command in [cmd::OPEN_FILE, cmd::CREATE_FILE, cmd::REMOVE_FILE] {
            let reply = c.request(command, &string_param(bad));
            if command == cmd::CREATE_FILE && bad == "peek" {
                // Creating is lexical; writing through the link fails on close.
                assert_eq!(reply.cmd, resp::OK);
                assert_eq!(
                    frame::status_of(c.request(cmd::CLOSE_FILE, &[]).cmd),
                    status::IO_ERROR
                );
                continue;
            }
            if command == cmd::REMOVE_FILE && bad == "peek" {
                // Removing the link itself is fine: its target is untouched.
                assert_eq!(reply.cmd, resp::OK);
                continue;
            }
            assert_eq!(
                frame::status_of(reply.cmd),
                status::IO_ERROR,
                "{bad} {command:#x}"
            );
        }
    }
    assert!(std::path::Path::new("/etc/hostname").exists());
    assert_eq!(
        c.request(cmd::REMOVE_FILE, &string_param("out.txt")).cmd,
        resp::OK
    );
    assert_eq!(
        eval(&mut c, "file.exists('out.txt')"),
        Ok(Value::logicals([false]))
    );
}

/// A TLS client on `tcp`, trusting only `cert`.
fn tls_client(
    tcp: TcpStream,
    cert: rustls::pki_types::CertificateDer<'static>,
) -> rustls::StreamOwned<rustls::ClientConnection, TcpStream> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert).unwrap();
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let conn =
        rustls::ClientConnection::new(std::sync::Arc::new(config), "localhost".try_into().unwrap())
            .unwrap();
    rustls::StreamOwned::new(conn, tcp)
}

/// One request over any stream; returns the response word and payload.
fn request(s: &mut (impl std::io::Read + Write), command: u32, payload: &[u8]) -> (u32, Vec<u8>) {
    s.write_all(&frame::encode_message(command, 0, payload))
        .unwrap();
    let mut head = [0u8; 16];
    s.read_exact(&mut head).unwrap();
    let head = frame::Header::try_from_bytes(&head, 1 << 30).unwrap();
    let mut body = vec![0u8; head.len as usize];
    s.read_exact(&mut body).unwrap();
    (head.cmd, body)
}

/// QAP over TLS: a dedicated TLS listener, and `CMD_switch "TLS"` on the plain one.
/// Logs in with the `login` parameter, then evaluates `1+1` and checks the answer.
fn login_and_add(s: &mut (impl std::io::Read + Write), login: &[u8]) {
    assert_eq!(request(s, cmd::LOGIN, login).0, resp::OK);
    let (word, body) = request(s, cmd::EVAL, &string_param("1+1"));
    assert_eq!(word, resp::OK);
    assert_eq!(decode_payload(&body).unwrap(), Value::doubles(vec![2.0]));
}

#[test]
fn qap_over_tls_from_the_start_and_by_switching() {
    use std::io::Read;
    let certs = tempfile::tempdir().unwrap();
    let generated = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let (cert, key) = (certs.path().join("c.pem"), certs.path().join("k.pem"));
    std::fs::write(&cert, generated.cert.pem()).unwrap();
    std::fs::write(&key, generated.key_pair.serialize_pem()).unwrap();
    let tls_port = crate::rserve::free_port();
    let (server, _data) = super::server_with(|c| {
        c.qap.listen = Some("127.0.0.1:0".parse().unwrap());
        c.qap.tls = Some(format!("127.0.0.1:{tls_port}").parse().unwrap());
        c.tls = Some(rookery_server::config::TlsConfig {
            cert: cert.clone(),
            key: key.clone(),
        });
    });
    let rt = tokio::runtime::Runtime::new().unwrap();
    let plain = rt.block_on(server.listen_qap()).unwrap().unwrap();
    let der = generated.cert.der().clone();
    let login = {
        let mut p = Vec::new();
        frame::push_string_param(&mut p, format!("pub\n{}", super::PASSWORD).as_bytes());
        p
    };
    // TLS from the first byte.
    let mut tls = tls_client(
        TcpStream::connect(("127.0.0.1", tls_port)).unwrap(),
        der.clone(),
    );
    let mut id = [0u8; 32];
    tls.read_exact(&mut id).unwrap();
    assert_eq!(id, ID_STRING_AUTH, "no switch offered on a TLS connection");
    login_and_add(&mut tls, &login);
    // The plain listener offers the switch, then speaks TLS on the same socket.
    let mut tcp = TcpStream::connect(plain).unwrap();
    tcp.read_exact(&mut id).unwrap();
    assert_eq!(
        &id[16..24],
        b"TLS\nARpt",
        "{:?}",
        String::from_utf8_lossy(&id)
    );
    assert_eq!(
        request(&mut tcp, cmd::SWITCH, &string_param("TLS")).0,
        resp::OK
    );
    let mut switched = tls_client(tcp, der);
    login_and_add(&mut switched, &login);
    // An unknown protocol is refused.
    let mut other = TcpStream::connect(plain).unwrap();
    other.read_exact(&mut id).unwrap();
    let (word, _) = request(&mut other, cmd::SWITCH, &string_param("SSH"));
    assert_eq!(frame::status_of(word), status::UNSUPPORTED_CMD);
}

/// Detach parks the session under a key; a connection to the resume port with that
/// key gets it back, state and all; a wrong key gets nothing.
#[test]
fn a_detached_session_is_attached_again_with_its_key() {
    use std::io::Read;
    let (server, _data, _rt, port) = qap_server();
    let (mut c, _) = QapClient::open(port);
    assert_eq!(login(&mut c, "pub", super::PASSWORD), resp::OK);
    assert!(eval(&mut c, "keepme <- 42L").is_ok());
    let reply = c.request(cmd::DETACH_SESSION, &[]);
    assert_eq!(reply.cmd, resp::OK);
    let params = frame::decode_params(&reply.payload).unwrap();
    let resume_port = u16::try_from(params[0].as_int().unwrap()).unwrap();
    let key: [u8; 32] = params[1].data.try_into().unwrap();
    assert!(c.is_closed(), "detach closes the connection");
    assert_eq!(server.state.sessions.count(), 1, "but keeps the session");
    // A wrong key: closed, nothing else.
    let mut wrong = TcpStream::connect(("127.0.0.1", resume_port)).unwrap();
    wrong.write_all(&[0u8; 32]).unwrap();
    let mut buf = Vec::new();
    let _ = wrong.read_to_end(&mut buf);
    assert!(buf.is_empty());
    // The right key: a bare RESP_OK header, then QAP1 on the same session.
    let mut back = TcpStream::connect(("127.0.0.1", resume_port)).unwrap();
    back.write_all(&key).unwrap();
    let mut head = [0u8; 16];
    back.read_exact(&mut head).unwrap();
    assert_eq!(u32::from_le_bytes(head[..4].try_into().unwrap()), resp::OK);
    let (word, body) = request(&mut back, cmd::EVAL, &string_param("keepme"));
    assert_eq!(word, resp::OK);
    assert_eq!(decode_payload(&body).unwrap(), Value::integers(vec![42]));
    // A key works once.
    let mut again = TcpStream::connect(("127.0.0.1", resume_port)).unwrap();
    again.write_all(&key).unwrap();
    let mut buf = Vec::new();
    let _ = again.read_to_end(&mut buf);
    assert!(buf.is_empty(), "a key is single use");
    drop(back);
    for _ in 0..100 {
        if server.state.sessions.count() == 0 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_eq!(
        server.state.sessions.count(),
        0,
        "closing the attached connection ends it"
    );
}

/// A call object: XT_LANG_NOTAG (or _TAG with the given tags) of encoded elements.
fn call_bytes(elements: &[(Option<&str>, &Value)]) -> Vec<u8> {
    use rookery_server::qap::sexp;
    let tagged = elements.iter().any(|(t, _)| t.is_some());
    let mut body = Vec::new();
    for (tag, value) in elements {
        body.extend(sexp::encode(value).unwrap());
        if tagged {
            match tag {
                None => body.extend([0, 0, 0, 0]),
                Some(name) => {
                    let mut sym = name.as_bytes().to_vec();
                    sym.push(0);
                    sym.resize(sym.len().div_ceil(4) * 4, 0);
                    body.extend(((sym.len() as u32) << 8 | 19).to_le_bytes());
                    body.extend(sym);
                }
            }
        }
    }
    let kind: u32 = if tagged { 23 } else { 22 };
    let mut out = ((body.len() as u32) << 8 | kind).to_le_bytes().to_vec();
    out.extend(body);
    out
}

/// OCAP mode: no login, one capability per connection (a published service's
/// function), `CMD_OCcall` only.
#[test]
fn ocap_mode_offers_a_services_function_and_nothing_else() {
    use std::io::Read;
    let port = crate::rserve::free_port();
    let (server, _data) = super::server_with(|c| {
        c.qap.ocap = Some(rookery_server::config::OcapConfig {
            listen: format!("127.0.0.1:{port}").parse().unwrap(),
            service: "ocdouble/1".into(),
        });
    });
    let router = server.router();
    super::publish(
        &server,
        &router,
        super::double_spec("ocdouble", "1", super::DOUBLE_CODE),
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(server.listen_qap()).unwrap();
    let connect = || {
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        let mut head = [0u8; 16];
        s.read_exact(&mut head).unwrap();
        let head = frame::Header::try_from_bytes(&head, 1 << 20).unwrap();
        assert_eq!(&head.cmd.to_le_bytes(), b"RsOC");
        let mut body = vec![0u8; head.len as usize];
        s.read_exact(&mut body).unwrap();
        let init = decode_payload(&body).unwrap();
        assert_eq!(init.names().unwrap(), [Some("double_it".to_owned())]);
        let cap = init.as_list().unwrap()[0].clone();
        assert_eq!(cap.class().unwrap(), [Some("OCref".to_owned())]);
        (s, cap)
    };
    let (mut s, cap) = connect();
    let table = Value::data_frame(vec![("x".into(), Value::doubles(vec![1.0, 2.5]))]).unwrap();
    let mut p = Vec::new();
    frame::push_param(
        &mut p,
        rookery_server::qap::frame::dt::SEXP,
        &call_bytes(&[(None, &cap), (None, &table)]),
    );
    let (word, body) = request(&mut s, cmd::OC_CALL, &p);
    assert_eq!(word, resp::OK);
    assert_eq!(
        decode_payload(&body).unwrap(),
        Value::doubles(vec![2.0, 5.0])
    );
    // Named arguments, and R errors as status 127.
    let bad = Value::data_frame(vec![("x".into(), Value::doubles(vec![-2.0]))]).unwrap();
    let mut p = Vec::new();
    frame::push_param(
        &mut p,
        rookery_server::qap::frame::dt::SEXP,
        &call_bytes(&[(None, &cap), (Some("d"), &bad)]),
    );
    assert_eq!(
        frame::status_of(request(&mut s, cmd::OC_CALL, &p).0),
        status::R_ERROR
    );
    // Anything but OCcall: ERR_disabled, then the connection is closed.
    let (word, _) = request(&mut s, cmd::EVAL, &string_param("1+1"));
    assert_eq!(frame::status_of(word), status::DISABLED);
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest);
    assert!(rest.is_empty());
    // Another connection's reference (or a guess) closes the connection.
    let (mut other, _) = connect();
    let mut p = Vec::new();
    frame::push_param(
        &mut p,
        rookery_server::qap::frame::dt::SEXP,
        &call_bytes(&[(None, &cap), (None, &table)]),
    );
    other
        .write_all(&frame::encode_message(cmd::OC_CALL, 0, &p))
        .unwrap();
    let mut rest = Vec::new();
    let _ = other.read_to_end(&mut rest);
    assert!(rest.is_empty(), "a stale reference gets no answer");
}

/// A server with the loopback QAP1 listener, the anonymous identity `bencher` (a
/// plain user with the execute grant) and R error messages sent out of band.
fn anonymous_server() -> (Server, tempfile::TempDir, tokio::runtime::Runtime, u16) {
    let (server, data) = super::server_with(|c| {
        c.qap.listen = Some("127.0.0.1:0".parse().unwrap());
        c.qap.anonymous = Some("bencher".into());
        c.qap.oob_errors = true;
    });
    let store = server.state.store.as_ref();
    rookery_server::admin::add_user(store, "bencher", Role::User, super::PASSWORD).unwrap();
    rookery_server::admin::grant(store, "bencher", rookery_server::store::GRANT_EXECUTE).unwrap();
    let (rt, port) = listening(&server);
    (server, data, rt, port)
}

/// pyRserve over TCP, unmodified, against the opt-in anonymous identity: no login is
/// asked, the session belongs to the named user, and an R error's message arrives
/// both through pyRserve's `oobCallback` (OOB_SEND, code 127) and as status 127.
#[test]
fn pyrserve_over_tcp_with_the_anonymous_identity_and_oob_error_messages() {
    let python = concat!(env!("CARGO_MANIFEST_DIR"), "/target/pyvenv/bin/python");
    let (_server, _data, _rt, port) = anonymous_server();
    let (mut c, id) = QapClient::open(port);
    assert!(
        !std::str::from_utf8(&id).unwrap().contains("AR"),
        "no login asked"
    );
    assert_eq!(eval(&mut c, "1L"), Ok(Value::integers(vec![1])));
    // The raw exchange: OOB_SEND | 127 with the message, then the usual status.
    let mut p = Vec::new();
    frame::push_string_param(&mut p, b"stop('boom')");
    let oob = c.request(cmd::EVAL, &p);
    assert_eq!(oob.cmd, rookery_server::qap::endpoint::OOB_ERROR);
    assert_eq!(decode_payload(&oob.payload), Ok(Value::strings(["boom"])));
    assert_eq!(frame::status_of(c.read_reply().cmd), status::R_ERROR);
    let script = r#"
import sys, pyRserve
seen = []
def oob(data, code=0):
    seen.append((code, data))
conn = pyRserve.connect(host="127.0.0.1", port=int(sys.argv[1]), oobCallback=oob)
print("two", conn.eval("1+1"))
print("who", conn.eval("basename(dirname(dirname(getwd())))"))
try:
    conn.eval('stop("boom")')
except Exception as e:
    print("error", type(e).__name__, "boom" in str(e))
print("oob", seen)
print("after", conn.eval("2L"))
conn.close()
"#;
    let text = super::run_ok(
        python,
        &["-c".as_ref(), script.as_ref(), port.to_string().as_ref()],
    );
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines,
        [
            "two 2.0",
            "who bencher",
            "error REvalError True",
            "oob [(127, 'boom')]",
            "after 2"
        ],
        "{text}"
    );
}

/// RSclient, unmodified: no login asked under the anonymous identity, and
/// `RS.oobCallbacks` receives an R error's message before `RS.eval` fails.
#[test]
fn rsclient_receives_r_error_messages_out_of_band() {
    let (_server, _data, _rt, port) = anonymous_server();
    let script = format!(
        r#"
library(RSclient)
c <- RS.connect(port = {port}L)
got <- NULL
invisible(RS.oobCallbacks(c, send = function(code, payload) got <<- list(code, payload)))
cat("two", RS.eval(c, 1 + 1), "\n")
r <- try(RS.eval(c, stop("boom")), silent = TRUE)
cat("error", inherits(r, "try-error"), "\n")
cat("oob", got[[1]], got[[2]], "\n")
cat("after", RS.eval(c, 2L), "\n")
invisible(RS.close(c))
"#
    );
    let text = super::run_ok("Rscript", &["-e".as_ref(), script.as_ref()]);
    let lines: Vec<&str> = text.lines().map(str::trim).collect();
    assert_eq!(
        lines,
        ["two 2", "error TRUE", "oob 127 boom", "after 2"],
        "{text}"
    );
}

/// The anonymous identity is refused at start-up for an admin or an unknown user,
/// and without a loopback listener to serve it on.
#[test]
fn the_anonymous_identity_is_refused_for_admins_and_unknown_users() {
    use rookery_server::config::QapConfig;
    for name in ["root", "nobody"] {
        let (server, _data) = super::server_with(|c| {
            c.qap.listen = Some("127.0.0.1:0".parse().unwrap());
            c.qap.anonymous = Some(name.into());
        });
        let rt = tokio::runtime::Runtime::new().unwrap();
        let refused = rt.block_on(server.listen_qap());
        let err = refused.expect_err(name).to_string();
        assert!(err.contains(name), "{err}");
    }
    let config = rookery_server::Config {
        qap: QapConfig {
            anonymous: Some("bencher".into()),
            tls: Some("0.0.0.0:0".parse().unwrap()),
            ..QapConfig::default()
        },
        ..rookery_server::Config::default()
    };
    assert!(
        config.check().is_err(),
        "TLS alone is not a loopback listener"
    );
    let config = rookery_server::Config {
        qap: QapConfig {
            anonymous: Some("bencher".into()),
            listen: Some("0.0.0.0:6311".parse().unwrap()),
            ..QapConfig::default()
        },
        ..rookery_server::Config::default()
    };
    assert!(config.check().is_err(), "never on a non-loopback address");
}

/// `CMD_detachedVoidEval`: answered like a detach (port and key, then closed); the
/// code runs while detached; the attach waits for it and its bare reply is the
/// evaluation's status.
#[test]
fn detached_void_eval_runs_while_detached_and_the_attach_gets_its_status() {
    let (_server, _data, _rt, port) = qap_server();
    let detached = |code: &str| {
        let (mut c, _) = QapClient::open(port);
        assert_eq!(login(&mut c, "pub", super::PASSWORD), resp::OK);
        crate::rserve::detached_void_eval(c, code)
    };
    let (mut back, word) = detached("Sys.sleep(0.2); keepme <- 7L");
    assert_eq!(word, resp::OK);
    let (word, body) = request(&mut back, cmd::EVAL, &string_param("keepme"));
    assert_eq!(word, resp::OK);
    assert_eq!(decode_payload(&body).unwrap(), Value::integers(vec![7]));
    let (_back, word) = detached("stop('detached boom')");
    assert_eq!(frame::status_of(word), status::R_ERROR);
    let (_back, word) = detached("1 +* 2");
    assert_eq!(frame::status_of(word), status::PARSE_ERROR);
}

/// `CMD_shutdown` from an admin stops `rookery serve` (as SIGTERM would); from anyone
/// else it is refused (the first test).
#[test]
fn an_admin_shuts_the_server_down_over_qap() {
    let data = tempfile::tempdir().unwrap();
    super::cli_add_user(data.path(), "boss", "admin", "boss-password-1");
    let (mut child, mut lines) = super::spawn_serve(&[
        "--listen".as_ref(),
        "127.0.0.1:0".as_ref(),
        "--qap".as_ref(),
        "127.0.0.1:0".as_ref(),
        "--data".as_ref(),
        data.path().as_os_str(),
    ]);
    let _http = lines.next().unwrap().unwrap();
    let qap = lines.next().unwrap().unwrap();
    let addr: std::net::SocketAddr = qap
        .strip_prefix("rookery QAP1 listening on ")
        .expect(&qap)
        .parse()
        .unwrap();
    let (mut c, _) = QapClient::open(addr.port());
    assert_eq!(login(&mut c, "boss", "boss-password-1"), resp::OK);
    assert_eq!(c.request(cmd::SHUTDOWN, &[]).cmd, resp::OK);
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}");
}

/// `rookery serve --qap-anonymous NAME`: a warning line names the user at start-up,
/// and `rookery bench qap` without `--user` (a client that cannot log in) is served.
#[test]
fn serve_with_an_anonymous_identity_serves_a_benchmark_without_login() {
    use std::process::Command;
    let data = tempfile::tempdir().unwrap();
    let rookery = env!("CARGO_BIN_EXE_rookery");
    super::cli_add_user(data.path(), "bencher", "user", "bencher-password-1");
    let grant = Command::new(rookery)
        .args(["user", "grant", "bencher", "execute", "--data"])
        .arg(data.path())
        .output()
        .unwrap();
    assert!(grant.status.success());
    let (child, mut lines, addr) = serve_qap(data.path(), &["--qap-anonymous", "bencher"]);
    let warning = lines.next().unwrap().unwrap();
    assert!(
        warning.contains("WARNING") && warning.contains("`bencher`"),
        "{warning}"
    );
    bench_qap(
        &[
            "--target",
            &addr,
            "--json",
            "--calls",
            "20",
            "--warmup-calls",
            "2",
        ],
        &["--connects", "2", "--repeats", "1", "--duration", "100ms"],
        None,
    );
    super::stop_server(child);
}

/// `CMD_setEncoding "latin1"` against Rookery and a real Rserve: the same bytes back
/// for Latin-1 code and values, and for a character Latin-1 cannot hold.
#[test]
fn latin1_strings_travel_as_rserve_sends_them() {
    let rs = crate::rserve::Rserve::start("", false);
    let (_server, _data, _rt, port) = qap_server();
    let exchange = |c: &mut QapClient| {
        let set = c.request(cmd::SET_ENCODING, &string_param("latin1"));
        assert_eq!(set.cmd, resp::OK);
        let mut out = Vec::new();
        for code in [
            &b"c(\"\xe9t\xe9\", NA, \"a\")"[..],
            b"c(\"a\\u65e5b\", \"\\u00e9\\u65e5\", \"\\u20ac\")",
            // (R marks Rserve's copy "latin1" and Rookery's "UTF-8": same string.)
            b"as.integer(c(nchar(y), y == \"\\u00e9\"))",
        ] {
            if code.starts_with(b"as.integer") {
                let mut p = Vec::new();
                frame::push_string_param(&mut p, b"y");
                let latin1 = [0x22, 4, 0, 0, 0xe9, 0, 1, 1];
                frame::push_param(&mut p, rookery_server::qap::frame::dt::SEXP, &latin1);
                assert_eq!(c.request(cmd::SET_SEXP, &p).cmd, resp::OK);
            }
            let mut p = Vec::new();
            frame::push_string_param(&mut p, code);
            let reply = c.request(cmd::EVAL, &p);
            out.push((reply.cmd, reply.payload));
        }
        out
    };
    let (mut theirs, _) = QapClient::open(rs.port);
    let (mut ours, _) = QapClient::open(port);
    assert_eq!(login(&mut ours, "pub", super::PASSWORD), resp::OK);
    let (theirs, ours) = (exchange(&mut theirs), exchange(&mut ours));
    for (i, (t, o)) in theirs.iter().zip(&ours).enumerate() {
        assert_eq!(t, o, "exchange {i}");
    }
}

/// Direct mode (the session's worker serves the socket itself) keeps what the server
/// owes: each call in the audit log, the call deadline (an interrupted call is a
/// 127 and the session goes on), a new worker after a crash mid-call, and the
/// session open to HTTP callers while the connection is quiet.
#[test]
fn direct_mode_keeps_the_audit_the_deadline_and_the_session() {
    let (server, _data, rt, port) = qap_server();
    assert!(server.state.config.qap.direct, "direct mode is the default");
    let (mut c, _) = QapClient::open(port);
    assert_eq!(login(&mut c, "pub", super::PASSWORD), resp::OK);
    for i in 0..5 {
        let code = format!("x <- {i}; x * 2");
        assert_eq!(
            eval(&mut c, &code),
            Ok(Value::doubles(vec![f64::from(i * 2)]))
        );
    }
    let audited = || {
        let tail = server.state.store.audit_tail(200).unwrap();
        tail.iter()
            .filter(|e| e.route == "CMD_eval" && e.user.as_deref() == Some("pub"))
            .filter(|e| e.code_hash.is_some())
            .count()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while audited() < 5 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(audited(), 5, "each call is audited with its code's hash");
    // Plain double vectors go straight between the socket and R, both ways, with
    // the special values intact and the large header past 16 MB.
    let special = Value::doubles(vec![-0.0, f64::INFINITY, 1e-310, 2.5]);
    c.assign(cmd::SET_SEXP, "s", &special);
    assert_eq!(eval(&mut c, "s"), Ok(special));
    assert_eq!(
        eval(
            &mut c,
            "as.numeric(identical(s, c(-0, Inf, 1e-310, 2.5)) && 1/s[1] < 0)"
        ),
        Ok(Value::doubles(vec![1.0]))
    );
    let big = Value::doubles(
        (0..2_100_000)
            .map(|i| f64::from(i) / 4.0)
            .collect::<Vec<_>>(),
    );
    c.assign(cmd::SET_SEXP, "b", &big);
    assert_eq!(
        eval(&mut c, "as.numeric(identical(b, (0:2099999) / 4))"),
        Ok(Value::doubles(vec![1.0]))
    );
    assert_eq!(eval(&mut c, "b"), Ok(big));
    assert_eq!(
        eval(&mut c, "b[2] <- NA_real_; is.na(b[2]) + 0"),
        Ok(Value::doubles(vec![1.0]))
    );
    // The test server's deadline is 3 s: the call is interrupted, R unwinds, the
    // client gets 127, and the worker serves on with its state.
    assert_eq!(eval(&mut c, "Sys.sleep(60)"), Err(status::R_ERROR));
    assert_eq!(eval(&mut c, "x"), Ok(Value::doubles(vec![4.0])));
    // A worker that dies mid-call: 127, then a new worker (its state is gone).
    assert_eq!(
        eval(&mut c, "tools::pskill(Sys.getpid(), 9L)"),
        Err(status::R_ERROR)
    );
    assert_eq!(
        eval(&mut c, "as.numeric(exists('x'))"),
        Ok(Value::doubles(vec![0.0]))
    );
    // The same session over HTTP while the connection is quiet.
    let router = server.router();
    let token = super::token_for(&server, "pub");
    let (status_code, list) = rt.block_on(super::send(
        &router,
        "GET",
        "/api/v1/sessions",
        Some(&token),
        axum::body::Body::empty(),
    ));
    assert_eq!(status_code, axum::http::StatusCode::OK, "{list}");
    let id = list["sessions"][0]["id"]
        .as_str()
        .expect("the QAP1 session")
        .to_owned();
    let body = serde_json::json!({ "code": "y <- 7" }).to_string();
    let (status_code, out) = rt.block_on(super::send(
        &router,
        "POST",
        &format!("/api/v1/sessions/{id}/execute"),
        Some(&token),
        axum::body::Body::from(body),
    ));
    assert_eq!(status_code, axum::http::StatusCode::OK, "{out}");
    assert_eq!(eval(&mut c, "y"), Ok(Value::doubles(vec![7.0])));
    drop(c);
    drop(rt);
}

/// What RSclient users rely on, run unmodified against a real Rserve and against
/// Rookery (anonymous identity, so neither asks for a login); each line shows a
/// result with `deparse()` (or the error RSclient raised), so the two outputs must be
/// the same text: serEval's extra evaluation, serAssign evaluating its value,
/// sessions in the global environment, values of many types, Rserve's error status,
/// `RS.eval.qap` (CMD_eval with a QAP-encoded call: symbols, tags, nested calls, a
/// constant, an assignment, an error, attributed values back), an S4 object, a
/// 1e6-element vector, language values, and `wait = FALSE` with `RS.collect`.
const RSCLIENT_CALLS: &str = r#"
library(RSclient)
c <- RS.connect(port = PORT)
show <- function(label, expr) {
  x <- tryCatch(expr, error = function(e) paste("ERROR", conditionMessage(e)))
  cat(label, paste(deparse(x), collapse = " "), "\n")
}
show("lang", RS.eval(c, quote(keep_me <- 42L)))
show("kept", RS.eval(c, keep_me))
show("lazy", RS.eval(c, keep_me * 2L))
f <- RS.eval(c, quote(function(x, y = 2) x + y), lazy = FALSE)
show("closure", identical(f, function(x, y = 2) x + y))
show("closure-env", identical(environment(f), globalenv()))
invisible(RS.assign(c, "zz", quote(1 + 2)))
show("assign-evaluates", RS.eval(c, zz))
invisible(RS.assign(c, "vv", c(a = 1.5, b = NA)))
show("assign-value", RS.eval(c, vv))
show("superassign", RS.eval(c, {g <- function() h <<- 5; g(); h}))
show("global", RS.eval(c, exists("h", envir = globalenv(), inherits = FALSE)))
show("ls", RS.eval(c, ls()))
show("environment", RS.eval(c, identical(environment(), globalenv())))
show("types", RS.eval(c, list(TRUE, NA, 1L, NA_integer_, 2.5, NA_real_, "s", NA_character_,
                             factor(c("u", "v", "u")), as.Date("2024-02-29"),
                             data.frame(p = 1:2, q = c("x", "y")), list(list(1)), 3+4i)))
show("error", RS.eval(c, stop("boom")))
show("qap", RS.eval.qap(c, quote(keep_me + 1L)))
show("qap-tagged", RS.eval.qap(c, quote(paste("a", "b", sep = "-"))))
show("qap-symbol", RS.eval.qap(c, as.name("keep_me")))
show("qap-nested", RS.eval.qap(c, quote(sum(c(1, 2, 3)) * length(letters))))
show("qap-constant", RS.eval.qap(c, "1 + 1"))
show("qap-data", RS.eval.qap(c, list(a = 1:3, b = "x")))
show("qap-assign", RS.eval.qap(c, quote(qq <- 2L * keep_me)))
show("qap-assigned", RS.eval(c, qq))
show("qap-ls", RS.eval.qap(c, quote(ls())))
show("qap-error", RS.eval.qap(c, quote(stop("qap boom"))))
show("qap-factor", RS.eval.qap(c, quote(factor(c("u", "v", "u")))))
show("qap-frame", RS.eval.qap(c, quote(data.frame(p = 1:2, q = c("x", NA)))))
show("qap-matrix", RS.eval.qap(c, quote(matrix(c(1.5, NA, 3, 4), 2, dimnames = list(c("a", "b"), NULL)))))
s4 <- RS.eval(c, { setClass("P", representation(x = "numeric")); new("P", x = 1) })
show("s4", list(isS4(s4), as.character(class(s4)), attr(s4, "x")))
show("attrs", RS.eval(c, matrix(1:4, 2, dimnames = list(c("a", "b"), c("x", "y")))))
show("more-types", RS.eval(c, list(c(1+2i, NA), as.raw(c(0, 255)), structure(1:3, myattr = "k"),
                                  as.POSIXct("2024-01-01 12:00:00", tz = "UTC"), c(a = TRUE, b = NA))))
show("language", RS.eval(c, quote(quote(a + b))))
show("language-value", RS.eval(c, quote(x + 1), lazy = FALSE))
big <- RS.eval(c, as.numeric(seq_len(1e6)) / 4)
show("big", identical(big, as.numeric(seq_len(1e6)) / 4))
show("async", { RS.eval(c, keep_me + 100L, wait = FALSE); RS.collect(c) })
show("async-qap", { RS.eval.qap(c, quote(keep_me + 200L), wait = FALSE); RS.collect(c, qap = TRUE) })
show("after", RS.eval(c, keep_me))
invisible(RS.close(c))
"#;

fn rsclient_run(port: u16) -> String {
    let script = RSCLIENT_CALLS.replace("PORT", &format!("{port}L"));
    super::run_ok("Rscript", &["-e".as_ref(), script.as_ref()])
}

#[test]
fn rsclient_gets_from_rookery_what_it_gets_from_rserve() {
    let rserve = crate::rserve::Rserve::start("", false);
    let want = rsclient_run(rserve.port);
    let (server, _data) = super::server_with(|c| {
        c.qap.listen = Some("127.0.0.1:0".parse().unwrap());
        c.qap.anonymous = Some("rsclient".into());
    });
    let store = server.state.store.as_ref();
    rookery_server::admin::add_user(store, "rsclient", Role::User, super::PASSWORD).unwrap();
    rookery_server::admin::grant(store, "rsclient", rookery_server::store::GRANT_EXECUTE).unwrap();
    let (_rt, port) = listening(&server);
    let got = rsclient_run(port);
    let want: Vec<&str> = want.lines().map(str::trim).collect();
    let got: Vec<&str> = got.lines().map(str::trim).collect();
    let differ: Vec<String> = want
        .iter()
        .zip(&got)
        .filter(|(w, g)| w != g)
        .map(|(w, g)| format!("Rserve:  {w}\nRookery: {g}"))
        .collect();
    assert!(differ.is_empty(), "{}", differ.join("\n"));
    assert_eq!(got.len(), want.len(), "{got:?} vs {want:?}");
    // The same is not enough: these are the answers an R console gives.
    for line in [
        "lang 42L",
        "qap 43L",
        "qap-tagged \"a-b\"",
        "qap-symbol 42L",
        "qap-nested 156",
        "qap-constant \"1 + 1\"",
        "qap-assigned 84L",
        "async 142L",
        "async-qap 242L",
        "big TRUE",
        "s4 list(TRUE, \"P\", 1)",
    ] {
        assert!(got.contains(&line), "no `{line}` in {got:#?}");
    }
    let ls = got
        .iter()
        .find(|l| l.starts_with("qap-ls"))
        .expect("qap-ls");
    assert!(ls.contains("\"qq\"") && !ls.contains("rookery"), "{ls}");
    let error = got
        .iter()
        .find(|l| l.starts_with("qap-error"))
        .expect("qap-error");
    assert!(error.contains("ERROR"), "{error}");
}

/// RSclient over TLS, as its users reach it: `RS.switch(c, "TLS")` on the plain
/// port, then calls over the switched connection. The same script against a real
/// Rserve (its `switch.qap.tls`) and against Rookery must print the same lines.
const RSCLIENT_TLS: &str = r#"
library(RSclient)
show <- function(label, expr) {
  x <- tryCatch(expr, error = function(e) paste("ERROR", conditionMessage(e)))
  cat(label, paste(deparse(x), collapse = " "), "\n")
}
c <- RS.connect(port = PORT)
show("switch", RS.switch(c, "TLS", verify = FALSE))
show("after-switch", RS.eval(c, 1 + 1))
show("qap-after-switch", RS.eval.qap(c, quote(paste("over", "tls"))))
show("big-after-switch", RS.eval(c, sum(as.numeric(seq_len(1e6)))))
invisible(RS.close(c))
"#;

/// `RS.connect(tls = TRUE)` on Rookery's TLS port, which never admits the anonymous
/// identity (it may face the network): RSclient logs in with RSA secure login.
const RSCLIENT_TLS_PORT: &str = r#"
library(RSclient)
t <- RS.connect(port = TLSPORT, tls = TRUE, verify = FALSE)
k <- RS.authkey(t)
invisible(RS.login(t, "rsclient", "PASSWORD", authkey = k))
cat("tls", RS.eval(t, sum(1:10)), "\n")
invisible(RS.close(t))
"#;

#[test]
fn rsclient_switches_to_tls_on_rookery_as_on_rserve() {
    let certs = tempfile::tempdir().unwrap();
    let generated = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let (cert, key) = (certs.path().join("c.pem"), certs.path().join("k.pem"));
    std::fs::write(&cert, generated.cert.pem()).unwrap();
    std::fs::write(&key, generated.key_pair.serialize_pem()).unwrap();
    let run = |port: u16| {
        let script = RSCLIENT_TLS.replace("PORT", &format!("{port}L"));
        super::run_ok("Rscript", &["-e".as_ref(), script.as_ref()])
    };

    let conf = format!(
        "switch.qap.tls enable\ntls.key {}\ntls.cert {}\n",
        key.display(),
        cert.display()
    );
    let rserve = crate::rserve::Rserve::start(&conf, false);
    let want = run(rserve.port);
    let rsa = certs.path().join("qap.pem");
    let made = std::process::Command::new("openssl")
        .args(["genrsa", "-out"])
        .arg(&rsa)
        .arg("2048")
        .output()
        .expect("openssl");
    assert!(made.status.success());

    let tls_port = crate::rserve::free_port();
    let (server, _data) = super::server_with(|c| {
        c.qap.listen = Some("127.0.0.1:0".parse().unwrap());
        c.qap.tls = Some(format!("127.0.0.1:{tls_port}").parse().unwrap());
        c.qap.anonymous = Some("rsclient".into());
        c.qap.rsa_key = Some(rsa.clone());
        c.tls = Some(rookery_server::config::TlsConfig {
            cert: cert.clone(),
            key: key.clone(),
        });
    });
    let store = server.state.store.as_ref();
    rookery_server::admin::add_user(store, "rsclient", Role::User, super::PASSWORD).unwrap();
    rookery_server::admin::grant(store, "rsclient", rookery_server::store::GRANT_EXECUTE).unwrap();
    let (_rt, port) = listening(&server);
    let got = run(port);
    let tls_script = RSCLIENT_TLS_PORT
        .replace("TLSPORT", &format!("{tls_port}L"))
        .replace("PASSWORD", super::PASSWORD);
    let tls = super::run_ok("Rscript", &["-e".as_ref(), tls_script.as_ref()]);
    assert_eq!(tls.trim(), "tls 55", "{tls}");
    let want: Vec<&str> = want.lines().map(str::trim).collect();
    let got: Vec<&str> = got.lines().map(str::trim).collect();
    assert_eq!(got, want);
    for line in [
        "switch TRUE",
        "after-switch 2",
        "qap-after-switch \"over tls\"",
        "big-after-switch 500000500000",
    ] {
        assert!(got.contains(&line), "no `{line}` in {got:#?}");
    }
}

/// OOB messages from R code, as RSclient users write them: the Rserve package's
/// `self.oobSend` and `self.oobMessage` in code run by `RS.eval` (serEval) and
/// `RS.eval.qap` (CMD_eval of a QAP-encoded call), received by `RS.oobCallbacks`
/// (`send`: code and payload; `msg`: its value is the reply `self.oobMessage`
/// returns). Run against a real Rserve with `oob enable` and against Rookery with
/// `[qap] oob = true`; the two outputs must be the same text.
const RSCLIENT_OOB: &str = r#"
library(RSclient)
c <- RS.connect(port = PORT)
show <- function(label, expr) {
  x <- tryCatch(expr, error = function(e) paste("ERROR", conditionMessage(e)))
  cat(label, paste(deparse(x), collapse = " "), "\n")
}
sent <- list()
invisible(RS.oobCallbacks(c,
  send = function(code, payload) sent[[length(sent) + 1L]] <<- list(code = code, payload = payload),
  msg = function(code, payload) list(code = code, twice = payload$n * 2)))
show("load", RS.eval(c, suppressPackageStartupMessages(library(Rserve, logical.return = TRUE))))
show("send", RS.eval(c, self.oobSend(list(kind = "progress", pct = 50L), 5L)))
show("send-large-code", RS.eval(c, self.oobSend("masked", 0x1003L)))
show("sent", sent)
show("message", RS.eval(c, self.oobMessage(list(n = 21), 7L)))
show("message-used", RS.eval(c, { r <- self.oobMessage(list(n = 1.5)); r$twice + 1 }))
show("qap-send", RS.eval.qap(c, quote(self.oobSend(c(a = 1, b = NA), 1L))))
show("qap-message", RS.eval.qap(c, quote(self.oobMessage(list(n = 4L), 2L))))
show("sent-all", sent)
show("after", RS.eval(c, 1L + 1L))
invisible(RS.close(c))
"#;

fn rsclient_oob_run(port: u16) -> Vec<String> {
    let script = RSCLIENT_OOB.replace("PORT", &format!("{port}L"));
    let text = super::run_ok("Rscript", &["-e".as_ref(), script.as_ref()]);
    text.lines().map(|l| l.trim().to_owned()).collect()
}

#[test]
fn rsclient_oob_callbacks_get_from_rookery_what_they_get_from_rserve() {
    let rserve = crate::rserve::Rserve::start("oob enable\n", false);
    let want = rsclient_oob_run(rserve.port);
    let (server, _data) = super::server_with(|c| {
        c.qap.listen = Some("127.0.0.1:0".parse().unwrap());
        c.qap.anonymous = Some("oobuser".into());
        c.qap.oob = true;
    });
    let store = server.state.store.as_ref();
    rookery_server::admin::add_user(store, "oobuser", Role::User, super::PASSWORD).unwrap();
    rookery_server::admin::grant(store, "oobuser", rookery_server::store::GRANT_EXECUTE).unwrap();
    let (_rt, port) = listening(&server);
    let got = rsclient_oob_run(port);
    assert_eq!(got, want, "Rookery (left) and Rserve (right) differ");
    // The same is not enough: these are the answers Rserve's users expect.
    for line in [
        "send TRUE",
        "message list(code = 7L, twice = 42)",
        "message-used 4",
        "qap-message list(code = 2L, twice = 8)",
        "after 2L",
    ] {
        assert!(got.iter().any(|l| l == line), "no `{line}` in {got:#?}");
    }
    let sent = got.iter().find(|l| l.starts_with("sent-all")).unwrap();
    for part in [
        "code = 5L",
        "\"progress\"",
        "code = 3L",
        "\"masked\"",
        "code = 1L",
    ] {
        assert!(sent.contains(part), "no {part} in {sent}");
    }
}

/// pyRserve's `oobCallback` with Rserve's OOB messages: `conn.eval` sends CMD_eval
/// with a string, which Rookery's direct mode answers in the worker itself (so the
/// worker writes the messages and reads the reply from the socket). The same lines
/// from a real Rserve with `oob enable`; without `[qap] oob`, Rookery refuses them
/// with an R error and the session goes on.
#[test]
fn pyrserve_oob_callback_in_direct_mode_as_on_rserve() {
    let python = concat!(env!("CARGO_MANIFEST_DIR"), "/target/pyvenv/bin/python");
    let script = r#"
import sys, pyRserve
seen = []
def oob(data, code=0):
    seen.append((code, data if isinstance(data, str) else list(data)))
    return "reply-%d" % code
conn = pyRserve.connect(host="127.0.0.1", port=int(sys.argv[1]), oobCallback=oob)
conn.voidEval("suppressPackageStartupMessages(library(Rserve))")
print("send", conn.eval("self.oobSend('hello', 3L)"))
print("message", conn.eval("self.oobMessage(c(1.5, 2.5), 9L)"))
print("seen", seen)
try:
    print("nested", conn.eval("paste(self.oobMessage('q', 1L), self.oobMessage('r', 2L))"))
except Exception as e:
    print("error", type(e).__name__, str(e))
print("after", conn.eval("1L + 1L"))
conn.close()
"#;
    let run = |port: u16| {
        super::run_ok(
            python,
            &["-c".as_ref(), script.as_ref(), port.to_string().as_ref()],
        )
    };
    let rserve = crate::rserve::Rserve::start("oob enable\n", false);
    let want = run(rserve.port);
    let server_with_oob = |oob: bool| {
        let (server, data) = super::server_with(|c| {
            c.qap.listen = Some("127.0.0.1:0".parse().unwrap());
            c.qap.anonymous = Some("pyoob".into());
            c.qap.oob = oob;
        });
        let store = server.state.store.as_ref();
        rookery_server::admin::add_user(store, "pyoob", Role::User, super::PASSWORD).unwrap();
        rookery_server::admin::grant(store, "pyoob", rookery_server::store::GRANT_EXECUTE).unwrap();
        let (rt, port) = listening(&server);
        (server, data, rt, port)
    };
    let (_server, _data, _rt, port) = server_with_oob(true);
    let got = run(port);
    assert_eq!(got, want, "Rookery (left) and Rserve (right) differ");
    let lines: Vec<&str> = got.lines().collect();
    assert_eq!(
        lines,
        [
            "send True",
            "message reply-9",
            "seen [(3, 'hello'), (9, [1.5, 2.5])]",
            "nested reply-1 reply-2",
            "after 2"
        ],
        "{got}"
    );

    // Off (the default): an R error the code can catch, and nothing on the wire.
    let (_server, _data, _rt, port) = server_with_oob(false);
    let (mut c, _) = QapClient::open(port);
    let caught = eval(
        &mut c,
        "suppressPackageStartupMessages(library(Rserve)); \
         tryCatch(self.oobSend('x'), error = conditionMessage)",
    )
    .unwrap();
    let text = caught.as_str().unwrap_or_default().to_owned();
    assert!(text.contains("[qap] oob = true"), "{caught:?}");
    assert_eq!(eval(&mut c, "2L"), Ok(Value::integers(vec![2])));
}

/// A client that answers an `oobMessage` wrongly, goes away while R code waits for
/// its reply, or never replies: the code gets an R error (status 127) and the
/// connection goes on when the stream is still in step; a gone client's session
/// ends; one that never replies is cut off at the call's deadline, and its session
/// is gone. A new connection of the same user is served each time.
#[test]
fn an_oob_message_never_holds_a_worker_for_a_client_that_does_not_answer() {
    let (server, _data) = super::server_with(|c| {
        c.qap.listen = Some("127.0.0.1:0".parse().unwrap());
        c.qap.anonymous = Some("ooby".into());
        c.qap.oob = true;
        c.limits.call_timeout_secs = 3;
    });
    let store = server.state.store.as_ref();
    rookery_server::admin::add_user(store, "ooby", Role::User, super::PASSWORD).unwrap();
    rookery_server::admin::grant(store, "ooby", rookery_server::store::GRANT_EXECUTE).unwrap();
    let (_rt, port) = listening(&server);
    let ask = |c: &mut QapClient| {
        let mut p = Vec::new();
        frame::push_string_param(
            &mut p,
            b"suppressPackageStartupMessages(library(Rserve)); self.oobMessage('q', 4L)",
        );
        c.send(cmd::EVAL, &p);
        let oob = c.read_reply();
        assert_eq!(oob.cmd, resp::OOB_MSG | 4, "{:x}", oob.cmd);
        assert_eq!(decode_payload(&oob.payload), Ok(Value::strings(["q"])));
    };

    // A reply of the wrong type: an R error the client hears about, then business
    // as usual on the same connection.
    let (mut c, _) = QapClient::open(port);
    ask(&mut c);
    let mut p = Vec::new();
    frame::push_param(&mut p, frame::dt::INT, &7i32.to_le_bytes());
    let reply = c.request(resp::OOB_MSG | 4, &p);
    assert_eq!(frame::status_of(reply.cmd), status::R_ERROR);
    assert_eq!(eval(&mut c, "2L"), Ok(Value::integers(vec![2])));
    drop(c);

    // A client that leaves while the code waits: its session ends.
    let (mut c, _) = QapClient::open(port);
    ask(&mut c);
    drop(c);
    let sessions = server.state.sessions.clone();
    let ended = (0..200).any(|_| {
        std::thread::sleep(std::time::Duration::from_millis(50));
        sessions.count() == 0
    });
    assert!(ended, "the session of a gone client ends");

    // A client that never replies: status 127 at the call's deadline, then the
    // connection is closed (its stream would be out of step).
    let (mut c, _) = QapClient::open(port);
    ask(&mut c);
    let reply = c.read_reply();
    assert_eq!(frame::status_of(reply.cmd), status::R_ERROR);
    assert!(c.is_closed(), "the connection is cut off");

    let (mut c, _) = QapClient::open(port);
    assert_eq!(eval(&mut c, "6L * 7L"), Ok(Value::integers(vec![42])));
}

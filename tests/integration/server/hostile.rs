//! Slow and lying clients against a real `rookery serve` on loopback, HTTP and
//! QAP1, with a one-second read deadline (`limits.read_timeout_secs`): a declared
//! length beyond the limit is refused at once, a request that stops arriving is
//! answered or cut off, a connection that lied and left ends its session, nothing is
//! reserved for bytes that never come, and a normal client is served throughout.
//!
//! The clients wait up to a minute for what must happen; nothing here is timed.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use rookery_server::qap::frame::{self, cmd, resp, status};

use super::live::http;

const USER: &str = "ada";
const USER_PASSWORD: &str = "ada-password-1";

/// `rookery serve` with HTTP and QAP1 on free loopback ports and a one-second read
/// deadline; QAP1 direct mode as `direct` says. Returns the child and both addresses.
fn serve(data: &std::path::Path, direct: bool) -> (std::process::Child, String, String) {
    super::cli_add_user(data, USER, "publisher", USER_PASSWORD);
    serve_with(
        data,
        &format!(
            "[limits]\nread_timeout_secs = 1\n[qap]\nlisten = \"127.0.0.1:0\"\ndirect = {direct}\n"
        ),
    )
}

/// `rookery serve` on `data` with `toml` as its config file (which must open a QAP1
/// listener). Returns the child and its HTTP and QAP1 addresses.
pub(super) fn serve_with(
    data: &std::path::Path,
    toml: &str,
) -> (std::process::Child, String, String) {
    let config = data.join("rookery.toml");
    std::fs::write(&config, toml).unwrap();
    let args: Vec<&std::ffi::OsStr> = vec![
        "--listen".as_ref(),
        "127.0.0.1:0".as_ref(),
        "--config".as_ref(),
        config.as_os_str(),
        "--data".as_ref(),
        data.as_os_str(),
    ];
    let (child, lines) = super::spawn_serve(&args);
    let (http_addr, qap_addr) = super::http_and_qap_addrs(lines);
    (child, http_addr, qap_addr)
}

/// Reads until the server closes the connection (end of file or reset); false when
/// it is still open after a minute. Whatever the server sent first is skipped.
fn closed_by_server(s: &mut TcpStream) -> bool {
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
            Err(_) => return false,
        }
    }
}

/// A QAP1 connection past its ID string.
fn qap_connect(addr: &str) -> TcpStream {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut id = [0u8; 32];
    s.read_exact(&mut id).unwrap();
    s
}

/// Sends one QAP1 message and reads the reply's header word and payload.
pub(crate) fn qap_request(s: &mut TcpStream, command: u32, payload: &[u8]) -> (u32, Vec<u8>) {
    s.write_all(&frame::encode_message(command, 0, payload))
        .unwrap();
    let mut head = [0u8; 16];
    s.read_exact(&mut head).unwrap();
    let word = u32::from_le_bytes(head[..4].try_into().unwrap());
    let len = u32::from_le_bytes(head[4..8].try_into().unwrap()) as usize;
    let mut body = vec![0; len];
    s.read_exact(&mut body).unwrap();
    (word, body)
}

/// A logged-in QAP1 connection of [`USER`]; the login's reply word.
fn qap_login(addr: &str) -> (TcpStream, u32) {
    let mut s = qap_connect(addr);
    let mut p = Vec::new();
    frame::push_string_param(&mut p, format!("{USER}\n{USER_PASSWORD}").as_bytes());
    let (word, _) = qap_request(&mut s, cmd::LOGIN, &p);
    (s, word)
}

fn qap_eval_ok(s: &mut TcpStream, code: &str) -> bool {
    let mut p = Vec::new();
    frame::push_string_param(&mut p, code.as_bytes());
    qap_request(s, cmd::EVAL, &p).0 == resp::OK
}

/// A header announcing `len` payload bytes, then `sent` of them.
fn lie_about_length(s: &mut TcpStream, len: u64, sent: usize) {
    s.write_all(&frame::Header::new(cmd::EVAL, len).to_bytes())
        .unwrap();
    s.write_all(&vec![b' '; sent]).unwrap();
}

/// The peak resident memory of process `pid`, in kB (VmHWM).
pub(super) fn peak_rss_kb(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmHWM in /proc/PID/status")
}

/// Logs in `n` connections of [`USER`] at once, retrying while the server is still
/// closing the sessions of connections that just ended (a minute at most).
fn n_logins_at_once(addr: &str, n: usize) -> Vec<TcpStream> {
    for _ in 0..600 {
        let mut held = Vec::new();
        for _ in 0..n {
            let (s, word) = qap_login(addr);
            if word != resp::OK {
                assert_eq!(frame::status_of(word), status::SESSION_BUSY, "{word:#x}");
                break;
            }
            held.push(s);
        }
        if held.len() == n {
            return held;
        }
        drop(held);
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("{n} sessions never became free: ended connections kept theirs");
}

fn qap_liars_are_cut_off(direct: bool) {
    let data = tempfile::tempdir().unwrap();
    let (child, _http, qap) = serve(data.path(), direct);
    let (mut normal, word) = qap_login(&qap);
    assert_eq!(word, resp::OK);
    let before = peak_rss_kb(child.id());

    // No login after connecting: closed.
    let mut silent = qap_connect(&qap);
    assert!(
        closed_by_server(&mut silent),
        "a silent connection stays open"
    );

    // Half a header, then nothing: closed.
    let (mut half, word) = qap_login(&qap);
    assert_eq!(word, resp::OK);
    half.write_all(&frame::Header::new(cmd::EVAL, 10).to_bytes()[..7])
        .unwrap();
    assert!(
        closed_by_server(&mut half),
        "half a header holds the connection"
    );

    // 200 MB announced, 1 kB sent, then nothing: closed, and the memory never taken.
    let (mut stalled, word) = qap_login(&qap);
    assert_eq!(word, resp::OK);
    lie_about_length(&mut stalled, 200 << 20, 1000);
    assert!(
        closed_by_server(&mut stalled),
        "a stalled message holds the connection"
    );

    assert!(
        qap_eval_ok(&mut normal, "2 * 21"),
        "a normal client is served"
    );

    // Four connections (the per-user session limit) announce 200 MB each and leave:
    // each ends its session, so four new logins of the same user get theirs.
    drop(normal);
    for _ in 0..4 {
        let (mut s, word) = qap_login(&qap);
        assert_eq!(word, resp::OK);
        lie_about_length(&mut s, 200 << 20, 1000);
        drop(s);
    }
    let mut held = n_logins_at_once(&qap, 4);
    // Past the per-user limit a fifth is refused: the limit is still there.
    let (_, word) = qap_login(&qap);
    assert_eq!(frame::status_of(word), status::SESSION_BUSY, "{word:#x}");
    assert!(
        qap_eval_ok(&mut held[0], "1 + 1"),
        "a normal client is served"
    );

    let grown = peak_rss_kb(child.id()).saturating_sub(before);
    assert!(
        grown < 64 << 10,
        "the server's peak memory grew by {grown} kB for 1 MB of lies"
    );
    drop(held);
    super::stop_server(child);
}

#[test]
fn qap1_clients_that_stall_or_lie_are_cut_off_and_their_sessions_end() {
    qap_liars_are_cut_off(true);
}

#[test]
fn qap1_without_direct_mode_cuts_off_the_same_clients() {
    qap_liars_are_cut_off(false);
}

#[test]
fn http_clients_that_lie_or_stall_get_an_answer_or_a_close() {
    let data = tempfile::tempdir().unwrap();
    let (child, addr, _qap) = serve(data.path(), true);

    // A terabyte announced, a few bytes sent: 413 at once.
    let mut s = TcpStream::connect(&addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    s.write_all(
        b"POST /api/v1/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
          Content-Length: 1099511627776\r\n\r\n{\"user",
    )
    .unwrap();
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
    assert!(text.starts_with("HTTP/1.1 413"), "{text}");
    assert!(text.contains("too_large"), "{text}");

    // 1000 bytes announced, 8 sent, then nothing: 408, and the connection closes.
    let mut s = TcpStream::connect(&addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    s.write_all(b"POST /api/v1/login HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{\"userna")
        .unwrap();
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("request_timeout"), "{text}");

    // Headers that never end: the connection closes.
    let mut s = TcpStream::connect(&addr).unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    assert!(
        closed_by_server(&mut s),
        "unfinished headers hold the connection"
    );

    // A normal client meanwhile.
    let (status, body) = http(&addr, "GET", "/healthz", &[], "");
    assert_eq!(status, 200, "{body}");
    super::stop_server(child);
}

/// `rookery serve` with small request limits (1 MiB a body or QAP1 message, 1.5 MiB
/// in flight per user) and a read deadline long enough for a stalled upload to stay
/// in flight while other requests come; users `ada` and `bob`. QAP1 without direct
/// mode: in direct mode a session's messages are read by its worker, into the
/// worker's memory (bounded by its own limits), never the server's.
fn serve_small_budget(data: &std::path::Path) -> (std::process::Child, String, String) {
    super::cli_add_user(data, USER, "publisher", USER_PASSWORD);
    super::cli_add_user(data, "bob", "publisher", "bob-password-1");
    serve_with(
        data,
        "[limits]\nread_timeout_secs = 60\nmax_body_bytes = 1048576\n\
         qap_max_message_bytes = 1048576\nmax_inflight_bytes_per_user = 1572864\n\
         [qap]\nlisten = \"127.0.0.1:0\"\ndirect = false\n",
    )
}

/// A token and an open session of `user`.
fn token_and_session(addr: &str, user: &str, password: &str) -> (String, String) {
    let body = format!(r#"{{"username": "{user}", "password": "{password}"}}"#);
    let (status, text) = http(
        addr,
        "POST",
        "/api/v1/login",
        &[("Content-Type", "application/json")],
        &body,
    );
    assert_eq!(status, 200, "{text}");
    let login: serde_json::Value = serde_json::from_str(&text).unwrap();
    let token = login["access_token"].as_str().unwrap().to_owned();
    let auth = format!("Bearer {token}");
    let (status, text) = http(
        addr,
        "POST",
        "/api/v1/sessions",
        &[("Authorization", &auth)],
        "{}",
    );
    assert_eq!(status, 201, "{text}");
    let session: serde_json::Value = serde_json::from_str(&text).unwrap();
    (token, session["id"].as_str().unwrap().to_owned())
}

/// A session execute of `1L` padded with `pad` spaces: its status and body.
fn padded_execute(addr: &str, token: &str, session: &str, pad: usize) -> (u16, String) {
    let body = format!(r#"{{"code": "1L"}}{}"#, " ".repeat(pad));
    let auth = format!("Bearer {token}");
    http(
        addr,
        "POST",
        &format!("/api/v1/sessions/{session}/execute"),
        &[
            ("Authorization", &auth),
            ("Content-Type", "application/json"),
        ],
        &body,
    )
}

/// Tries `attempt` until it says true, for a minute (the server reads a stalled
/// client's bytes in its own time).
fn eventually(what: &str, mut attempt: impl FnMut() -> bool) {
    for _ in 0..600 {
        if attempt() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("never: {what}");
}

#[test]
fn one_user_cannot_hold_more_than_their_bytes_in_flight_over_many_connections() {
    let data = tempfile::tempdir().unwrap();
    let (child, addr, qap) = serve_small_budget(data.path());
    let (ada, ada_session) = token_and_session(&addr, USER, USER_PASSWORD);
    let (bob, bob_session) = token_and_session(&addr, "bob", "bob-password-1");
    // Both sessions answer (so the stalled upload below is read, not refused).
    for (token, session) in [(&ada, &ada_session), (&bob, &bob_session)] {
        let (status, text) = padded_execute(&addr, token, session, 0);
        assert_eq!(status, 200, "{text}");
    }

    // ada starts an upload of 1,000,000 bytes, sends 900,000 and stalls.
    let mut stalled = TcpStream::connect(&addr).unwrap();
    write!(
        stalled,
        "POST /api/v1/sessions/{ada_session}/execute HTTP/1.1\r\nHost: x\r\n\
         Authorization: Bearer {ada}\r\nContent-Type: application/json\r\n\
         Content-Length: 1000000\r\n\r\n{{\"code\": \"1L\"}}"
    )
    .unwrap();
    stalled.write_all(&vec![b' '; 900_000]).unwrap();

    // Her next 700,000-byte body passes the 1.5 MiB budget: 429, named.
    eventually("ada's second upload is refused", || {
        let (status, text) = padded_execute(&addr, &ada, &ada_session, 700_000);
        if status == 429 {
            assert!(text.contains("too_many_bytes_in_flight"), "{text}");
            return true;
        }
        assert_eq!(status, 200, "{text}");
        false
    });
    // Over QAP1 too: her logged-in connection announcing 800,000 bytes is refused
    // before any is read.
    eventually("ada's QAP1 message is refused", || {
        let (mut s, word) = qap_login(&qap);
        assert_eq!(word, resp::OK);
        s.write_all(&frame::Header::new(cmd::EVAL, 800_000).to_bytes())
            .unwrap();
        let mut head = [0u8; 16];
        s.read_exact(&mut head).unwrap();
        let word = u32::from_le_bytes(head[..4].try_into().unwrap());
        frame::status_of(word) == status::DATA_OVERFLOW && closed_by_server(&mut s)
    });
    // bob is not held up by her.
    let (status, text) = padded_execute(&addr, &bob, &bob_session, 700_000);
    assert_eq!(status, 200, "{text}");

    // When her stalled upload goes, her budget is back.
    drop(stalled);
    eventually("ada's budget is given back", || {
        let (status, text) = padded_execute(&addr, &ada, &ada_session, 700_000);
        assert!(status == 200 || status == 429, "{status} {text}");
        status == 200
    });

    // Before a login a message may hold 64 KiB at most.
    let mut s = qap_connect(&qap);
    s.write_all(&frame::Header::new(cmd::LOGIN, 100_000).to_bytes())
        .unwrap();
    let mut head = [0u8; 16];
    s.read_exact(&mut head).unwrap();
    let word = u32::from_le_bytes(head[..4].try_into().unwrap());
    assert_eq!(frame::status_of(word), status::DATA_OVERFLOW, "{word:#x}");
    assert!(closed_by_server(&mut s));
    super::stop_server(child);
}

/// A burst of logins at once costs the server a password hasher per core, not one
/// per login: each argon2id check takes 19 MiB, and the checks past the bound wait
/// their turn. 24 logins at once would raise the peak RSS by about 460 MB
/// otherwise; every one of them is answered, and rightly.
#[test]
fn a_burst_of_logins_costs_a_hasher_per_core_and_each_is_answered() {
    let data = tempfile::tempdir().unwrap();
    let (child, addr, _) = serve(data.path(), false);
    let before = peak_rss_kb(child.id());
    let answers: Vec<u16> = std::thread::scope(|s| {
        let logins: Vec<_> = (0..24)
            .map(|i| {
                let addr = &addr;
                s.spawn(move || {
                    // Half right (distinct cache entries cannot help: nothing is
                    // remembered before the first check ends), half unknown names.
                    let (name, pw) = if i % 2 == 0 {
                        (USER.to_owned(), USER_PASSWORD)
                    } else {
                        (format!("nobody-{i}"), "some-password-1")
                    };
                    let body = format!(r#"{{"username":"{name}","password":"{pw}"}}"#);
                    let headers = [("Content-Type", "application/json")];
                    http(addr, "POST", "/api/v1/login", &headers, &body).0
                })
            })
            .collect();
        logins.into_iter().map(|t| t.join().unwrap()).collect()
    });
    let rise = peak_rss_kb(child.id()) - before;
    let right = answers.iter().step_by(2).all(|&s| s == 200);
    let unknown = answers.iter().skip(1).step_by(2).all(|&s| s == 401);
    assert!(right && unknown, "{answers:?}");
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get()) as u64;
    let bound = (cores + 2) * 20 * 1024;
    assert!(
        rise < bound,
        "24 logins at once raised the peak RSS by {rise} kB (bound {bound} kB)"
    );
    super::stop_server(child);
}

//! The result cap (`limits.max_result_bytes`, per role in
//! `limits.max_result_bytes_by_role`) against a real `rookery serve`: a result over
//! the caller's cap is refused in the worker, before it is encoded or copied, over
//! HTTP (422 `result_too_large`, naming the size and the limit) and QAP1
//! (ERR_object_too_big with the size, as Rserve past its `maxsendbuf`, compared
//! live), in sessions and services; the server's memory does not see it, and the
//! session goes on with its data.

use std::net::TcpStream;

use rookery_server::qap::frame::{self, cmd, resp, status};
use serde_json::{json, Value as Json};

use super::hostile::{peak_rss_kb, qap_request, serve_with};
use super::live::http;

pub(crate) fn call(addr: &str, method: &str, path: &str, token: &str, body: &Json) -> (u16, Json) {
    let auth = format!("Bearer {token}");
    let mut headers = vec![("Content-Type", "application/json")];
    if !token.is_empty() {
        headers.push(("Authorization", auth.as_str()));
    }
    let (status, text) = http(addr, method, path, &headers, &body.to_string());
    (
        status,
        serde_json::from_str(&text).unwrap_or(Json::String(text)),
    )
}

fn login(addr: &str, name: &str, password: &str) -> String {
    let body = json!({"username": name, "password": password});
    let (status, out) = call(addr, "POST", "/api/v1/login", "", &body);
    assert_eq!(status, 200, "{out}");
    out["access_token"].as_str().unwrap().to_owned()
}

fn qap_login(addr: &str, name: &str, password: &str) -> TcpStream {
    use std::io::Read;
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(60)))
        .unwrap();
    let mut id = [0u8; 32];
    s.read_exact(&mut id).unwrap();
    let mut p = Vec::new();
    frame::push_string_param(&mut p, format!("{name}\n{password}").as_bytes());
    assert_eq!(qap_request(&mut s, cmd::LOGIN, &p).0, resp::OK);
    s
}

fn qap_eval(s: &mut TcpStream, code: &str) -> (u32, Vec<u8>) {
    let mut p = Vec::new();
    frame::push_string_param(&mut p, code.as_bytes());
    qap_request(s, cmd::EVAL, &p)
}

const UMA_PW: &str = "uma-password-1";
const ADA_PW: &str = "ada-password-1";

#[test]
fn a_result_over_the_callers_cap_is_refused_in_the_worker() {
    for direct in [true, false] {
        let data = tempfile::tempdir().unwrap();
        super::cli_add_user(data.path(), "uma", "user", UMA_PW);
        super::run_ok(
            env!("CARGO_BIN_EXE_rookery"),
            &[
                "user".as_ref(),
                "grant".as_ref(),
                "uma".as_ref(),
                "execute".as_ref(),
                "--data".as_ref(),
                data.path().as_os_str(),
            ],
        );
        super::cli_add_user(data.path(), "ada", "publisher", ADA_PW);
        let (child, addr, qap) = serve_with(
            data.path(),
            &format!(
                "[limits]\nmax_result_bytes = 1048576\n\
                 [limits.max_result_bytes_by_role]\npublisher = 33554432\n\
                 [qap]\nlisten = \"127.0.0.1:0\"\ndirect = {direct}\n"
            ),
        );
        let uma = login(&addr, "uma", UMA_PW);
        let ada = login(&addr, "ada", ADA_PW);

        // An HTTP session of a plain user (cap 1 MiB): 80 MB stay in the session.
        let (_, session) = call(&addr, "POST", "/api/v1/sessions", &uma, &json!({}));
        let id = session["id"].as_str().unwrap().to_owned();
        let exec = |token: &str, code: &str| {
            let path = format!("/api/v1/sessions/{id}/execute");
            call(&addr, "POST", &path, token, &json!({ "code": code }))
        };
        let (status_code, out) = exec(&uma, "x <- runif(1e7); length(x)");
        assert_eq!((status_code, &out["result"]), (200, &json!(10_000_000)));
        let before = peak_rss_kb(child.id());
        let (status_code, out) = exec(&uma, "x");
        let after = peak_rss_kb(child.id());
        assert_eq!(status_code, 422, "{out}");
        assert_eq!(super::code(&out), "result_too_large", "{out}");
        assert_eq!(out["error"]["limit"], 1_048_576);
        assert!(
            out["error"]["bytes"].as_u64().unwrap() > 80_000_000,
            "{out}"
        );
        let message = out["error"]["message"].as_str().unwrap();
        assert!(
            message.contains("limits.max_result_bytes") && message.contains("1048576"),
            "{message}"
        );
        assert!(
            after - before < 30 << 10,
            "the server's peak RSS rose by {} kB for a refused 80 MB result",
            after - before
        );
        let (status_code, out) = exec(&uma, "round(sum(x[1:3] >= 0))");
        assert_eq!((status_code, &out["result"]), (200, &json!(3)), "{out}");

        // A publisher's cap is 32 MiB: 16 MB come back, 40 MB do not.
        let (_, session) = call(&addr, "POST", "/api/v1/sessions", &ada, &json!({}));
        let ada_id = session["id"].as_str().unwrap().to_owned();
        let path = format!("/api/v1/sessions/{ada_id}/execute");
        let (status_code, out) = call(
            &addr,
            "POST",
            &path,
            &ada,
            &json!({"code": "length(runif(2e6))"}),
        );
        assert_eq!(status_code, 200, "{out}");
        let (status_code, out) = call(
            &addr,
            "POST",
            &path,
            &ada,
            &json!({"code": "rep(0.5, 2e6)"}),
        );
        assert_eq!(status_code, 200, "16 MB under a publisher's 32 MiB");
        assert_eq!(out["result"].as_array().map(Vec::len), Some(2_000_000));
        let (status_code, out) = call(
            &addr,
            "POST",
            &path,
            &ada,
            &json!({"code": "rep(0.5, 5e6)"}),
        );
        assert_eq!((status_code, super::code(&out)), (422, "result_too_large"));
        assert_eq!(out["error"]["limit"], 33_554_432);

        // A service's result counts against its caller's cap.
        let spec = json!({
            "name": "wide", "version": "1",
            "code": "wide <- function(d) rep(d$x, 5e6)",
            "function": "wide",
            "inputs": {"columns": [{"name": "x", "type": "double"}]},
        });
        let (status_code, out) = call(&addr, "POST", "/api/v1/services", &ada, &spec);
        assert_eq!(status_code, 201, "{out}");
        let (status_code, out) = call(
            &addr,
            "POST",
            "/api/v1/services/wide/1",
            &ada,
            &json!([{"x": 1}]),
        );
        assert_eq!((status_code, super::code(&out)), (422, "result_too_large"));

        // QAP1: Rserve's answer past its maxsendbuf; the session goes on.
        let mut s = qap_login(&qap, "uma", UMA_PW);
        assert_eq!(qap_eval(&mut s, "y <- runif(1e6); 1L").0, resp::OK);
        let (word, payload) = qap_eval(&mut s, "y");
        assert_eq!(word, frame::resp_err(status::OBJECT_TOO_BIG), "{word:#x}");
        let size = u32::from_le_bytes(payload[..4].try_into().unwrap());
        assert!(size > 8_000_000, "{size}");
        assert_eq!(qap_eval(&mut s, "length(y)").0, resp::OK);
        drop(s);
        super::stop_server(child);
    }
}

/// The same refusal as Rserve with a `maxsendbuf` gives, byte for byte: the
/// ERR_object_too_big word and the size Rserve reports (its estimate plus 4 KiB).
#[test]
fn an_over_cap_result_gets_rserves_own_answer() {
    let rserve = crate::rserve::Rserve::start("maxsendbuf 64\n", false);
    let (mut r, _) = crate::rserve::QapClient::open(rserve.port);
    let code = "runif(375000)";
    let mut p = Vec::new();
    frame::push_string_param(&mut p, code.as_bytes());
    let want = r.request(cmd::EVAL, &p);

    let data = tempfile::tempdir().unwrap();
    super::cli_add_user(data.path(), "ada", "publisher", ADA_PW);
    let (child, _, qap) = serve_with(
        data.path(),
        "[limits]\nmax_result_bytes = 65536\n[qap]\nlisten = \"127.0.0.1:0\"\n",
    );
    let mut s = qap_login(&qap, "ada", ADA_PW);
    let got = qap_eval(&mut s, code);
    assert_eq!(
        (got.0, got.1.clone()),
        (want.cmd, want.payload.clone()),
        "Rookery {:#x} {:?} vs Rserve {:#x} {:?}",
        got.0,
        got.1,
        want.cmd,
        want.payload
    );
    // 375,000 doubles: 4 + 3,000,000 bytes by Rserve's estimate, plus its margin.
    assert_eq!(want.payload, 3_004_100u32.to_le_bytes());
    drop(s);
    super::stop_server(child);
}

/// A large result is streamed as it is encoded: chunked, with the whole JSON text
/// never in the server's memory, so the server's peak RSS rises by at most about
/// twice the value (its copy off the worker's shared memory, and that memory
/// itself), not by the JSON text's two to three times more.
#[test]
fn a_large_result_streams_and_costs_the_server_about_twice_its_size() {
    let data = tempfile::tempdir().unwrap();
    super::cli_add_user(data.path(), "ada", "publisher", ADA_PW);
    let (child, addr, _) = serve_with(data.path(), "[qap]\nlisten = \"127.0.0.1:0\"\n");
    let ada = login(&addr, "ada", ADA_PW);
    let (_, session) = call(&addr, "POST", "/api/v1/sessions", &ada, &json!({}));
    let id = session["id"].as_str().unwrap().to_owned();
    let path = format!("/api/v1/sessions/{id}/execute");
    let (status_code, _) = call(
        &addr,
        "POST",
        &path,
        &ada,
        &json!({"code": "x <- runif(5e6); NULL"}),
    );
    assert_eq!(status_code, 200);
    let before = peak_rss_kb(child.id());
    let body = json!({"code": "x"}).to_string();
    let auth = format!("Bearer {ada}");
    let raw = raw_http(&addr, &path, &auth, &body);
    let after = peak_rss_kb(child.id());
    let (head, rest) = raw.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("transfer-encoding: chunked"),
        "{head}"
    );
    let out: Json = serde_json::from_str(&super::live::dechunk(rest)).unwrap();
    let xs = out["result"].as_array().unwrap();
    assert_eq!(xs.len(), 5_000_000);
    assert!(xs
        .iter()
        .all(|x| x.as_f64().is_some_and(|x| (0.0..1.0).contains(&x))));
    let value_kb = 40_000;
    let rise = after.saturating_sub(before);
    eprintln!("server peak RSS rose by {rise} kB for a {value_kb} kB result");
    assert!(
        rise < 2 * value_kb + (8 << 10),
        "the server's peak RSS rose by {rise} kB for a {value_kb} kB result"
    );
    super::stop_server(child);
}

/// POST with a JSON body; the whole raw answer, head and body.
fn raw_http(addr: &str, path: &str, auth: &str, body: &str) -> String {
    use std::io::{Read, Write};
    let mut s = TcpStream::connect(addr).unwrap();
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
         Content-Type: application/json\r\nAuthorization: {auth}\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    text
}

/// When memory runs out anyway, the kernel's OOM killer takes a worker first, then
/// a zygote, and the server last: their `oom_score_adj` say so (the server lowers
/// its own only with the privilege to, which root has).
#[test]
fn the_oom_killer_takes_workers_first_and_the_server_last() {
    let data = tempfile::tempdir().unwrap();
    super::cli_add_user(data.path(), "ada", "publisher", ADA_PW);
    let (child, addr, _) = serve_with(data.path(), "[qap]\nlisten = \"127.0.0.1:0\"\n");
    let adj = |pid: u32| -> i32 {
        std::fs::read_to_string(format!("/proc/{pid}/oom_score_adj"))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    };
    let ppid = |pid: u32| -> u32 {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        let after = &stat[stat.rfind(')').unwrap() + 2..];
        after.split(' ').nth(1).unwrap().parse().unwrap()
    };
    let ada = login(&addr, "ada", ADA_PW);
    let (_, session) = call(&addr, "POST", "/api/v1/sessions", &ada, &json!({}));
    let id = session["id"].as_str().unwrap().to_owned();
    let path = format!("/api/v1/sessions/{id}/execute");
    let (_, out) = call(&addr, "POST", &path, &ada, &json!({"code": "Sys.getpid()"}));
    let worker = out["result"].as_f64().unwrap() as u32;
    let zygote = ppid(worker);
    assert_ne!(zygote, child.id(), "workers are forked by their zygote");
    // CAP_SYS_RESOURCE (bit 24) lets the server lower its score; without it (an
    // unprivileged run, or root in a container without it) it keeps what it
    // inherited from this test.
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let caps = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .map(|v| u64::from_str_radix(v.trim(), 16).unwrap())
        .unwrap();
    let server = if caps & (1 << 24) != 0 {
        -900
    } else {
        adj(std::process::id())
    };
    assert_eq!(
        (adj(worker), adj(zygote), adj(child.id())),
        (1000, 500, server)
    );
    // A published service's workers, forked by a confined zygote, too.
    let spec = json!({
        "name": "pid", "version": "1",
        "code": "pid <- function(d) rep(Sys.getpid(), nrow(d))",
        "function": "pid",
        "inputs": {"columns": [{"name": "x", "type": "double"}]},
    });
    let (status_code, out) = call(&addr, "POST", "/api/v1/services", &ada, &spec);
    assert_eq!(status_code, 201, "{out}");
    let (_, out) = call(
        &addr,
        "POST",
        "/api/v1/services/pid/1",
        &ada,
        &json!([{"x": 1}]),
    );
    let worker = out["result"][0].as_f64().unwrap() as u32;
    assert_eq!((adj(worker), adj(ppid(worker))), (1000, 500));
    super::stop_server(child);
}

/// The server's budget of bytes in flight (`limits.max_inflight_bytes`) bounds
/// large answers still being sent, over all users: while a slow client holds one,
/// another user's large answer waits a second and then gets 503 `memory_busy` with
/// Retry-After; `/metrics` shows the bytes held; once the slow client has read its
/// answer, the other succeeds.
#[test]
fn large_answers_in_flight_share_the_servers_budget() {
    use std::io::{Read, Write};
    let data = tempfile::tempdir().unwrap();
    super::cli_add_user(data.path(), "ada", "publisher", ADA_PW);
    super::cli_add_user(data.path(), "bob", "publisher", "bob-password-1");
    let (child, addr, _) = serve_with(
        data.path(),
        "[limits]\nmax_body_bytes = 1048576\nqap_max_message_bytes = 1048576\n\
         max_inflight_bytes_per_user = 25165824\nmax_inflight_bytes = 31457280\n\
         [qap]\nlisten = \"127.0.0.1:0\"\n",
    );
    let open = |name: &str, pw: &str| {
        let token = login(&addr, name, pw);
        let (_, session) = call(&addr, "POST", "/api/v1/sessions", &token, &json!({}));
        let path = format!(
            "/api/v1/sessions/{}/execute",
            session["id"].as_str().unwrap()
        );
        let (status_code, out) = call(
            &addr,
            "POST",
            &path,
            &token,
            &json!({"code": "x <- runif(2e6); NULL"}),
        );
        assert_eq!(status_code, 200, "{out}");
        (token, path)
    };
    let (ada, ada_path) = open("ada", ADA_PW);
    let (bob, bob_path) = open("bob", "bob-password-1");

    // Ada asks for her 16 MB and does not read the answer yet.
    let mut slow = TcpStream::connect(&addr).unwrap();
    let body = json!({"code": "x"}).to_string();
    write!(
        slow,
        "POST {ada_path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
         Content-Type: application/json\r\nAuthorization: Bearer {ada}\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let metric = |name: &str| -> u64 {
        let (_, text) = http(&addr, "GET", "/metrics", &[], "");
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("rookery_{name} ")))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no rookery_{name} in {text}"))
    };
    let held = (0..600).find_map(|_| {
        std::thread::sleep(std::time::Duration::from_millis(50));
        let held = metric("inflight_bytes");
        (held >= 16_000_000).then_some(held)
    });
    assert!(
        held.is_some(),
        "ada's answer holds its bytes while she does not read"
    );
    assert_eq!(metric("inflight_limit_bytes"), 31_457_280);

    let refused = raw_http(&addr, &bob_path, &format!("Bearer {bob}"), &body);
    let (head, rest) = refused.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 503"), "{head}");
    assert!(
        head.to_ascii_lowercase().contains("retry-after: 1"),
        "{head}"
    );
    let out: Json = serde_json::from_str(rest).unwrap();
    assert_eq!(super::code(&out), "memory_busy", "{out}");
    assert!(
        out["error"]["message"]
            .as_str()
            .unwrap()
            .contains("limits.max_inflight_bytes"),
        "{out}"
    );

    // Ada reads hers; then Bob's goes through.
    let mut raw = String::new();
    slow.read_to_string(&mut raw).unwrap();
    let (_, rest) = raw.split_once("\r\n\r\n").unwrap();
    let ada_out: Json = serde_json::from_str(&super::live::dechunk(rest)).unwrap();
    assert_eq!(ada_out["result"].as_array().map(Vec::len), Some(2_000_000));
    let freed = (0..600).any(|_| {
        std::thread::sleep(std::time::Duration::from_millis(50));
        metric("inflight_bytes") == 0
    });
    assert!(freed, "the bytes are given back once the answer is sent");
    let (status_code, out) = call(&addr, "POST", &bob_path, &bob, &json!({"code": "x"}));
    assert_eq!(status_code, 200);
    assert_eq!(out["result"].as_array().map(Vec::len), Some(2_000_000));
    super::stop_server(child);
}

/// QAP1 replies through the connection thread (direct mode off, as over TLS) count
/// in the budget of bytes in flight too: a large reply holds its value and its
/// encoding until written. One larger than the user's budget by itself, or one that
/// finds no room within a second while the same user's other connection has not
/// read its own, is ERR_out_of_mem; the connection and its session go on, and once
/// the other reply has been read the same call succeeds.
#[test]
fn large_qap1_replies_hold_their_bytes_in_the_budget() {
    use std::io::{Read, Write};
    let data = tempfile::tempdir().unwrap();
    super::cli_add_user(data.path(), "ada", "publisher", ADA_PW);
    let (child, addr, qap) = serve_with(
        data.path(),
        "[limits]\nmax_body_bytes = 1048576\nqap_max_message_bytes = 1048576\n\
         max_inflight_bytes_per_user = 50331648\n\
         [qap]\nlisten = \"127.0.0.1:0\"\ndirect = false\n",
    );
    let mut b = qap_login(&qap, "ada", ADA_PW);
    // 3.5e6 doubles: 28 MB, held twice, is past the user's 48 MiB by itself.
    let (word, _) = qap_eval(&mut b, "runif(3.5e6)");
    assert_eq!(word, frame::resp_err(status::OUT_OF_MEM), "{word:#x}");
    assert_eq!(qap_eval(&mut b, "z <- 41L; z + 1L").0, resp::OK);

    // Connection A asks for 16 MB (32 MB held, more than the kernel's socket
    // buffers take) and does not read it yet.
    let mut a = qap_login(&qap, "ada", ADA_PW);
    let mut p = Vec::new();
    frame::push_string_param(&mut p, b"runif(2e6)");
    a.write_all(&frame::encode_message(cmd::EVAL, 0, &p))
        .unwrap();
    let held = (0..600).any(|_| {
        std::thread::sleep(std::time::Duration::from_millis(50));
        let (_, text) = http(&addr, "GET", "/metrics", &[], "");
        text.lines()
            .find_map(|l| l.strip_prefix("rookery_inflight_bytes "))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .is_some_and(|v| v >= 32_000_000)
    });
    assert!(held, "A's reply holds its bytes while A does not read");

    // 9.6 MB (19.2 MB held) no longer fits beside it.
    let (word, _) = qap_eval(&mut b, "runif(1.2e6)");
    assert_eq!(word, frame::resp_err(status::OUT_OF_MEM), "{word:#x}");
    let (word, _) = qap_eval(&mut b, "z");
    assert_eq!(word, resp::OK, "the session keeps its objects");

    // A reads its reply; then B's call goes through.
    let mut head = [0u8; 16];
    a.read_exact(&mut head).unwrap();
    assert_eq!(u32::from_le_bytes(head[..4].try_into().unwrap()), resp::OK);
    let len = u32::from_le_bytes(head[4..8].try_into().unwrap()) as usize;
    let mut rest = vec![0; len];
    a.read_exact(&mut rest).unwrap();
    assert!(len > 16_000_000, "{len}");
    let ok = (0..100).any(|_| {
        std::thread::sleep(std::time::Duration::from_millis(50));
        qap_eval(&mut b, "runif(1.2e6)").0 == resp::OK
    });
    assert!(ok, "the bytes are given back once A's reply is written");
    drop((a, b));
    super::stop_server(child);
}

//! `rookery bench http`, run as a user would, against a tiny hyper server in the test.
//!
//! The server counts what it served, so the client's report can be checked against
//! it: each connection may have one request served but still in flight when the
//! window closes, which the report rightly leaves out. No assertion depends on speed.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

const BODY: &[u8] = br#"[{"x1": 0.5}]"#;
const PATH: &str = "/score?rows=1";

/// How the test server answers.
#[derive(Debug, Clone, Copy)]
enum Mode {
    /// 200 to every well-formed request.
    AllOk,
    /// 500 to every other request, counted across connections.
    EveryOther500,
    /// 200 with `Connection: close`: each request needs a new connection.
    Close,
}

/// A running test server; it stops when dropped.
struct Server {
    addr: SocketAddr,
    served: Arc<AtomicU64>,
    _runtime: tokio::runtime::Runtime,
}

impl Server {
    fn start(mode: Mode) -> Server {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let listener = runtime
            .block_on(TcpListener::bind("127.0.0.1:0"))
            .expect("bind");
        let addr = listener.local_addr().expect("address");
        let served = Arc::new(AtomicU64::new(0));
        runtime.spawn(accept(listener, mode, Arc::clone(&served)));
        Server {
            addr,
            served,
            _runtime: runtime,
        }
    }

    fn url(&self) -> String {
        format!("http://{}{PATH}", self.addr)
    }

    fn served(&self) -> u64 {
        self.served.load(Ordering::SeqCst)
    }
}

async fn accept(listener: TcpListener, mode: Mode, served: Arc<AtomicU64>) {
    while let Ok((stream, _)) = listener.accept().await {
        let served = Arc::clone(&served);
        let service = hyper::service::service_fn(move |req| answer(req, mode, Arc::clone(&served)));
        tokio::spawn(async move {
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service);
            let _ = conn.await;
        });
    }
}

/// 400 unless the request carries the method, path, header and body the test sent.
async fn answer(
    req: Request<Incoming>,
    mode: Mode,
    served: Arc<AtomicU64>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let well_formed = req.method() == hyper::Method::PUT
        && req.uri().path_and_query().map(|p| p.as_str()) == Some(PATH)
        && req.headers().get("x-test").is_some_and(|v| v == "yes");
    let body = req.into_body().collect().await.map(|b| b.to_bytes());
    let n = served.fetch_add(1, Ordering::SeqCst);
    let status = match (well_formed && body.is_ok_and(|b| b == BODY), mode) {
        (false, _) => StatusCode::BAD_REQUEST,
        (true, Mode::EveryOther500) if n % 2 == 1 => StatusCode::INTERNAL_SERVER_ERROR,
        (true, _) => StatusCode::OK,
    };
    let mut resp = Response::new(Full::new(Bytes::from_static(b"[0.25]")));
    *resp.status_mut() = status;
    if matches!(mode, Mode::Close) {
        resp.headers_mut()
            .insert(hyper::header::CONNECTION, "close".parse().unwrap());
    }
    Ok(resp)
}

fn rookery(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rookery"))
        .args(args)
        .output()
        .expect("rookery runs")
}

/// Runs `rookery bench http` against `server` with the test's request and `extra` flags.
fn bench(server: &Server, extra: &[&str]) -> Output {
    let dir = tempfile_dir();
    let body = dir.join("body.json");
    std::fs::write(&body, BODY).unwrap();
    let url = server.url();
    let mut args = vec!["bench", "http", "--url", &url, "--method", "PUT"];
    args.extend([
        "-H",
        "X-Test: yes",
        "--header",
        "Content-Type: application/json",
    ]);
    args.extend(["--body-file", body.to_str().unwrap(), "--duration", "300ms"]);
    args.extend(extra);
    let out = rookery(&args);
    std::fs::remove_dir_all(&dir).unwrap();
    out
}

/// A fresh folder under the target's temp dir (the root package has no tempfile).
fn tempfile_dir() -> std::path::PathBuf {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::SeqCst);
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("loadgen-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn report(out: &Output) -> serde_json::Value {
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout:?}"))
}

fn count(report: &serde_json::Value, key: &str) -> u64 {
    report[key]
        .as_u64()
        .unwrap_or_else(|| panic!("{key} in {report}"))
}

fn statuses(report: &serde_json::Value) -> BTreeMap<String, u64> {
    serde_json::from_value(report["status_counts"].clone()).expect("status_counts")
}

/// The report counts at most what was served, and misses at most one per connection.
fn assert_matches_served(report: &serde_json::Value, server: &Server, connections: u64) {
    let (requests, served) = (count(report, "requests"), server.served());
    assert!(requests > 0, "{report}");
    assert!(
        requests <= served && served <= requests + connections,
        "{requests} reported, {served} served"
    );
}

#[test]
fn counts_add_up_when_all_succeed() {
    let server = Server::start(Mode::AllOk);
    let r = report(&bench(
        &server,
        &["--connections", "3", "--warmup", "0s", "--json"],
    ));
    assert_matches_served(&r, &server, 3);
    let requests = count(&r, "requests");
    assert_eq!((count(&r, "errors"), count(&r, "transport_errors")), (0, 0));
    assert_eq!(statuses(&r), BTreeMap::from([("200".to_owned(), requests)]));
    for key in ["req_per_s", "p50_us", "p90_us", "p99_us", "max_us"] {
        assert!(r[key].as_f64().is_some_and(|v| v > 0.0), "{key} in {r}");
    }
    assert!(r["p50_us"].as_f64() <= r["p99_us"].as_f64());
    assert!(r["p99_us"].as_f64() <= r["max_us"].as_f64());
}

#[test]
fn non_2xx_are_errors_counted_by_status() {
    let server = Server::start(Mode::EveryOther500);
    let r = report(&bench(
        &server,
        &["--connections", "2", "--warmup", "0s", "--json"],
    ));
    assert_matches_served(&r, &server, 2);
    let by_status = statuses(&r);
    let (ok, failed) = (by_status["200"], by_status["500"]);
    assert_eq!(by_status.len(), 2, "{r}");
    assert_eq!(ok + failed, count(&r, "requests"));
    assert_eq!(count(&r, "errors"), failed);
    assert!(ok.abs_diff(failed) <= 3, "the server alternates: {r}");
}

#[test]
fn closed_connections_are_reopened_without_errors() {
    let server = Server::start(Mode::Close);
    let r = report(&bench(
        &server,
        &["--connections", "2", "--warmup", "0s", "--json"],
    ));
    assert_matches_served(&r, &server, 2);
    assert_eq!(count(&r, "errors"), 0, "{r}");
    assert!(
        count(&r, "requests") > 2,
        "more requests than connections: {r}"
    );
}

#[test]
fn warmup_is_served_but_not_reported() {
    let server = Server::start(Mode::AllOk);
    let r = report(&bench(
        &server,
        &["--connections", "1", "--warmup", "500ms", "--json"],
    ));
    let (requests, served) = (count(&r, "requests"), server.served());
    assert!(served > requests, "{served} served, {requests} reported");
    assert_eq!(count(&r, "errors"), 0);
}

#[test]
fn text_summary() {
    let server = Server::start(Mode::AllOk);
    let out = bench(&server, &["--connections", "1", "--warmup", "0s"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains(" req/s, "), "{stdout}");
    assert!(stdout.contains("status 200x"), "{stdout}");
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
}

#[test]
fn refuses_what_it_cannot_load() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = closed.local_addr().unwrap();
    drop(closed);
    let cases = [
        (format!("http://{addr}/"), "cannot connect"),
        ("https://127.0.0.1/".to_owned(), "only http://"),
    ];
    for (url, want) in cases {
        let out = rookery(&["bench", "http", "--url", &url, "--duration", "100ms"]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{url}");
        assert!(stderr.contains(want), "{url}: {stderr}");
    }
    let out = rookery(&["bench", "http", "--url", "http://x/", "--duration", "10"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unit"));
}

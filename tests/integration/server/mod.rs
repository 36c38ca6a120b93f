//! The HTTP API against a real R: one shared server (its pools, store and folders in
//! a temp dir) driven through the router with `oneshot`, plus a real `rookery serve`
//! on loopback (`live`). Each test uses its own users, so tests run in parallel.

mod auth;
pub(crate) mod hostile;
mod jobs;
pub mod live;
mod ops;
mod qap;
pub(crate) mod results;
mod services;
mod sessions;
mod uploads;
mod users;
mod worker_env;

use std::sync::OnceLock;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt;
use rookery_server::store::{service_grant, Role, GRANT_EXECUTE};
use rookery_server::{admin, Config, Server};
use serde_json::Value as Json;
use tower::ServiceExt;

pub const PASSWORD: &str = "correct horse battery";

/// The shared server: short deadlines so the 504 rows are quick to reach.
pub struct Shared {
    pub server: Server,
    pub router: Router,
    _data: tempfile::TempDir,
}

/// A trivial service over one double column `x`: `x * 2`; `x == -1` kills the worker,
/// `x == -2` raises an R error, `x == -3` sleeps past the deadline.
pub const DOUBLE_CODE: &str = r#"
double_it <- function(d) {
  if (any(d$x == -1)) tools::pskill(Sys.getpid(), 9L)
  if (any(d$x == -2)) stop("negative input: ", d$x[d$x == -2][1])
  if (any(d$x == -3)) Sys.sleep(60)
  if (any(d$x == -4)) Sys.sleep(1.5)
  d$x * 2
}
"#;

pub fn double_spec(name: &str, version: &str, code: &str) -> Json {
    serde_json::json!({
        "name": name, "version": version, "code": code, "function": "double_it",
        "inputs": {"columns": [{"name": "x", "type": "double"}]},
    })
}

pub fn shared() -> &'static Shared {
    static SHARED: OnceLock<Shared> = OnceLock::new();
    SHARED.get_or_init(|| {
        std::thread::spawn(start)
            .join()
            .expect("the shared server starts")
    })
}

/// As root, makes sure the machine has the worker accounts servers lease to users'
/// code (what `scripts/test` does first; idempotent).
pub fn ensure_accounts() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        if rustix::process::geteuid().is_root() {
            rookery_server::confine::accounts::create("rookery-w", 64)
                .expect("creating worker accounts");
        }
    });
}

/// A server in a fresh data folder, its pools re-executing the `rookery` binary.
pub fn server_with(tweak: impl FnOnce(&mut Config)) -> (Server, tempfile::TempDir) {
    ensure_accounts();
    let data = tempfile::tempdir().unwrap();
    let mut config = Config {
        data: data.path().to_owned(),
        zygote_program: Some(env!("CARGO_BIN_EXE_rookery").into()),
        ..Config::default()
    };
    config.pool.service_workers = 2;
    config.limits.queue_timeout_ms = 30_000;
    config.limits.call_timeout_secs = 3;
    config.limits.max_body_bytes = 1 << 20;
    config.limits.batch_chunk_rows = 1000;
    tweak(&mut config);
    let server = Server::open(config).expect("server opens");
    let store = server.state.store.as_ref();
    admin::add_user(store, "root", Role::Admin, PASSWORD).unwrap();
    admin::add_user(store, "pub", Role::Publisher, PASSWORD).unwrap();
    (server, data)
}

/// Publishes `spec` as `pub`, panicking unless it is created.
pub fn publish(server: &Server, router: &Router, spec: Json) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let token = token_for(server, "pub");
        let body = Body::from(spec.to_string());
        let (status, body) = send(router, "POST", "/api/v1/services", Some(&token), body).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    });
}

fn start() -> Shared {
    let (server, data) = server_with(|_| {});
    let router = server.router();
    publish(&server, &router, double_spec("double", "1", DOUBLE_CODE));
    Shared {
        server,
        router,
        _data: data,
    }
}

/// Makes a user `name` with `role` and optional grants, and returns an access token.
pub fn user(name: &str, role: Role, grants: &[&str]) -> String {
    let s = shared();
    let store = s.server.state.store.as_ref();
    admin::add_user(store, name, role, PASSWORD).unwrap();
    for g in grants {
        let grant = match *g {
            "execute" => GRANT_EXECUTE.to_owned(),
            service => service_grant(service),
        };
        admin::grant(store, name, &grant).unwrap();
    }
    token_for(&s.server, name)
}

pub fn token_for(server: &Server, name: &str) -> String {
    admin::issue_access_token(server.state.store.as_ref(), name, Duration::from_secs(600))
        .unwrap()
        .0
}

/// Sends a request through the router; returns the status and the body as JSON
/// (`Json::String` of the text when it is not JSON).
pub async fn send(
    router: &Router,
    method: &str,
    uri: &str,
    token: Option<&str>,
    body: Body,
) -> (StatusCode, Json) {
    let (status, _, bytes) = send_raw(router, method, uri, token, &[], body).await;
    let json = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Json::String(String::from_utf8_lossy(&bytes).into_owned()));
    (status, json)
}

/// Sends a request with extra headers; returns status, headers and raw body.
pub async fn send_raw(
    router: &Router,
    method: &str,
    uri: &str,
    token: Option<&str>,
    headers: &[(&str, &str)],
    body: Body,
) -> (StatusCode, axum::http::HeaderMap, Vec<u8>) {
    let mut req = Request::builder().method(method).uri(uri);
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let response = router
        .clone()
        .oneshot(req.body(body).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes()
        .to_vec();
    (status, headers, bytes)
}

/// `send` through the shared router with a JSON body.
pub async fn call(
    method: &str,
    uri: &str,
    token: Option<&str>,
    body: Option<Json>,
) -> (StatusCode, Json) {
    let body = body.map_or_else(Body::empty, |b| Body::from(b.to_string()));
    send(&shared().router, method, uri, token, body).await
}

/// The error code of an error body.
pub fn code(body: &Json) -> &str {
    body["error"]["code"].as_str().unwrap_or("<none>")
}

/// Stops a `rookery serve` child with SIGTERM and checks that it exits cleanly.
pub fn stop_server(mut child: std::process::Child) {
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(child.id() as i32).unwrap(),
        rustix::process::Signal::TERM,
    )
    .unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}");
}

/// Runs `program` with `args`; returns its stdout, panicking with both streams when
/// it fails.
pub fn run_ok(program: &str, args: &[&std::ffi::OsStr]) -> String {
    let out = std::process::Command::new(program)
        .args(args)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

/// `rookery user add NAME --role ROLE --data DATA`, the password on stdin.
pub fn cli_add_user(data: &std::path::Path, name: &str, role: &str, password: &str) {
    use std::io::Write;
    let mut add = std::process::Command::new(env!("CARGO_BIN_EXE_rookery"))
        .args(["user", "add", name, "--role", role, "--data"])
        .arg(data)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = add.stdin.take().unwrap();
    stdin.write_all(format!("{password}\n").as_bytes()).unwrap();
    drop(stdin);
    assert!(add.wait().unwrap().success(), "rookery user add {name}");
}

/// Starts `rookery serve ARGS` with its stdout piped; returns the child and the lines
/// it prints (the first says where it listens).
/// `rookery serve --demo` on a free loopback port with one worker per service,
/// keeping its data in `data` (see [`spawn_serve`]).
pub fn spawn_demo(
    data: &std::path::Path,
) -> (
    std::process::Child,
    std::io::Lines<std::io::BufReader<std::process::ChildStdout>>,
) {
    let args = [
        "--listen",
        "127.0.0.1:0",
        "--demo",
        "--service-workers",
        "1",
        "--data",
    ];
    let mut args: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_ref()).collect();
    args.push(data.as_os_str());
    spawn_serve(&args)
}

pub fn spawn_serve(
    args: &[&std::ffi::OsStr],
) -> (
    std::process::Child,
    std::io::Lines<std::io::BufReader<std::process::ChildStdout>>,
) {
    spawn_serve_with_env(args, &[])
}

/// [`spawn_serve`] with `env` added to the server's environment.
pub fn spawn_serve_with_env(
    args: &[&std::ffi::OsStr],
    env: &[(&str, &str)],
) -> (
    std::process::Child,
    std::io::Lines<std::io::BufReader<std::process::ChildStdout>>,
) {
    spawn_serve_logging_to(args, env, None)
}

/// [`spawn_serve_with_env`] with the server's log (its stderr) written to `log`.
pub fn spawn_serve_logging_to(
    args: &[&std::ffi::OsStr],
    env: &[(&str, &str)],
    log: Option<&std::path::Path>,
) -> (
    std::process::Child,
    std::io::Lines<std::io::BufReader<std::process::ChildStdout>>,
) {
    use std::io::BufRead;
    ensure_accounts();
    let stderr = match log {
        Some(path) => std::process::Stdio::from(std::fs::File::create(path).unwrap()),
        None => std::process::Stdio::null(),
    };
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_rookery"))
        .arg("serve")
        .args(args)
        .envs(env.iter().copied())
        .stdout(std::process::Stdio::piped())
        .stderr(stderr)
        .spawn()
        .unwrap();
    let lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    (child, lines)
}

/// The HTTP and QAP1 addresses a `rookery serve` with a QAP1 listener prints first;
/// the rest of its output is drained in the background so it never blocks.
pub fn http_and_qap_addrs(
    mut lines: std::io::Lines<std::io::BufReader<std::process::ChildStdout>>,
) -> (String, String) {
    let first = lines.next().unwrap().unwrap();
    let http = first
        .strip_prefix("rookery listening on http://")
        .expect(&first)
        .to_owned();
    let qap = lines.next().unwrap().unwrap();
    let qap = qap
        .strip_prefix("rookery QAP1 listening on ")
        .expect(&qap)
        .to_owned();
    std::thread::spawn(move || lines.for_each(drop));
    (http, qap)
}

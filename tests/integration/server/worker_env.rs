//! What users' code sees of the server's environment, through a real `rookery serve`
//! started with a secret in its environment: nothing, in an HTTP session, a QAP1
//! session and a published service (whose workers also run batch jobs), neither in
//! `Sys.getenv()` nor in a `system("env")` child; only what `[confine] env` passes.

use std::io::Read;
use std::net::TcpStream;
use std::time::Duration;

use rookery_server::qap::frame::{self, cmd, resp};
use serde_json::{json, Value as Json};

use super::live::http;

const SECRET: &str = "ROOKERY_TEST_SECRET";
const PASSED: &str = "ROOKERY_TEST_PASSED";

/// R code giving `"<secret>|<passed>|<env shows the secret>"`.
fn probe() -> String {
    format!(
        "paste(Sys.getenv('{SECRET}'), Sys.getenv('{PASSED}'), \
         any(startsWith(system('env', intern = TRUE), '{SECRET}=')), sep = '|')"
    )
}

const WANT: &str = "|passed-through|FALSE";

fn json_request(addr: &str, method: &str, path: &str, token: &str, body: &Json) -> (u16, Json) {
    let auth = format!("Bearer {token}");
    let headers: Vec<(&str, &str)> = if token.is_empty() {
        vec![("Content-Type", "application/json")]
    } else {
        vec![
            ("Content-Type", "application/json"),
            ("Authorization", auth.as_str()),
        ]
    };
    let (status, text) = http(addr, method, path, &headers, &body.to_string());
    (status, serde_json::from_str(&text).unwrap_or(Json::Null))
}

#[test]
fn users_code_sees_none_of_the_servers_environment() {
    let data = tempfile::tempdir().unwrap();
    super::cli_add_user(data.path(), "ada", "publisher", "ada-password-1");
    let config = data.path().join("rookery.toml");
    std::fs::write(
        &config,
        format!("[qap]\nlisten = \"127.0.0.1:0\"\n[confine]\nenv = [\"{PASSED}\"]\n"),
    )
    .unwrap();
    let args: Vec<&std::ffi::OsStr> = vec![
        "--listen".as_ref(),
        "127.0.0.1:0".as_ref(),
        "--config".as_ref(),
        config.as_os_str(),
        "--data".as_ref(),
        data.path().as_os_str(),
    ];
    let env = [(SECRET, "hunter2"), (PASSED, "passed-through")];
    let (child, lines) = super::spawn_serve_with_env(&args, &env);
    let (addr, qap) = super::http_and_qap_addrs(lines);

    let (status, login) = json_request(
        &addr,
        "POST",
        "/api/v1/login",
        "",
        &json!({"username": "ada", "password": "ada-password-1"}),
    );
    assert_eq!(status, 200, "{login}");
    let token = login["access_token"].as_str().unwrap().to_owned();

    // An HTTP session.
    let (status, session) = json_request(&addr, "POST", "/api/v1/sessions", &token, &json!({}));
    assert_eq!(status, 201, "{session}");
    let id = session["id"].as_str().unwrap();
    let (status, out) = json_request(
        &addr,
        "POST",
        &format!("/api/v1/sessions/{id}/execute"),
        &token,
        &json!({ "code": probe() }),
    );
    assert_eq!(status, 200, "{out}");
    assert_eq!(out["result"], WANT, "an HTTP session: {out}");

    // A published service.
    let spec = json!({
        "name": "envprobe", "version": "1",
        "code": format!("probe <- function(d) rep({}, nrow(d))", probe()),
        "function": "probe",
        "inputs": {"columns": [{"name": "x", "type": "double"}]},
    });
    let (status, body) = json_request(&addr, "POST", "/api/v1/services", &token, &spec);
    assert_eq!(status, 201, "{body}");
    let (status, body) = json_request(
        &addr,
        "POST",
        "/api/v1/services/envprobe/1",
        &token,
        &json!([{"x": 1}]),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["result"], json!([WANT]), "a service: {body}");

    // A QAP1 session.
    let mut s = TcpStream::connect(&qap).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut id_string = [0u8; 32];
    s.read_exact(&mut id_string).unwrap();
    let mut p = Vec::new();
    frame::push_string_param(&mut p, b"ada\nada-password-1");
    let login = super::hostile::qap_request(&mut s, cmd::LOGIN, &p);
    assert_eq!(login.0, resp::OK);
    let mut p = Vec::new();
    frame::push_string_param(&mut p, probe().as_bytes());
    let (word, payload) = super::hostile::qap_request(&mut s, cmd::EVAL, &p);
    assert_eq!(word, resp::OK);
    let value = crate::rserve::decode_payload(&payload).unwrap();
    assert_eq!(value.as_str(), Some(WANT), "a QAP1 session: {value:?}");
    drop(s);

    super::stop_server(child);
}

//! The escape suite's cases that apply to an unprivileged server: `rookery serve`
//! started as `nobody`, so every worker keeps that one uid and only Landlock and
//! seccomp stand between two users' code (run when the tests run as root, which
//! can start it so; an unprivileged test run is covered by `escape` itself).

use std::io::{BufRead, Write};
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value as Json};

use crate::server::live::http;

const NOBODY: u32 = 65534;

fn as_nobody(args: &[&str], stdin: &str) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_rookery"))
        .args(args)
        .uid(NOBODY)
        .gid(NOBODY)
        .env("HOME", "/nonexistent")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

struct Client {
    addr: String,
}

impl Client {
    fn call(&self, method: &str, path: &str, token: Option<&str>, body: Json) -> (u16, Json) {
        let auth = token.map(|t| format!("Bearer {t}"));
        let mut headers = vec![("Content-Type", "application/json")];
        if let Some(a) = &auth {
            headers.push(("Authorization", a.as_str()));
        }
        let body = if body.is_null() {
            String::new()
        } else {
            body.to_string()
        };
        let (status, text) = http(&self.addr, method, path, &headers, &body);
        (
            status,
            serde_json::from_str(&text).unwrap_or(Json::String(text)),
        )
    }

    fn login(&self, name: &str) -> String {
        let (status, body) = self.call(
            "POST",
            "/api/v1/login",
            None,
            json!({"username": name, "password": "pw-of-the-test"}),
        );
        assert_eq!(status, 200, "{body}");
        body["access_token"].as_str().unwrap().to_owned()
    }

    fn session(&self, token: &str) -> String {
        let (status, body) = self.call("POST", "/api/v1/sessions", Some(token), Json::Null);
        assert_eq!(status, 201, "{body}");
        body["id"].as_str().unwrap().to_owned()
    }

    fn exec(&self, token: &str, id: &str, code: &str) -> Json {
        let path = format!("/api/v1/sessions/{id}/execute");
        self.call("POST", &path, Some(token), json!({ "code": code }))
            .1
    }
}

#[test]
fn an_unprivileged_server_still_keeps_users_apart() {
    if !rustix::process::geteuid().is_root() {
        return;
    }
    let data = tempfile::tempdir().unwrap();
    std::os::unix::fs::chown(data.path(), Some(NOBODY), Some(NOBODY)).unwrap();
    let d = data.path().to_str().unwrap();
    for user in ["alice", "bob"] {
        as_nobody(
            &["user", "add", user, "--role", "user", "--data", d],
            "pw-of-the-test\n",
        );
        as_nobody(&["user", "grant", user, "execute", "--data", d], "");
    }
    let log = data.path().join("serve.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_rookery"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data", d])
        .uid(NOBODY)
        .gid(NOBODY)
        .env("HOME", "/nonexistent")
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    let addr = first
        .strip_prefix("rookery listening on http://")
        .expect(&first)
        .to_owned();
    let c = Client { addr };
    let (alice, bob) = (c.login("alice"), c.login("bob"));
    let bob_id = c.session(&bob);
    let bob_dir = c.exec(&bob, &bob_id, "writeLines('bob-secret', 's.txt'); getwd()")["result"]
        .as_str()
        .unwrap()
        .to_owned();
    let bob_pid = c.exec(&bob, &bob_id, "Sys.getpid()")["result"]
        .as_f64()
        .unwrap();
    let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
    tcp.set_nonblocking(true).unwrap();
    let port = tcp.local_addr().unwrap().port();

    let alice_id = c.session(&alice);
    let attacks = [
        format!("readLines('{bob_dir}/s.txt')"),
        format!("system('cat {bob_dir}/s.txt', intern = TRUE)"),
        format!("list.files('{bob_dir}')"),
        format!("readBin('/proc/{bob_pid}/environ', 'raw', 100)"),
        format!("tools::pskill({bob_pid}, 9L)"),
        format!("system('kill -9 {bob_pid} {}', intern = TRUE)", child.id()),
        format!("socketConnection('127.0.0.1', {port}, timeout = 2)"),
        "system('unshare -U id -u', intern = TRUE)".to_owned(),
    ];
    for attack in &attacks {
        let out = c.exec(&alice, &alice_id, &format!("try({attack}, silent = TRUE)"));
        assert!(!out.to_string().contains("bob-secret"), "{attack}: {out}");
    }
    let listed = c.exec(
        &alice,
        &alice_id,
        &format!("length(list.files('{bob_dir}'))"),
    );
    assert_eq!(listed["result"].as_f64(), Some(0.0), "{listed}");
    assert!(
        tcp.accept().is_err(),
        "alice's code reached a loopback listener"
    );
    // Bob's worker and the server survived the signals.
    let again = c.exec(&bob, &bob_id, "Sys.getpid()");
    assert_eq!(again["result"].as_f64(), Some(bob_pid), "{again}");
    // The server said which layers it has without root.
    std::thread::sleep(Duration::from_millis(100));
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("worker accounts: inactive"), "{text}");
    assert!(text.contains("seccomp deny list: active"), "{text}");
    let _ = rustix::process::kill_process(
        rustix::process::Pid::from_child(&child),
        rustix::process::Signal::TERM,
    );
    let _ = child.wait();
}

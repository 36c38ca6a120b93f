//! What users' code sees of the server's environment, through a real `rookery serve`
//! started with a secret in its environment (as root, and as `nobody`): nothing, in
//! an HTTP session, a QAP1 session, a published service and its batch job, neither
//! in `Sys.getenv()` nor in a `system("env")` child; only what `[confine] env` passes.
//! A service's own `env` reaches that service's workers alone, survives a restart,
//! and no route, log line or audit entry shows its values. Native code compiled in
//! a session finds no fd that is not the worker's own.

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
    sees_none_of_the_servers_environment(false);
}

/// The same, from a server started as `nobody` (when the tests run as root, which
/// can start it so; an unprivileged test run is the case above): every worker keeps
/// that uid, and the environment is still built from nothing.
#[test]
fn an_unprivileged_servers_workers_see_none_of_its_environment() {
    if !rustix::process::geteuid().is_root() {
        return;
    }
    sees_none_of_the_servers_environment(true);
}

const NOBODY: u32 = 65534;

/// Chowns `dir` and everything under it to `nobody`.
fn chown_to_nobody(dir: &std::path::Path) {
    std::os::unix::fs::lchown(dir, Some(NOBODY), Some(NOBODY)).unwrap();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        if entry.file_type().unwrap().is_dir() {
            chown_to_nobody(&entry.path());
        } else {
            std::os::unix::fs::lchown(entry.path(), Some(NOBODY), Some(NOBODY)).unwrap();
        }
    }
}

fn sees_none_of_the_servers_environment(as_nobody: bool) {
    use std::io::BufRead;
    use std::os::unix::process::CommandExt;
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
    let (child, lines) = if as_nobody {
        chown_to_nobody(data.path());
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_rookery"))
            .arg("serve")
            .args(&args)
            .envs(env)
            .env("HOME", "/nonexistent")
            .uid(NOBODY)
            .gid(NOBODY)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
        (child, lines)
    } else {
        super::spawn_serve_with_env(&args, &env)
    };
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
    session_fds_from_native_code(&addr, &token, id);
    session_inherits_nothing_else(&addr, &token, id);

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

    // A batch job of that service.
    let (status, job) = json_request(
        &addr,
        "POST",
        "/api/v1/services/envprobe/1/batch",
        &token,
        &json!({"x": [1, 2, 3]}),
    );
    assert_eq!(status, 202, "{job}");
    let done = finished_job(&addr, &token, job["id"].as_str().unwrap());
    assert_eq!(done["state"], "succeeded", "a batch job: {done}");
    assert_eq!(
        done["result"],
        json!([WANT, WANT, WANT]),
        "a batch job: {done}"
    );

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

/// Polls a job until it has finished; returns its description with the result.
fn finished_job(addr: &str, token: &str, id: &str) -> Json {
    let path = format!("/api/v1/jobs/{id}");
    for _ in 0..600 {
        let (status, job) = json_request(addr, "GET", &path, token, &Json::Null);
        assert_eq!(status, 200, "{job}");
        if ["succeeded", "failed", "cancelled"].contains(&job["state"].as_str().unwrap_or("")) {
            return job;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("job {id} did not finish in 60 s");
}

const SERVICE_SECRET: &str = "tok-9f2c1d-only-for-the-scorer";

/// `rookery serve` on `data` (where user `ada`, a publisher, exists), logging to
/// `log`: its HTTP address, an access token, and the child.
fn serve_for_ada(
    data: &std::path::Path,
    log: &std::path::Path,
) -> (String, String, std::process::Child) {
    let config = data.join("rookery.toml");
    std::fs::write(&config, "[qap]\nlisten = \"127.0.0.1:0\"\n").unwrap();
    let args: Vec<&std::ffi::OsStr> = vec![
        "--listen".as_ref(),
        "127.0.0.1:0".as_ref(),
        "--config".as_ref(),
        config.as_os_str(),
        "--data".as_ref(),
        data.as_os_str(),
    ];
    let (child, lines) = super::spawn_serve_logging_to(&args, &[], Some(log));
    let (addr, _qap) = super::http_and_qap_addrs(lines);
    let (status, login) = json_request(
        &addr,
        "POST",
        "/api/v1/login",
        "",
        &json!({"username": "ada", "password": "ada-password-1"}),
    );
    assert_eq!(status, 200, "{login}");
    let token = login["access_token"].as_str().unwrap().to_owned();
    (addr, token, child)
}

fn call(addr: &str, token: &str, service: &str) -> Json {
    let (status, body) = json_request(
        addr,
        "POST",
        &format!("/api/v1/services/{service}/1"),
        token,
        &json!([{"x": 1}]),
    );
    assert_eq!(status, 200, "{body}");
    body["result"].clone()
}

#[test]
fn a_services_env_reaches_only_its_own_workers_and_no_route_or_log() {
    let data = tempfile::tempdir().unwrap();
    super::cli_add_user(data.path(), "ada", "publisher", "ada-password-1");
    let logs = tempfile::tempdir().unwrap();
    let (addr, token, child) = serve_for_ada(data.path(), &logs.path().join("first.log"));
    // What a worker sees of SCORING_TOKEN, in R and in a `system()` child.
    let probe = "see <- function(d) rep(paste(Sys.getenv('SCORING_TOKEN'), \
                 any(grepl('SCORING_TOKEN', system('env', intern = TRUE))), sep = '|'), nrow(d))";
    let spec = |name: &str, env: Json| {
        json!({
            "name": name, "version": "1", "code": probe, "function": "see",
            "inputs": {"columns": [{"name": "x", "type": "double"}]}, "env": env,
        })
    };
    let (status, body) = json_request(
        &addr,
        "POST",
        "/api/v1/services",
        &token,
        &spec("scorer", json!({ "SCORING_TOKEN": SERVICE_SECRET })),
    );
    assert_eq!(status, 201, "{body}");
    let (status, body) = json_request(
        &addr,
        "POST",
        "/api/v1/services",
        &token,
        &spec("neighbour", json!({})),
    );
    assert_eq!(status, 201, "{body}");
    let mine = json!([format!("{SERVICE_SECRET}|TRUE")]);
    assert_eq!(call(&addr, &token, "scorer"), mine);
    assert_eq!(call(&addr, &token, "neighbour"), json!(["|FALSE"]));

    // The same user's session does not see it either.
    let (status, session) = json_request(&addr, "POST", "/api/v1/sessions", &token, &json!({}));
    assert_eq!(status, 201, "{session}");
    let (status, out) = json_request(
        &addr,
        "POST",
        &format!(
            "/api/v1/sessions/{}/execute",
            session["id"].as_str().unwrap()
        ),
        &token,
        &json!({ "code": "Sys.getenv('SCORING_TOKEN')" }),
    );
    assert_eq!(status, 200, "{out}");
    assert_eq!(out["result"], "", "{out}");

    // No route returns the value: the version, the list, the OpenAPI description.
    for path in [
        "/api/v1/services/scorer/1",
        "/api/v1/services",
        "/api/v1/openapi.json",
    ] {
        let (status, text) = http(
            &addr,
            "GET",
            path,
            &[("Authorization", &format!("Bearer {token}"))],
            "",
        );
        assert_eq!(status, 200, "{path}: {text}");
        assert!(
            !text.contains(SERVICE_SECRET),
            "{path} shows the secret: {text}"
        );
    }

    // Names the server sets for every worker are refused, with the name and not the
    // value in the error.
    for name in ["HOME", "R_LIBS_USER", "LD_PRELOAD", "PATH", "1BAD", "A-B"] {
        let (status, body) = json_request(
            &addr,
            "POST",
            "/api/v1/services",
            &token,
            &spec("refused", json!({ name: "value-that-must-not-show" })),
        );
        assert_eq!(status, 400, "{name}: {body}");
        let text = body.to_string();
        assert!(
            text.contains(name) && !text.contains("value-that-must-not-show"),
            "{text}"
        );
    }

    // After a restart the stored service still has its env.
    super::stop_server(child);
    let (addr, token, child) = serve_for_ada(data.path(), &logs.path().join("second.log"));
    assert_eq!(call(&addr, &token, "scorer"), mine);
    super::stop_server(child);
    for log in ["first.log", "second.log"] {
        let text = std::fs::read_to_string(logs.path().join(log)).unwrap();
        assert!(text.contains("scorer"), "{log} is the server's log: {text}");
        assert!(
            !text.contains(SERVICE_SECRET),
            "{log} shows the secret: {text}"
        );
    }
    // Nor any file the server wrote but its store (audit, model folders, sessions).
    for entry in walk(data.path()) {
        let name = entry.file_name().unwrap().to_string_lossy().into_owned();
        if name.starts_with("rookery.db") {
            continue;
        }
        let bytes = std::fs::read(&entry).unwrap_or_default();
        let found = bytes
            .windows(SERVICE_SECRET.len())
            .any(|w| w == SERVICE_SECRET.as_bytes());
        assert!(!found, "{} holds the secret", entry.display());
    }
}

/// Every file under `dir`.
fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

/// C, compiled in the session with `R CMD SHLIB` and called with `.C()`: every fd
/// open in the worker (found with `fcntl`, since a confined worker cannot read
/// `/proc`), with its file type and inode, one `fd type inode` per line. Native code
/// sees what R's own functions might not.
const LIST_FDS_C: &str = r#"
#include <fcntl.h>
#include <stdio.h>
#include <sys/resource.h>
#include <sys/stat.h>
void list_fds(char **out, int *size) {
    struct rlimit rl;
    long fd, max = 65536;
    size_t used = 0;
    out[0][0] = 0;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < (rlim_t) max) max = (long) rl.rlim_cur;
    for (fd = 0; fd < max && used < (size_t) *size; fd++) {
        struct stat st;
        if (fcntl((int) fd, F_GETFD) < 0 || fstat((int) fd, &st) != 0) continue;
        used += snprintf(out[0] + used, (size_t) *size - used, "%ld %o %lu\n", fd,
                         (unsigned) (st.st_mode & S_IFMT), (unsigned long) st.st_ino);
    }
}
"#;

/// Lists a session worker's fds from native code and fails on any that is not its
/// own: its standard streams (`/dev/null`, its output capture), its channel to the
/// server (sockets, shared memory), its own `/proc` files (opened before it was
/// confined, for its memory figures), and its session and temp folders. The server's
/// log, listeners, store or anything of another worker's must not be there. The
/// host (root here) names each fd from `/proc/<pid>/fd`, checked to be the same
/// file by its inode.
fn session_fds_from_native_code(addr: &str, token: &str, id: &str) {
    use std::os::unix::fs::MetadataExt;
    let code = format!(
        "writeLines({LIST_FDS_C:?}, 'list_fds.c'); \
         built <- system2(file.path(R.home('bin'), 'R'), c('CMD', 'SHLIB', 'list_fds.c'), \
                          stdout = TRUE, stderr = TRUE); \
         dyn.load(file.path(getwd(), paste0('list_fds', .Platform$dynlib.ext))); \
         list(pid = Sys.getpid(), home = getwd(), temp = tempdir(), built = built, \
              fds = strsplit(.C('list_fds', strrep(' ', 16384L), 16384L)[[1]], '\\n')[[1]])"
    );
    let (status, out) = json_request(
        addr,
        "POST",
        &format!("/api/v1/sessions/{id}/execute"),
        token,
        &json!({ "code": code }),
    );
    assert_eq!(status, 200, "{out}");
    let result = &out["result"];
    let one = |k: &str| result[k].get(0).unwrap_or(&result[k]).clone();
    let pid = one("pid").as_i64().expect("pid");
    let home = one("home").as_str().unwrap().to_owned();
    let temp = one("temp").as_str().unwrap().to_owned();
    let fds: Vec<&str> = result["fds"]
        .as_array()
        .expect("the fd listing")
        .iter()
        .filter_map(Json::as_str)
        .collect();
    assert!(fds.len() >= 3, "native code listed no fds: {result:#}");
    let mut named = Vec::new();
    for line in &fds {
        let [fd, _kind, inode] = line.split(' ').collect::<Vec<_>>()[..] else {
            panic!("{line}");
        };
        let proc_fd = format!("/proc/{pid}/fd/{fd}");
        let to = std::fs::read_link(&proc_fd).unwrap_or_else(|e| panic!("{proc_fd}: {e}"));
        let to = to.to_string_lossy().into_owned();
        let same = std::fs::metadata(&proc_fd).map(|m| m.ino().to_string());
        assert_eq!(same.as_deref().ok(), Some(inode), "fd {fd} changed: {to}");
        named.push(format!("{fd} -> {to}"));
        let own = match fd {
            "0" => to == "/dev/null",
            "1" | "2" => to.starts_with("/memfd:rookery-output"),
            _ => {
                to.starts_with("socket:")
                    || to.starts_with("/memfd:")
                    || to.starts_with(&format!("/proc/{pid}/"))
                    || to.starts_with(&home)
                    || to.starts_with(&temp)
            }
        };
        assert!(
            own,
            "fd {fd} -> {to} is not the worker's own: {named:?} {fds:?}"
        );
    }
}

/// C called with `.C()` in a session: what a worker might have inherited from the
/// server besides fds and variables, one `name value` per line.
const INHERITED_C: &str = r#"
#include <signal.h>
#include <stdio.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>
#define PUT(...) used += snprintf(out[0] + used, used < (size_t) *size ? (size_t) *size - used : 0, __VA_ARGS__)
void inherited(char **out, int *size) {
    size_t used = 0;
    sigset_t blocked;
    struct rlimit core;
    int s;
    mode_t mask = umask(077);
    umask(mask);
    out[0][0] = 0;
    PUT("umask %03o\n", (unsigned) mask);
    sigprocmask(SIG_BLOCK, NULL, &blocked);
    PUT("blocked");
    for (s = 1; s < 65; s++) if (sigismember(&blocked, s) == 1) PUT(" %d", s);
    PUT("\nignored");
    for (s = 1; s < 65; s++) {
        struct sigaction sa;
        if (sigaction(s, NULL, &sa) == 0 && sa.sa_handler == SIG_IGN) PUT(" %d", s);
    }
    getrlimit(RLIMIT_CORE, &core);
    PUT("\ncore %lld\n", (long long) core.rlim_cur);
    PUT("session_leader %d\n", getsid(0) == getpid());
    PUT("group_leader %d\n", getpgrp() == getpid());
}
"#;

/// A session's worker, as its own native code sees it: a umask of 077 (whatever the
/// server's), no signal blocked, none ignored but SIGXFSZ (so a write past its file
/// size limit is an error, not death), no core dumps, a session and process group of
/// its own (no controlling terminal of the server's), and its session folder as the
/// working directory. A program started with `system()` gets SIGPIPE's default, as
/// in an R console: `yes | head -1` ends `yes` with signal 13 (status 141).
fn session_inherits_nothing_else(addr: &str, token: &str, id: &str) {
    let code = format!(
        "writeLines({INHERITED_C:?}, 'inherited.c'); \
         built <- system2(file.path(R.home('bin'), 'R'), c('CMD', 'SHLIB', 'inherited.c'), \
                          stdout = TRUE, stderr = TRUE); \
         dyn.load(file.path(getwd(), paste0('inherited', .Platform$dynlib.ext))); \
         c(strsplit(.C('inherited', strrep(' ', 4096L), 4096L)[[1]], '\\n')[[1]], \
           paste('cwd_is_home', getwd() == Sys.getenv('HOME')), \
           paste('pipe', system2('bash', c('-c', shQuote('yes | head -1 >/dev/null; \
                 echo ${{PIPESTATUS[0]}}')), stdout = TRUE)))"
    );
    let (status, out) = json_request(
        addr,
        "POST",
        &format!("/api/v1/sessions/{id}/execute"),
        token,
        &json!({ "code": code }),
    );
    assert_eq!(status, 200, "{out}");
    let lines: Vec<&str> = out["result"]
        .as_array()
        .unwrap_or_else(|| panic!("{out}"))
        .iter()
        .filter_map(Json::as_str)
        .collect();
    for want in [
        "umask 077",
        "blocked",
        "ignored 25",
        "core 0",
        "session_leader 1",
        "group_leader 1",
        "cwd_is_home TRUE",
        "pipe 141",
    ] {
        assert!(lines.contains(&want), "no `{want}` in {lines:?}");
    }
}

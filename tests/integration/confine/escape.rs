//! The escape suite: one hostile R snippet per attack, run by user `alice` in a
//! session of a confined server, with a witness on the host side (is the file
//! still absent, did the listener see a connection, is the victim alive) and,
//! where it is safe to run, an unconfined control: the same snippet on a server
//! with `[confine] enabled = false`, which shows the attack works without it.
//! `bob` is the victim: a session with a secret file, a worker pid, a folder.
//!
//! Runs as root (worker accounts, cgroups) and as an unprivileged user; the
//! checks that need root say so.

use std::net::{TcpListener, UdpSocket};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::StatusCode;
use axum::Router;
use rookery_server::serve::Server;
use rookery_server::store::{Role, GRANT_EXECUTE};
use rookery_server::{admin, confine::leases};
use serde_json::{json, Value as Json};

use crate::server::{publish, send, server_with, token_for, PASSWORD};

const SECRET: &str = "bob-secret-7f3a9c";

/// One server with its users and the victim's session.
struct Env {
    _server: Server,
    router: Router,
    _data: tempfile::TempDir,
    alice: String,
    bob: String,
    /// Users of their own for the tests that check that nothing of an account
    /// survives (alice's account is busy with the other tests' sessions).
    mallory: String,
    carl: String,
    bob_session: String,
    /// Bob's session folder and secret file, as absolute paths.
    bob_dir: PathBuf,
    bob_secret: PathBuf,
    bob_pid: i32,
    rt: tokio::runtime::Runtime,
}

fn env(confined: bool) -> &'static Env {
    static CONFINED: OnceLock<Env> = OnceLock::new();
    static OPEN: OnceLock<Env> = OnceLock::new();
    let cell = if confined { &CONFINED } else { &OPEN };
    cell.get_or_init(|| std::thread::spawn(move || start(confined)).join().unwrap())
}

fn start(confined: bool) -> Env {
    let (server, data) = server_with(|c| {
        c.confine.enabled = confined;
        c.confine.address_space_mib = 1280;
        c.confine.file_size_mib = 16;
        c.confine.pids = 96;
        c.confine.processes = 64;
        c.limits.call_timeout_secs = 8;
        c.limits.sessions_per_user = 64;
    });
    let router = server.router();
    let store = server.state.store.as_ref();
    for name in ["alice", "bob", "mallory", "carl"] {
        admin::add_user(store, name, Role::User, PASSWORD).unwrap();
        admin::grant(store, name, GRANT_EXECUTE).unwrap();
    }
    let alice = token_for(&server, "alice");
    let bob = token_for(&server, "bob");
    let mallory = token_for(&server, "mallory");
    let carl = token_for(&server, "carl");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (bob_session, bob_dir, bob_pid) = rt.block_on(async {
        let id = open_on(&router, &bob).await;
        let uri = format!("/api/v1/sessions/{id}/files/secret.txt");
        let (status, body) = send(&router, "PUT", &uri, Some(&bob), Body::from(SECRET)).await;
        assert!(status.is_success(), "{body}");
        let dir = eval_on(&router, &bob, &id, "getwd()").await;
        let pid = eval_on(&router, &bob, &id, "Sys.getpid()").await;
        (
            id,
            PathBuf::from(dir.as_str().unwrap()),
            pid.as_f64().unwrap() as i32,
        )
    });
    let bob_secret = bob_dir.join("secret.txt");
    assert_eq!(std::fs::read_to_string(&bob_secret).unwrap(), SECRET);
    Env {
        _server: server,
        router,
        _data: data,
        alice,
        bob,
        mallory,
        carl,
        bob_session,
        bob_dir,
        bob_secret,
        bob_pid,
        rt,
    }
}

async fn open_on(router: &Router, token: &str) -> String {
    let (status, body) = send(
        router,
        "POST",
        "/api/v1/sessions",
        Some(token),
        Body::empty(),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    body["id"].as_str().unwrap().to_owned()
}

async fn exec_on(router: &Router, token: &str, id: &str, code: &str) -> (StatusCode, Json) {
    let body = Body::from(json!({ "code": code }).to_string());
    send(
        router,
        "POST",
        &format!("/api/v1/sessions/{id}/execute"),
        Some(token),
        body,
    )
    .await
}

async fn eval_on(router: &Router, token: &str, id: &str, code: &str) -> Json {
    let (status, body) = exec_on(router, token, id, code).await;
    assert_eq!(status, StatusCode::OK, "{code}: {body}");
    body["result"].clone()
}

impl Env {
    /// Runs `code` in a new session of alice's; returns status and body.
    fn attack(&self, code: &str) -> (StatusCode, Json) {
        self.attack_as(&self.alice, code)
    }

    /// Runs `code` in a new session of the user whose token is `token`.
    fn attack_as(&self, token: &str, code: &str) -> (StatusCode, Json) {
        self.rt.block_on(async {
            let id = open_on(&self.router, token).await;
            let out = exec_on(&self.router, token, &id, code).await;
            self.close(token, &id).await;
            out
        })
    }

    async fn close(&self, token: &str, id: &str) {
        let uri = format!("/api/v1/sessions/{id}");
        let (status, body) = send(&self.router, "DELETE", &uri, Some(token), Body::empty()).await;
        assert!(status.is_success(), "{body}");
    }

    /// Bob's session still answers (its worker was not killed or disturbed).
    fn bob_alive(&self) -> bool {
        self.rt.block_on(async {
            let (status, body) =
                exec_on(&self.router, &self.bob, &self.bob_session, "Sys.getpid()").await;
            status == StatusCode::OK && body["result"].as_f64() == Some(f64::from(self.bob_pid))
        })
    }
}

/// What an attack printed or returned, as text, whatever the status.
fn text(body: &Json) -> String {
    body.to_string()
}

/// R that returns `expr`'s value as one string, or "DENIED: <message>" on an error
/// or warning (R reports many refusals as warnings).
fn guarded(expr: &str) -> String {
    format!(
        "tryCatch(paste(as.character({expr}), collapse = '\\n'), \
         error = function(e) paste('DENIED:', conditionMessage(e)), \
         warning = function(w) paste('DENIED:', conditionMessage(w)))"
    )
}

fn r_str(path: &Path) -> String {
    format!("{:?}", path.to_str().unwrap())
}

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

#[test]
fn a_published_services_code_is_confined_too() {
    for (confined, name) in [(true, "peek"), (false, "peek")] {
        let e = env(confined);
        // The publisher's code runs at start-up (in the zygote) and on each call.
        let code = format!(
            "peek <- function(path) tryCatch(paste(readLines(path, warn = FALSE), collapse = ''), \
               error = function(e) 'DENIED', warning = function(w) 'DENIED')\n\
             at_start <- peek({secret})\n\
             double_it <- function(d) rep(paste(at_start, peek({secret}), \
               tryCatch({{writeLines('x', file.path(R.home(), 'escape')); 'WROTE'}}, \
                 error = function(e) 'NOWRITE', warning = function(w) 'NOWRITE')), nrow(d))",
            secret = r_str(&e.bob_secret)
        );
        let version = if confined { "1" } else { "2" };
        publish(
            &e._server,
            &e.router,
            crate::server::double_spec(name, version, &code),
        );
        let (status, out) = e.rt.block_on(async {
            let t = token_for(&e._server, "pub");
            let body = Body::from(json!([{"x": 1}]).to_string());
            let uri = format!("/api/v1/services/{name}/{version}");
            send(&e.router, "POST", &uri, Some(&t), body).await
        });
        assert_eq!(status, StatusCode::OK, "{out}");
        let text = text(&out);
        assert_eq!(text.contains(SECRET), !confined, "{out}");
        assert_eq!(text.contains("WROTE"), !confined && is_root(), "{out}");
        let _ = std::fs::remove_file(Path::new("/usr/lib/R/escape"));
    }
}

#[test]
fn below_the_landlock_floor_untrusted_code_is_refused_with_the_reason() {
    let (server, _data) = server_with(|c| c.confine.min_landlock_abi = 99);
    let router = server.router();
    admin::add_user(server.state.store.as_ref(), "carol", Role::User, PASSWORD).unwrap();
    admin::grant(server.state.store.as_ref(), "carol", GRANT_EXECUTE).unwrap();
    let token = token_for(&server, "carol");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (status, body) = rt.block_on(send(
        &router,
        "POST",
        "/api/v1/sessions",
        Some(&token),
        Body::empty(),
    ));
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["error"]["code"], "confinement", "{body}");
    assert!(text(&body).contains("floor"), "{body}");
    assert!(server
        .state
        .confiner
        .describe()
        .iter()
        .any(|l| l.contains("REFUSED")));
}

#[test]
fn reading_and_listing_another_users_folder() {
    for (confined, expect_leak) in [(true, false), (false, true)] {
        let e = env(confined);
        let read = guarded(&format!(
            "readLines({}, warn = FALSE)",
            r_str(&e.bob_secret)
        ));
        let list = guarded(&format!(
            "list.files({}, recursive = TRUE)",
            r_str(e.bob_dir.parent().unwrap())
        ));
        let (_, out) = e.attack(&read);
        assert_eq!(text(&out).contains(SECRET), expect_leak, "read: {out}");
        let (_, out) = e.attack(&list);
        assert_eq!(
            text(&out).contains("secret.txt"),
            expect_leak,
            "list: {out}"
        );
        let (_, out) = e.attack(&format!(
            "system('cat {} 2>&1', intern = TRUE)",
            e.bob_secret.display()
        ));
        assert_eq!(text(&out).contains(SECRET), expect_leak, "cat: {out}");
    }
}

#[test]
fn a_symlink_to_another_users_file_leads_nowhere() {
    for (confined, expect_leak) in [(true, false), (false, true)] {
        let e = env(confined);
        let code = format!(
            "file.symlink({}, 'link.txt'); {}",
            r_str(&e.bob_secret),
            guarded("readLines('link.txt', warn = FALSE)")
        );
        let (_, out) = e.attack(&code);
        assert_eq!(text(&out).contains(SECRET), expect_leak, "{out}");
    }
}

#[test]
fn r_library_is_read_only_and_packages_cannot_be_installed() {
    let lib = PathBuf::from("/usr/lib/R/library");
    let marker = lib.join("rookery-escape-marker");
    let pkg = lib.join("rookeryevil");
    let lock = lib.join("00LOCK-rookeryevil");
    let install = format!(
        "dir.create('rookeryevil/R', recursive = TRUE); \
         writeLines(c('Package: rookeryevil', 'Version: 0.1', 'Title: x', \
           'Description: x.', 'License: MIT', 'Author: x', 'Maintainer: x <x@x.x>'), \
           'rookeryevil/DESCRIPTION'); \
         writeLines('export(f)', 'rookeryevil/NAMESPACE'); writeLines('f <- function() 1', 'rookeryevil/R/f.R'); \
         {}",
        "paste(suppressWarnings(system2(file.path(R.home('bin'), 'R'), c('CMD', 'INSTALL', '-l', .Library, 'rookeryevil'), stdout = TRUE, stderr = TRUE)), collapse = '\\n')"
    );
    for confined in [true, false] {
        let e = env(confined);
        let write = guarded(&format!("writeLines('x', {})", r_str(&marker)));
        // The control runs R with our rights: only root may write R's library.
        let works = !confined && is_root();
        e.attack(&write);
        assert_eq!(marker.exists(), works, "marker in R's library");
        let _ = std::fs::remove_file(&marker);
        let (_, out) = e.attack(&install);
        assert_eq!(pkg.exists(), works, "package installed: {out}");
        let _ = std::fs::remove_dir_all(&pkg);
        let _ = std::fs::remove_dir_all(&lock);
    }
}

#[test]
fn etc_shadow_is_unreadable() {
    if !Path::new("/etc/shadow").exists() {
        return;
    }
    for confined in [true, false] {
        let e = env(confined);
        let (_, out) = e.attack(&guarded("readLines('/etc/shadow')"));
        // The control server runs R with our rights: as root it reads the file.
        assert_eq!(
            text(&out).contains("root:"),
            !confined && is_root(),
            "{out}"
        );
        let (_, out) = e.attack("system('cat /etc/shadow 2>&1', intern = TRUE)");
        assert_eq!(
            text(&out).contains("root:"),
            !confined && is_root(),
            "{out}"
        );
    }
}

#[test]
fn another_workers_proc_files_are_hidden() {
    for confined in [true, false] {
        let e = env(confined);
        let cmdline = guarded(&format!(
            "readBin('/proc/{}/cmdline', 'raw', 4096)",
            e.bob_pid
        ));
        let (_, out) = e.attack(&cmdline);
        let denied = text(&out).contains("DENIED");
        assert_eq!(denied, confined, "cmdline: {out}");
        let environ = guarded(&format!(
            "readBin('/proc/{}/environ', 'raw', 4096)",
            e.bob_pid
        ));
        let (_, out) = e.attack(&environ);
        assert_eq!(text(&out).contains("DENIED"), confined, "environ: {out}");
    }
}

/// `TracerPid` of process `pid`.
fn tracer_of(pid: u32) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("TracerPid:"))
        .and_then(|v| v.trim().parse().ok())
}

#[test]
fn ptrace_reaches_no_other_process() {
    // The victim: a host process. The attacker attaches with ptrace(PTRACE_ATTACH)
    // from Python's ctypes and holds on for two seconds; the witness is the
    // victim's TracerPid, read by the host meanwhile.
    let mut victim = std::process::Command::new("sleep")
        .arg("600")
        .spawn()
        .unwrap();
    let script = [
        "import ctypes, sys, time",
        "libc = ctypes.CDLL(None, use_errno=True)",
        "r = libc.ptrace(16, int(sys.argv[1]), 0, 0)",
        "print('attach', r, ctypes.get_errno()); sys.stdout.flush(); time.sleep(2)",
    ];
    let lines: Vec<String> = script.iter().map(|l| format!("{l:?}")).collect();
    let code = format!(
        "writeLines(c({}), 'p.py'); system2('python3', c('p.py', {}), stdout = TRUE, stderr = TRUE, wait = FALSE); Sys.sleep(1.5); 1",
        lines.join(", "),
        victim.id()
    );
    for confined in [true, false] {
        let e = env(confined);
        let traced = std::sync::atomic::AtomicBool::new(false);
        std::thread::scope(|scope| {
            scope.spawn(|| {
                let _ = wait_for(Duration::from_secs(4), || {
                    let t = tracer_of(victim.id()).is_some_and(|t| t != 0);
                    if t {
                        traced.store(true, std::sync::atomic::Ordering::Relaxed);
                    }
                    t
                });
            });
            let (status, out) = e.attack(&code);
            assert_eq!(status, StatusCode::OK, "{out}");
        });
        // Only root may trace a process it does not own: the control needs root.
        let expect = !confined && is_root();
        assert_eq!(traced.into_inner(), expect, "confined: {confined}");
        // Whatever happened, the victim is not left stopped under a tracer.
        assert!(wait_for(Duration::from_secs(10), || tracer_of(victim.id())
            == Some(0)));
    }
    let _ = victim.kill();
    let _ = victim.wait();
}

#[test]
fn a_crashed_worker_leaks_no_process_folder_or_account() {
    let e = env(true);
    let (dir, tmp, uid) = e.rt.block_on(async {
        let id = open_on(&e.router, &e.carl).await;
        let dir = eval_on(&e.router, &e.carl, &id, "getwd()").await;
        let tmp = eval_on(&e.router, &e.carl, &id, "tempdir()").await;
        let uid = eval_on(&e.router, &e.carl, &id, "system('id -u', intern = TRUE)").await;
        let (status, out) = exec_on(
            &e.router,
            &e.carl,
            &id,
            "system('sleep 301', wait = FALSE); tools::pskill(Sys.getpid(), 9L)",
        )
        .await;
        assert_eq!(status, StatusCode::BAD_GATEWAY, "{out}");
        // The session goes on with a new worker, in the same folder.
        let again = eval_on(&e.router, &e.carl, &id, "getwd()").await;
        assert_eq!(again, dir);
        e.close(&e.carl, &id).await;
        (dir, tmp, uid)
    });
    assert!(!Path::new(dir.as_str().unwrap()).exists(), "{dir}");
    assert!(!Path::new(tmp.as_str().unwrap()).exists(), "{tmp}");
    assert!(wait_for(Duration::from_secs(10), || !any_sleep("301")));
    if is_root() {
        let uid: u32 = uid.as_str().unwrap().parse().unwrap();
        let none = wait_for(Duration::from_secs(15), || {
            leases::processes_of(&[uid]).is_empty()
        });
        assert!(none, "processes of uid {uid} survive");
    }
}

#[test]
fn signals_reach_neither_other_workers_nor_the_server() {
    // The victim: a process of the host's, as the server would be.
    let mut victim = std::process::Command::new("sleep")
        .arg("600")
        .spawn()
        .unwrap();
    let e = env(true);
    let code = format!(
        "tools::pskill({b}, 9L); tools::pskill({v}, 9L); tools::pskill({s}, 9L); \
         system('kill -9 {b} {v} {s} 2>&1', intern = TRUE)",
        b = e.bob_pid,
        v = victim.id(),
        s = std::process::id()
    );
    let (_, out) = e.attack(&code);
    assert!(e.bob_alive(), "bob's worker was killed: {out}");
    assert!(
        victim.try_wait().unwrap().is_none(),
        "the victim was killed: {out}"
    );
    // Control: unconfined, the same code kills the victim (not the test process:
    // the control kills only the victim).
    let control = env(false);
    let (_, out) = control.attack(&format!("tools::pskill({}, 9L)", victim.id()));
    let gone = wait_for(Duration::from_secs(5), || {
        victim.try_wait().unwrap().is_some()
    });
    assert!(
        gone,
        "the unconfined control could not kill the victim: {out}"
    );
}

#[test]
fn no_tcp_or_udp_even_on_loopback() {
    let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
    tcp.set_nonblocking(true).unwrap();
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.set_nonblocking(true).unwrap();
    let (tport, uport) = (
        tcp.local_addr().unwrap().port(),
        udp.local_addr().unwrap().port(),
    );
    let code = format!(
        "{}; system(\"bash -c 'echo hi > /dev/udp/127.0.0.1/{uport}' 2>&1\", intern = TRUE)",
        guarded(&format!(
            "{{con <- socketConnection('127.0.0.1', {tport}, blocking = TRUE, timeout = 2); \
              writeLines('hi', con); close(con); 'connected'}}"
        ))
    );
    for confined in [true, false] {
        let e = env(confined);
        let (_, out) = e.attack(&code);
        let tcp_seen = wait_for(Duration::from_secs(2), || tcp.accept().is_ok());
        let udp_seen = wait_for(Duration::from_secs(2), || udp.recv(&mut [0u8; 64]).is_ok());
        assert_eq!(tcp_seen, !confined, "TCP: {out}");
        assert_eq!(udp_seen, !confined, "UDP: {out}");
    }
}

#[test]
fn unix_sockets_named_or_abstract_are_unreachable() {
    let dir = tempfile::tempdir().unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = dir.path().join("server.sock");
    let named = UnixListener::bind(&path).unwrap();
    // World-connectable on purpose: the worst a server could leave around.
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o777)).unwrap();
    named.set_nonblocking(true).unwrap();
    let name = format!("rookery-escape-{}", std::process::id());
    use std::os::linux::net::SocketAddrExt;
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
    let abstract_ = UnixListener::bind_addr(&addr).unwrap();
    abstract_.set_nonblocking(true).unwrap();
    let script = [
        "import socket, sys",
        "for t in sys.argv[1:]:",
        r"    a = b'\0' + t[1:].encode() if t.startswith('@') else t",
        "    try:",
        "        s = socket.socket(socket.AF_UNIX); s.connect(a); s.send(b'hi'); print('connected', t)",
        "    except Exception as e:",
        "        print('DENIED', t, e)",
    ];
    let lines: Vec<String> = script.iter().map(|l| format!("{l:?}")).collect();
    let code = format!(
        "writeLines(c({}), 'c.py'); system2('python3', c('c.py', {}, '@{name}'), stdout = TRUE, stderr = TRUE)",
        lines.join(", "),
        r_str(&path)
    );
    for confined in [true, false] {
        let e = env(confined);
        let (_, out) = e.attack(&code);
        let named_seen = wait_for(Duration::from_secs(2), || named.accept().is_ok());
        let abstract_seen = wait_for(Duration::from_secs(2), || abstract_.accept().is_ok());
        assert_eq!(named_seen, !confined, "named socket: {out}");
        assert_eq!(abstract_seen, !confined, "abstract socket: {out}");
    }
}

#[test]
fn no_user_namespaces() {
    for confined in [true, false] {
        let e = env(confined);
        // The witness is a file written from inside the new namespace into the
        // session's own folder, read by the host afterwards.
        let code = "system('unshare -Ur sh -c \"id -u > ns-witness\" 2>&1', intern = TRUE); \
                    normalizePath('.')";
        let (seen, out) = e.rt.block_on(async {
            let id = open_on(&e.router, &e.alice).await;
            let out = exec_on(&e.router, &e.alice, &id, code).await;
            let dir = eval_on(&e.router, &e.alice, &id, "getwd()").await;
            let witness = Path::new(dir.as_str().unwrap()).join("ns-witness");
            let seen = witness.exists();
            e.close(&e.alice, &id).await;
            (seen, out)
        });
        assert_eq!(seen, !confined, "unshare -U: {out:?}");
    }
}

/// Processes running `sleep 7` (the burst below), anywhere on the machine.
fn sleepers() -> usize {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| std::fs::read(e.path().join("cmdline")).is_ok_and(|c| c == b"sleep\x007\x00"))
        .count()
}

#[test]
fn a_process_burst_stops_at_the_pids_limit() {
    // 150 background processes: past the confined server's cap (96 per account),
    // harmless unconfined (the control).
    let burst = "system('for i in $(seq 150); do sleep 7 & done', wait = FALSE); Sys.sleep(1.5); 1";
    for confined in [true, false] {
        let e = env(confined);
        let (status, out) = e.rt.block_on(async {
            let id = open_on(&e.router, &e.alice).await;
            let out = exec_on(&e.router, &e.alice, &id, burst).await;
            let n = sleepers();
            e.close(&e.alice, &id).await;
            (n, out)
        });
        if confined {
            assert!(status <= 96, "{status} processes past the cap: {out:?}");
        } else {
            assert!(status >= 140, "only {status} of the control's 150: {out:?}");
        }
        // Closing the session took them all down, confined or not (process group).
        assert!(wait_for(Duration::from_secs(10), || sleepers() == 0));
    }
}

#[test]
fn a_fork_bomb_is_contained_and_cleaned_up_and_others_still_fork() {
    let e = env(true);
    // No unconfined control: a real fork bomb would take the machine down.
    let bomb = "u <- system('id -u', intern = TRUE); \
                system('bomb() { bomb | bomb & }; bomb', wait = FALSE); Sys.sleep(1); u";
    let (status, out) = e.attack_as(&e.mallory, bomb);
    assert_eq!(status, StatusCode::OK, "{out}");
    // The bomb ran in mallory's cgroup and uid: bob's session still forks.
    let (status_b, out_b) = e.rt.block_on(exec_on(
        &e.router,
        &e.bob,
        &e.bob_session,
        "system('echo still-forking', intern = TRUE)",
    ));
    assert_eq!(status_b, StatusCode::OK, "{out_b}");
    assert!(text(&out_b).contains("still-forking"), "{out_b}");
    assert!(e.bob_alive());
    let uid: u32 = out["result"].as_str().unwrap().parse().unwrap();
    // After mallory's session closed, nothing of her account's is left.
    let clean = wait_for(Duration::from_secs(30), || {
        leases::processes_of(&[uid]).is_empty()
    });
    let survivors: Vec<String> = leases::processes_of(&[uid])
        .iter()
        .take(4)
        .map(|p| std::fs::read_to_string(format!("/proc/{p}/stat")).unwrap_or_default())
        .collect();
    assert!(
        clean,
        "processes of uid {uid} survive the lease: {survivors:?}"
    );
}

#[test]
fn a_memory_bomb_is_a_clean_r_error() {
    let code = "x <- list(); for (i in 1:3) x[[i]] <- numeric(6e7); length(x)";
    let e = env(true);
    let (status, out) = e.attack(code);
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{out}");
    assert!(text(&out).contains("cannot allocate"), "{out}");
    assert!(e.bob_alive());
    // Control: the same 1.4 GB fit without the address-space limit.
    let (status, out) = env(false).attack(code);
    assert_eq!(status, StatusCode::OK, "{out}");
}

#[test]
fn a_disk_fill_stops_at_the_file_size_limit() {
    let code = "f <- file('big.bin', 'wb'); \
                r <- tryCatch({for (i in 1:64) writeBin(raw(1e6), f); 'wrote'}, \
                  error = function(e) paste('DENIED:', conditionMessage(e))); \
                close(f); c(r, file.size('big.bin'))";
    for confined in [true, false] {
        let e = env(confined);
        let (_, out) = e.attack(code);
        let size: f64 = out["result"][1]
            .as_str()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("{out}"));
        if confined {
            assert!(size <= 16.0 * 1048576.0, "{out}");
        } else {
            assert_eq!(size, 64e6, "{out}");
        }
    }
}

#[test]
fn an_infinite_loop_ends_at_the_deadline_with_nothing_left_behind() {
    let e = env(true);
    let (status, out) = e.rt.block_on(async {
        let id = open_on(&e.router, &e.alice).await;
        let pid = eval_on(&e.router, &e.alice, &id, "Sys.getpid()").await;
        let pid = pid.as_f64().unwrap() as i32;
        let out = exec_on(
            &e.router,
            &e.alice,
            &id,
            "system('sleep 300', wait = FALSE); repeat {}",
        )
        .await;
        let gone = wait_for(Duration::from_secs(5), || {
            !Path::new(&format!("/proc/{pid}")).exists()
        });
        assert!(gone, "the looping worker {pid} is still there");
        // The session goes on, with a new worker.
        let again = eval_on(&e.router, &e.alice, &id, "1 + 1").await;
        assert_eq!(again.as_f64(), Some(2.0));
        e.close(&e.alice, &id).await;
        out
    });
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT, "{out}");
    // Nothing the loop started survives it: its `sleep` went with its process group.
    assert!(wait_for(Duration::from_secs(10), || !any_sleep("300")));
}

/// Whether a `sleep SECONDS` process runs anywhere on the machine.
fn any_sleep(seconds: &str) -> bool {
    let wanted = format!("sleep\0{seconds}\0");
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .any(|e| std::fs::read(e.path().join("cmdline")).is_ok_and(|c| c == wanted.as_bytes()))
}

fn wait_for(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

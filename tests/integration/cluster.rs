//! Several `rookery serve` nodes on one real PostgreSQL (Debian's, started by
//! `scripts/postgres` under `target/`): one registry for all of them. A user made
//! with the CLI on the shared store logs in on any node; a token from one node works
//! on the other; a logout on one is refused on the other within a second; a node
//! whose database goes away turns unready and answers 503 `store_unavailable`, then
//! recovers with nothing lost; a node that cannot reach its database at start-up
//! says so and exits.

#[path = "../../server/src/store/postgres/fixture.rs"]
mod fixture;

use std::path::Path;
use std::sync::OnceLock;
use std::time::Duration;

use serde_json::{json, Value as Json};

use crate::server::live::http;
use crate::server::results::call;
use fixture::Postgres;

const ADA_PW: &str = "ada-password-1";

fn shared() -> &'static Postgres {
    static PG: OnceLock<Postgres> = OnceLock::new();
    PG.get_or_init(|| {
        let pg = Postgres::start("integration");
        pg.drop_test_databases();
        pg
    })
}

fn cli(args: &[&str], store: &str, data: &Path, stdin: &str) -> (bool, String, String) {
    use std::io::Write;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_rookery"))
        .args(args)
        .arg("--store")
        .arg(store)
        .arg("--data")
        .arg(data)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `rookery user add NAME --role ROLE --store STORE` with [`ADA_PW`].
fn add_user(store: &str, data: &Path, name: &str, role: &str) {
    let (ok, _, err) = cli(
        &["user", "add", name, "--role", role],
        store,
        data,
        &format!("{ADA_PW}\n"),
    );
    assert!(ok, "rookery user add {name} --store: {err}");
}

/// A node on `store` with its own data folder; its HTTP address.
fn node(store: &str, data: &Path) -> (std::process::Child, String) {
    node_sharing(store, data, None)
}

/// [`node`], with a shared folder for model files.
fn node_sharing(store: &str, data: &Path, shared: Option<&Path>) -> (std::process::Child, String) {
    let mut args: Vec<&std::ffi::OsStr> = vec![
        "--listen".as_ref(),
        "127.0.0.1:0".as_ref(),
        "--data".as_ref(),
        data.as_os_str(),
        "--store".as_ref(),
        store.as_ref(),
    ];
    if let Some(dir) = shared {
        args.extend(["--shared-dir".as_ref(), dir.as_os_str()]);
    }
    let (child, mut lines) = crate::server::spawn_serve(&args);
    let first = lines.next().unwrap().unwrap();
    let addr = first
        .strip_prefix("rookery listening on http://")
        .expect(&first)
        .to_owned();
    std::thread::spawn(move || lines.for_each(drop));
    (child, addr)
}

fn login(addr: &str) -> (u16, Json) {
    let body = json!({"username": "ada", "password": ADA_PW});
    call(addr, "POST", "/api/v1/login", "", &body)
}

fn ready(addr: &str) -> (u16, Json) {
    let (status, text) = http(addr, "GET", "/readyz", &[], "");
    (status, serde_json::from_str(&text).unwrap_or(Json::Null))
}

fn wait_ready(addr: &str) -> bool {
    (0..600).any(|_| {
        std::thread::sleep(Duration::from_millis(100));
        ready(addr).0 == 200
    })
}

#[test]
fn two_nodes_share_one_registry() {
    let store = shared().fresh_db();
    let (a_data, b_data) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    add_user(&store, a_data.path(), "ada", "publisher");
    let (a, a_addr) = node(&store, a_data.path());
    let (b, b_addr) = node(&store, b_data.path());
    assert!(wait_ready(&a_addr) && wait_ready(&b_addr));
    let (_, body) = ready(&a_addr);
    assert_eq!(body["store"]["ok"], true, "{body}");

    // A login on A is a token on B.
    let (status, out) = login(&a_addr);
    assert_eq!(status, 200, "{out}");
    let token = out["access_token"].as_str().unwrap().to_owned();
    let (status, me) = call(&b_addr, "GET", "/api/v1/me", &token, &json!({}));
    assert_eq!(
        (status, me["username"].as_str()),
        (200, Some("ada")),
        "{me}"
    );

    // An API key made by the CLI on the shared store works on both.
    let (ok, key, err) = cli(&["key", "create", "ada"], &store, b_data.path(), "");
    assert!(ok, "rookery key create --store: {err}");
    let key = key.trim();
    for addr in [&a_addr, &b_addr] {
        let (status, _) = call(addr, "GET", "/api/v1/me", key, &json!({}));
        assert_eq!(status, 200);
    }

    // A logout on A: refused on B within a second.
    let (status, _) = call(&a_addr, "POST", "/api/v1/logout", &token, &json!({}));
    assert_eq!(status, 204);
    let (status, _) = call(&a_addr, "GET", "/api/v1/me", &token, &json!({}));
    assert_eq!(status, 401, "refused at once where it was revoked");
    std::thread::sleep(Duration::from_secs(1));
    let (status, _) = call(&b_addr, "GET", "/api/v1/me", &token, &json!({}));
    assert_eq!(status, 401, "refused on the other node a second later");

    // The user removed with the CLI: refused on both within a second.
    let (ok, _, err) = cli(&["user", "remove", "ada"], &store, a_data.path(), "");
    assert!(ok, "rookery user remove --store: {err}");
    std::thread::sleep(Duration::from_secs(1));
    for addr in [&a_addr, &b_addr] {
        let (status, _) = call(addr, "GET", "/api/v1/me", key, &json!({}));
        assert_eq!(status, 401);
    }
    crate::server::stop_server(a);
    crate::server::stop_server(b);
}

/// Polls `f` every 50 ms for up to a minute; the time it took to hold.
fn within_a_minute(mut f: impl FnMut() -> bool) -> Option<Duration> {
    let start = std::time::Instant::now();
    while start.elapsed() < Duration::from_secs(60) {
        if f() {
            return Some(start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

#[test]
fn a_version_published_on_one_node_is_served_by_the_other() {
    use base64::Engine as _;
    let store = shared().fresh_db();
    let (a_data, b_data) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let shared_dir = tempfile::tempdir().unwrap();
    add_user(&store, a_data.path(), "ada", "publisher");
    let (a, a_addr) = node_sharing(&store, a_data.path(), Some(shared_dir.path()));
    let (b, b_addr) = node_sharing(&store, b_data.path(), Some(shared_dir.path()));
    assert!(wait_ready(&a_addr) && wait_ready(&b_addr));
    let token = login(&a_addr).1["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let publish = |factor: &str| {
        let spec = json!({
            "name": "scale", "version": "1",
            "code": "m <- as.numeric(readLines('factor.txt')); f <- function(d) data.frame(y = d$x * m)",
            "function": "f",
            "inputs": {"columns": [{"name": "x", "type": "double"}]},
            "files": {"factor.txt": base64::engine::general_purpose::STANDARD.encode(format!("{factor}\n"))},
        });
        let (status, out) = call(&a_addr, "POST", "/api/v1/services", &token, &spec);
        assert!(status == 201 || status == 200, "{status} {out}");
    };
    let score = |addr: &str| {
        call(
            addr,
            "POST",
            "/api/v1/services/scale/1",
            &token,
            &json!([{"x": 2}]),
        )
    };
    let answers = |addr: &str, y: f64| {
        let (status, out) = score(addr);
        status == 200 && out.to_string().contains(&format!("{y}"))
    };

    publish("3");
    let first = score(&a_addr);
    assert!(
        first.0 == 200 && first.1.to_string().contains('6'),
        "the publishing node serves it at once: {first:?}"
    );
    let took = within_a_minute(|| answers(&b_addr, 6.0));
    assert!(
        took.is_some(),
        "node B serves the version A published: {:?}",
        score(&b_addr)
    );
    eprintln!("published on A, served by B after {:?}", took.unwrap());

    // An update on A replaces B's revision too.
    publish("10");
    let took = within_a_minute(|| answers(&b_addr, 20.0));
    assert!(
        took.is_some(),
        "node B serves the update: {:?}",
        score(&b_addr)
    );
    eprintln!("updated on A, served by B after {:?}", took.unwrap());

    // Retired on A: gone from B.
    let (status, _) = call(
        &a_addr,
        "DELETE",
        "/api/v1/services/scale/1",
        &token,
        &json!({}),
    );
    assert_eq!(status, 204);
    let took = within_a_minute(|| score(&b_addr).0 == 404);
    assert!(took.is_some(), "node B retires it too");
    eprintln!("retired on A, gone from B after {:?}", took.unwrap());
    crate::server::stop_server(a);
    crate::server::stop_server(b);
}

#[test]
fn nodes_register_beat_and_leave_when_stopped() {
    let store = shared().fresh_db();
    let (a_data, b_data) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    for (name, role) in [("root", "admin"), ("ada", "publisher")] {
        add_user(&store, a_data.path(), name, role);
    }
    let (a, a_addr) = node(&store, a_data.path());
    let (b, b_addr) = node(&store, b_data.path());
    assert!(wait_ready(&a_addr) && wait_ready(&b_addr));
    let body = json!({"username": "root", "password": ADA_PW});
    let root = call(&a_addr, "POST", "/api/v1/login", "", &body).1["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let listed = || call(&a_addr, "GET", "/api/v1/nodes", &root, &json!({})).1;
    let both = within_a_minute(|| {
        listed()["nodes"]
            .as_array()
            .is_some_and(|n| n.len() == 2 && n.iter().all(|n| n["alive"] == true))
    });
    assert!(both.is_some(), "both nodes registered: {}", listed());
    let out = listed();
    let nodes = out["nodes"].as_array().unwrap();
    let this: Vec<_> = nodes.iter().filter(|n| n["this"] == true).collect();
    assert_eq!(this.len(), 1, "{out}");
    assert_eq!(this[0]["address"], format!("http://{a_addr}"), "{out}");
    assert!(
        nodes
            .iter()
            .any(|n| n["address"] == format!("http://{b_addr}")),
        "{out}"
    );
    assert!(
        nodes.iter().all(|n| n["workers"].as_u64() > Some(0)),
        "{out}"
    );

    // The CLI reads the same registry.
    let (ok, lines, err) = cli(&["nodes", "--json"], &store, a_data.path(), "");
    assert!(ok, "{err}");
    assert_eq!(lines.lines().count(), 2, "{lines}");

    // Only admins see the nodes.
    let ada = login(&a_addr).1["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        call(&a_addr, "GET", "/api/v1/nodes", &ada, &json!({})).0,
        403
    );

    // B stops cleanly: it leaves the registry.
    crate::server::stop_server(b);
    let out = listed();
    let ids: Vec<_> = out["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["address"].clone())
        .collect();
    assert_eq!(ids, [json!(format!("http://{a_addr}"))], "{out}");
    crate::server::stop_server(a);
}

#[test]
fn failed_logins_count_across_nodes() {
    let store = shared().fresh_db();
    let (a_data, b_data) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    add_user(&store, a_data.path(), "ada", "publisher");
    let (a, a_addr) = node(&store, a_data.path());
    let (b, b_addr) = node(&store, b_data.path());
    // Five wrong passwords, spread over both nodes (each node alone would allow five).
    for i in 0..5 {
        let addr = if i % 2 == 0 { &a_addr } else { &b_addr };
        let body = json!({"username": "ada", "password": "not-it"});
        assert_eq!(call(addr, "POST", "/api/v1/login", "", &body).0, 401);
    }
    // Now even the right password waits, on either node.
    for addr in [&a_addr, &b_addr] {
        let (status, out) = login(addr);
        assert_eq!(
            (status, crate::server::code(&out)),
            (429, "rate_limited"),
            "{out}"
        );
    }
    crate::server::stop_server(a);
    crate::server::stop_server(b);
}

#[test]
fn a_node_whose_database_goes_away_is_unready_and_recovers() {
    let mut pg = Postgres::start("integration-outage");
    let store = pg.url.clone();
    let data = tempfile::tempdir().unwrap();
    let name = format!("ada{}", std::process::id());
    let _ = cli(&["user", "remove", &name], &store, data.path(), "");
    add_user(&store, data.path(), &name, "publisher");
    let (child, addr) = node(&store, data.path());
    assert!(wait_ready(&addr));
    let login_as = |addr: &str| {
        let body = json!({"username": name, "password": ADA_PW});
        call(addr, "POST", "/api/v1/login", "", &body)
    };
    assert_eq!(login_as(&addr).0, 200);

    pg.stop();
    let (status, body) = ready(&addr);
    assert_eq!(
        (status, &body["store"]["ok"]),
        (503, &json!(false)),
        "{body}"
    );
    let (status, out) = login_as(&addr);
    assert_eq!(
        (status, crate::server::code(&out)),
        (503, "store_unavailable"),
        "{out}"
    );
    assert_eq!(
        http(&addr, "GET", "/healthz", &[], "").0,
        200,
        "the process is alive"
    );

    pg.restart();
    assert!(wait_ready(&addr), "ready again once the database is back");
    let (status, out) = login_as(&addr);
    assert_eq!(status, 200, "the user survived the outage: {out}");
    crate::server::stop_server(child);
}

#[test]
fn a_node_that_cannot_reach_its_database_says_so_at_start() {
    let port = fixture::free_port();
    let data = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_rookery"))
        .args(["serve", "--listen", "127.0.0.1:0", "--store"])
        .arg(format!(
            "postgres://rookery:secret-pw@127.0.0.1:{port}/rookery"
        ))
        .arg("--data")
        .arg(data.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "cannot reach PostgreSQL at 127.0.0.1:{port}/rookery"
        )),
        "{err}"
    );
    assert!(!err.contains("secret-pw"), "no password in {err}");
}

/// `scripts/cluster` (PostgreSQL, three nodes, HAProxy), as it prints itself.
struct Cluster {
    child: std::process::Child,
    store: String,
    /// Each node's id, HTTP and QAP1 addresses, and process id.
    nodes: Vec<(String, String, String, i32)>,
    http: String,
    qap: String,
    _dir: tempfile::TempDir,
}

impl Cluster {
    fn start(nodes: usize) -> Cluster {
        Cluster::start_with(nodes, "", false)
    }

    /// [`Cluster::start`], every node reading `config` (TOML) as its config file;
    /// `sticky`: HAProxy sends a session's requests to the node its id names.
    fn start_with(nodes: usize, config: &str, sticky: bool) -> Cluster {
        use std::io::BufRead;
        let dir = tempfile::tempdir().unwrap();
        let config_file = dir.path().join("rookery.toml");
        std::fs::write(&config_file, config).unwrap();
        // HAProxy takes PORT and PORT+1.
        let port = (0..100)
            .map(|_| fixture::free_port())
            .find(|p| *p < 65535 && std::net::TcpListener::bind(("127.0.0.1", p + 1)).is_ok())
            .unwrap();
        let mut child = std::process::Command::new(fixture::project_root().join("scripts/cluster"))
            .args([
                "--nodes",
                &nodes.to_string(),
                "--port",
                &port.to_string(),
                "--dir",
            ])
            .arg(dir.path())
            .arg("--config")
            .arg(&config_file)
            .args(sticky.then_some("--sticky"))
            .env("ROOKERY_BIN", env!("CARGO_BIN_EXE_rookery"))
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
        let (mut store, mut found, mut front) = (String::new(), Vec::new(), None);
        for line in lines.by_ref() {
            let line = line.unwrap();
            let words: Vec<&str> = line.split_whitespace().collect();
            match words.as_slice() {
                ["store", url] => store = (*url).to_owned(),
                ["node", id, http, qap, pid] => found.push((
                    (*id).to_owned(),
                    (*http).to_owned(),
                    (*qap).to_owned(),
                    pid.parse().unwrap(),
                )),
                ["cluster", http, "qap", qap] => {
                    front = Some((
                        http.trim_start_matches("http://").to_owned(),
                        (*qap).to_owned(),
                    ));
                    break;
                }
                _ => panic!("scripts/cluster printed {line:?}"),
            }
        }
        let (http, qap) = front.expect("scripts/cluster started the cluster");
        std::thread::spawn(move || lines.for_each(drop));
        Cluster {
            child,
            store,
            nodes: found,
            http,
            qap,
            _dir: dir,
        }
    }

    fn kill_node(&self, i: usize) {
        self.signal_node(i, rustix::process::Signal::KILL);
    }

    fn signal_node(&self, i: usize, signal: rustix::process::Signal) {
        rustix::process::kill_process(
            rustix::process::Pid::from_raw(self.nodes[i].3).unwrap(),
            signal,
        )
        .unwrap();
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.wait();
    }
}

/// Scoring calls through HAProxy answered by `addr`'s node, from its `/metrics`.
fn scoring_calls_on(addr: &str) -> u64 {
    let (_, text) = http(addr, "GET", "/metrics", &[], "");
    text.lines()
        .filter(|l| {
            l.starts_with("rookery_http_requests_total{")
                && l.contains("/api/v1/services/{name}/{version}\"")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

#[test]
fn a_cluster_behind_haproxy_spreads_calls_and_routes_around_a_dead_node() {
    use base64::Engine as _;
    let cluster = Cluster::start(3);
    assert_eq!(cluster.nodes.len(), 3);
    let data = tempfile::tempdir().unwrap();
    add_user(&cluster.store, data.path(), "ada", "publisher");
    let lb = cluster.http.clone();

    // Login and publish through HAProxy, on whichever node it picks.
    let token = login(&lb).1["access_token"].as_str().unwrap().to_owned();
    let spec = json!({
        "name": "triple", "version": "1",
        "code": "k <- as.numeric(readLines('k.txt')); f <- function(d) data.frame(y = d$x * k)",
        "function": "f",
        "inputs": {"columns": [{"name": "x", "type": "double"}]},
        "files": {"k.txt": base64::engine::general_purpose::STANDARD.encode("3\n")},
    });
    let (status, out) = call(&lb, "POST", "/api/v1/services", &token, &spec);
    assert_eq!(status, 201, "{out}");
    let score = |x: u32| {
        let (status, out) = call(
            &lb,
            "POST",
            "/api/v1/services/triple/1",
            &token,
            &json!([{"x": x}]),
        );
        (status, out.to_string().contains(&format!("{}", x * 3)))
    };
    // Every node has it within moments: then 30 calls in a row succeed.
    let all = within_a_minute(|| (0..30).all(|i| score(i) == (200, true)));
    assert!(
        all.is_some(),
        "every node serves the version published through HAProxy"
    );
    for (id, addr, _, _) in &cluster.nodes {
        assert!(
            scoring_calls_on(addr) > 0,
            "{id} answered none of the calls"
        );
    }

    // QAP1 through HAProxy's TCP frontend.
    {
        use rookery_server::qap::frame::{self, cmd, resp};
        use std::io::Read;
        let mut s = std::net::TcpStream::connect(&cluster.qap).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        let mut id = [0u8; 32];
        s.read_exact(&mut id).unwrap();
        let mut p = Vec::new();
        frame::push_string_param(&mut p, format!("ada\n{ADA_PW}").as_bytes());
        assert_eq!(
            crate::server::hostile::qap_request(&mut s, cmd::LOGIN, &p).0,
            resp::OK
        );
        let mut p = Vec::new();
        frame::push_string_param(&mut p, b"1 + 1");
        assert_eq!(
            crate::server::hostile::qap_request(&mut s, cmd::EVAL, &p).0,
            resp::OK
        );
    }

    // Scoring load from 4 clients while node 2 is killed with SIGKILL: calls in
    // flight there may fail, each with a clean 5xx; none is wrong; HAProxy then
    // routes around it.
    let stop = std::sync::atomic::AtomicBool::new(false);
    let (ok, failed, wrong) = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..4)
            .map(|_| {
                scope.spawn(|| {
                    let (mut ok, mut failed, mut wrong) = (0u32, Vec::new(), 0u32);
                    let mut x = 1;
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        match score(x) {
                            (200, true) => ok += 1,
                            (200, false) => wrong += 1,
                            (status, _) => failed.push(status),
                        }
                        x += 1;
                    }
                    (ok, failed, wrong)
                })
            })
            .collect();
        std::thread::sleep(Duration::from_secs(2));
        cluster.kill_node(1);
        std::thread::sleep(Duration::from_secs(4));
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        workers.into_iter().map(|w| w.join().unwrap()).fold(
            (0, Vec::new(), 0),
            |(o, mut f, w), (o2, f2, w2)| {
                f.extend(f2);
                (o + o2, f, w + w2)
            },
        )
    });
    eprintln!(
        "under a node's SIGKILL: {ok} answered, {} failed {failed:?}, {wrong} wrong",
        failed.len()
    );
    assert_eq!(wrong, 0);
    assert!(failed.iter().all(|s| (500..600).contains(s)), "{failed:?}");
    assert!(
        failed.len() <= 4,
        "only calls in flight may fail: {failed:?}"
    );
    assert!(ok > 0);
    // After the kill, every call succeeds on the nodes left.
    assert!(
        (0..30).all(|i| score(i) == (200, true)),
        "HAProxy routes around the dead node"
    );
}

/// A node's count of shared batch chunks with `outcome`, from its `/metrics`.
fn chunks_on(addr: &str, outcome: &str) -> u64 {
    let (_, text) = http(addr, "GET", "/metrics", &[], "");
    let wanted = format!("rookery_batch_chunks_total{{outcome=\"{outcome}\"}} ");
    text.lines()
        .filter_map(|l| l.strip_prefix(&wanted)?.parse::<u64>().ok())
        .sum()
}

#[test]
fn a_batch_job_through_haproxy_is_scored_by_every_node_and_survives_a_node_killed_midway() {
    batch_through_haproxy(rustix::process::Signal::KILL);
}

#[test]
fn a_node_stopped_during_a_batch_job_hands_its_chunks_back() {
    batch_through_haproxy(rustix::process::Signal::TERM);
}

/// A slow batch job through HAProxy over three nodes; once a few chunks are done, a
/// node scoring one gets `signal`. The job completes with every row once, in order.
/// After SIGTERM the node holds no chunk when it is gone (finished or handed back).
fn batch_through_haproxy(signal: rustix::process::Signal) {
    let cluster = Cluster::start_with(3, "[limits]\nbatch_chunk_rows = 250\n", false);
    let data = tempfile::tempdir().unwrap();
    add_user(&cluster.store, data.path(), "ada", "publisher");
    let lb = cluster.http.clone();
    let token = login(&lb).1["access_token"].as_str().unwrap().to_owned();
    let spec = json!({
        "name": "slow", "version": "1",
        "code": "f <- function(d) { Sys.sleep(0.3); data.frame(i = d$i, y = d$i * 2) }",
        "function": "f",
        "inputs": {"columns": [{"name": "i", "type": "double"}]},
    });
    let (status, out) = call(&lb, "POST", "/api/v1/services", &token, &spec);
    assert_eq!(status, 201, "{out}");
    // Every node serves it before the job starts, so all of them take chunks.
    let one = json!([{"i": 1}]);
    assert!(
        within_a_minute(|| cluster.nodes.iter().all(|(_, addr, _, _)| call(
            addr,
            "POST",
            "/api/v1/services/slow/1",
            &token,
            &one
        )
        .0 == 200))
        .is_some(),
        "every node serves the version"
    );

    // 10,000 rows in 40 chunks of 250, 0.3 s each.
    let rows = 10_000u64;
    let table: Vec<Json> = (0..rows).map(|i| json!({"i": i})).collect();
    let started = std::time::Instant::now();
    let (status, job) = call(
        &lb,
        "POST",
        "/api/v1/services/slow/1/batch",
        &token,
        &Json::Array(table),
    );
    assert_eq!(status, 202, "{job}");
    let id = job["id"].as_str().unwrap().to_owned();
    assert_eq!(job["progress"]["chunks_total"], 40);
    let show = |id: &str| {
        call(
            &lb,
            "GET",
            &format!("/api/v1/jobs/{id}?result=false"),
            &token,
            &Json::Null,
        )
    };

    // Once a few chunks are done, kill -9 a node that is scoring one.
    let running_on = |node: &str| {
        fixture::query_at(
            &cluster.store,
            &format!(
                "SELECT count(*) FROM job_chunks WHERE job_id = '{id}' AND state = 'running' \
                 AND node = '{node}'"
            ),
        )[0] != "0"
    };
    let mut victim = None;
    for _ in 0..600 {
        let (_, now) = show(&id);
        let done = now["progress"]["chunks_done"].as_u64().unwrap_or(0);
        if done >= 4 {
            victim = (1..3).find(|&i| running_on(&cluster.nodes[i].0));
            if victim.is_some() {
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let victim = victim.expect("a node other than node1 was scoring a chunk");
    cluster.signal_node(victim, signal);
    let killed_at = started.elapsed();
    if signal == rustix::process::Signal::TERM {
        let pid = cluster.nodes[victim].3;
        assert!(
            within_a_minute(|| !Path::new(&format!("/proc/{pid}")).exists()).is_some(),
            "the stopped node exits"
        );
        assert!(
            !running_on(&cluster.nodes[victim].0),
            "a stopped node leaves no chunk claimed"
        );
    }

    // The job still completes: the dead node's chunks are taken over after the lease.
    let mut last = Json::Null;
    let finished = (0..1200).any(|_| {
        std::thread::sleep(Duration::from_millis(100));
        last = show(&id).1;
        last["state"] != "queued" && last["state"] != "running"
    });
    let took = started.elapsed();
    assert!(finished, "the job finished: {last}");
    assert_eq!(last["state"], "succeeded", "{last}");
    assert_eq!(last["progress"]["rows_done"], rows, "{last}");
    assert_eq!(last["progress"]["chunks_done"], 40, "{last}");
    eprintln!(
        "batch of {rows} rows over 3 nodes: node{} sent {signal:?} at {killed_at:?}, done in \
         {took:?}",
        victim + 1
    );

    // Every row answered once, in input order.
    let (status, text) = http(
        &lb,
        "GET",
        &format!("/api/v1/jobs/{id}/result"),
        &[("authorization", &format!("Bearer {token}"))],
        "",
    );
    assert_eq!(status, 200);
    let result: Vec<Json> = serde_json::from_str(&text).unwrap();
    assert_eq!(result.len() as u64, rows);
    for (n, row) in result.iter().enumerate() {
        assert_eq!(row["i"].as_f64(), Some(n as f64), "row {n}: {row}");
        assert_eq!(row["y"].as_f64(), Some(2.0 * n as f64), "row {n}: {row}");
    }
    // The nodes left both scored chunks; the store holds none of the job's any more.
    for i in (0..3).filter(|&i| i != victim) {
        let (id, addr, _, _) = &cluster.nodes[i];
        assert!(chunks_on(addr, "scored") > 0, "{id} scored no chunk");
    }
    assert_eq!(
        fixture::query_at(
            &cluster.store,
            &format!("SELECT count(*) FROM job_chunks WHERE job_id = '{id}'")
        ),
        ["0"]
    );
}

/// Requests on `route` (its pattern) that `addr`'s node answered, from its `/metrics`.
fn requests_on(addr: &str, route: &str) -> u64 {
    let (_, text) = http(addr, "GET", "/metrics", &[], "");
    let wanted = format!("route=\"{route}\"");
    text.lines()
        .filter(|l| l.starts_with("rookery_http_requests_total{") && l.contains(&wanted))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

#[test]
fn a_session_through_haproxy_keeps_its_state_on_its_node_and_is_gone_with_it() {
    session_through_haproxy(false);
}

#[test]
fn a_sticky_haproxy_sends_a_sessions_requests_to_its_node_alone() {
    session_through_haproxy(true);
}

/// A session used through HAProxy: opened on some node, 100 calls with its state
/// intact (forwarded by the other nodes, or with `sticky` sent straight to it by
/// HAProxy), listed and read from every node, then gone with its node.
fn session_through_haproxy(sticky: bool) {
    let cluster = Cluster::start_with(3, "", sticky);
    let data = tempfile::tempdir().unwrap();
    add_user(&cluster.store, data.path(), "ada", "publisher");
    let lb = cluster.http.clone();
    let token = login(&lb).1["access_token"].as_str().unwrap().to_owned();

    // Opened through HAProxy on some node; its id names that node.
    let (status, session) = call(&lb, "POST", "/api/v1/sessions", &token, &Json::Null);
    assert_eq!(status, 201, "{session}");
    let id = session["id"].as_str().unwrap().to_owned();
    let (owner, uuid) = id
        .rsplit_once('.')
        .expect("a cluster session id is NODE.UUID");
    assert!(
        uuid.len() == 36 && uuid.chars().all(|c| c.is_ascii_hexdigit() || c == '-'),
        "{id}"
    );
    let owner_at = cluster
        .nodes
        .iter()
        .position(|n| n.0 == owner)
        .unwrap_or_else(|| panic!("{id} names one of the nodes"));

    // 100 calls round-robin over the three nodes: the ones reaching the other two
    // are forwarded, and the session's state goes on from call to call.
    let code = json!({"code": "n <- if (exists('n')) n + 1 else 1; n"});
    let execute = format!("/api/v1/sessions/{id}/execute");
    for want in 1..=100 {
        let (status, out) = call(&lb, "POST", &execute, &token, &code);
        assert_eq!(status, 200, "call {want}: {out}");
        assert_eq!(out["result"], want, "call {want}: {out}");
    }
    let route = "/api/v1/sessions/{id}/execute";
    for (i, (node, addr, _, _)) in cluster.nodes.iter().enumerate() {
        let seen = requests_on(addr, route);
        if i == owner_at {
            assert!(seen >= 100, "{node} (the owner) ran all 100: {seen}");
        } else if sticky {
            assert_eq!(seen, 0, "HAProxy sent {node} none of the calls");
        } else {
            assert!(seen > 0, "HAProxy sent {node} some of the calls: {seen}");
        }
    }
    // Any node lists it, and reads its files and objects.
    for (node, addr, _, _) in &cluster.nodes {
        let (status, list) = call(addr, "GET", "/api/v1/sessions", &token, &Json::Null);
        assert_eq!(status, 200, "{list}");
        let ids: Vec<_> = list["sessions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["id"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(ids, [id.as_str()], "as listed by {node}");
        let (status, n) = call(
            addr,
            "GET",
            &format!("/api/v1/sessions/{id}/objects/n"),
            &token,
            &Json::Null,
        );
        assert_eq!((status, n.clone()), (200, json!([100])), "from {node}");
    }
    // Someone else's token reaches it through no node.
    add_user(&cluster.store, data.path(), "bob", "publisher");
    let body = json!({"username": "bob", "password": ADA_PW});
    let bob = call(&lb, "POST", "/api/v1/login", "", &body).1["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    for (_, addr, _, _) in &cluster.nodes {
        assert_eq!(call(addr, "POST", &execute, &bob, &code).0, 404);
    }

    // The owner is killed: the session is gone, said at once by every other node
    // (410, never a hang), and through HAProxy.
    cluster.kill_node(owner_at);
    // Once its process is gone (a call racing its death may get a 502 instead).
    let dead = &cluster.nodes[owner_at].1;
    assert!(
        within_a_minute(|| std::net::TcpStream::connect(dead).is_err()).is_some(),
        "the killed node stops listening"
    );
    for (i, (node, addr, _, _)) in cluster.nodes.iter().enumerate() {
        if i == owner_at {
            continue;
        }
        let asked = std::time::Instant::now();
        let (status, out) = call(addr, "POST", &execute, &token, &code);
        assert_eq!(status, 410, "from {node}: {out}");
        assert_eq!(out["error"]["code"], "session_gone", "{out}");
        let message = out["error"]["message"].as_str().unwrap();
        assert!(
            message.contains(owner) && message.contains("new session"),
            "{message}"
        );
        assert!(
            asked.elapsed() < Duration::from_secs(10),
            "answered promptly"
        );
    }
    let (status, out) = call(&lb, "POST", &execute, &token, &code);
    assert_eq!(status, 410, "through HAProxy: {out}");
    // A new session works, on a live node.
    let (status, again) = call(&lb, "POST", "/api/v1/sessions", &token, &Json::Null);
    assert_eq!(status, 201, "{again}");
    let fresh = again["id"].as_str().unwrap();
    let (status, out) = call(
        &lb,
        "POST",
        &format!("/api/v1/sessions/{fresh}/execute"),
        &token,
        &code,
    );
    assert_eq!((status, out["result"].clone()), (200, json!(1)), "{out}");
}

#[test]
fn postgres_restarted_under_scoring_load_gives_clean_503s_then_recovers_with_nothing_lost() {
    let mut pg = Postgres::start("integration-restart");
    let store = pg.url.clone();
    let (a_data, b_data, shared_dir) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    let name = format!("ada{}", std::process::id());
    let _ = cli(&["user", "remove", &name], &store, a_data.path(), "");
    add_user(&store, a_data.path(), &name, "publisher");
    let (a, a_addr) = node_sharing(&store, a_data.path(), Some(shared_dir.path()));
    let (b, b_addr) = node_sharing(&store, b_data.path(), Some(shared_dir.path()));
    assert!(wait_ready(&a_addr) && wait_ready(&b_addr));
    let login_body = json!({"username": name, "password": ADA_PW});
    let token = call(&a_addr, "POST", "/api/v1/login", "", &login_body).1["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let service = format!("plus{}", std::process::id());
    let spec = json!({
        "name": service, "version": "1",
        "code": "f <- function(d) data.frame(y = d$x + 1)",
        "function": "f",
        "inputs": {"columns": [{"name": "x", "type": "double"}]},
    });
    let (status, out) = call(&a_addr, "POST", "/api/v1/services", &token, &spec);
    assert_eq!(status, 201, "{out}");
    let route = format!("/api/v1/services/{service}/1");
    let score = |addr: &str, x: u32| {
        let (status, out) = call(addr, "POST", &route, &token, &json!([{"x": x}]));
        let right = out.to_string().contains(&format!("{}", x + 1));
        let what = format!("{} {}", crate::server::code(&out), out["error"]["message"]);
        (status, right, what)
    };
    assert!(within_a_minute(|| score(&b_addr, 1).0 == 200).is_some());

    // 4 clients over both nodes; the database is stopped for 3 s, then started.
    let stop = std::sync::atomic::AtomicBool::new(false);
    let addrs = [a_addr.as_str(), b_addr.as_str()];
    let (ok, failures, wrong) = std::thread::scope(|scope| {
        let clients: Vec<_> = (0..4)
            .map(|c| {
                let (stop, score) = (&stop, &score);
                scope.spawn(move || {
                    let (mut ok, mut failures, mut wrong) = (0u32, Vec::new(), 0u32);
                    let mut x = 1;
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        match score(addrs[(c + x as usize) % 2], x) {
                            (200, true, _) => ok += 1,
                            (200, false, _) => wrong += 1,
                            (status, _, code) => failures.push((status, code)),
                        }
                        x += 1;
                    }
                    (ok, failures, wrong)
                })
            })
            .collect();
        std::thread::sleep(Duration::from_secs(1));
        pg.stop();
        std::thread::sleep(Duration::from_secs(3));
        pg.restart();
        assert!(wait_ready(&a_addr) && wait_ready(&b_addr), "ready again");
        std::thread::sleep(Duration::from_secs(1));
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        clients.into_iter().map(|c| c.join().unwrap()).fold(
            (0, Vec::new(), 0),
            |(o, mut f, w), (o2, f2, w2)| {
                f.extend(f2);
                (o + o2, f, w + w2)
            },
        )
    });
    eprintln!(
        "PostgreSQL restarted under load: {ok} answered, {} refused, {wrong} wrong",
        failures.len()
    );
    assert_eq!(wrong, 0);
    assert!(!failures.is_empty(), "calls needing the store were refused");
    let unclean: Vec<_> = failures
        .iter()
        .filter(|(status, what)| !(*status == 503 && what.starts_with("store_unavailable ")))
        .take(5)
        .collect();
    assert!(
        unclean.is_empty(),
        "every refusal is a clean 503: {unclean:?}"
    );
    // Recovered, nothing lost: every call succeeds on both nodes, the user logs in,
    // the version is still served, and the registry takes writes.
    for addr in addrs {
        assert!((0..20).all(|x| score(addr, x).0 == 200), "{addr} recovered");
        assert_eq!(call(addr, "POST", "/api/v1/login", "", &login_body).0, 200);
    }
    let (status, list) = call(&b_addr, "GET", "/api/v1/services", &token, &Json::Null);
    assert_eq!(status, 200);
    assert!(list.to_string().contains(&service), "{list}");
    let spec2 = json!({
        "name": service, "version": "2",
        "code": "f <- function(d) data.frame(y = d$x + 2)",
        "function": "f",
        "inputs": {"columns": [{"name": "x", "type": "double"}]},
    });
    assert_eq!(
        call(&b_addr, "POST", "/api/v1/services", &token, &spec2).0,
        201
    );
    crate::server::stop_server(a);
    crate::server::stop_server(b);
}

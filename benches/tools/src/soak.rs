//! `rookery bench soak`: a long mixed load against a real `rookery serve` that this
//! command starts (its own data folder, loopback), with a worker SIGKILLed every few
//! seconds, every answer checked, and the server's memory followed.
//!
//! Each client thread holds one keep-alive connection and one session, and loops:
//! a scoring call (`double/1` of a row, answer checked), a session counter (the
//! count checked; a session whose worker was killed starts again from its new
//! worker), and a file round trip (a file written into the session's folder, read
//! back and compared). A killer thread SIGKILLs one worker of the server every
//! `--kill-every-secs`. The server's RSS is sampled every `--sample-secs`.
//!
//! It prints one line per sample and, at the end, a JSON object: requests, wrong
//! (an answer that is not the right one), lost (a request with no HTTP answer),
//! worker_died (502s of calls whose worker the killer took, expected), leaked
//! processes (any process of the server's still alive after it stopped) and
//! folders (session folders left in the data folder), the RSS samples, and the
//! RSS growth after warm-up per 100,000 requests (a least-squares slope over the
//! samples taken after `--warmup-requests`). A short run is in the tests.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde::Serialize;
use serde_json::{json, Value as Json};

#[derive(Debug, clap::Args)]
pub struct SoakArgs {
    /// Run this long (minutes), unless `--requests` ends it first.
    #[arg(long, default_value_t = 5.0)]
    minutes: f64,
    /// Stop after this many requests (0: no such bound).
    #[arg(long, default_value_t = 0)]
    requests: u64,
    /// Client threads, each with its own connection and session.
    #[arg(long, default_value_t = 8)]
    clients: usize,
    /// SIGKILL one of the server's workers this often (0: never).
    #[arg(long, default_value_t = 2.0)]
    kill_every_secs: f64,
    /// Sample the server's RSS this often.
    #[arg(long, default_value_t = 60.0)]
    sample_secs: f64,
    /// Requests before the growth is measured (the server's caches and pools fill).
    #[arg(long, default_value_t = 20_000)]
    warmup_requests: u64,
    /// Print only the final JSON object.
    #[arg(long)]
    json: bool,
}

const USER: &str = "soak";
const PASSWORD: &str = "soak-password-1";

#[derive(Debug, Default)]
struct Counts {
    /// Answers other than the right one, by HTTP status (0: a wrong 200).
    statuses: parking_lot::Mutex<std::collections::BTreeMap<u16, u64>>,
    requests: AtomicU64,
    wrong: AtomicU64,
    lost: AtomicU64,
    worker_died: AtomicU64,
    kills: AtomicU64,
}

#[derive(Debug, Serialize)]
struct Sample {
    seconds: f64,
    requests: u64,
    rss_kb: u64,
}

#[derive(Debug, Serialize)]
struct Report {
    requests: u64,
    wrong: u64,
    lost: u64,
    worker_died: u64,
    workers_killed: u64,
    leaked_processes: usize,
    leaked_folders: usize,
    seconds: f64,
    requests_per_s: f64,
    rss_kb_first: u64,
    rss_kb_last: u64,
    growth_kb_per_100k_requests: Option<f64>,
    /// Wrong answers by HTTP status (0: a 200 with the wrong content).
    wrong_by_status: std::collections::BTreeMap<u16, u64>,
    samples: Vec<Sample>,
}

pub fn command(args: &SoakArgs) -> anyhow::Result<()> {
    let data = tempfile::tempdir()?;
    let rookery = crate::rookery_exe()?;
    let add = Command::new(&rookery)
        .args(["user", "add", USER, "--role", "publisher", "--data"])
        .arg(data.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .and_then(|mut c| {
            c.stdin
                .take()
                .unwrap()
                .write_all(format!("{PASSWORD}\n").as_bytes())?;
            c.wait()
        })?;
    anyhow::ensure!(add.success(), "rookery user add failed");
    // One session per client: the per-user limit must allow them all.
    let config = data.path().join("soak.toml");
    std::fs::write(
        &config,
        format!(
            "[limits]\nsessions_per_user = {n}\nsessions_total = {n}\n",
            n = args.clients.max(4) + 2
        ),
    )?;
    let mut server = Command::new(&rookery)
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(&config)
        .arg("--data")
        .arg(data.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("starting rookery serve")?;
    let result = run(args, &mut server);
    let _ = rustix::process::kill_process(
        rustix::process::Pid::from_raw(server.id() as i32).unwrap(),
        rustix::process::Signal::TERM,
    );
    let _ = server.wait();
    let mut report = result?;
    std::thread::sleep(Duration::from_millis(500));
    report.leaked_processes = leftovers(server.id());
    report.leaked_folders = session_folders(data.path());
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!("{}", serde_json::to_string_pretty(&report)?);
    }
    Ok(())
}

fn run(args: &SoakArgs, server: &mut Child) -> anyhow::Result<Report> {
    let mut lines = BufReader::new(server.stdout.take().unwrap()).lines();
    let first = lines.next().context("rookery serve printed nothing")??;
    let addr = first
        .strip_prefix("rookery listening on http://")
        .with_context(|| format!("unexpected first line: {first}"))?
        .to_owned();
    std::thread::spawn(move || lines.for_each(drop));
    let mut setup = Client::connect(&addr)?;
    let (_, login) = setup.call(
        "POST",
        "/api/v1/login",
        None,
        &json!({"username": USER, "password": PASSWORD}).to_string(),
    )?;
    let token = login["access_token"]
        .as_str()
        .context("no access token")?
        .to_owned();
    let spec = json!({
        "name": "double", "version": "1",
        "code": "double <- function(d) d$x * 2",
        "function": "double",
        "inputs": {"columns": [{"name": "x", "type": "double"}]},
    });
    let (status, out) = setup.call("POST", "/api/v1/services", Some(&token), &spec.to_string())?;
    anyhow::ensure!(status == 201, "publishing double/1: {status} {out}");

    let counts = Arc::new(Counts::default());
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let mut threads = Vec::new();
    for n in 0..args.clients {
        let (addr, token, counts, stop) =
            (addr.clone(), token.clone(), counts.clone(), stop.clone());
        threads.push(std::thread::spawn(move || {
            client_loop(n, &addr, &token, &counts, &stop)
        }));
    }
    if args.kill_every_secs > 0.0 {
        let (counts, stop, pid) = (counts.clone(), stop.clone(), server.id());
        let every = Duration::from_secs_f64(args.kill_every_secs);
        threads.push(std::thread::spawn(move || {
            let mut turn = 0usize;
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(every);
                let workers = workers_of(pid);
                if !workers.is_empty() {
                    turn += 1;
                    let victim = workers[turn % workers.len()];
                    if let Some(p) = rustix::process::Pid::from_raw(victim as i32) {
                        if rustix::process::kill_process(p, rustix::process::Signal::KILL).is_ok() {
                            counts.kills.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            }
        }));
    }
    let deadline = started + Duration::from_secs_f64(args.minutes * 60.0);
    let every = Duration::from_secs_f64(args.sample_secs.max(0.1));
    let mut samples = Vec::new();
    let mut next = started + every;
    loop {
        let done = counts.requests.load(Ordering::Relaxed);
        let now = Instant::now();
        let finished = now >= deadline || (args.requests > 0 && done >= args.requests);
        if now >= next || finished {
            let sample = Sample {
                seconds: started.elapsed().as_secs_f64(),
                requests: done,
                rss_kb: rss_kb(server.id()).unwrap_or(0),
            };
            if !args.json {
                eprintln!(
                    "{:>8.1} s  {:>10} requests  server RSS {:>8} kB  wrong {}  lost {}  killed {}",
                    sample.seconds,
                    sample.requests,
                    sample.rss_kb,
                    counts.wrong.load(Ordering::Relaxed),
                    counts.lost.load(Ordering::Relaxed),
                    counts.kills.load(Ordering::Relaxed)
                );
            }
            samples.push(sample);
            next += every;
        }
        if finished {
            break;
        }
        if server.try_wait()?.is_some() {
            bail!("rookery serve exited during the soak");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        let _ = t.join();
    }
    let seconds = started.elapsed().as_secs_f64();
    let requests = counts.requests.load(Ordering::Relaxed);
    let growth = growth_per_100k(&samples, args.warmup_requests);
    let wrong_by_status = counts.statuses.lock().clone();
    Ok(Report {
        requests,
        wrong: counts.wrong.load(Ordering::Relaxed),
        lost: counts.lost.load(Ordering::Relaxed),
        worker_died: counts.worker_died.load(Ordering::Relaxed),
        workers_killed: counts.kills.load(Ordering::Relaxed),
        leaked_processes: 0,
        leaked_folders: 0,
        seconds,
        requests_per_s: requests as f64 / seconds,
        rss_kb_first: samples.first().map_or(0, |s| s.rss_kb),
        rss_kb_last: samples.last().map_or(0, |s| s.rss_kb),
        growth_kb_per_100k_requests: growth,
        wrong_by_status,
        samples,
    })
}

/// The least-squares slope of RSS over requests, after `warmup` requests, in kB
/// per 100,000 requests (`None` with fewer than three samples after it).
fn growth_per_100k(samples: &[Sample], warmup: u64) -> Option<f64> {
    let points: Vec<(f64, f64)> = samples
        .iter()
        .filter(|s| s.requests >= warmup && s.rss_kb > 0)
        .map(|s| (s.requests as f64, s.rss_kb as f64))
        .collect();
    if points.len() < 3 {
        return None;
    }
    let n = points.len() as f64;
    let mx = points.iter().map(|p| p.0).sum::<f64>() / n;
    let my = points.iter().map(|p| p.1).sum::<f64>() / n;
    let sxx: f64 = points.iter().map(|p| (p.0 - mx).powi(2)).sum();
    if sxx == 0.0 {
        return None;
    }
    let sxy: f64 = points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    Some(sxy / sxx * 100_000.0)
}

/// One client: its own connection and session, the three kinds of request in turn.
fn client_loop(n: usize, addr: &str, token: &str, counts: &Counts, stop: &AtomicBool) {
    let mut client = None::<Client>;
    let mut session = None::<String>;
    let mut counter = 0u64;
    let mut i = 0u64;
    while !stop.load(Ordering::Relaxed) {
        i += 1;
        let c = match client.as_mut() {
            Some(c) => c,
            None => match Client::connect(addr) {
                Ok(c) => client.insert(c),
                Err(_) => {
                    counts.lost.fetch_add(1, Ordering::Relaxed);
                    std::thread::sleep(Duration::from_millis(50));
                    continue;
                }
            },
        };
        let outcome = match (i % 3, session.as_deref()) {
            (_, None) => {
                c.call("POST", "/api/v1/sessions", Some(token), "{}")
                    .map(|(status, out)| {
                        if status == 201 {
                            session = out["id"].as_str().map(str::to_owned);
                            counter = 0;
                            Check::Right
                        } else {
                            Check::Status(status)
                        }
                    })
            }
            (0, _) => {
                let x = (n as u64 * 1_000_003 + i) as f64;
                let body = json!([{ "x": x }]).to_string();
                c.call("POST", "/api/v1/services/double/1", Some(token), &body)
                    .map(|(status, out)| match status {
                        200 if out["result"].as_array().map(Vec::len) == Some(1)
                            && out["result"][0].as_f64() == Some(x * 2.0) =>
                        {
                            Check::Right
                        }
                        200 => Check::Wrong,
                        s => Check::Status(s),
                    })
            }
            (1, Some(id)) => {
                let code = if counter == 0 {
                    "n <- 1L; n"
                } else {
                    "n <- n + 1L; n"
                };
                let path = format!("/api/v1/sessions/{id}/execute");
                let body = json!({ "code": code }).to_string();
                c.call("POST", &path, Some(token), &body)
                    .map(|(status, out)| match status {
                        200 if out["result"].as_u64() == Some(counter + 1) => {
                            counter += 1;
                            Check::Right
                        }
                        // The killer took this session's worker: it starts again
                        // from a fresh one, without its `n`.
                        422 if counter > 0 && out.to_string().contains("not found") => {
                            counter = 0;
                            Check::Status(502)
                        }
                        200 => Check::Wrong,
                        s => {
                            if s == 502 {
                                counter = 0;
                            }
                            Check::Status(s)
                        }
                    })
            }
            (_, Some(id)) => {
                let content = format!("client {n} request {i}\n");
                let path = format!("/api/v1/sessions/{id}/files/soak-{}.txt", i % 4);
                match c.put(&path, token, content.as_bytes()) {
                    Ok(status) if status / 100 == 2 => {
                        c.get(&path, token).map(|(status, body)| match status {
                            200 if body == content.as_bytes() => Check::Right,
                            200 => Check::Wrong,
                            s => Check::Status(s),
                        })
                    }
                    Ok(s) => Ok(Check::Status(s)),
                    Err(e) => Err(e),
                }
            }
        };
        counts.requests.fetch_add(1, Ordering::Relaxed);
        if client.as_ref().is_some_and(|c| c.closed) {
            client = None;
        }
        match outcome {
            Ok(Check::Right) => {}
            Ok(Check::Wrong) => {
                counts.wrong.fetch_add(1, Ordering::Relaxed);
                *counts.statuses.lock().entry(0).or_default() += 1;
            }
            Ok(Check::Status(502)) => {
                counts.worker_died.fetch_add(1, Ordering::Relaxed);
            }
            Ok(Check::Status(404)) => {
                // The session is gone (it idled out, or its worker could not be
                // replaced): open another.
                session = None;
            }
            Ok(Check::Status(s)) => {
                counts.wrong.fetch_add(1, Ordering::Relaxed);
                *counts.statuses.lock().entry(s).or_default() += 1;
            }
            Err(_) => {
                counts.lost.fetch_add(1, Ordering::Relaxed);
                client = None;
            }
        }
    }
}

enum Check {
    Right,
    Wrong,
    Status(u16),
}

/// A keep-alive HTTP/1.1 client over one connection; answers with a length or
/// chunked.
struct Client {
    addr: String,
    stream: BufReader<TcpStream>,
    /// The server said `Connection: close`: the next request needs a new one.
    closed: bool,
}

impl Client {
    fn connect(addr: &str) -> std::io::Result<Client> {
        let s = TcpStream::connect(addr)?;
        s.set_nodelay(true)?;
        s.set_read_timeout(Some(Duration::from_secs(120)))?;
        Ok(Client {
            addr: addr.to_owned(),
            stream: BufReader::new(s),
            closed: false,
        })
    }

    fn call(
        &mut self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: &str,
    ) -> std::io::Result<(u16, Json)> {
        let (status, bytes) =
            self.send(method, path, token, "application/json", body.as_bytes())?;
        Ok((status, serde_json::from_slice(&bytes).unwrap_or(Json::Null)))
    }

    fn put(&mut self, path: &str, token: &str, body: &[u8]) -> std::io::Result<u16> {
        self.send("PUT", path, Some(token), "application/octet-stream", body)
            .map(|(s, _)| s)
    }

    fn get(&mut self, path: &str, token: &str) -> std::io::Result<(u16, Vec<u8>)> {
        self.send("GET", path, Some(token), "application/json", b"")
    }

    fn send(
        &mut self,
        method: &str,
        path: &str,
        token: Option<&str>,
        content_type: &str,
        body: &[u8],
    ) -> std::io::Result<(u16, Vec<u8>)> {
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: {content_type}\r\n\
             Content-Length: {}\r\n",
            self.addr,
            body.len()
        );
        if let Some(t) = token {
            head.push_str(&format!("Authorization: Bearer {t}\r\n"));
        }
        head.push_str("\r\n");
        let s = self.stream.get_mut();
        s.write_all(head.as_bytes())?;
        s.write_all(body)?;
        let mut line = String::new();
        self.stream.read_line(&mut line)?;
        let status: u16 = line
            .get(9..12)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| std::io::Error::other(format!("bad status line {line:?}")))?;
        let (mut length, mut chunked, mut close) = (0usize, false, false);
        loop {
            line.clear();
            self.stream.read_line(&mut line)?;
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            let lower = l.to_ascii_lowercase();
            if let Some(v) = lower.strip_prefix("content-length:") {
                length = v.trim().parse().unwrap_or(0);
            } else if lower == "transfer-encoding: chunked" {
                chunked = true;
            } else if lower == "connection: close" {
                close = true;
            }
        }
        let mut out = Vec::new();
        if chunked {
            loop {
                line.clear();
                self.stream.read_line(&mut line)?;
                let size = usize::from_str_radix(line.trim(), 16)
                    .map_err(|_| std::io::Error::other("bad chunk size"))?;
                let mut chunk = vec![0; size + 2];
                self.stream.read_exact(&mut chunk)?;
                if size == 0 {
                    break;
                }
                out.extend_from_slice(&chunk[..size]);
            }
        } else {
            out.resize(length, 0);
            self.stream.read_exact(&mut out)?;
        }
        self.closed = close;
        Ok((status, out))
    }
}

/// Resident memory of `pid` in kB.
fn rss_kb(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = stat.get(stat.rfind(')')? + 2..)?;
    after.split(' ').nth(1)?.parse().ok()
}

fn all_pids() -> Vec<u32> {
    std::fs::read_dir("/proc")
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// The server's workers: children of its children (its zygotes).
fn workers_of(server: u32) -> Vec<u32> {
    let pids = all_pids();
    let zygotes: Vec<u32> = pids
        .iter()
        .copied()
        .filter(|&p| parent_of(p) == Some(server))
        .collect();
    pids.into_iter()
        .filter(|&p| parent_of(p).is_some_and(|pp| zygotes.contains(&pp)))
        .collect()
}

/// Processes left of a server that has stopped: anything whose parent chain
/// reaches it, or that still runs the zygote role for it (re-parented to init, a
/// zygote's environment names it).
fn leftovers(server: u32) -> usize {
    all_pids()
        .into_iter()
        .filter(|&p| {
            let mut at = p;
            for _ in 0..8 {
                match parent_of(at) {
                    Some(pp) if pp == server => return true,
                    Some(pp) if pp > 1 => at = pp,
                    _ => break,
                }
            }
            false
        })
        .count()
}

/// Session folders left in the data folder (`users/*/sessions/*`).
fn session_folders(data: &Path) -> usize {
    let users = data.join("users");
    std::fs::read_dir(&users)
        .map(|d| {
            d.flatten()
                .map(|u| {
                    std::fs::read_dir(u.path().join("sessions"))
                        .map(|s| s.count())
                        .unwrap_or(0)
                })
                .sum()
        })
        .unwrap_or(0)
}

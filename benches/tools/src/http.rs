//! `rookery bench http`: a wrk-like HTTP/1.1 load generator, to score Rookery and its
//! peers (plumber, ...) with the same client, side by side.
//!
//! Each of `connections` tasks holds one keep-alive connection (TCP_NODELAY) and sends
//! its next request as soon as the previous response body is fully read. Latencies
//! go into an HDR histogram (microseconds, 3 significant digits). Only what completes
//! inside the measured window counts: the `warmup` before it is discarded, and a
//! request still in flight when the window closes is dropped, counted nowhere. A
//! connection the server closes (`Connection: close`) is reopened without counting an
//! error; a transport failure counts one error and reopens it.
//!
//! It owns only the client side: it never starts the server under test, speaks
//! `http://` only, and sends to the one address the URL names.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, ensure, Context};
use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{HeaderMap, HeaderName, HeaderValue, HOST};
use hyper::{Method, Request, Uri};
use hyper_util::rt::TokioIo;
use serde::Serialize;
use tokio::net::TcpStream;
use tokio::task::JoinSet;
use tokio::time::Instant;

/// Highest latency the histogram holds exactly (one hour, in µs); longer ones saturate.
const MAX_LATENCY_US: u64 = 3_600_000_000;
/// Pause after a failed connect, so a dead server is not hammered in a tight loop.
const RECONNECT_PAUSE: Duration = Duration::from_millis(10);

/// What to send, how hard, for how long.
#[derive(Debug, Clone)]
pub struct LoadSpec {
    /// `http://host[:port]/path[?query]`.
    pub url: String,
    pub method: Method,
    /// Extra request headers; a `Host` here replaces the one taken from the URL.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Concurrent keep-alive connections, one request in flight on each.
    pub connections: usize,
    /// The measured window.
    pub duration: Duration,
    /// Load sent before the window, not measured.
    pub warmup: Duration,
}

/// What the measured window saw.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LoadReport {
    /// Responses plus transport failures completed in the window.
    pub requests: u64,
    /// Non-2xx responses plus transport failures.
    pub errors: u64,
    /// Failures with no HTTP status (connect, reset, malformed response).
    pub transport_errors: u64,
    pub req_per_s: f64,
    pub p50_us: f64,
    pub p90_us: f64,
    pub p99_us: f64,
    pub max_us: f64,
    /// Responses by HTTP status; they add up to `requests - transport_errors`.
    pub status_counts: BTreeMap<u16, u64>,
}

/// Sends load as `spec` says and reports on the measured window.
pub async fn run(spec: &LoadSpec) -> anyhow::Result<LoadReport> {
    ensure!(spec.connections > 0, "--connections must be at least 1");
    ensure!(
        !spec.duration.is_zero(),
        "--duration must be more than zero"
    );
    let target = Arc::new(Target::new(spec).await?);
    let start = Instant::now() + spec.warmup;
    let window = Window {
        start,
        end: start + spec.duration,
    };
    let mut tasks = JoinSet::new();
    for _ in 0..spec.connections {
        let target = Arc::clone(&target);
        tasks.spawn(async move { connection(&target, window).await });
    }
    let mut total = Stats::new();
    while let Some(stats) = tasks.join_next().await {
        total.merge(&stats?)?;
    }
    Ok(total.report(spec.duration))
}

/// Where and what to send, parsed once.
#[derive(Debug)]
struct Target {
    addr: SocketAddr,
    method: Method,
    path: Uri,
    headers: HeaderMap,
    body: Bytes,
}

impl Target {
    async fn new(spec: &LoadSpec) -> anyhow::Result<Target> {
        let uri: Uri = spec
            .url
            .parse()
            .with_context(|| format!("bad URL {:?}", spec.url))?;
        ensure!(
            uri.scheme_str() == Some("http"),
            "only http:// URLs: {}",
            spec.url
        );
        let authority = uri.authority().context("the URL has no host")?.clone();
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']');
        let port = authority.port_u16().unwrap_or(80);
        let addr = resolve(host, port).await?;
        let path = uri.path_and_query().map_or("/", |p| p.as_str()).parse()?;
        let mut headers = HeaderMap::new();
        headers.insert(HOST, HeaderValue::from_str(authority.as_str())?);
        for (name, value) in &spec.headers {
            let name = HeaderName::from_bytes(name.trim().as_bytes())?;
            headers.insert(name, HeaderValue::from_str(value.trim())?);
        }
        let body = Bytes::from(spec.body.clone());
        Ok(Target {
            addr,
            method: spec.method.clone(),
            path,
            headers,
            body,
        })
    }

    fn request(&self) -> Request<Full<Bytes>> {
        let mut req = Request::new(Full::new(self.body.clone()));
        *req.method_mut() = self.method.clone();
        *req.uri_mut() = self.path.clone();
        *req.headers_mut() = self.headers.clone();
        req
    }
}

/// The host's first address, checked to accept a connection before the run starts.
async fn resolve(host: &str, port: u16) -> anyhow::Result<SocketAddr> {
    let mut addrs = tokio::net::lookup_host((host, port)).await?;
    let addr = addrs
        .next()
        .with_context(|| format!("{host} has no address"))?;
    TcpStream::connect(addr)
        .await
        .with_context(|| format!("cannot connect to {addr}"))?;
    Ok(addr)
}

/// The measured window: what completes inside it counts.
#[derive(Debug, Clone, Copy)]
struct Window {
    start: Instant,
    end: Instant,
}

impl Window {
    fn contains(&self, t: Instant) -> bool {
        self.start <= t && t <= self.end
    }
}

/// One connection's task, until the window closes.
async fn connection(target: &Target, window: Window) -> Stats {
    let mut stats = Stats::new();
    tokio::select! {
        () = drive(target, window, &mut stats) => {}
        () = tokio::time::sleep_until(window.end) => {}
    }
    stats
}

/// Connects, sends back to back while the connection lasts, reconnects; sends nothing
/// once the window has closed (the timer in [`connection`] may fire late on a busy
/// thread, so the loop checks the clock itself).
async fn drive(target: &Target, window: Window, stats: &mut Stats) {
    while Instant::now() < window.end {
        let Ok(mut sender) = connect(target.addr).await else {
            stats.transport_error(Instant::now(), window);
            tokio::time::sleep(RECONNECT_PAUSE).await;
            continue;
        };
        while Instant::now() < window.end && sender.ready().await.is_ok() {
            let sent = Instant::now();
            let outcome = exchange(&mut sender, target.request()).await;
            let failed = outcome.is_err();
            stats.record(sent, Instant::now(), outcome, window);
            if failed {
                break;
            }
        }
    }
}

async fn connect(addr: SocketAddr) -> anyhow::Result<SendRequest<Full<Bytes>>> {
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        // Ends when the sender is dropped or the server closes; either is expected.
        let _ = conn.await;
    });
    Ok(sender)
}

/// One request and its whole response body; the status on success.
async fn exchange(
    sender: &mut SendRequest<Full<Bytes>>,
    req: Request<Full<Bytes>>,
) -> Result<u16, hyper::Error> {
    let resp = sender.send_request(req).await?;
    let status = resp.status().as_u16();
    resp.into_body().collect().await?;
    Ok(status)
}

/// Counts and latencies of one connection, later merged.
#[derive(Debug)]
struct Stats {
    latency_us: Histogram<u64>,
    statuses: BTreeMap<u16, u64>,
    transport_errors: u64,
}

impl Stats {
    fn new() -> Stats {
        let latency_us = Histogram::new_with_bounds(1, MAX_LATENCY_US, 3)
            .expect("constant histogram bounds are valid");
        Stats {
            latency_us,
            statuses: BTreeMap::new(),
            transport_errors: 0,
        }
    }

    fn record<E>(&mut self, sent: Instant, done: Instant, outcome: Result<u16, E>, w: Window) {
        if !w.contains(done) {
            return;
        }
        match outcome {
            Ok(status) => {
                let us = u64::try_from((done - sent).as_micros()).unwrap_or(u64::MAX);
                self.latency_us.saturating_record(us.max(1));
                *self.statuses.entry(status).or_default() += 1;
            }
            Err(_) => self.transport_errors += 1,
        }
    }

    fn transport_error(&mut self, at: Instant, w: Window) {
        if w.contains(at) {
            self.transport_errors += 1;
        }
    }

    fn merge(&mut self, other: &Stats) -> anyhow::Result<()> {
        self.latency_us.add(&other.latency_us)?;
        for (status, n) in &other.statuses {
            *self.statuses.entry(*status).or_default() += n;
        }
        self.transport_errors += other.transport_errors;
        Ok(())
    }

    fn report(&self, duration: Duration) -> LoadReport {
        let responses: u64 = self.statuses.values().sum();
        let failed: u64 = self
            .statuses
            .iter()
            .filter(|(s, _)| !(200..300).contains(*s))
            .map(|(_, n)| n)
            .sum();
        let requests = responses + self.transport_errors;
        let q = |q: f64| self.latency_us.value_at_quantile(q) as f64;
        LoadReport {
            requests,
            errors: failed + self.transport_errors,
            transport_errors: self.transport_errors,
            req_per_s: requests as f64 / duration.as_secs_f64(),
            p50_us: q(0.50),
            p90_us: q(0.90),
            p99_us: q(0.99),
            max_us: self.latency_us.max() as f64,
            status_counts: self.statuses.clone(),
        }
    }
}

impl LoadReport {
    /// One line for a person: rate, latency percentiles (ms) and statuses.
    pub fn summary(&self) -> String {
        let ms = |us: f64| us / 1000.0;
        let statuses: Vec<String> = self
            .status_counts
            .iter()
            .map(|(s, n)| format!("{s}x{n}"))
            .collect();
        format!(
            "{:.1} req/s, {} requests, {} errors ({} transport); latency ms p50 {:.3} p90 {:.3} p99 {:.3} max {:.3}; status {}",
            self.req_per_s,
            self.requests,
            self.errors,
            self.transport_errors,
            ms(self.p50_us),
            ms(self.p90_us),
            ms(self.p99_us),
            ms(self.max_us),
            statuses.join(" "),
        )
    }
}

/// `rookery bench http`: the command-line face of [`run`].
#[derive(Debug, clap::Args)]
pub struct HttpArgs {
    /// The URL to load, http:// only.
    #[arg(long)]
    url: String,
    /// The request method.
    #[arg(long, default_value = "POST")]
    method: String,
    /// A request header, "Name: value"; may be repeated.
    #[arg(long = "header", short = 'H')]
    headers: Vec<String>,
    /// The request body, read from this file (empty if absent).
    #[arg(long)]
    body_file: Option<PathBuf>,
    /// Concurrent keep-alive connections.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// The measured window, e.g. "10s", "500ms", "1.5s", "2m".
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    duration: Duration,
    /// Load sent first and not measured.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    warmup: Duration,
    /// Print one JSON object instead of a line of text.
    #[arg(long)]
    json: bool,
}

/// Runs the load on a current-thread runtime: the client takes one core and leaves
/// the others to the server under test (on 2 cores, that is half the machine).
pub fn command(args: &HttpArgs) -> anyhow::Result<()> {
    let spec = spec_from(args)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let report = runtime.block_on(run(&spec))?;
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!("{}", report.summary());
    }
    Ok(())
}

fn spec_from(args: &HttpArgs) -> anyhow::Result<LoadSpec> {
    let body = match &args.body_file {
        Some(path) => std::fs::read(path).with_context(|| format!("reading {}", path.display()))?,
        None => Vec::new(),
    };
    Ok(LoadSpec {
        url: args.url.clone(),
        method: Method::from_bytes(args.method.as_bytes()).context("bad --method")?,
        headers: args
            .headers
            .iter()
            .map(|h| parse_header(h))
            .collect::<anyhow::Result<_>>()?,
        body,
        connections: args.connections,
        duration: args.duration,
        warmup: args.warmup,
    })
}

/// `"Name: value"` into its two halves, trimmed.
fn parse_header(header: &str) -> anyhow::Result<(String, String)> {
    let Some((name, value)) = header.split_once(':') else {
        bail!("a header is \"Name: value\", not {header:?}");
    };
    ensure!(!name.trim().is_empty(), "a header needs a name: {header:?}");
    Ok((name.trim().to_owned(), value.trim().to_owned()))
}

/// `"10s"`, `"500ms"`, `"1.5s"`, `"2m"`, `"250us"`: a number and a unit.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number
        .parse()
        .map_err(|_| format!("no number in {text:?}"))?;
    let seconds = match unit {
        "us" => number / 1e6,
        "ms" => number / 1e3,
        "s" => number,
        "m" => number * 60.0,
        _ => return Err(format!("unit of {text:?} is not one of us, ms, s, m")),
    };
    Duration::try_from_secs_f64(seconds).map_err(|e| format!("{text:?}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("250us"), Ok(Duration::from_micros(250)));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
        for bad in ["", "10", "s", "10h", "1.2.3s", "-1s"] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn headers() {
        let h = parse_header("Content-Type: application/json").unwrap();
        assert_eq!(h, ("Content-Type".into(), "application/json".into()));
        assert_eq!(
            parse_header("X-A:b:c").unwrap(),
            ("X-A".into(), "b:c".into())
        );
        assert!(parse_header("no colon").is_err());
        assert!(parse_header(": v").is_err());
    }

    #[test]
    fn report_adds_up() {
        let now = Instant::now();
        let w = Window {
            start: now,
            end: now + Duration::from_secs(1),
        };
        let mut stats = Stats::new();
        let at = now + Duration::from_millis(1);
        stats.record::<()>(now, at, Ok(200), w);
        stats.record::<()>(now, at, Ok(503), w);
        stats.record(now, at, Err(()), w);
        stats.record::<()>(now, now + Duration::from_secs(2), Ok(200), w);
        let r = stats.report(Duration::from_secs(2));
        assert_eq!((r.requests, r.errors, r.transport_errors), (3, 2, 1));
        assert_eq!(r.status_counts, BTreeMap::from([(200, 1), (503, 1)]));
        assert_eq!(r.req_per_s, 1.5);
        assert!((999.0..=1001.0).contains(&r.p50_us), "{}", r.p50_us);
    }
}

//! `rookery bench qap`: a load generator for any QAP1 server (Rserve, or Rookery's QAP1
//! endpoint) that measures what an Rserve user compares: one eval's latency on an open
//! connection, a whole connect-eval-close cycle, 1e6 doubles each way, and evals/s at
//! 1, 2, 4 and 16 concurrent connections.
//!
//! It speaks QAP1 through the codec in `rookery_qap` over blocking sockets
//! (TCP_NODELAY, or a Unix socket), one thread per connection. Every read and write has
//! a timeout, and every protocol failure (an ERR response, a short read, bytes that do
//! not decode) is an error naming the step, never a panic or a hang.
//!
//! It owns only the client side: it never starts the server under test, sends only
//! CMD_login, CMD_eval, CMD_voidEval and CMD_setSEXP, and logs in only with plaintext
//! (`ARpt`, qap1.md §8.1), and only when the ID string asks for a login.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Barrier;
use std::time::{Duration, Instant};

use anyhow::{anyhow, ensure, Context};
use rookery_engine::value::Value;
use rookery_qap::frame::{self, cmd, dt};
use rookery_qap::sexp;
use serde::Serialize;

mod client;
mod versus;

use client::{describe, Conn, Target};

/// Longest wait for any read, write or connect before the step fails.
const IO_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest response payload accepted (4 GiB).
const MAX_RESPONSE: u64 = 1 << 32;
/// Concurrent connections for `evals_per_s`.
const CONCURRENCY: [usize; 4] = [1, 2, 4, 16];
/// Doubles moved each way by the transfer figures.
const TRANSFER_LEN: usize = 1_000_000;
/// Where the password for `--user` comes from (never a flag: it would show in `ps`).
const PASSWORD_ENV: &str = "ROOKERY_QAP_PASSWORD";
/// R variable names the transfer figures use on the server.
const OUT_VAR: &str = "rookery_bench_out";
const IN_VAR: &str = "rookery_bench_in";

/// `rookery bench qap`: the command-line face of [`run`].
#[derive(Debug, Clone, clap::Args)]
pub struct QapArgs {
    /// The server's TCP address, HOST:PORT.
    #[arg(long, required_unless_present = "unix", conflicts_with = "unix")]
    target: Option<String>,
    /// The server's Unix socket, instead of --target.
    #[arg(long)]
    unix: Option<PathBuf>,
    /// Log in as this user when the server asks for it (plaintext login; the password
    /// is read from ROOKERY_QAP_PASSWORD, empty when unset).
    #[arg(long)]
    user: Option<String>,
    /// eval_1p1: measured `1+1` evals on one connection.
    #[arg(long, default_value_t = 2000)]
    calls: usize,
    /// eval_1p1: evals sent first and not measured.
    #[arg(long, default_value_t = 200)]
    warmup_calls: usize,
    /// connect_eval_close: measured connect + eval + close cycles (back to back, and
    /// again paced by --connect-gap).
    #[arg(long, default_value_t = 200)]
    connects: usize,
    /// connect_eval_close_paced: the pause between cycles, e.g. "10ms": a client that
    /// connects once per request, with time between requests.
    #[arg(long, default_value = "10ms", value_parser = parse_duration)]
    connect_gap: Duration,
    /// transfer_1e6_out / transfer_1e6_in: measured transfers each way (median kept).
    #[arg(long, default_value_t = 10)]
    repeats: usize,
    /// evals_per_s: the window at each concurrency, e.g. "3s", "500ms".
    #[arg(long, default_value = "3s", value_parser = parse_duration)]
    duration: Duration,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
    /// A second QAP1 server (HOST:PORT) measured the same way, interleaved with
    /// --target round by round (target, versus, target, versus, ...); prints the two
    /// side by side with the ratio per figure.
    #[arg(long, conflicts_with = "unix")]
    versus: Option<String>,
    /// Log in to the --versus server as this user (password from
    /// ROOKERY_QAP_VERSUS_PASSWORD).
    #[arg(long, requires = "versus")]
    versus_user: Option<String>,
    /// With --versus: how many rounds (medians are reported).
    #[arg(long, default_value_t = 3, requires = "versus")]
    rounds: usize,
    /// Where the login password comes from (the --versus server has its own).
    #[arg(skip)]
    password_env: Option<&'static str>,
}

/// The figures, as `--json` prints them (keys are the public contract).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct QapReport {
    pub eval_1p1_p50_us: f64,
    pub eval_1p1_p99_us: f64,
    #[serde(skip)]
    pub eval_1p1_mean_us: f64,
    pub connect_eval_close_p50_ms: f64,
    pub connect_eval_close_p99_ms: f64,
    /// The same cycle with `--connect-gap` between cycles.
    pub connect_eval_close_paced_p50_ms: f64,
    pub connect_eval_close_paced_p99_ms: f64,
    pub transfer_1e6_out_ms: f64,
    pub transfer_1e6_in_ms: f64,
    /// Keyed by the number of concurrent connections.
    pub evals_per_s: BTreeMap<String, f64>,
}

/// Runs the benchmark; errors carry their whole cause chain in one line.
pub fn command(args: &QapArgs) -> anyhow::Result<()> {
    if args.versus.is_some() {
        return versus::command(args).map_err(|e| anyhow!("bench qap: {e:#}"));
    }
    let report = run(args).map_err(|e| anyhow!("bench qap: {e:#}"))?;
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print!("{}", report.table(args));
    }
    Ok(())
}

/// Every figure, one step after another, each against fresh or reused connections.
pub fn run(args: &QapArgs) -> anyhow::Result<QapReport> {
    check_counts(args)?;
    let target = Target::from_args(args)?;
    let mut conn = target.open().context("opening the first connection")?;
    let evals = eval_latency(&mut conn, args.warmup_calls, args.calls).context("eval_1p1")?;
    let out = transfer_out(&mut conn, args.repeats).context("transfer_1e6_out")?;
    let inn = transfer_in(&mut conn, args.repeats).context("transfer_1e6_in")?;
    drop(conn);
    let cycles =
        connect_cycles(&target, args.connects, Duration::ZERO).context("connect_eval_close")?;
    let paced = connect_cycles(&target, args.connects, args.connect_gap)
        .context("connect_eval_close_paced")?;
    let mut evals_per_s = BTreeMap::new();
    for n in CONCURRENCY {
        let rate = throughput(&target, n, args.duration)
            .with_context(|| format!("evals_per_s with {n} connections"))?;
        evals_per_s.insert(n.to_string(), rate);
    }
    Ok(QapReport {
        eval_1p1_p50_us: evals.quantile(0.50) * 1e6,
        eval_1p1_p99_us: evals.quantile(0.99) * 1e6,
        eval_1p1_mean_us: evals.mean() * 1e6,
        connect_eval_close_p50_ms: cycles.quantile(0.50) * 1e3,
        connect_eval_close_p99_ms: cycles.quantile(0.99) * 1e3,
        connect_eval_close_paced_p50_ms: paced.quantile(0.50) * 1e3,
        connect_eval_close_paced_p99_ms: paced.quantile(0.99) * 1e3,
        transfer_1e6_out_ms: out.quantile(0.50) * 1e3,
        transfer_1e6_in_ms: inn.quantile(0.50) * 1e3,
        evals_per_s,
    })
}

/// One figure of [`run`], measured on its own, so that a caller (`rookery bench`) can
/// interleave servers figure by figure. Each returns the number [`QapReport`] holds.
#[derive(Debug, Clone, Copy)]
pub enum Figure {
    /// `1+1` p50 on one open connection, in µs, after `calls / 10` unmeasured.
    Eval1p1 { calls: usize },
    /// Connect + ID string + login + `1+1` + close, p50 in ms; `gap` between cycles
    /// (zero: back to back).
    ConnectEvalClose { connects: usize, gap: Duration },
    /// 1e6 doubles server -> client, median in ms.
    TransferOut { repeats: usize },
    /// 1e6 doubles client -> server (CMD_setSEXP), median in ms.
    TransferIn { repeats: usize },
    /// `1+1` evals/s summed over `connections` back-to-back connections.
    EvalsPerS {
        connections: usize,
        duration: Duration,
    },
}

/// A server to measure figure by figure: TCP, logging in as `user` when asked (the
/// password from ROOKERY_QAP_PASSWORD, as for `--user`).
#[derive(Debug)]
pub struct QapTarget(Target);

impl QapTarget {
    pub fn tcp(addr: std::net::SocketAddr, user: Option<String>) -> anyhow::Result<QapTarget> {
        let args = QapArgs {
            target: Some(addr.to_string()),
            unix: None,
            user,
            calls: 1,
            warmup_calls: 0,
            connects: 1,
            connect_gap: Duration::ZERO,
            repeats: 1,
            duration: Duration::from_secs(1),
            json: false,
            versus: None,
            versus_user: None,
            rounds: 1,
            password_env: None,
        };
        Ok(QapTarget(Target::from_args(&args)?))
    }
}

/// Measures one figure against `target` (see [`Figure`] for units).
pub fn measure(target: &QapTarget, figure: Figure) -> anyhow::Result<f64> {
    let target = &target.0;
    let n = |n: usize| n.max(1);
    Ok(match figure {
        Figure::Eval1p1 { calls } => {
            let mut conn = target.open()?;
            eval_latency(&mut conn, calls / 10, n(calls))?.quantile(0.5) * 1e6
        }
        Figure::ConnectEvalClose { connects, gap } => {
            connect_cycles(target, n(connects), gap)?.quantile(0.5) * 1e3
        }
        Figure::TransferOut { repeats } => {
            transfer_out(&mut target.open()?, n(repeats))?.quantile(0.5) * 1e3
        }
        Figure::TransferIn { repeats } => {
            transfer_in(&mut target.open()?, n(repeats))?.quantile(0.5) * 1e3
        }
        Figure::EvalsPerS {
            connections,
            duration,
        } => throughput(target, n(connections), duration)?,
    })
}

fn check_counts(args: &QapArgs) -> anyhow::Result<()> {
    ensure!(args.calls > 0, "--calls must be at least 1");
    ensure!(args.connects > 0, "--connects must be at least 1");
    ensure!(args.repeats > 0, "--repeats must be at least 1");
    ensure!(
        !args.duration.is_zero(),
        "--duration must be more than zero"
    );
    Ok(())
}

/// `calls` back-to-back `1+1` evals after `warmup` unmeasured ones.
fn eval_latency(conn: &mut Conn, warmup: usize, calls: usize) -> anyhow::Result<Samples> {
    for _ in 0..warmup {
        conn.eval_1p1()?;
    }
    Samples::collect(calls, || conn.eval_1p1())
}

/// Connect, read the ID string, log in if asked, eval `1+1`, close: `n` times, with
/// `gap` between cycles (not measured).
fn connect_cycles(target: &Target, n: usize, gap: Duration) -> anyhow::Result<Samples> {
    let mut times = Vec::with_capacity(n);
    for i in 0..n {
        if i > 0 && !gap.is_zero() {
            std::thread::sleep(gap);
        }
        let start = Instant::now();
        target.open()?.eval_1p1()?;
        times.push(start.elapsed());
    }
    Ok(Samples::new(times))
}

/// Evals of a 1e6-double vector made once on the server: the result's trip and decode.
fn transfer_out(conn: &mut Conn, repeats: usize) -> anyhow::Result<Samples> {
    let make = format!("{OUT_VAR} <- as.double(seq_len({TRANSFER_LEN}))");
    conn.void_eval(&make).context("creating the vector")?;
    Samples::collect(repeats, || {
        let v = conn.eval(OUT_VAR)?;
        let len = v.as_doubles().map(<[f64]>::len);
        ensure!(
            len == Some(TRANSFER_LEN),
            "expected {TRANSFER_LEN} doubles, got {}",
            describe(&v)
        );
        Ok(())
    })
}

/// CMD_setSEXP of 1e6 doubles (encoded once), each checked afterwards by `length()`.
fn transfer_in(conn: &mut Conn, repeats: usize) -> anyhow::Result<Samples> {
    let v = Value::doubles((1..=TRANSFER_LEN).map(|i| i as f64).collect::<Vec<_>>());
    let mut payload = Vec::new();
    frame::push_string_param(&mut payload, IN_VAR.as_bytes());
    frame::push_param(&mut payload, dt::SEXP, &sexp::encode(&v)?);
    let mut times = Vec::with_capacity(repeats);
    for _ in 0..repeats {
        let start = Instant::now();
        conn.request(cmd::SET_SEXP, &payload)
            .context("CMD_setSEXP")?;
        times.push(start.elapsed());
        let len = conn.eval(&format!("length({IN_VAR})"))?;
        let want = i32::try_from(TRANSFER_LEN)?;
        ensure!(
            len.as_integers() == Some(&[want][..]),
            "the server holds {}",
            describe(&len)
        );
    }
    Ok(Samples::new(times))
}

/// Calls/s over `duration` from `n` connections, each its own thread evaluating `1+1`
/// back to back; all connections are open before the window starts.
fn throughput(target: &Target, n: usize, duration: Duration) -> anyhow::Result<f64> {
    let mut conns = (0..n)
        .map(|_| target.open())
        .collect::<anyhow::Result<Vec<_>>>()?;
    let barrier = Barrier::new(n);
    let rates = std::thread::scope(|s| {
        let threads: Vec<_> = conns
            .iter_mut()
            .map(|c| s.spawn(|| back_to_back(c, &barrier, duration)))
            .collect();
        threads
            .into_iter()
            .map(|t| t.join().map_err(|_| anyhow!("a load thread panicked"))?)
            .collect::<anyhow::Result<Vec<f64>>>()
    })?;
    Ok(rates.iter().sum())
}

/// One connection's rate: evals completed over the time it took to complete them.
fn back_to_back(conn: &mut Conn, barrier: &Barrier, duration: Duration) -> anyhow::Result<f64> {
    barrier.wait();
    let start = Instant::now();
    let mut done = 0_u64;
    while start.elapsed() < duration {
        conn.eval_1p1()?;
        done += 1;
    }
    Ok(done as f64 / start.elapsed().as_secs_f64())
}

/// Measured durations, sorted.
#[derive(Debug)]
struct Samples(Vec<Duration>);

impl Samples {
    fn new(mut times: Vec<Duration>) -> Samples {
        times.sort_unstable();
        Samples(times)
    }

    /// Times `n` runs of `step`, stopping at the first error.
    fn collect(n: usize, mut step: impl FnMut() -> anyhow::Result<()>) -> anyhow::Result<Samples> {
        let mut times = Vec::with_capacity(n);
        for _ in 0..n {
            let start = Instant::now();
            step()?;
            times.push(start.elapsed());
        }
        Ok(Samples::new(times))
    }

    /// The nearest-rank quantile `q` in seconds (never called on an empty set).
    fn quantile(&self, q: f64) -> f64 {
        let rank = (q * self.0.len() as f64).ceil() as usize;
        let i = rank.clamp(1, self.0.len().max(1)) - 1;
        self.0.get(i).map_or(0.0, Duration::as_secs_f64)
    }

    fn mean(&self) -> f64 {
        let total: Duration = self.0.iter().sum();
        total.as_secs_f64() / self.0.len().max(1) as f64
    }
}

/// `"3s"`, `"500ms"`, `"1.5s"`: a number and a unit.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let (number, scale) = match text.strip_suffix("ms") {
        Some(n) => (n, 1e-3),
        None => (
            text.strip_suffix('s')
                .ok_or(format!("{text:?}: use s or ms"))?,
            1.0,
        ),
    };
    let n: f64 = number
        .parse()
        .map_err(|_| format!("no number in {text:?}"))?;
    Duration::try_from_secs_f64(n * scale).map_err(|e| format!("{text:?}: {e}"))
}

impl QapReport {
    /// The figures as a table for a person.
    pub fn table(&self, args: &QapArgs) -> String {
        let mb_s = |ms: f64| (TRANSFER_LEN * 8) as f64 / 1e6 / (ms / 1e3);
        let rates: Vec<String> = CONCURRENCY
            .iter()
            .map(|n| format!("{n}: {:.0}", self.evals_per_s[&n.to_string()]))
            .collect();
        let mut t = String::new();
        t += &format!(
            "eval_1p1            p50 {:>8.1} µs  p99 {:>8.1} µs  mean {:.1} µs  ({} calls, one connection)\n",
            self.eval_1p1_p50_us, self.eval_1p1_p99_us, self.eval_1p1_mean_us, args.calls
        );
        t += &format!(
            "connect_eval_close  p50 {:>8.3} ms  p99 {:>8.3} ms  ({} connections, back to back)\n",
            self.connect_eval_close_p50_ms, self.connect_eval_close_p99_ms, args.connects
        );
        t += &format!(
            "  paced             p50 {:>8.3} ms  p99 {:>8.3} ms  ({} connections, {} ms apart)\n",
            self.connect_eval_close_paced_p50_ms,
            self.connect_eval_close_paced_p99_ms,
            args.connects,
            args.connect_gap.as_millis()
        );
        for (name, ms) in [
            ("out", self.transfer_1e6_out_ms),
            ("in ", self.transfer_1e6_in_ms),
        ] {
            t += &format!(
                "transfer_1e6_{name}    median {ms:>8.2} ms  {:>8.1} MB/s  ({} repeats of 8 MB)\n",
                mb_s(ms),
                args.repeats
            );
        }
        t += &format!(
            "evals_per_s         {}  (by concurrent connections, {:.1} s each)\n",
            rates.join("  "),
            args.duration.as_secs_f64()
        );
        t
    }
}

#[cfg(test)]
mod tests;

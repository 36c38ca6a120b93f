//! `rookery bench` (or `rookery bench compare`): Rookery side by side with what a user
//! would pick instead, on loopback, in bounded time. It starts `rookery serve --demo`
//! and each peer that is installed (Rserve, the plumber peer, an R running
//! `parallel::mclapply`), runs every workload peer then Rookery, round after round
//! (A B A B, so machine drift cancels), and writes `bench.json`, `bench.md`,
//! `ratios.png` and `ratios.svg` into `--out`.
//!
//! ```text
//!  workload  ──round 1──▶ peer, Rookery ──round 2──▶ peer, Rookery ... ──▶ Pair
//!  QAP1:  Rserve   vs rookery serve --qap     (qap::measure)
//!  HTTP:  plumber  vs rookery serve services  (http::run)
//!  batch: mclapply vs the engine's Pool::batch_with, in this process
//! ```
//!
//! It owns the orchestration only: starting processes is `peers`/`procs`, measuring
//! is `workloads`, statistics and files are `report`/`plot`.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

mod peers;
mod plot;
mod procs;
mod report;
mod workloads;

use report::{Pair, Report};
use workloads::{Effort, HttpSide, Kind, Peer, RookeryBatch, Workload, ALL};

/// The options of the side-by-side suite.
#[derive(Debug, Clone, clap::Args)]
pub struct CompareArgs {
    /// Window of each throughput measurement, e.g. "3s" (default 3s; 0.5s with --quick).
    #[arg(long, value_parser = crate::http::parse_duration)]
    duration: Option<Duration>,
    /// Rounds: each workload is measured peer then Rookery this many times (default 3; 2 with --quick).
    #[arg(long)]
    rounds: Option<usize>,
    /// Where bench.json, bench.md, ratios.png and ratios.svg are written.
    #[arg(long, default_value = "rookery-bench")]
    out: PathBuf,
    /// Only these workloads, comma-separated (eval_1p1, evals_1conn, ..., batch_rf).
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// A short run (about a minute): small windows, fewer calls, 100,000 batch rows.
    #[arg(long)]
    quick: bool,
    /// Workers for Rookery's services and batch, and cores for mclapply (default: CPUs).
    #[arg(long)]
    workers: Option<usize>,
    /// Rows of each batch (default 1,000,000; 100,000 with --quick).
    #[arg(long)]
    batch_rows: Option<usize>,
}

impl CompareArgs {
    fn effort(&self) -> Effort {
        let q = self.quick;
        Effort {
            duration: self.duration.unwrap_or(if q { ms(500) } else { ms(3000) }),
            warmup: if q { ms(200) } else { ms(1000) },
            eval_calls: if q { 500 } else { 2000 },
            connects: if q { 40 } else { 200 },
            transfers: if q { 3 } else { 10 },
            batch_rows: self
                .batch_rows
                .unwrap_or(if q { 100_000 } else { 1_000_000 }),
        }
    }

    fn selected(&self) -> anyhow::Result<Vec<Workload>> {
        for key in &self.only {
            if !ALL.iter().any(|w| w.key == key) {
                let keys: Vec<&str> = ALL.iter().map(|w| w.key).collect();
                bail!("unknown workload {key:?}; one of {}", keys.join(", "));
            }
        }
        let all = self.only.is_empty();
        Ok(ALL
            .into_iter()
            .filter(|w| all || self.only.iter().any(|k| k == w.key))
            .collect())
    }
}

#[cfg(test)]
impl CompareArgs {
    /// The default run's effort, for tests.
    pub(crate) fn default_effort() -> Effort {
        use clap::Parser;
        #[derive(Debug, clap::Parser)]
        struct Wrap {
            #[command(flatten)]
            args: CompareArgs,
        }
        Wrap::parse_from(["bench"]).args.effort()
    }
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Where the QAP1 login's password travels (read by `crate::qap`, see `QapTarget`).
const PASSWORD_ENV: &str = "ROOKERY_QAP_PASSWORD";

/// Runs the suite and writes its outputs.
pub fn command(args: &CompareArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let workloads = args.selected()?;
    let rounds = args.rounds.unwrap_or(if args.quick { 2 } else { 3 });
    anyhow::ensure!(rounds > 0, "--rounds must be at least 1");
    let effort = args.effort();
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let workers = args.workers.unwrap_or(cores).max(1);
    // Set while this process is still single-threaded (no handler, reader or pool yet).
    let password = format!("{:016x}{:016x}", procs::random_u64()?, procs::random_u64()?);
    std::env::set_var(PASSWORD_ENV, &password);
    procs::stop_children_on_interrupt()?;
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let scratch = procs::Scratch::new()?;
    let mut systems = Systems::start(&scratch.0, &workloads, workers, &effort, &password)?;
    let mut pairs: Vec<Pair> = workloads.iter().map(Pair::new).collect();
    for round in 1..=rounds {
        for (w, pair) in workloads.iter().zip(&mut pairs) {
            systems.round(round, rounds, w, pair, &effort);
        }
    }
    drop(systems);
    pairs.iter_mut().for_each(Pair::finish);
    let report = Report {
        rookery_version: env!("CARGO_PKG_VERSION"),
        unix_time: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        cores,
        versions: peers::versions(),
        rounds,
        effort,
        missing: Vec::new(),
        pairs,
        command: std::env::args()
            .skip(1)
            .fold("rookery bench".to_owned(), |c, a| c + " " + &a),
    };
    finish(report, &args.out, started)
}

fn finish(mut report: Report, out: &std::path::Path, started: Instant) -> anyhow::Result<()> {
    report.missing = missing_notes(&report.pairs);
    std::fs::write(
        out.join("bench.json"),
        serde_json::to_string_pretty(&report)? + "\n",
    )?;
    let md = report.markdown();
    std::fs::write(out.join("bench.md"), &md)?;
    plot::write(out, &report.pairs)?;
    println!("\n{md}");
    println!(
        "bench: wrote bench.json, bench.md, ratios.png, ratios.svg to {} in {:.0} s",
        out.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The notes of pairs without a speed-up, once each.
fn missing_notes(pairs: &[Pair]) -> Vec<String> {
    let mut notes: Vec<String> = Vec::new();
    for note in pairs
        .iter()
        .filter(|p| p.speedup.is_none())
        .filter_map(|p| p.note.clone())
    {
        if !notes.contains(&note) {
            notes.push(note);
        }
    }
    notes
}

/// Everything the suite started, and why a peer is absent.
struct Systems {
    rookery: Option<peers::RookeryServer>,
    rookery_qap: Option<crate::qap::QapTarget>,
    rserve: Result<(procs::Managed, crate::qap::QapTarget), String>,
    plumber: Result<(procs::Managed, std::net::SocketAddr), String>,
    mclapply: Result<peers::Mclapply, String>,
    batch: Option<RookeryBatch>,
    runtime: tokio::runtime::Runtime,
}

impl Systems {
    fn start(
        dir: &std::path::Path,
        workloads: &[Workload],
        workers: usize,
        effort: &Effort,
        password: &str,
    ) -> anyhow::Result<Systems> {
        let needs = |peer: Peer| workloads.iter().any(|w| w.peer == peer);
        let model = dir.join("demo_model.R");
        std::fs::write(&model, rookery_server::demo::MODEL_CODE)?;
        let server_needed = needs(Peer::Rserve) || needs(Peer::Plumber);
        let rookery = match server_needed {
            true => {
                progress("starting rookery serve --demo (HTTP + QAP1)");
                Some(peers::start_rookery(dir, workers, password)?)
            }
            false => None,
        };
        let rookery_qap = match &rookery {
            Some(r) if needs(Peer::Rserve) => {
                Some(crate::qap::QapTarget::tcp(r.qap, Some("bench".into()))?)
            }
            _ => None,
        };
        let rserve = match needs(Peer::Rserve) {
            true => start_rserve(dir),
            false => not_needed(),
        };
        let plumber = match needs(Peer::Plumber) {
            true => announce("plumber", peers::start_plumber(dir, &model)),
            false => not_needed(),
        };
        let (mclapply, batch) = match needs(Peer::Mclapply) {
            true => start_batch(dir, &model, workers, effort.batch_rows)?,
            false => (not_needed(), None),
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        Ok(Systems {
            rookery,
            rookery_qap,
            rserve,
            plumber,
            mclapply,
            batch,
            runtime,
        })
    }

    /// One round of one workload: the peer, then Rookery.
    fn round(&mut self, round: usize, rounds: usize, w: &Workload, pair: &mut Pair, e: &Effort) {
        let peer = self.measure_peer(w, e);
        let rookery = self.measure_rookery(w, e);
        let show = |r: &Result<f64, String>| match r {
            Ok(x) => format!("{} {}", report::num(*x), w.unit),
            Err(e) => format!("failed ({e})"),
        };
        progress(&format!(
            "round {round}/{rounds}  {}: {} {}, Rookery {}",
            w.label.replace('`', ""),
            w.peer.name(),
            show(&peer),
            show(&rookery)
        ));
        for (runs, result, side) in [
            (&mut pair.peer_runs, peer, w.peer.name()),
            (&mut pair.rookery_runs, rookery, "Rookery"),
        ] {
            match result {
                Ok(x) => runs.push(x),
                Err(e) => {
                    runs.push(f64::NAN);
                    pair.note.get_or_insert_with(|| format!("{side}: {e}"));
                }
            }
        }
    }

    fn measure_peer(&mut self, w: &Workload, e: &Effort) -> Result<f64, String> {
        let result = match w.kind {
            Kind::Qap(k) => {
                let (_, target) = self.rserve.as_ref().map_err(Clone::clone)?;
                workloads::measure_qap(target, k, e)
            }
            Kind::Http { .. } => {
                let (_, addr) = self.plumber.as_ref().map_err(Clone::clone)?;
                let side = HttpSide {
                    base: *addr,
                    path: "/{service}",
                    bearer: None,
                };
                workloads::measure_http(&self.runtime, &side, w.kind, e)
            }
            Kind::Batch { function } => {
                let peer = self.mclapply.as_mut().map_err(|e| e.clone())?;
                if function == "score_rf" && !peer.has_rf {
                    return Err("randomForest is not installed".into());
                }
                workloads::measure_mclapply(peer, function)
            }
        };
        result.map_err(|e| format!("{e:#}"))
    }

    fn measure_rookery(&mut self, w: &Workload, e: &Effort) -> Result<f64, String> {
        let result = match w.kind {
            Kind::Qap(k) => {
                let target = self.rookery_qap.as_ref().ok_or("not started")?;
                workloads::measure_qap(target, k, e)
            }
            Kind::Http { .. } => {
                let server = self.rookery.as_ref().ok_or("not started")?;
                let side = HttpSide {
                    base: server.http,
                    path: "/api/v1/services/{service}/1",
                    bearer: Some(server.api_key.clone()),
                };
                workloads::measure_http(&self.runtime, &side, w.kind, e)
            }
            Kind::Batch { function } => {
                let batch = self.batch.as_ref().ok_or("not started")?;
                if function == "score_rf" && !batch.has_rf {
                    return Err("randomForest is not installed".into());
                }
                batch.batch(function, e.batch_rows)
            }
        };
        result.map_err(|e| format!("{e:#}"))
    }
}

fn not_needed<T>() -> Result<T, String> {
    Err("not selected".to_owned())
}

fn start_rserve(dir: &std::path::Path) -> Result<(procs::Managed, crate::qap::QapTarget), String> {
    let (proc, addr) = announce("Rserve", peers::start_rserve(dir))?;
    let target = crate::qap::QapTarget::tcp(addr, None).map_err(|e| format!("{e:#}"))?;
    Ok((proc, target))
}

type BatchSides = (Result<peers::Mclapply, String>, Option<RookeryBatch>);

fn start_batch(
    dir: &std::path::Path,
    model: &std::path::Path,
    workers: usize,
    rows: usize,
) -> anyhow::Result<BatchSides> {
    let mc = announce(
        "R (mclapply)",
        peers::start_mclapply(dir, model, rows, workers),
    );
    progress(&format!(
        "starting Rookery's pool: {workers} workers, {rows} rows"
    ));
    let batch = RookeryBatch::start(workers, rows)?;
    Ok((mc, Some(batch)))
}

/// Prints whether a peer came up, and passes the outcome on.
fn announce<T>(name: &str, started: Result<T, String>) -> Result<T, String> {
    match &started {
        Ok(_) => progress(&format!("{name}: started")),
        Err(e) => progress(&format!("{name}: missing, not measured: {e}")),
    }
    started
}

fn progress(line: &str) {
    eprintln!("bench: {line}");
}

//! `rookery-bench`: Rookery's benchmark tools, a binary of their own so that the
//! product binary links none of them (plotters, hdrhistogram, the load generators).
//! `rookery bench ARGS...` runs the `rookery-bench` found beside `rookery` with the
//! same ARGS, so every subcommand, flag and JSON key is the documented one.
//!
//! - [`suite`]: `rookery bench [compare]`, side by side with Rserve, plumber, mclapply.
//! - [`pool`]: `rookery bench pool`, the prefork engine's own figures.
//! - [`http`]: `rookery bench http`, a wrk-like HTTP/1.1 load generator.
//! - [`qap`]: `rookery bench qap`, a load generator for any QAP1 server.
//! - [`confine`]: `rookery bench confine`, what confining a worker costs.
//!
//! `anyhow` lives here, as in the product's `main`.

mod confine;
mod http;
mod pool;
mod qap;
mod soak;
mod suite;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "rookery bench",
    bin_name = "rookery bench",
    version,
    about = "Measure Rookery on this machine; with no subcommand, side by side with Rserve, \
             plumber and mclapply (the same as `rookery bench compare`)",
    args_conflicts_with_subcommands = true
)]
struct BenchArgs {
    #[command(subcommand)]
    command: Option<BenchCommand>,
    #[command(flatten)]
    compare: suite::CompareArgs,
}

#[derive(Debug, Subcommand)]
enum BenchCommand {
    /// Rookery side by side with Rserve, plumber and mclapply, interleaved; writes
    /// bench.json, bench.md and a plot of the ratios (what plain `rookery bench` does).
    Compare(suite::CompareArgs),
    /// The prefork engine: round trip, transfer, respawn, batch, idle memory.
    Pool {
        /// Print one JSON object instead of a table.
        #[arg(long)]
        json: bool,
        /// Workers in the pool.
        #[arg(long, default_value_t = 2)]
        workers: usize,
    },
    /// Load an HTTP endpoint (wrk-like): requests/s and latency percentiles.
    Http(http::HttpArgs),
    /// Drive any QAP1 server (Rserve, or Rookery's QAP1 endpoint) and print latency and throughput.
    Qap(qap::QapArgs),
    /// A long mixed load against a `rookery serve` it starts, workers SIGKILLed as it
    /// goes, every answer checked; prints the server's RSS over time and its growth.
    Soak(soak::SoakArgs),
    /// What confining a worker costs, and request-to-first-result with and without it.
    Confine {
        /// Print one JSON object instead of a table.
        #[arg(long)]
        json: bool,
        /// Measurements of each figure.
        #[arg(long, default_value_t = 60)]
        runs: usize,
    },
}

fn main() -> ExitCode {
    // The pools these tools build re-execute this binary as their zygote; that must
    // happen before anything else (threads, argument parsing) in the process.
    rookery_engine::run_zygote_if_requested();
    let args = BenchArgs::parse();
    let result = match args.command {
        None => suite::command(&args.compare),
        Some(BenchCommand::Compare(compare)) => suite::command(&compare),
        Some(BenchCommand::Pool { json, workers }) => pool::pool(json, workers),
        Some(BenchCommand::Http(args)) => http::command(&args),
        Some(BenchCommand::Qap(args)) => qap::command(&args),
        Some(BenchCommand::Confine { json, runs }) => confine::confine(json, runs),
        Some(BenchCommand::Soak(args)) => soak::command(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

/// The `rookery` binary the suite starts (`rookery serve --demo`, `rookery user add`):
/// `$ROOKERY_EXE` (which `rookery bench` sets to itself), else the `rookery` beside
/// this binary.
pub fn rookery_exe() -> anyhow::Result<PathBuf> {
    if let Some(exe) = std::env::var_os("ROOKERY_EXE") {
        return Ok(exe.into());
    }
    let me = std::env::current_exe()?;
    let exe = me.with_file_name("rookery");
    anyhow::ensure!(
        exe.is_file(),
        "no rookery binary beside {} (set ROOKERY_EXE)",
        me.display()
    );
    Ok(exe)
}

//! Command-line parsing and the subcommands (`rookery eval`, ...). `anyhow` lives here
//! and in `main` only.

use std::io::Write;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use rookery_engine::{value::json, Evaluation, LocalOptions, LocalR};

#[derive(Debug, Parser)]
#[command(name = "rookery", version, about = "Run R code fast and safely")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Evaluate R code in-process and print its value.
    Eval(EvalArgs),
    /// Measure Rookery on this machine; with no subcommand, side by side with Rserve,
    /// plumber and mclapply (the same as `rookery bench compare`).
    Bench(BenchArgs),
    /// Run the HTTP server (sessions, services, batch jobs).
    Serve(crate::serve::ServeArgs),
    /// Manage users (passwords are stored only as argon2id hashes).
    #[command(subcommand)]
    User(crate::admin::UserCommand),
    /// Manage API keys for services.
    #[command(subcommand)]
    Key(crate::admin::KeyCommand),
    /// Manage the worker accounts confined R code runs as (see `[confine]`).
    #[command(subcommand)]
    Accounts(crate::admin::AccountsCommand),
    /// Score a CSV, Arrow or Parquet file with an R function, streaming, in input order.
    Batch(crate::batch::BatchArgs),
}

#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
struct BenchArgs {
    #[command(subcommand)]
    command: Option<BenchCommand>,
    #[command(flatten)]
    compare: crate::benchsuite::CompareArgs,
}

#[derive(Debug, Subcommand)]
enum BenchCommand {
    /// Rookery side by side with Rserve, plumber and mclapply, interleaved; writes
    /// bench.json, bench.md and a plot of the ratios (what plain `rookery bench` does).
    Compare(crate::benchsuite::CompareArgs),
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
    Http(crate::loadgen::HttpArgs),
    /// Drive any QAP1 server (Rserve, or Rookery's QAP1 endpoint) and print latency and throughput.
    Qap(crate::qapbench::QapArgs),
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

#[derive(Debug, clap::Args)]
struct EvalArgs {
    /// The R code; several expressions may be separated by `;` or newlines.
    code: String,
    /// Print the value as JSON (jsonlite's conventions) instead of R's print().
    #[arg(long)]
    json: bool,
    /// With --json: unbox length-1 vectors into scalars.
    #[arg(long, requires = "json")]
    auto_unbox: bool,
    /// With --json: data frames as an object of columns instead of an array of rows.
    #[arg(long, requires = "json")]
    columns: bool,
}

pub fn run() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Eval(args) => report(eval(&args)),
        Command::Serve(args) => report(crate::serve::run(&args)),
        Command::User(cmd) => report(crate::admin::run_user(cmd)),
        Command::Key(cmd) => report(crate::admin::run_key(cmd)),
        Command::Accounts(cmd) => report(crate::admin::run_accounts(cmd)),
        Command::Batch(args) => crate::batch::command(&args),
        Command::Bench(args) => report(bench(args)),
    }
}

fn bench(args: BenchArgs) -> anyhow::Result<()> {
    match args.command {
        None => crate::benchsuite::command(&args.compare),
        Some(BenchCommand::Compare(compare)) => crate::benchsuite::command(&compare),
        Some(BenchCommand::Pool { json, workers }) => crate::bench::pool(json, workers),
        Some(BenchCommand::Http(args)) => crate::loadgen::command(&args),
        Some(BenchCommand::Qap(args)) => crate::qapbench::command(&args),
        Some(BenchCommand::Confine { json, runs }) => crate::confinebench::confine(json, runs),
    }
}

fn report(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

fn eval(args: &EvalArgs) -> anyhow::Result<()> {
    let opts = LocalOptions {
        capture_fd_output: true,
        ..LocalOptions::default()
    };
    let r = LocalR::start(opts)?;
    let result = if args.json {
        r.eval(&args.code)
    } else {
        r.eval_print(&args.code)
    };
    match result {
        Ok(ev) => show(args, &ev),
        Err(rookery_engine::Error::R(e)) => {
            if let Some(out) = e.output() {
                show_output(out);
            }
            Err(e.into())
        }
        Err(e) => Err(e.into()),
    }
}

fn show(args: &EvalArgs, ev: &Evaluation) -> anyhow::Result<()> {
    show_output(&ev.output);
    let mut stdout = std::io::stdout().lock();
    if args.json {
        let opts = json::JsonOptions {
            auto_unbox: args.auto_unbox,
            dataframe: if args.columns {
                json::DataFrameLayout::Columns
            } else {
                json::DataFrameLayout::Rows
            },
            ..json::JsonOptions::default()
        };
        writeln!(stdout, "{}", json::to_json(&ev.value, &opts))?;
    } else if let Some(text) = &ev.printed {
        write!(stdout, "{text}")?;
    }
    Ok(())
}

fn show_output(out: &rookery_engine::Output) {
    print!("{}", out.stdout);
    eprint!("{}", out.stderr);
    for w in &out.warnings {
        match &w.call {
            Some(call) => eprintln!("Warning message:\nIn {call} : {}", w.message),
            None => eprintln!("Warning message:\n{}", w.message),
        }
    }
}

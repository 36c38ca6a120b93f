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
    /// Measure Rookery on this machine.
    #[command(subcommand)]
    Bench(BenchCommand),
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
}

#[derive(Debug, Subcommand)]
enum BenchCommand {
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
        Command::Bench(BenchCommand::Pool { json, workers }) => {
            report(crate::bench::pool(json, workers))
        }
        Command::Bench(BenchCommand::Http(args)) => report(crate::loadgen::command(&args)),
        Command::Bench(BenchCommand::Qap(args)) => report(crate::qapbench::command(&args)),
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

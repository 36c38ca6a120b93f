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
    /// List the nodes in the registry (--store URL for a cluster) with their load.
    Nodes(crate::admin::NodesArgs),
}

/// `rookery bench ARGS...`: handed whole to the `rookery-bench` binary beside this one
/// (the benchmark tools live there, so this binary links none of them).
#[derive(Debug, clap::Args)]
#[command(disable_help_flag = true)]
struct BenchArgs {
    /// The subcommand and flags of `rookery bench` (see `rookery bench --help`).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    args: Vec<std::ffi::OsString>,
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
        Command::Nodes(args) => report(crate::admin::list_nodes(&args)),
    }
}

/// Replaces this process with `rookery-bench ARGS...` from this binary's folder; it
/// returns only when that cannot be run.
fn bench(args: BenchArgs) -> anyhow::Result<()> {
    use std::os::unix::process::CommandExt;
    let me = std::env::current_exe()?;
    let tools = me.with_file_name("rookery-bench");
    let err = std::process::Command::new(&tools)
        .args(&args.args)
        .env("ROOKERY_EXE", &me)
        .exec();
    anyhow::bail!(
        "cannot run {}: {err}; the benchmark tools are a binary of their own \
         (cargo build --release -p rookery-bench, or a plain cargo build --release)",
        tools.display()
    )
}

fn report(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e:#}");
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

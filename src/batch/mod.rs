//! `rookery batch`: score a table file (CSV, Arrow IPC, Parquet) with an R function,
//! streaming, on every worker of a local pool or through a server's batch job API,
//! and write the answers in input order.
//!
//! ```text
//!  --input FILE ─▶ read (chunks of --chunk-rows) ─▶ pipeline ─▶ write ─▶ FILE.partial
//!                        score: local pool (service / --code)            └─ renamed to
//!                            or remote jobs (--server URL)                  --output FILE
//! ```
//!
//! This file owns the command line and the summary; each step lives in its own
//! module. Exit status: 0 done, 2 done but some chunks were skipped (`--on-error
//! skip`), 1 stopped by an error, 130 interrupted (Ctrl-C, SIGTERM).

mod convert;
mod demo;
mod format;
mod pipeline;
mod progress;
mod read;
mod remote;
mod score;
mod source;
mod write;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use format::Format;
use pipeline::{OnError, Outcome, Run, Sink, Stop};
use progress::Progress;
use read::ChunkReader;
use score::Scorer;

/// Exit status of a run that finished with skipped chunks.
const EXIT_SKIPPED: u8 = 2;
/// Exit status of an interrupted run (128 + SIGINT).
const EXIT_INTERRUPTED: u8 = 130;

#[derive(Debug, clap::Args)]
pub struct BatchArgs {
    /// A published service, NAME or NAME@VERSION (the newest version when omitted),
    /// from the data folder, or from --server.
    #[arg(long, value_name = "NAME[@VERSION]", conflicts_with_all = ["code", "demo"])]
    service: Option<String>,
    /// An R file whose code defines the function to call (with --fn); it runs once
    /// per worker process, in the current folder.
    #[arg(
        long,
        value_name = "FILE",
        requires = "function",
        conflicts_with = "demo"
    )]
    code: Option<PathBuf>,
    /// The R function called with each chunk as a data frame; it returns one value
    /// (or one row) per input row.
    #[arg(long = "fn", value_name = "NAME")]
    function: Option<String>,
    /// Use the built-in demo model (docs/peers.md's workload): --fn score_glm
    /// (the default) or score_rf.
    #[arg(long)]
    demo: bool,
    /// The table to score (.csv, .arrow, .arrows, .parquet).
    #[arg(long, value_name = "FILE", required_unless_present = "generate_demo")]
    input: Option<PathBuf>,
    /// Where the answers go; written as FILE.partial and renamed when complete.
    #[arg(long, value_name = "FILE")]
    output: PathBuf,
    /// The input's format, when its extension does not say.
    #[arg(long, value_enum)]
    input_format: Option<Format>,
    /// The output's format, when its extension does not say.
    #[arg(long, value_enum)]
    output_format: Option<Format>,
    /// Score through this server's batch job API (http://HOST:PORT) instead of a
    /// local pool; needs --service.
    #[arg(long, value_name = "URL", requires = "service")]
    server: Option<String>,
    /// With --server: an API key or login token.
    #[arg(long, env = "ROOKERY_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// The server data folder holding --service (local mode).
    #[arg(long, env = "ROOKERY_DATA", default_value = "rookery-data")]
    data: PathBuf,
    /// The registry holding --service when it is a cluster's PostgreSQL
    /// (postgres://USER@HOST:PORT/DB), as `rookery serve --store` (local mode; the
    /// model files are still read from --data).
    #[arg(
        long,
        value_name = "URL",
        env = "ROOKERY_STORE",
        hide_env_values = true
    )]
    store: Option<String>,
    /// R workers (with --server: jobs in flight). Default: one per CPU.
    #[arg(long)]
    workers: Option<usize>,
    /// Rows per chunk (one R call, or one server job).
    #[arg(long, default_value_t = 50_000)]
    chunk_rows: usize,
    /// After a chunk fails: `stop` (the output stays FILE.partial) or `skip` its rows.
    #[arg(long, value_enum, default_value = "stop")]
    on_error: OnError,
    /// Deadline of one chunk's R call, in seconds.
    #[arg(long, default_value_t = 600)]
    chunk_timeout: u64,
    /// With --server: the largest request body the server takes (its
    /// limits.max_body_bytes); bigger chunks are split.
    #[arg(long, default_value_t = 64 << 20)]
    max_body: usize,
    /// Input columns to copy into the output, in front of the function's answer
    /// (e.g. an id to join on): --keep id or --keep id,group.
    #[arg(long, value_name = "COLUMN", value_delimiter = ',')]
    keep: Vec<String>,
    /// No progress display.
    #[arg(long)]
    quiet: bool,
    /// Write ROWS rows of the demo workload's input (x1..x10, fixed seed) to
    /// --output instead of scoring.
    #[arg(long, value_name = "ROWS", conflicts_with_all = ["input", "service", "code", "server"])]
    generate_demo: Option<u64>,
}

/// Runs `rookery batch`.
pub fn command(args: &BatchArgs) -> ExitCode {
    match try_command(args) {
        Ok(code) => code,
        Err(message) => {
            eprintln!("rookery batch: {message}");
            ExitCode::FAILURE
        }
    }
}

fn try_command(args: &BatchArgs) -> Result<ExitCode, String> {
    let out_format = Format::choose(args.output_format, &args.output, "output")?;
    if let Some(rows) = args.generate_demo {
        demo::generate(rows, &args.output, out_format)?;
        eprintln!("wrote {rows} demo rows to {}", args.output.display());
        return Ok(ExitCode::SUCCESS);
    }
    let input = args.input.as_deref().ok_or("--input FILE is required")?;
    let in_format = Format::choose(args.input_format, input, "input")?;
    check_paths(input, &args.output)?;
    let reader = ChunkReader::open(input, in_format, args.chunk_rows.max(1))?;
    let keep = kept_columns(&reader, &args.keep)?;
    let scorer = scorer(args)?;
    let sink = Sink {
        path: args.output.clone(),
        format: out_format,
        on_error: args.on_error,
        keep,
    };
    let outcome = run(args, scorer.as_ref(), sink, reader)?;
    scorer.shutdown();
    Ok(outcome)
}

/// The input column index of each `--keep` name.
fn kept_columns(reader: &ChunkReader, names: &[String]) -> Result<Vec<usize>, String> {
    let schema = reader.schema();
    let index = |name: &String| {
        schema.index_of(name).map_err(|_| {
            let all: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
            format!(
                "--keep {name}: the input has no such column (it has {})",
                all.join(", ")
            )
        })
    };
    names.iter().map(index).collect()
}

fn check_paths(input: &Path, output: &Path) -> Result<(), String> {
    let folder = match output.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    if !folder.is_dir() {
        return Err(format!(
            "--output {}: there is no folder {}",
            output.display(),
            folder.display()
        ));
    }
    let same = match (input.canonicalize(), output.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    };
    match same {
        true => Err(format!(
            "--output {} is the input file; write the answers elsewhere",
            output.display()
        )),
        false => Ok(()),
    }
}

fn scorer(args: &BatchArgs) -> Result<Box<dyn Scorer>, String> {
    let workers = args
        .workers
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()))
        .max(1);
    let timeout = Duration::from_secs(args.chunk_timeout.max(1));
    if let Some(url) = &args.server {
        let service = args.service.as_deref().unwrap_or_default();
        let remote = remote::RemoteScorer::connect(
            url,
            service,
            args.token.clone(),
            workers,
            args.max_body,
        )?;
        return Ok(Box::new(remote));
    }
    let local = match (&args.service, &args.code) {
        (Some(service), _) => {
            source::from_service(&args.data, args.store.as_deref(), service, workers, timeout)?
        }
        (None, Some(path)) => {
            let code = std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read --code {}: {e}", path.display()))?;
            let function = args.function.as_deref().unwrap_or_default();
            source::from_code(
                code,
                &path.display().to_string(),
                function,
                workers,
                timeout,
            )?
        }
        (None, None) if args.demo => {
            let function = args.function.as_deref().unwrap_or("score_glm");
            let code = rookery_server::demo::MODEL_CODE.to_owned();
            source::from_code(code, "the demo model", function, workers, timeout)?
        }
        (None, None) => {
            return Err(
                "say what scores the rows: --service NAME[@VERSION], --code FILE \
                        --fn NAME, or --demo"
                    .into(),
            )
        }
    };
    Ok(Box::new(local))
}

/// Chunks read ahead of the writer, per worker (plus one being read).
const AHEAD_PER_WORKER: usize = 2;

fn run(
    args: &BatchArgs,
    scorer: &dyn Scorer,
    sink: Sink,
    reader: ChunkReader,
) -> Result<ExitCode, String> {
    let interrupted = Arc::new(AtomicBool::new(false));
    let flag = interrupted.clone();
    ctrlc::set_handler(move || {
        if flag.swap(true, Ordering::SeqCst) {
            // A second Ctrl-C: leave now (the output is still only FILE.partial).
            std::process::exit(i32::from(EXIT_INTERRUPTED));
        }
    })
    .map_err(|e| format!("cannot catch Ctrl-C: {e}"))?;
    pipeline::clear_partial(&sink.path);
    let progress = Progress::new(reader.total_rows, args.quiet);
    let run = Run {
        scorer,
        sink,
        in_flight: scorer.parallelism() * AHEAD_PER_WORKER + 1,
        interrupted: &interrupted,
        progress: &progress,
    };
    let outcome = run.run(reader);
    progress.finish();
    Ok(summarize(
        &outcome,
        &progress,
        &args.output,
        scorer.parallelism(),
    ))
}

/// Tells how the run ended (stderr) and picks the exit status.
fn summarize(outcome: &Outcome, progress: &Progress, target: &Path, workers: usize) -> ExitCode {
    match &outcome.stopped {
        None => finished(outcome, progress, target, workers),
        Some(stop) => ExitCode::from(stopped(stop, outcome, target)),
    }
}

/// A run that read its whole input: done, or done with skipped chunks.
fn finished(outcome: &Outcome, progress: &Progress, target: &Path, workers: usize) -> ExitCode {
    let rows = outcome.rows_written;
    let secs = progress.elapsed().as_secs_f64();
    if outcome.output.is_none() {
        match outcome.skipped.is_empty() {
            true => eprintln!("the input has no rows: nothing was written"),
            false => eprintln!("every chunk failed: nothing was written"),
        }
        outcome.skipped.iter().for_each(|s| eprintln!("  {s}"));
        return ExitCode::FAILURE;
    }
    eprintln!(
        "scored {rows} rows in {secs:.1} s ({:.0} rows/s, {workers} workers) -> {}",
        rows as f64 / secs.max(1e-9),
        target.display()
    );
    if outcome.skipped.is_empty() {
        return ExitCode::SUCCESS;
    }
    let left_out: usize = outcome.skipped.iter().map(|s| s.rows.len()).sum();
    eprintln!(
        "{} chunks failed; their {left_out} rows are not in the output:",
        outcome.skipped.len()
    );
    outcome.skipped.iter().for_each(|s| eprintln!("  {s}"));
    ExitCode::from(EXIT_SKIPPED)
}

/// A run that stopped early; its output, if any, is still `FILE.partial`.
fn stopped(stop: &Stop, outcome: &Outcome, target: &Path) -> u8 {
    let partial = write::partial_path(target);
    let kept = match &outcome.output {
        Some(path) if path == &partial => format!(
            "; the {} rows written so far are in {} (incomplete)",
            outcome.rows_written,
            partial.display()
        ),
        _ => format!("; nothing was written to {}", target.display()),
    };
    match stop {
        Stop::Interrupted => {
            eprintln!("interrupted: the workers were stopped{kept}");
            return EXIT_INTERRUPTED;
        }
        Stop::Failed(report) => {
            eprintln!("stopped: {report}{kept} (--on-error skip goes on past failed chunks)")
        }
        Stop::Read(message) | Stop::Write(message) => eprintln!("stopped: {message}{kept}"),
    }
    1
}

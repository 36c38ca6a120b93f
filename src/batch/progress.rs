//! Progress of a run on stderr: an indicatif bar with rows/s and ETA on a terminal,
//! plain lines every few seconds otherwise (logs, CI), nothing with `--quiet`.
//!
//! Owns only the display; counting is the writer's (rows written, in order).

use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};
use parking_lot::Mutex;

/// How often a plain line is printed when stderr is not a terminal.
const PLAIN_EVERY: Duration = Duration::from_secs(5);

enum Display {
    Bar(ProgressBar),
    Plain { last: Mutex<Instant> },
    Quiet,
}

/// The progress display of one run.
pub struct Progress {
    display: Display,
    total: Option<u64>,
    done: AtomicU64,
    start: Instant,
}

impl std::fmt::Debug for Progress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Progress")
            .field("total", &self.total)
            .field("done", &self.done)
            .finish()
    }
}

impl Progress {
    /// A bar on a terminal, plain lines elsewhere; `total` rows when known.
    pub fn new(total: Option<u64>, quiet: bool) -> Progress {
        let display = match (quiet, std::io::stderr().is_terminal()) {
            (true, _) => Display::Quiet,
            (false, true) => Display::Bar(bar(total)),
            (false, false) => Display::Plain {
                last: Mutex::new(Instant::now()),
            },
        };
        Progress {
            display,
            total,
            done: AtomicU64::new(0),
            start: Instant::now(),
        }
    }

    /// `rows` more rows are done.
    pub fn advance(&self, rows: u64) {
        let done = self.done.fetch_add(rows, Ordering::Relaxed) + rows;
        match &self.display {
            Display::Bar(bar) => bar.set_position(done),
            Display::Plain { last } => {
                let mut last = last.lock();
                if last.elapsed() >= PLAIN_EVERY {
                    *last = Instant::now();
                    eprintln!("{}", self.line(done));
                }
            }
            Display::Quiet => {}
        }
    }

    /// A message that must not be drawn over by the bar.
    pub fn println(&self, message: &str) {
        match &self.display {
            Display::Bar(bar) => bar.suspend(|| eprintln!("{message}")),
            Display::Plain { .. } => eprintln!("{message}"),
            Display::Quiet => eprintln!("{message}"),
        }
    }

    /// Removes the bar (the summary is printed after it).
    pub fn finish(&self) {
        if let Display::Bar(bar) = &self.display {
            bar.finish_and_clear();
        }
    }

    pub fn elapsed(&self) -> Duration {
        self.start.elapsed()
    }

    /// `1200000/10000000 rows (12%), 250000 rows/s, ETA 35s`.
    fn line(&self, done: u64) -> String {
        let secs = self.start.elapsed().as_secs_f64().max(1e-3);
        let rate = done as f64 / secs;
        match self.total.filter(|&t| t > 0) {
            Some(total) => {
                let left = total.saturating_sub(done) as f64 / rate.max(1e-9);
                format!(
                    "batch: {done}/{total} rows ({:.0}%), {rate:.0} rows/s, ETA {:.0}s",
                    done as f64 * 100.0 / total as f64,
                    left.min(1e9)
                )
            }
            None => format!("batch: {done} rows, {rate:.0} rows/s"),
        }
    }
}

fn bar(total: Option<u64>) -> ProgressBar {
    let (bar, template) = match total {
        Some(t) => (
            ProgressBar::new(t),
            "{spinner} [{elapsed_precise}] {wide_bar} {human_pos}/{human_len} rows \
             {rate} ETA {eta}",
        ),
        None => (
            ProgressBar::new_spinner(),
            "{spinner} [{elapsed_precise}] {human_pos} rows {rate}",
        ),
    };
    bar.set_draw_target(ProgressDrawTarget::stderr_with_hz(5));
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(
            style.with_key("rate", |s: &ProgressState, w: &mut dyn std::fmt::Write| {
                let _ = write!(w, "{:.0} rows/s", s.per_sec());
            }),
        );
    }
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

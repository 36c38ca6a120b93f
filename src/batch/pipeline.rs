//! The streaming pipeline: reader -> bounded queue -> scoring workers -> reorder
//! buffer -> writer, so memory is bounded by the chunks in flight, not the file.
//!
//! ```text
//!  reader thread ──permit──▶ work queue ──▶ worker 1..N (Scorer::score) ──▶ events
//!    (ChunkReader)  (≤ in_flight chunks read but not yet written)              │
//!  calling thread ◀─────────── reorder buffer (BTreeMap by chunk index) ◀──────┘
//!    writes chunk k only after 0..k, then returns its permit to the reader
//! ```
//!
//! A chunk that fails is reported with its row range and message; `--on-error skip`
//! leaves its rows out and goes on, `stop` stops reading and writes nothing past it.
//! An interrupt (Ctrl-C) cancels the calls in flight. A stopped run's output stays
//! `FILE.partial`. Owns the threads, the permits and the order; it must not know
//! formats or R.

use std::collections::BTreeMap;
use std::ops::Range;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use arrow_array::RecordBatch;
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use parking_lot::{Condvar, Mutex};

use super::format::Format;
use super::progress::Progress;
use super::read::ChunkReader;
use super::score::{describe_rows, Failure, Scorer};
use super::write::OutputFile;

/// What to do after a chunk fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OnError {
    /// Report it, leave its rows out of the output, and go on.
    Skip,
    /// Report it and stop; the output stays `FILE.partial`.
    Stop,
}

/// A chunk whose rows are not in the output, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkReport {
    /// 0-based, end-exclusive input rows.
    pub rows: Range<usize>,
    pub message: String,
}

impl std::fmt::Display for ChunkReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", describe_rows(&self.rows), self.message)
    }
}

/// Why a run ended before the end of its input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stop {
    Interrupted,
    Failed(ChunkReport),
    Read(String),
    Write(String),
}

/// How a run ended.
#[derive(Debug)]
pub struct Outcome {
    pub rows_written: u64,
    pub skipped: Vec<ChunkReport>,
    pub stopped: Option<Stop>,
    /// The output file (final name when complete, `.partial` otherwise), if any
    /// chunk produced rows.
    pub output: Option<PathBuf>,
}

/// Where the rows go.
#[derive(Debug, Clone)]
pub struct Sink {
    pub path: PathBuf,
    pub format: Format,
    pub on_error: OnError,
    /// Input columns (indices) copied in front of the result's.
    pub keep: Vec<usize>,
}

struct Work {
    index: usize,
    first_row: usize,
    batch: RecordBatch,
}

enum Event {
    Scored {
        index: usize,
        rows: Range<usize>,
        result: Result<RecordBatch, Failure>,
    },
    ReadFailed {
        index: usize,
        message: String,
    },
    Done {
        chunks: usize,
    },
}

/// Which chunks are no longer worth scoring.
struct Halt {
    /// Nothing more (an interrupt, a write error, the end).
    all: AtomicBool,
    /// Nothing after this chunk (`--on-error stop` after it failed; the chunks
    /// before it still finish and are written).
    after: AtomicUsize,
}

impl Halt {
    fn skips(&self, index: usize) -> bool {
        self.all.load(Ordering::SeqCst) || index > self.after.load(Ordering::SeqCst)
    }
}

/// Chunks read but not yet written: a counting semaphore the reader waits on.
struct Permits {
    state: Mutex<(usize, bool)>,
    freed: Condvar,
}

impl Permits {
    fn new(n: usize) -> Permits {
        Permits {
            state: Mutex::new((n, false)),
            freed: Condvar::new(),
        }
    }

    /// Waits for a permit; `false` once closed.
    fn acquire(&self) -> bool {
        let mut s = self.state.lock();
        while s.0 == 0 && !s.1 {
            self.freed.wait(&mut s);
        }
        if s.1 {
            return false;
        }
        s.0 -= 1;
        true
    }

    fn release(&self) {
        self.state.lock().0 += 1;
        self.freed.notify_one();
    }

    fn close(&self) {
        self.state.lock().1 = true;
        self.freed.notify_all();
    }
}

/// The shared state of one run.
pub struct Run<'a> {
    pub scorer: &'a dyn Scorer,
    pub sink: Sink,
    /// Chunks read but not yet written, at most.
    pub in_flight: usize,
    /// Set by the Ctrl-C handler.
    pub interrupted: &'a AtomicBool,
    pub progress: &'a Progress,
}

impl Run<'_> {
    /// Reads, scores and writes every chunk of `reader`.
    pub fn run(&self, reader: ChunkReader) -> Outcome {
        let permits = Permits::new(self.in_flight.max(1));
        let stop = Halt {
            all: AtomicBool::new(false),
            after: AtomicUsize::new(usize::MAX),
        };
        let (work_tx, work_rx) = crossbeam_channel::bounded::<Work>(self.in_flight.max(1));
        let (event_tx, event_rx) = crossbeam_channel::unbounded::<Event>();
        std::thread::scope(|s| {
            let events = event_tx.clone();
            let (permits, halt) = (&permits, &stop);
            s.spawn(move || read_all(reader, permits, halt, work_tx, events));
            for _ in 0..self.scorer.parallelism().max(1) {
                let (work, events, stop) = (work_rx.clone(), event_tx.clone(), &stop);
                s.spawn(move || self.score_all(work, events, stop));
            }
            drop((work_rx, event_tx));
            let outcome = Writer::new(self, permits, &stop).drain(&event_rx);
            stop.all.store(true, Ordering::SeqCst);
            permits.close();
            outcome
        })
    }

    fn score_all(&self, work: Receiver<Work>, events: Sender<Event>, stop: &Halt) {
        for Work {
            index,
            first_row,
            batch,
        } in work
        {
            let rows = first_row..first_row + batch.num_rows();
            let result = match stop.skips(index) {
                true => Err(Failure::Cancelled),
                false => catch_unwind(AssertUnwindSafe(|| self.scorer.score(&batch, first_row)))
                    .unwrap_or_else(|_| Err(Failure::Failed("scoring panicked".into()))),
            };
            let result = result.and_then(|out| {
                super::convert::with_kept(&batch, &self.sink.keep, out).map_err(Failure::Failed)
            });
            drop(batch);
            if matches!(result, Err(Failure::Failed(_))) && self.sink.on_error == OnError::Stop {
                stop.after.fetch_min(index, Ordering::SeqCst);
            }
            let _ = events.send(Event::Scored {
                index,
                rows,
                result,
            });
        }
    }
}

fn read_all(
    mut reader: ChunkReader,
    permits: &Permits,
    halt: &Halt,
    work: Sender<Work>,
    events: Sender<Event>,
) {
    let mut index = 0;
    while permits.acquire() && !halt.skips(index) {
        let first_row = reader.rows_read;
        let next = catch_unwind(AssertUnwindSafe(|| reader.next_chunk()))
            .unwrap_or_else(|_| Some(Err("the input reader failed on malformed data".into())));
        let event = match next {
            None => Event::Done { chunks: index },
            Some(Err(message)) => Event::ReadFailed { index, message },
            Some(Ok(batch)) => {
                if work
                    .send(Work {
                        index,
                        first_row,
                        batch,
                    })
                    .is_err()
                {
                    return;
                }
                index += 1;
                continue;
            }
        };
        let _ = events.send(event);
        return;
    }
}

/// The calling thread's side: the reorder buffer and the output file.
struct Writer<'r, 'a> {
    run: &'r Run<'a>,
    permits: &'r Permits,
    stop: &'r Halt,
    pending: BTreeMap<usize, (Range<usize>, Result<RecordBatch, Failure>)>,
    next: usize,
    end: Option<usize>,
    read_error: Option<(usize, String)>,
    out: Option<OutputFile>,
    skipped: Vec<ChunkReport>,
    stopped: Option<Stop>,
}

impl<'r, 'a> Writer<'r, 'a> {
    fn new(run: &'r Run<'a>, permits: &'r Permits, stop: &'r Halt) -> Self {
        Writer {
            run,
            permits,
            stop,
            pending: BTreeMap::new(),
            next: 0,
            end: None,
            read_error: None,
            out: None,
            skipped: Vec::new(),
            stopped: None,
        }
    }

    fn drain(mut self, events: &Receiver<Event>) -> Outcome {
        while self.stopped.is_none() && self.end != Some(self.next) {
            if self.run.interrupted.load(Ordering::SeqCst) {
                self.halt(Stop::Interrupted);
                break;
            }
            match events.recv_timeout(Duration::from_millis(50)) {
                Ok(event) => self.take(event),
                Err(RecvTimeoutError::Timeout) => continue,
                Err(RecvTimeoutError::Disconnected) => break,
            }
            self.write_ready();
        }
        self.finish()
    }

    fn take(&mut self, event: Event) {
        match event {
            Event::Scored {
                index,
                rows,
                result,
            } => {
                self.pending.insert(index, (rows, result));
            }
            Event::ReadFailed { index, message } => self.read_error = Some((index, message)),
            Event::Done { chunks } => self.end = Some(chunks),
        }
    }

    fn halt(&mut self, why: Stop) {
        self.stop.all.store(true, Ordering::SeqCst);
        self.permits.close();
        if why == Stop::Interrupted {
            self.run.scorer.cancel();
        }
        self.stopped.get_or_insert(why);
    }

    /// Writes every chunk whose predecessors are all written.
    fn write_ready(&mut self) {
        while self.stopped.is_none() {
            if let Some((_, message)) = self.read_error.take_if(|(at, _)| *at == self.next) {
                self.halt(Stop::Read(message));
                return;
            }
            let Some((rows, result)) = self.pending.remove(&self.next) else {
                return;
            };
            self.next += 1;
            match result {
                Ok(batch) => self.write(&rows, batch),
                Err(Failure::Cancelled) => self.halt(Stop::Interrupted),
                Err(Failure::Failed(message)) => self.failed(ChunkReport { rows, message }),
            }
            self.permits.release();
        }
    }

    fn write(&mut self, rows: &Range<usize>, batch: RecordBatch) {
        if let Err(message) = self.try_write(batch) {
            match message {
                WriteError::Chunk(message) => self.failed(ChunkReport {
                    rows: rows.clone(),
                    message,
                }),
                WriteError::File(message) => self.halt(Stop::Write(message)),
            }
            return;
        }
        self.run.progress.advance(rows.len() as u64);
    }

    fn try_write(&mut self, batch: RecordBatch) -> Result<(), WriteError> {
        if self.out.is_none() {
            let sink = &self.run.sink;
            let out = OutputFile::create(&sink.path, sink.format, batch.schema());
            self.out = Some(out.map_err(WriteError::File)?);
        }
        let out = self
            .out
            .as_mut()
            .ok_or_else(|| WriteError::File("no output".into()))?;
        let batch = super::convert::conform(batch, out.schema()).map_err(WriteError::Chunk)?;
        out.write(&batch).map_err(WriteError::File)
    }

    fn failed(&mut self, report: ChunkReport) {
        match self.run.sink.on_error {
            OnError::Stop => self.halt(Stop::Failed(report)),
            OnError::Skip => {
                self.run.progress.println(&format!("skipped {report}"));
                self.run.progress.advance(0);
                self.skipped.push(report);
            }
        }
    }

    fn finish(mut self) -> Outcome {
        if self.stopped.is_none() && self.end != Some(self.next) {
            // Every sender is gone before the end was reached: a thread died.
            self.stopped = Some(Stop::Read("the pipeline stopped early".into()));
        }
        let complete = self.stopped.is_none();
        let rows_written = self.out.as_ref().map_or(0, |o| o.rows);
        let output = match self.out.take().map(|o| o.finish(complete)) {
            None => None,
            Some(Ok(path)) => Some(path),
            Some(Err(message)) => {
                self.stopped.get_or_insert(Stop::Write(message));
                None
            }
        };
        Outcome {
            rows_written,
            skipped: self.skipped,
            stopped: self.stopped,
            output,
        }
    }
}

enum WriteError {
    /// This chunk's result cannot go in the file (other columns than the first's).
    Chunk(String),
    /// The file itself failed.
    File(String),
}

/// Removes a stale `FILE.partial` of an earlier run, so that one found after this
/// run is this run's.
pub fn clear_partial(target: &Path) {
    let _ = std::fs::remove_file(super::write::partial_path(target));
}

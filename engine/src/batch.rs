//! Batch jobs: one R function over the rows of a data frame, split across every worker.
//!
//! Owns chunking, dispatch, progress, cancellation and reassembly, all on the parent
//! side. One dispatcher thread per worker pulls the next chunk index from a shared
//! counter (so a slow chunk never holds up the others), cuts that row range with
//! [`Value::slice_rows`], calls the function through the pool, and stores the answer
//! in its slot; the answers are glued back in input order with
//! [`Value::concat_rows`]. A failed chunk is recorded with its row range and R's
//! error and does not stop the others, so no finished result is lost.
//!
//! ```text
//!  data (n rows) ─▶ chunk 0 │ chunk 1 │ chunk 2 │ ... ─▶ next_chunk (atomic counter)
//!  dispatcher 1 ──▶ pool.call(f, chunk) ─▶ slot[i]     dispatcher 2 ──▶ ... ─▶ slot[j]
//!  slots in order ─▶ concat_rows ─▶ result             progress(done, total) after each
//! ```

use std::ops::Range;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use rookery_ffi::Value;

use crate::{CallOptions, CancelHandle, Error, Pool};

/// How far a batch has got, passed to [`BatchOptions::progress`] after each chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    pub chunks_done: usize,
    pub chunks_total: usize,
    pub rows_done: usize,
    pub rows_total: usize,
    pub chunks_failed: usize,
}

/// Optional settings of a batch.
#[derive(Clone, Default)]
pub struct BatchOptions {
    /// Called from a dispatcher thread after each chunk; keep it quick.
    pub progress: Option<Arc<dyn Fn(Progress) + Send + Sync>>,
    /// Stops the batch: running chunks are interrupted, pending ones never start.
    pub cancel: Option<CancelHandle>,
    /// Deadline of each chunk's call (default: the pool's).
    pub chunk_timeout: Option<Duration>,
    /// Name of the argument the chunk is passed as (default: first positional).
    pub data_arg: Option<String>,
    /// Further arguments passed unchanged with every chunk.
    pub extra_args: Vec<(String, Value)>,
    /// Dispatcher threads (default: the pool's size).
    pub parallelism: Option<usize>,
}

impl std::fmt::Debug for BatchOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BatchOptions")
            .field("progress", &self.progress.is_some())
            .field("cancel", &self.cancel)
            .field("chunk_timeout", &self.chunk_timeout)
            .field("data_arg", &self.data_arg)
            .field("extra_args", &self.extra_args.len())
            .field("parallelism", &self.parallelism)
            .finish()
    }
}

/// A chunk whose call failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("chunk {chunk} (rows {}..{}) failed: {error}", rows.start, rows.end)]
pub struct ChunkFailure {
    pub chunk: usize,
    /// 0-based, end-exclusive row range of the input.
    pub rows: Range<usize>,
    pub error: Error,
}

/// Every chunk's answer, in input order.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchOutcome {
    pub chunks: Vec<Result<Value, ChunkFailure>>,
}

impl BatchOutcome {
    /// The failed chunks, in input order.
    pub fn failures(&self) -> impl Iterator<Item = &ChunkFailure> {
        self.chunks.iter().filter_map(|c| c.as_ref().err())
    }

    /// The whole result, glued in input order, if every chunk succeeded; otherwise
    /// the first failure.
    pub fn into_value(self) -> Result<Value, ChunkFailure> {
        let parts = self.chunks.into_iter().collect::<Result<Vec<_>, _>>()?;
        Value::concat_rows(&parts).map_err(|e| ChunkFailure {
            chunk: 0,
            rows: 0..0,
            error: Error::R(rookery_ffi::Error::InvalidValue(format!(
                "chunk results do not fit together: {e}"
            ))),
        })
    }
}

impl Pool {
    /// Runs `function(chunk)` over `data` (a data frame, matrix or vector) in chunks
    /// of `chunk_rows` rows on all workers, and returns the answers in input order.
    pub fn batch(
        &self,
        function: &str,
        data: &Value,
        chunk_rows: usize,
    ) -> Result<BatchOutcome, Error> {
        self.batch_with(function, data, chunk_rows, &BatchOptions::default())
    }

    /// [`Pool::batch`] with progress, cancellation, a chunk deadline or extra
    /// arguments.
    pub fn batch_with(
        &self,
        function: &str,
        data: &Value,
        chunk_rows: usize,
        opts: &BatchOptions,
    ) -> Result<BatchOutcome, Error> {
        let rows = data.nrow().unwrap_or(data.len());
        let chunk_rows = chunk_rows.max(1);
        let ranges: Vec<Range<usize>> = (0..rows.div_ceil(chunk_rows))
            .map(|i| i * chunk_rows..((i + 1) * chunk_rows).min(rows))
            .collect();
        let job = Job {
            pool: self,
            function,
            data,
            opts,
            call: CallOptions {
                timeout: opts.chunk_timeout,
                cancel: opts.cancel.clone(),
                max_result_bytes: None,
            },
            slots: ranges.iter().map(|_| Mutex::new(None)).collect(),
            ranges,
            next: AtomicUsize::new(0),
            done: Mutex::new(Progress {
                chunks_done: 0,
                chunks_total: 0,
                rows_done: 0,
                rows_total: rows,
                chunks_failed: 0,
            }),
        };
        job.done.lock().chunks_total = job.ranges.len();
        let threads = opts
            .parallelism
            .unwrap_or(self.size())
            .clamp(1, job.ranges.len().max(1));
        std::thread::scope(|s| {
            for _ in 0..threads {
                s.spawn(|| job.dispatch());
            }
        });
        let chunks = job
            .slots
            .into_iter()
            .zip(job.ranges)
            .enumerate()
            .map(|(chunk, (slot, rows))| {
                slot.into_inner().unwrap_or(Err(ChunkFailure {
                    chunk,
                    rows,
                    error: Error::Cancelled,
                }))
            })
            .collect();
        Ok(BatchOutcome { chunks })
    }
}

struct Job<'a> {
    pool: &'a Pool,
    function: &'a str,
    data: &'a Value,
    opts: &'a BatchOptions,
    call: CallOptions,
    ranges: Vec<Range<usize>>,
    slots: Vec<Mutex<Option<Result<Value, ChunkFailure>>>>,
    next: AtomicUsize,
    done: Mutex<Progress>,
}

impl Job<'_> {
    fn dispatch(&self) {
        loop {
            let i = self.next.fetch_add(1, Ordering::Relaxed);
            let Some(rows) = self.ranges.get(i) else {
                return;
            };
            if self.opts.cancel.as_ref().is_some_and(|c| c.is_cancelled()) {
                return;
            }
            let result = self.run_chunk(rows.clone()).map_err(|error| ChunkFailure {
                chunk: i,
                rows: rows.clone(),
                error,
            });
            self.report(rows.len(), result.is_err());
            *self.slots[i].lock() = Some(result);
        }
    }

    fn run_chunk(&self, rows: Range<usize>) -> Result<Value, Error> {
        let chunk = self.data.slice_rows(rows);
        let data_arg = self.opts.data_arg.as_deref().unwrap_or("");
        let mut args: Vec<(&str, &Value)> = vec![(data_arg, &chunk)];
        args.extend(self.opts.extra_args.iter().map(|(n, v)| (n.as_str(), v)));
        self.pool.call_with(self.function, &args, &self.call)
    }

    fn report(&self, rows: usize, failed: bool) {
        let progress = {
            let mut done = self.done.lock();
            done.chunks_done += 1;
            done.rows_done += rows;
            done.chunks_failed += usize::from(failed);
            *done
        };
        if let Some(callback) = &self.opts.progress {
            callback(progress);
        }
    }
}

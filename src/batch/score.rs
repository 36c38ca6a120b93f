//! Scoring one chunk: the `Scorer` the pipeline's workers call, and its local form,
//! an R function on a pool of pre-forked workers (a published service's pool, or one
//! built from `--code FILE --fn NAME`).
//!
//! Owns turning a chunk into the function's argument (checked against the service's
//! declared inputs, when there is one), the call, and turning the answer back into a
//! record batch of as many rows. It must not order or write chunks.

use std::ops::Range;
use std::time::Duration;

use arrow_array::RecordBatch;
use rookery_engine::{CallOptions, CancelHandle, Error, Pool, Value};
use rookery_server::formats::schema::{Schema, ValidationError};

use super::convert::{batch_to_frame, value_to_batch};

/// Why a chunk has no result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The run is being cancelled; not the chunk's fault.
    Cancelled,
    /// The chunk's data or its call failed: the message to show (R's, for R errors).
    Failed(String),
}

impl From<String> for Failure {
    fn from(message: String) -> Self {
        Failure::Failed(message)
    }
}

/// Scores chunks; called from several threads at once.
pub trait Scorer: Sync {
    /// The function's answer for `batch`, whose first row is input row `first_row`
    /// (0-based), with as many rows as `batch`.
    fn score(&self, batch: &RecordBatch, first_row: usize) -> Result<RecordBatch, Failure>;
    /// Stops the calls in flight and refuses new ones (Ctrl-C).
    fn cancel(&self);
    /// Releases the workers (a pool's processes, a server's jobs) at the end.
    fn shutdown(&self);
    /// How many chunks may be scored at once.
    fn parallelism(&self) -> usize;
}

/// An R function on a local pool.
pub struct LocalScorer {
    pub pool: Pool,
    pub function: String,
    /// A service's declared inputs: every chunk is checked and coerced first.
    pub schema: Option<Schema>,
    call: CallOptions,
    cancel: CancelHandle,
    /// What must live as long as the pool (a service's worker-account lease).
    _keep: Option<Box<dyn std::any::Any + Send + Sync>>,
}

impl std::fmt::Debug for LocalScorer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalScorer")
            .field("pool", &self.pool)
            .field("function", &self.function)
            .finish()
    }
}

impl LocalScorer {
    /// A scorer calling `function` on `pool`, each chunk within `timeout`.
    pub fn new(
        pool: Pool,
        function: String,
        schema: Option<Schema>,
        timeout: Duration,
    ) -> Result<LocalScorer, String> {
        let cancel =
            CancelHandle::new().map_err(|e| format!("cannot make a cancel handle: {e}"))?;
        Ok(LocalScorer {
            pool,
            function,
            schema,
            call: CallOptions {
                timeout: Some(timeout),
                cancel: Some(cancel.clone()),
                max_result_bytes: None,
            },
            cancel,
            _keep: None,
        })
    }

    /// Keeps `owner` alive as long as the pool is used.
    pub fn keeping(mut self, owner: Box<dyn std::any::Any + Send + Sync>) -> LocalScorer {
        self._keep = Some(owner);
        self
    }

    fn argument(&self, batch: &RecordBatch, first_row: usize) -> Result<Value, String> {
        let frame = batch_to_frame(batch)?;
        match &self.schema {
            None => Ok(frame),
            Some(schema) => schema
                .validate(frame)
                .map_err(|e| invalid_input(e, first_row)),
        }
    }
}

impl Scorer for LocalScorer {
    fn score(&self, batch: &RecordBatch, first_row: usize) -> Result<RecordBatch, Failure> {
        if self.cancel.is_cancelled() {
            return Err(Failure::Cancelled);
        }
        let arg = self.argument(batch, first_row)?;
        let value = match self
            .pool
            .call_with(&self.function, &[("", &arg)], &self.call)
        {
            Ok(v) => v,
            Err(Error::Cancelled) => return Err(Failure::Cancelled),
            Err(_) if self.cancel.is_cancelled() => return Err(Failure::Cancelled),
            Err(e) => return Err(Failure::Failed(e.to_string())),
        };
        drop(arg);
        let out = value_to_batch(&value)?;
        check_rows(&out, batch.num_rows())?;
        Ok(out)
    }

    fn cancel(&self) {
        self.cancel.cancel();
    }

    fn shutdown(&self) {
        self.pool.shutdown(Duration::from_secs(1));
    }

    fn parallelism(&self) -> usize {
        self.pool.size()
    }
}

/// A result must map rows to rows, or the output could not be in input order.
pub fn check_rows(out: &RecordBatch, rows: usize) -> Result<(), String> {
    match out.num_rows() == rows {
        true => Ok(()),
        false => Err(format!(
            "the function returned {} rows for {rows} input rows (it must return one \
             value, or one row, per input row)",
            out.num_rows()
        )),
    }
}

/// A validation error with the chunk's row number turned into the input's (1-based).
fn invalid_input(e: ValidationError, first_row: usize) -> String {
    match e {
        ValidationError::Cell {
            column,
            row,
            problem,
        } => format!(
            "input row {}, column \"{column}\": {problem}",
            first_row + row
        ),
        other => format!("the input does not fit the service's declared inputs: {other}"),
    }
}

/// 1-based inclusive row numbers of a 0-based range, for messages: `rows 1-100`.
pub fn describe_rows(rows: &Range<usize>) -> String {
    match rows.len() {
        1 => format!("row {}", rows.start + 1),
        _ => format!("rows {}-{}", rows.start + 1, rows.end),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_are_shown_one_based() {
        assert_eq!(describe_rows(&(0..100)), "rows 1-100");
        assert_eq!(describe_rows(&(41..42)), "row 42");
    }
}

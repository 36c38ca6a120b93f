//! `ffi::Error`: every way a call into R can fail, as plain data.
//!
//! An error never holds a SEXP: R conditions are copied out (message, deparsed call,
//! classes) together with what the call printed and warned before it failed, so the
//! error can cross threads and processes (it is `Serialize`, so the worker pool sends
//! it over its socket as it is).

use serde::{Deserialize, Serialize};

use crate::output::Output;

/// A failed call into R, or a value that cannot cross between R and Rust.
#[derive(Debug, Clone, PartialEq, thiserror::Error, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Error {
    /// The code did not parse. `line` is 1-based.
    #[error("parse error at line {line}: {message}")]
    Parse { message: String, line: u32 },

    /// R signalled an error condition (`stop()`, a failed primitive, `q()` in-process,
    /// C stack overflow, ...).
    #[error("{}", r_message(message, call.as_deref()))]
    R {
        message: String,
        /// The deparsed call of the condition, when it has one.
        call: Option<String>,
        /// `class()` of the condition, most specific first.
        classes: Vec<String>,
        /// What the call printed and warned before the error.
        output: Box<Output>,
    },

    /// The evaluation was interrupted (a deadline or an explicit interrupt).
    #[error("evaluation interrupted")]
    Interrupted { output: Box<Output> },

    /// An R object that has no [`crate::Value`] form (a closure, an environment, ...).
    #[error("cannot convert an R object of type '{r_type}' to a value")]
    Unsupported {
        r_type: String,
        /// What the call printed and warned (the code ran; only its value is lost).
        output: Box<Output>,
    },

    /// A Rust value that R rejects (say a `dim` that does not match the length).
    #[error("invalid value: {0}")]
    InvalidValue(String),

    /// R could not allocate memory.
    #[error("R could not allocate memory: {0}")]
    Alloc(String),

    /// The call's value is larger than the caller may receive: refused in the
    /// worker, before it is encoded or copied anywhere (`bytes` as it would travel).
    #[error(
        "the result is {bytes} bytes, over the limit of {limit} bytes a call may return \
         (limits.max_result_bytes); keep large data in the session and return a part of \
         it, or write it to a file in the session's folder (e.g. arrow::write_parquet) \
         and download it with the files API"
    )]
    ResultTooLarge { bytes: u64, limit: u64 },

    /// R was already started in this process (R can run once per process).
    #[error("R is already running in this process")]
    AlreadyStarted,

    /// R did not start.
    #[error("R failed to start: {0}")]
    Startup(String),
}

fn r_message(message: &str, call: Option<&str>) -> String {
    match call {
        Some(call) => format!("Error in {call}: {message}"),
        None => format!("Error: {message}"),
    }
}

impl Error {
    /// The output captured before the failure, if the error carries any.
    pub fn output(&self) -> Option<&Output> {
        match self {
            Error::R { output, .. } | Error::Interrupted { output } => Some(output),
            _ => None,
        }
    }

    /// True when the condition has `class` among its classes.
    pub fn has_class(&self, class: &str) -> bool {
        matches!(self, Error::R { classes, .. } if classes.iter().any(|c| c == class))
    }
}

//! `Error`: how the server's engine layer (sessions, services, jobs) and the
//! confinement around it fail, in the domain's words, with no protocol in them. Each
//! front end maps it in one place: HTTP into `AppError` (status, code, JSON body;
//! `crate::error`), QAP1 into Rserve's statuses (`crate::qap::endpoint`).

use std::time::Duration;

use rookery_engine::{Error as EngineError, RError};

use crate::files::FileError;
use crate::store::StoreError;

/// A failed engine-layer operation.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The R code failed: a parse error, an R error, a value with no wire form, ...
    #[error("{}", .0.message)]
    R(Box<RFailure>),
    /// The caller's input is malformed: a bad name, a bad path, a bad service spec.
    #[error("{0}")]
    BadInput(String),
    /// Unknown, or owned by someone else (never revealed).
    #[error("{0} not found")]
    NotFound(String),
    /// Clashes with what exists (a name taken, a limit of open things reached).
    #[error("{0}")]
    Conflict(String),
    /// The call's value is larger than the caller may receive (refused in the
    /// worker before it was encoded or copied).
    #[error("{}", RError::ResultTooLarge { bytes: *.bytes, limit: *.limit })]
    ResultTooLarge { bytes: u64, limit: u64 },
    #[error("all R workers are busy; retry shortly")]
    Busy,
    #[error("the R call ran past its {0:?} deadline and was stopped")]
    Timeout(Duration),
    #[error("the R process died during the call ({0}); it has been replaced")]
    WorkerDied(String),
    #[error("the call was cancelled")]
    Cancelled,
    #[error("the server is shutting down")]
    Unavailable,
    /// The shared store (PostgreSQL) cannot be reached now.
    #[error("{0}; retry shortly")]
    StoreUnavailable(String),
    /// Untrusted code cannot be confined here (below the Landlock floor, no worker
    /// accounts, all accounts leased): refused rather than run unconfined.
    #[error("{0}")]
    Confinement(String),
    #[error("internal error: {0}")]
    Internal(String),
}

/// What kind of R failure, each with a stable word for clients and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RFailureKind {
    /// The code does not parse.
    Parse,
    /// R signalled an error while running it.
    RError,
    /// It ran, but its value has no wire form (a function, an environment, ...).
    Unsupported,
    /// R could not allocate the value.
    OutOfMemory,
    /// A service's code failed when its workers started.
    ServiceCode,
}

impl RFailureKind {
    /// `parse_error`, `r_error`, `unsupported_value`, `out_of_memory`,
    /// `service_code_failed`: the `code` of the HTTP error body.
    pub fn code(self) -> &'static str {
        match self {
            RFailureKind::Parse => "parse_error",
            RFailureKind::RError => "r_error",
            RFailureKind::Unsupported => "unsupported_value",
            RFailureKind::OutOfMemory => "out_of_memory",
            RFailureKind::ServiceCode => "service_code_failed",
        }
    }
}

/// What R said when code failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RFailure {
    pub kind: RFailureKind,
    pub message: String,
    pub call: Option<String>,
    pub classes: Vec<String>,
    pub stdout: String,
    pub stderr: String,
}

impl Error {
    /// An R failure with no call, classes or output.
    pub fn r(kind: RFailureKind, message: String) -> Error {
        r_failure(kind, message, None, vec![], None)
    }

    pub fn not_found(what: impl Into<String>) -> Error {
        Error::NotFound(what.into())
    }

    /// The R failure of this kind, if that is what this is.
    pub fn r_failure(&self, kind: RFailureKind) -> Option<&RFailure> {
        match self {
            Error::R(f) if f.kind == kind => Some(f),
            _ => None,
        }
    }
}

fn r_failure(
    kind: RFailureKind,
    message: String,
    call: Option<String>,
    classes: Vec<String>,
    output: Option<rookery_engine::Output>,
) -> Error {
    let output = output.unwrap_or_default();
    Error::R(Box::new(RFailure {
        kind,
        message,
        call,
        classes,
        stdout: output.stdout,
        stderr: output.stderr,
    }))
}

impl From<EngineError> for Error {
    fn from(e: EngineError) -> Self {
        match e {
            EngineError::R(r) => from_r(r),
            EngineError::Timeout { after } => Error::Timeout(after),
            EngineError::WorkerDied { .. } => Error::WorkerDied(e.to_string()),
            EngineError::Busy { .. } => Error::Busy,
            EngineError::Cancelled => Error::Cancelled,
            EngineError::Closed => Error::Unavailable,
            EngineError::Confinement(msg) => Error::Confinement(msg),
            other => Error::Internal(other.to_string()),
        }
    }
}

fn from_r(e: RError) -> Error {
    use RFailureKind as K;
    match e {
        RError::Parse { .. } => Error::r(K::Parse, e.to_string()),
        RError::R {
            message,
            call,
            classes,
            output,
        } => r_failure(K::RError, message, call, classes, Some(*output)),
        RError::Interrupted { .. } => Error::Cancelled,
        RError::Unsupported { ref output, .. } => {
            let output = Some((**output).clone());
            r_failure(K::Unsupported, e.to_string(), None, vec![], output)
        }
        RError::InvalidValue(_) => Error::r(K::Unsupported, e.to_string()),
        RError::Alloc(_) => Error::r(K::OutOfMemory, e.to_string()),
        RError::ResultTooLarge { bytes, limit } => Error::ResultTooLarge { bytes, limit },
        other => Error::Internal(other.to_string()),
    }
}

impl From<StoreError> for Error {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(what) => Error::NotFound(what),
            StoreError::Conflict(what) => Error::Conflict(format!("{what} already exists")),
            StoreError::Backend(msg) => Error::Internal(msg),
            e @ StoreError::Unavailable(_) => Error::StoreUnavailable(e.to_string()),
        }
    }
}

impl From<FileError> for Error {
    fn from(e: FileError) -> Self {
        match e {
            FileError::BadPath { .. } => Error::BadInput(e.to_string()),
            FileError::NotFound(path) => Error::NotFound(format!("file `{path}`")),
            FileError::TooMany => Error::Conflict(e.to_string()),
            other => Error::Internal(other.to_string()),
        }
    }
}

impl From<tokio::task::JoinError> for Error {
    fn from(e: tokio::task::JoinError) -> Self {
        Error::Internal(format!("a worker task failed: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_errors_keep_their_kind() {
        let e = Error::from(EngineError::R(RError::Parse {
            message: "unexpected symbol".into(),
            line: 1,
        }));
        assert!(e.r_failure(RFailureKind::Parse).is_some());
        assert!(e.r_failure(RFailureKind::RError).is_none());
        assert_eq!(RFailureKind::Parse.code(), "parse_error");
    }

    #[test]
    fn engine_failures_map_to_their_domain_words() {
        let after = Duration::from_secs(3);
        assert!(matches!(
            Error::from(EngineError::Timeout { after }),
            Error::Timeout(d) if d == after
        ));
        assert!(matches!(
            Error::from(EngineError::Cancelled),
            Error::Cancelled
        ));
        assert!(matches!(
            Error::from(EngineError::Closed),
            Error::Unavailable
        ));
        assert!(matches!(
            Error::from(StoreError::Conflict("user `a`".into())),
            Error::Conflict(m) if m == "user `a` already exists"
        ));
    }
}

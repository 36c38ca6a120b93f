//! `AppError`: every way a request can fail, and the HTTP answer for each. Owns the
//! mapping from the engine layer's errors (`crate::engine::Error`, which covers the
//! engine's, the store's and the files') to status codes and to the JSON error
//! body `{"error": {"code", "message", ...}}`; handlers just use `?`.

use std::time::Duration;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use rookery_engine::Error as EngineError;
use serde_json::json;

use crate::engine::Error as DomainError;
pub use crate::engine::RFailure;
use crate::files::FileError;
use crate::store::StoreError;

/// A failed request. Plain data; turned into a response by `IntoResponse`.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// Malformed input: bad JSON, a path outside the user's folder, a bad name.
    #[error("{0}")]
    BadRequest(String),
    /// The input did not match the service's declared schema.
    #[error("{0}")]
    Invalid(String),
    #[error("authentication required")]
    Unauthenticated(&'static str),
    #[error("{0}")]
    Forbidden(String),
    /// Unknown, or owned by someone else (never revealed).
    #[error("{0} not found")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("request body larger than the limit of {0} bytes")]
    TooLarge(usize),
    /// The request body did not arrive within `limits.read_timeout_secs`.
    #[error("the request body did not arrive within {0:?}")]
    RequestTimeout(Duration),
    #[error("unsupported media type: {0}")]
    UnsupportedMedia(String),
    #[error("too many failed logins; retry later")]
    RateLimited(Duration),
    #[error(
        "your requests still arriving hold {held} bytes, and this one would pass the \
         limit of {limit} bytes per user (limits.max_inflight_bytes_per_user); wait for \
         them to finish, or send large data in smaller parts (the files API, batch jobs)"
    )]
    TooManyBytesInFlight { held: u64, limit: u64 },
    #[error(
        "the server's memory for requests and answers in flight is taken ({held} of \
         {limit} bytes, limits.max_inflight_bytes); retry shortly"
    )]
    MemoryBusy { held: u64, limit: u64 },
    /// Every password hasher stayed taken (see `auth::cache`).
    #[error("{0}")]
    LoginBusy(String),
    /// The R code failed: parse error or R error.
    #[error("{}", .0.message)]
    R(Box<RFailure>),
    /// The result is over the caller's `limits.max_result_bytes`.
    #[error("{}", DomainError::ResultTooLarge { bytes: *.bytes, limit: *.limit })]
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
    #[error("{0}")]
    StoreUnavailable(String),
    /// Untrusted code cannot be confined here (below the Landlock floor, no worker
    /// accounts, all accounts leased): refused rather than run unconfined.
    #[error("{0}")]
    Confinement(String),
    /// A session that lived on another node of the cluster, which has stopped.
    #[error("{0}")]
    SessionGone(String),
    /// Another node of the cluster did not answer a request forwarded to it.
    #[error("{0}")]
    NodeUnreachable(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl AppError {
    pub fn status(&self) -> StatusCode {
        match self {
            AppError::BadRequest(_) | AppError::Invalid(_) => StatusCode::BAD_REQUEST,
            AppError::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
            AppError::Forbidden(_) => StatusCode::FORBIDDEN,
            AppError::NotFound(_) => StatusCode::NOT_FOUND,
            AppError::Conflict(_) => StatusCode::CONFLICT,
            AppError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            AppError::RequestTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            AppError::UnsupportedMedia(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            AppError::RateLimited(_) | AppError::TooManyBytesInFlight { .. } => {
                StatusCode::TOO_MANY_REQUESTS
            }
            AppError::R(_) | AppError::ResultTooLarge { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            AppError::Busy | AppError::Unavailable | AppError::Confinement(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            AppError::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
            AppError::MemoryBusy { .. }
            | AppError::LoginBusy(_)
            | AppError::StoreUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            AppError::WorkerDied(_) => StatusCode::BAD_GATEWAY,
            AppError::Cancelled => StatusCode::CONFLICT,
            AppError::SessionGone(_) => StatusCode::GONE,
            AppError::NodeUnreachable(_) => StatusCode::BAD_GATEWAY,
            AppError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// A short, stable word for clients and the audit log.
    pub fn code(&self) -> &'static str {
        match self {
            AppError::BadRequest(_) => "bad_request",
            AppError::Invalid(_) => "invalid_input",
            AppError::Unauthenticated(_) => "unauthenticated",
            AppError::Forbidden(_) => "forbidden",
            AppError::NotFound(_) => "not_found",
            AppError::Conflict(_) => "conflict",
            AppError::TooLarge(_) => "too_large",
            AppError::RequestTimeout(_) => "request_timeout",
            AppError::UnsupportedMedia(_) => "unsupported_media_type",
            AppError::RateLimited(_) => "rate_limited",
            AppError::TooManyBytesInFlight { .. } => "too_many_bytes_in_flight",
            AppError::MemoryBusy { .. } => "memory_busy",
            AppError::LoginBusy(_) => "login_busy",
            AppError::R(f) => f.kind.code(),
            AppError::ResultTooLarge { .. } => "result_too_large",
            AppError::Busy => "busy",
            AppError::Timeout(_) => "timeout",
            AppError::WorkerDied(_) => "worker_died",
            AppError::Cancelled => "cancelled",
            AppError::Unavailable => "unavailable",
            AppError::StoreUnavailable(_) => "store_unavailable",
            AppError::Confinement(_) => "confinement",
            AppError::SessionGone(_) => "session_gone",
            AppError::NodeUnreachable(_) => "node_unreachable",
            AppError::Internal(_) => "internal",
        }
    }

    pub fn not_found(what: impl Into<String>) -> AppError {
        AppError::NotFound(what.into())
    }

    /// The `{"error": {...}}` body.
    pub fn body(&self) -> serde_json::Value {
        let mut error = json!({ "code": self.code(), "message": self.to_string() });
        if let AppError::ResultTooLarge { bytes, limit } = self {
            error["bytes"] = json!(bytes);
            error["limit"] = json!(limit);
        }
        if let AppError::R(f) = self {
            error["call"] = json!(f.call);
            error["classes"] = json!(f.classes);
            error["stdout"] = json!(f.stdout);
            error["stderr"] = json!(f.stderr);
        }
        json!({ "error": error })
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        if let AppError::Internal(msg) = &self {
            tracing::error!(error = %msg, "internal error");
        }
        let mut response = (self.status(), Json(self.body())).into_response();
        let headers = response.headers_mut();
        match &self {
            AppError::Unauthenticated(challenge) => {
                headers.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static(challenge),
                );
            }
            AppError::RateLimited(after) => {
                headers.insert(header::RETRY_AFTER, retry_after(*after));
            }
            AppError::Busy
            | AppError::TooManyBytesInFlight { .. }
            | AppError::MemoryBusy { .. }
            | AppError::LoginBusy(_)
            | AppError::StoreUnavailable(_) => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            _ => {}
        }
        response.extensions_mut().insert(ErrorCode(self.code()));
        response
    }
}

/// Left on an error response so the metrics and audit layers can name the outcome.
#[derive(Debug, Clone, Copy)]
pub struct ErrorCode(pub &'static str);

fn retry_after(after: Duration) -> HeaderValue {
    HeaderValue::from(after.as_secs().max(1))
}

impl From<crate::inflight::OverBudget> for AppError {
    fn from(o: crate::inflight::OverBudget) -> Self {
        if o.server {
            AppError::MemoryBusy {
                held: o.held,
                limit: o.limit,
            }
        } else {
            AppError::TooManyBytesInFlight {
                held: o.held,
                limit: o.limit,
            }
        }
    }
}

impl From<DomainError> for AppError {
    /// The one mapping from the engine layer's failures to HTTP's.
    fn from(e: DomainError) -> Self {
        match e {
            DomainError::R(f) => AppError::R(f),
            DomainError::ResultTooLarge { bytes, limit } => {
                AppError::ResultTooLarge { bytes, limit }
            }
            DomainError::BadInput(m) => AppError::BadRequest(m),
            DomainError::NotFound(what) => AppError::NotFound(what),
            DomainError::Conflict(m) => AppError::Conflict(m),
            DomainError::Busy => AppError::Busy,
            DomainError::Timeout(after) => AppError::Timeout(after),
            DomainError::WorkerDied(m) => AppError::WorkerDied(m),
            DomainError::Cancelled => AppError::Cancelled,
            DomainError::Unavailable => AppError::Unavailable,
            DomainError::StoreUnavailable(m) => AppError::StoreUnavailable(m),
            DomainError::Confinement(m) => AppError::Confinement(m),
            DomainError::Internal(m) => AppError::Internal(m),
        }
    }
}

impl From<EngineError> for AppError {
    fn from(e: EngineError) -> Self {
        DomainError::from(e).into()
    }
}

impl From<StoreError> for AppError {
    fn from(e: StoreError) -> Self {
        DomainError::from(e).into()
    }
}

impl From<FileError> for AppError {
    fn from(e: FileError) -> Self {
        DomainError::from(e).into()
    }
}

impl From<tokio::task::JoinError> for AppError {
    fn from(e: tokio::task::JoinError) -> Self {
        AppError::Internal(format!("a worker task failed: {e}"))
    }
}

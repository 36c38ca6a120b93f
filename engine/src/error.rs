//! `engine::Error`: what a caller of the engine can get back instead of a result.

/// A failed engine call. Plain data: `Send + Sync + 'static`.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// R rejected the call: parse error, R error, interrupt, unconvertible value.
    #[error(transparent)]
    R(#[from] rookery_ffi::Error),

    /// The R thread is gone (a previous job panicked past recovery, or start-up failed).
    #[error("the R thread has stopped: {0}")]
    Stopped(String),

    /// Work submitted to the R thread panicked; the thread itself carries on.
    #[error("a job on the R thread panicked: {0}")]
    Panicked(String),
}

fn _ensure_send_sync() {
    fn ensure<T: Send + Sync + 'static>() {}
    ensure::<Error>();
}

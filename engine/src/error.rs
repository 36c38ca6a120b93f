//! `engine::Error`: what a caller of the engine can get back instead of a result.

use std::time::Duration;

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

    /// The call ran past its deadline. The worker was interrupted, then killed if it
    /// did not stop within the grace period, and has been replaced.
    #[error("the call ran past its {after:?} deadline; the worker was stopped and replaced")]
    Timeout { after: Duration },

    /// The worker process died during the call (segfault, `q()`, OOM kill). It has
    /// been replaced; no other caller was affected.
    #[error("worker {pid} died during the call: {}", describe_exit(*.code, *.signal))]
    WorkerDied {
        pid: u32,
        /// Exit status, when it exited.
        code: Option<i32>,
        /// Signal number, when a signal killed it.
        signal: Option<i32>,
    },

    /// Every worker stayed busy for the whole queue wait, or the queue was full.
    #[error("all workers are busy ({waiting} callers waiting, waited {waited:?})")]
    Busy { waited: Duration, waiting: usize },

    /// The caller cancelled the call through its [`crate::CancelHandle`].
    #[error("the call was cancelled")]
    Cancelled,

    /// The pool is shutting down or has shut down.
    #[error("the pool is closed")]
    Closed,

    /// Starting the zygote or a worker failed.
    #[error("cannot start R workers: {0}")]
    Spawn(String),

    /// Parent and worker disagreed about the wire protocol (a bug, or a worker whose
    /// memory was corrupted). The worker has been replaced.
    #[error("protocol error talking to a worker: {0}")]
    Protocol(String),

    /// A worker could not apply the confinement asked for (a layer the kernel lacks
    /// below the required floor, an account that cannot be switched to, ...). It was
    /// discarded before running any code.
    #[error("cannot confine the worker: {0}")]
    Confinement(String),
}

fn describe_exit(code: Option<i32>, signal: Option<i32>) -> String {
    match (code, signal) {
        (_, Some(sig)) => format!("killed by signal {sig} ({})", signal_name(sig)),
        (Some(code), None) => format!("exited with status {code}"),
        (None, None) => "exit status unknown".into(),
    }
}

fn signal_name(sig: i32) -> &'static str {
    match sig {
        4 => "SIGILL",
        6 => "SIGABRT",
        7 => "SIGBUS",
        8 => "SIGFPE",
        9 => "SIGKILL",
        11 => "SIGSEGV",
        15 => "SIGTERM",
        24 => "SIGXCPU",
        25 => "SIGXFSZ",
        _ => "signal",
    }
}

fn _ensure_send_sync() {
    fn ensure<T: Send + Sync + 'static>() {}
    ensure::<Error>();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worker_death_names_the_signal_or_status() {
        let killed = Error::WorkerDied {
            pid: 7,
            code: None,
            signal: Some(11),
        };
        assert_eq!(
            killed.to_string(),
            "worker 7 died during the call: killed by signal 11 (SIGSEGV)"
        );
        let quit = Error::WorkerDied {
            pid: 7,
            code: Some(3),
            signal: None,
        };
        assert!(quit.to_string().ends_with("exited with status 3"));
    }
}

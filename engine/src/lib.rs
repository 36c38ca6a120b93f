//! rookery-engine: run R from any thread of a Rust program.
//!
//! - [`LocalR`]: R inside this process, on a dedicated thread; callers on any thread
//!   send work over a channel and get plain-data results.
//! - [`Pool`]: pre-forked R workers in their own processes. A zygote starts R once
//!   (with the pool's packages, init code and models) and forks workers from it; each
//!   call goes to a warm worker through shared memory, with deadlines, crash
//!   recovery, recycling, sessions, and batch jobs split over all workers.
//!
//! Programs that build a [`Pool`] call [`run_zygote_if_requested`] first thing in
//! `main`: the pool re-executes the program as its zygote, so that R starts, and
//! `fork` runs, only in a single-threaded process.
//!
//! The engine never names libR: it reaches R only through `rookery-ffi`, and what it
//! hands out ([`Value`], [`Output`], [`Error`]) is plain data.

mod batch;
mod cancel;
mod channel;
mod child;
pub mod confine;
mod error;
mod local;
mod mailbox;
pub mod oom;
mod packet;
mod pool;
mod protocol;
pub mod qap;
mod shm;

pub use batch::{BatchOptions, BatchOutcome, ChunkFailure, Progress};
pub use cancel::CancelHandle;
pub use child::zygote::run_zygote_if_requested;
pub use error::Error;
pub use local::{Evaluation, LocalOptions, LocalR};
pub use pool::{worker_env, CallOptions, Pool, PoolBuilder, PoolStats, Session};
pub use rookery_ffi::value;
pub use rookery_ffi::Error as RError;
pub use rookery_ffi::{OobFailure, OobKind, OobRequest, Output, Value, Warning};

/// What carries the OOB messages a call's R code sends (Rserve's `self.oobSend`
/// and `self.oobMessage`) to its client: given each, it answers `Ok(None)` once a
/// send is out and `Ok(Some(reply))` with the client's reply to a message
/// ([`Session::eval_with_oob`]).
pub type OobSink<'a> = rookery_ffi::OobHandler<'a>;

/// Tunes glibc's allocator for a long-lived host process that serves many threads
/// (the server): blocks over 128 KiB go back to the kernel as soon as they are freed.
/// Workers tune their own the other way (`PoolBuilder::tune_malloc`).
pub fn tune_host_malloc() {
    child::fork::tune_host_malloc();
}

/// A syntactic R name (letters, digits, `.`, `_`; starting with a letter, or with `.`
/// not followed by a digit), at most 256 bytes: what may be bound without parsing.
pub fn is_r_name(name: &str) -> bool {
    let b = name.as_bytes();
    let start_ok = match b.first() {
        Some(c) if c.is_ascii_alphabetic() => true,
        Some(b'.') => !b.get(1).is_some_and(u8::is_ascii_digit),
        _ => false,
    };
    start_ok
        && b.len() <= 256
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || *c == b'.' || *c == b'_')
}

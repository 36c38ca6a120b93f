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
pub mod confine;
mod error;
mod local;
mod mailbox;
mod pool;
mod protocol;
mod shm;
mod worker;

pub use batch::{BatchOptions, BatchOutcome, ChunkFailure, Progress};
pub use cancel::CancelHandle;
pub use error::Error;
pub use local::{Evaluation, LocalOptions, LocalR};
pub use pool::{CallOptions, Pool, PoolBuilder, PoolStats, Session};
pub use rookery_ffi::value;
pub use rookery_ffi::Error as RError;
pub use rookery_ffi::{Output, Value, Warning};
pub use worker::zygote::run_zygote_if_requested;

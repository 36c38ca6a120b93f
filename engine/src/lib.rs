//! rookery-engine: run R from any thread of a Rust program.
//!
//! - [`LocalR`]: R inside this process, on a dedicated thread; callers on any thread
//!   send work over a channel and get plain-data results.
//!
//! The engine never names libR: it reaches R only through `rookery-ffi`, and what it
//! hands out ([`Value`], [`Output`], [`Error`]) is plain data.

mod error;
mod local;
mod protocol;
mod shm;

pub use error::Error;
pub use local::{Evaluation, LocalOptions, LocalR};
pub use rookery_ffi::value;
pub use rookery_ffi::{Output, Value, Warning};

//! rookery-ffi: the only crate that names libR.
//!
//! It starts R once per process ([`start`]), evaluates code so that nothing R does can
//! unwind through Rust or end the process ([`RToken::eval_str`]), owns protected R
//! objects ([`Protected`]), and converts between R objects and the plain-data
//! [`Value`] model, which the rest of Rookery uses without ever seeing R.
//!
//! # Safety
//!
//! The crate-wide contract, which every `unsafe` block here relies on:
//! - R is touched only from the thread that started it. Every safe entry point takes
//!   an [`RToken`], which is `!Send` and exists only on that thread.
//! - Every libR call that can longjmp (allocation, evaluation, parsing, attribute
//!   checks, string translation) runs inside a toplevel context set up by the C shim
//!   (`csrc/shim.c`), so a jump ends there and comes back as a return code. No longjmp
//!   crosses a Rust frame, and the Rust callbacks R makes (the console sink) never call
//!   back into R and never unwind.
//! - Raw `SEXP`s never leave the crate; objects Rust holds are in the shim's precious
//!   list, owned by exactly one [`Protected`].
//! - `extendr_api` is deliberately not used: its `catch_r_error` aborts the process on
//!   an R error, and its conversions allocate outside any toplevel context.

mod convert;
mod error;
mod eval;
mod fdio;
mod init;
mod oob;
mod output;
mod sexp;
mod state;
mod sys;

pub use error::Error;
pub use eval::{Environment, Evaluated};
pub use init::{
    c_stack_limit, clear_interrupt, interrupt, interrupt_pending, set_quit_behaviour, start,
    temp_dir, QuitBehaviour, StartOptions, BUILD_R_HOME,
};
pub use oob::{with_oob_handler, OobFailure, OobHandler, OobKind, OobRequest};
pub use output::{set_output_limit, FdCapture, Output, Warning, DEFAULT_OUTPUT_LIMIT};
/// The plain-data value model, from `rookery-value` (which never links R).
pub use rookery_value as value;
pub use rookery_value::{Complex, Data, Logical, RString, Value};
pub use sexp::{is_started, Protected, RToken};
pub use state::{set_temp_dir, StateChanges};

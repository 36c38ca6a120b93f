//! Shared set-up for the integration tests.

use rookery_engine::{LocalOptions, LocalR};

/// The process's in-process R, started on first use with fd-level capture on.
pub fn r() -> LocalR {
    LocalR::start(LocalOptions {
        capture_fd_output: true,
        ..LocalOptions::default()
    })
    .expect("R starts")
}

/// Evaluates `code` and returns the value, panicking with R's message on error.
pub fn value(code: &str) -> rookery_engine::Value {
    match r().eval(code) {
        Ok(ev) => ev.value,
        Err(e) => panic!("{code}: {e}"),
    }
}

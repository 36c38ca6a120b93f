//! QAP1 direct mode: what a session's worker does with a QAP1 socket the server hands
//! it ([`crate::Session::serve_qap`]): it answers the evaluation commands itself, so a
//! call costs no hop between processes, and hands every other message back.
//!
//! - [`direct`]: the options, notes and outcomes shared by both sides of a pass.
//! - [`frame`] and [`sexp`]: the protocol's bytes, re-exported from `rookery-qap`
//!   (see `docs/qap1.md`), which owns them and never links R.

pub mod direct;
pub use rookery_qap::{frame, sexp};

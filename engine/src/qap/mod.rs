//! QAP1, the Rserve wire protocol (see `docs/qap1.md`): its bytes, and a worker's
//! way of serving one connection itself.
//!
//! - [`frame`]: ID string, 16-byte message header, command/response/status codes,
//!   DT_* parameter lists.
//! - [`sexp`]: XT_* R objects to and from [`crate::Value`].
//! - [`direct`]: what a session's worker does with a QAP1 socket the server hands it
//!   ([`crate::Session::serve_qap`]): it answers the evaluation commands itself, so
//!   a call costs no hop between processes, and hands every other message back.
//!
//! `frame` and `sexp` own bytes only: no sockets, no sessions, no R. Decoding never
//! panics and never trusts a length; errors are [`frame::QapError`], which a server
//! maps to a QAP1 status with [`frame::QapError::status`].

pub mod direct;
pub mod frame;
pub mod sexp;

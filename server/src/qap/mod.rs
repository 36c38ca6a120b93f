//! QAP1, the Rserve wire protocol (see `docs/qap1.md`).
//!
//! - [`frame`]: ID string, 16-byte message header, command/response/status codes,
//!   DT_* parameter lists (from `rookery-qap`, which the engine's direct mode uses too).
//! - [`sexp`]: XT_* R objects to and from [`rookery_engine::Value`] (the same).
//! - [`endpoint`]: the listeners and one connection's life (login, session, commands).
//!
//! `frame` and `sexp` own bytes only: no sockets, no sessions, no R. Decoding never
//! panics and never trusts a length; errors are [`QapError`], which the endpoint maps
//! to a QAP1 status with [`QapError::status`].

pub mod endpoint;
pub use rookery_qap::{frame, sexp};
pub mod seclogin;
pub mod stream;

pub use frame::{decode_params, encode_message, Header, Param, QapError, HEADER_LEN, ID_STRING};
pub use sexp::{decode, decode_with_depth, encode, encode_into};

//! rookery-qap: QAP1, the Rserve wire protocol (see `docs/qap1.md`), as bytes.
//!
//! - [`frame`]: ID string, 16-byte message header, command/response/status codes,
//!   DT_* parameter lists.
//! - [`sexp`]: XT_* R objects to and from [`rookery_value::Value`].
//! - [`expr`]: QAP1-encoded R expressions (calls, symbols) as an [`expr::Expr`] tree.
//!
//! This crate owns bytes only: no sockets, no sessions, no R (it never links libR,
//! so its tests and the fuzz targets build on a machine without R). Decoding never
//! panics and never trusts a length; errors are [`QapError`], which a server maps to
//! a QAP1 status with [`QapError::status`]. The engine's direct mode (a session's
//! worker serving its client's socket) and the server's endpoint both speak through
//! it.

pub mod expr;
pub mod frame;
pub mod sexp;
#[cfg(test)]
mod tests;

pub use frame::{decode_params, encode_message, Header, Param, QapError, HEADER_LEN, ID_STRING};
pub use sexp::{decode, decode_with_depth, encode, encode_into};

//! QAP1 direct mode: a session's worker serves its client's socket itself.
//!
//! Rserve answers each command in the process that evaluates it. Through the
//! server, a call would cross two processes (connection thread, then worker) and
//! shared memory both ways; in direct mode the server hands the client's socket to
//! the session's worker ([`crate::Session::serve_qap`]), which reads the next
//! messages and answers `CMD_eval`, `CMD_voidEval` and `CMD_setSEXP` on its own.
//! Any other message (login is long done; files, encodings, detach, shutdown...) is
//! handed back whole, with the reason the worker stopped:
//!
//! ```text
//!  server                                    worker (confined, the session's)
//!  send_fd(socket); ServeQap{options} ─────▶ loop: read message (socket timeout)
//!                                              eval / voidEval / setSEXP: answer it
//!                                              (busy stamp set while R runs)
//!  Yielded{Message | Closed | Notes} ◀──────── anything else, EOF, idle, or notes due
//!  (records notes: audit, failures;
//!   handles the message; ServeQap again)
//! ```
//!
//! The server still sees everything it must: each call's code and each failure
//! arrive as [`QapNote`]s (at least once a second, and at every hand-back), and the
//! call deadline is enforced from the busy stamp the worker keeps in the shared
//! control page. The types and the pure byte helpers live here; the loop is the
//! worker's (`child::qap`).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::frame::{self, dt, resp, status, Header, HEADER_LEN};
use super::sexp::{self, Strings};
use crate::Value;

/// How the worker serves the connection.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct QapServe {
    /// How strings travel (`CMD_setEncoding`).
    pub strings: Strings,
    /// Send an R error's message in an OOB_SEND message (code 127) before the status.
    pub oob_errors: bool,
    /// Let R code send its own OOB messages (`self.oobSend`, `self.oobMessage`).
    pub oob: bool,
    /// The largest result sent, by Rserve's size estimate (0: no cap); past it
    /// ERR_object_too_big with the size, as Rserve past its `maxsendbuf`.
    pub max_result: u64,
    /// Largest message accepted; a larger header is answered with
    /// ERR_data_overflow and the connection closed.
    pub max_message: u64,
    /// A client silent this long between messages gets the connection handed back
    /// ([`QapTurn::Notes`], maybe with none): the server keeps the idle deadline, and
    /// other callers of the session get their turn.
    pub idle: Duration,
    /// How long a message may stall halfway before the connection is given up (the
    /// server's idle deadline).
    pub stall: Duration,
    /// Requests the connection has made so far (notes number them from here).
    pub requests: u64,
}

/// Something the server must record about a call the worker answered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QapNote {
    /// The request's number on its connection.
    pub request: u64,
    pub command: u32,
    /// The code of an eval, or the name a value was set to.
    pub text: Option<String>,
    /// The R error's message, when the call failed (the client got status 127 or
    /// the parse status).
    pub error: Option<String>,
}

/// Why the worker gave the connection back.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum QapTurn {
    /// A message it does not answer itself, read whole, for the server.
    Message { command: u32, payload: Vec<u8> },
    /// The client closed the connection or broke it; or the worker answered an
    /// oversized header, which ends it.
    Closed { reason: String },
    /// Notes are due, or the client was quiet for `idle`; the connection goes on.
    Notes,
}

/// What [`crate::Session::serve_qap`] returns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QapYield {
    pub turn: QapTurn,
    pub notes: Vec<QapNote>,
    /// Requests the connection has made so far, the handed-back one included.
    pub requests: u64,
}

/// Why [`crate::Session::serve_qap`] failed, and whether the client still waits for
/// the answer to a call (the worker died or timed out while running it): then the
/// server owes the client a status.
#[derive(Debug)]
pub struct QapFailed {
    pub error: crate::Error,
    pub in_flight: bool,
}

/// Room left in front of an encoded reply for the message header and the DT_SEXP
/// parameter header (4 or 8 bytes), so the reply goes out in one write, uncopied.
pub const REPLY_PREFIX: usize = HEADER_LEN + 8;

/// Encodes RESP_OK with one DT_SEXP parameter holding `value` into `buf` (cleared
/// first), the object straight behind room for the headers; returns where the
/// message starts in `buf`.
pub fn encode_value_reply(
    buf: &mut Vec<u8>,
    value: &Value,
    strings: Strings,
) -> Result<usize, frame::QapError> {
    buf.clear();
    buf.resize(REPLY_PREFIX, 0);
    sexp::encode_into_as(buf, value, strings)?;
    Ok(frame_reply(buf))
}

/// Like [`encode_value_reply`], with the object written by `object` (which appends
/// one whole XT object to `buf`) or `None` when it declines.
pub fn encode_reply_with(
    buf: &mut Vec<u8>,
    object: impl FnOnce(&mut Vec<u8>) -> bool,
) -> Option<usize> {
    buf.clear();
    buf.resize(REPLY_PREFIX, 0);
    object(buf).then(|| frame_reply(buf))
}

/// Writes the message and DT_SEXP headers in front of the object at
/// `buf[REPLY_PREFIX..]`; returns where the message starts.
fn frame_reply(buf: &mut [u8]) -> usize {
    let object = (buf.len() - REPLY_PREFIX) as u64;
    let mut param = Vec::with_capacity(8);
    frame::push_item_header(&mut param, dt::SEXP, dt::LARGE, object);
    let start = REPLY_PREFIX - param.len() - HEADER_LEN;
    let header = Header::new(resp::OK, param.len() as u64 + object).to_bytes();
    buf[start..start + HEADER_LEN].copy_from_slice(&header);
    buf[start + HEADER_LEN..REPLY_PREFIX].copy_from_slice(&param);
    start
}

/// The OOB word for an R error's message: OOB_SEND with user code 127.
pub const OOB_ERROR: u32 = resp::OOB_SEND | status::R_ERROR as u32;

/// The whole OOB_SEND message carrying an R error's `message` as a length-1
/// character vector.
pub fn oob_error_message(message: &str, strings: Strings) -> Vec<u8> {
    let mut object = Vec::new();
    if sexp::encode_into_as(&mut object, &Value::strings([message]), strings).is_err() {
        object = vec![0, 0, 0, 0];
    }
    let mut payload = Vec::with_capacity(object.len() + 8);
    frame::push_item_header(&mut payload, dt::SEXP, dt::LARGE, object.len() as u64);
    payload.extend_from_slice(&object);
    frame::encode_message(OOB_ERROR, 0, &payload)
}

/// The whole OOB message R code sends (`self.oobSend`: OOB_SEND, `self.oobMessage`:
/// OOB_MSG, each ORed with its 12-bit user code), with `value` in one DT_SEXP
/// parameter, as Rserve's `send_oob_sexp`.
pub fn oob_message(
    message: bool,
    code: u32,
    value: &Value,
    strings: Strings,
) -> Result<Vec<u8>, frame::QapError> {
    let word = if message {
        resp::OOB_MSG
    } else {
        resp::OOB_SEND
    } | (code & 0xfff);
    let mut object = Vec::new();
    sexp::encode_into_as(&mut object, value, strings)?;
    let mut payload = Vec::with_capacity(object.len() + 8);
    frame::push_item_header(&mut payload, dt::SEXP, dt::LARGE, object.len() as u64);
    payload.extend_from_slice(&object);
    Ok(frame::encode_message(word, 0, &payload))
}

/// The value of a client's reply to an OOB_MSG (a message of any command): its
/// first parameter, a DT_SEXP or a DT_STRING (a length-1 character vector), as
/// Rserve reads it; an empty payload is NULL, anything else an error.
pub fn oob_reply_value(payload: &[u8], strings: Strings) -> Result<Value, frame::QapError> {
    if payload.is_empty() {
        return Ok(Value::NULL);
    }
    let params = frame::decode_params(payload)?;
    match params.first() {
        Some(p) if p.dt == dt::SEXP || p.dt == dt::STRING => decode_value(p, strings),
        Some(p) => Err(frame::QapError::malformed(
            "OOB reply",
            format!("parameter type {} (expected DT_SEXP or DT_STRING)", p.dt),
        )),
        None => Ok(Value::NULL),
    }
}

/// Rserve's status for a failed eval: the parse status for a parse error, else 127.
pub fn failure_status(parse_error: bool) -> u8 {
    if parse_error {
        status::PARSE_ERROR
    } else {
        status::R_ERROR
    }
}

/// A value sent with `CMD_setSEXP` / `CMD_assignSEXP`: DT_SEXP, or a DT_STRING
/// (a length-1 character vector).
pub fn decode_value(p: &frame::Param<'_>, strings: Strings) -> Result<Value, frame::QapError> {
    match p.dt {
        dt::STRING => Ok(Value::strings([strings.text(p.as_string_bytes()?)])),
        _ => sexp::decode_as(p.as_sexp()?, sexp::MAX_DEPTH, strings),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The replies written straight from R's memory must be the very bytes the
    /// Value path writes, headers included, small and large.
    #[test]
    fn a_plain_double_reply_matches_the_value_path_byte_for_byte() {
        for n in [0usize, 3, (LARGE / 8) + 1] {
            let xs: Vec<f64> = (0..n).map(|i| i as f64 * 0.5 - 1.0).collect();
            let mut by_value = Vec::new();
            let start =
                encode_value_reply(&mut by_value, &Value::doubles(xs.clone()), Strings::Utf8)
                    .unwrap();
            let mut direct = Vec::new();
            let at = encode_reply_with(&mut direct, |out| {
                sexp::push_double_array_header(out, xs.len());
                for x in &xs {
                    out.extend_from_slice(&x.to_le_bytes());
                }
                true
            })
            .unwrap();
            assert_eq!(&by_value[start..], &direct[at..], "{n} doubles");
        }
    }

    #[test]
    fn only_a_plain_double_vector_goes_straight_into_r() {
        let plain = sexp::encode(&Value::doubles(vec![1.5, f64::NAN])).unwrap();
        let body = sexp::plain_double_body(&plain).expect("plain");
        assert_eq!(body.len(), 16);
        assert_eq!(&body[..8], &1.5f64.to_le_bytes());
        let mut named = Value::doubles(vec![1.0]);
        named.attrs.set("names", Value::strings(["a"]));
        for other in [
            named,
            Value::integers(vec![1]),
            Value::strings(["x"]),
            Value::NULL,
        ] {
            let bytes = sexp::encode(&other).unwrap();
            assert_eq!(sexp::plain_double_body(&bytes), None, "{other:?}");
        }
        // Trailing bytes or a cut body are not one whole object.
        let mut longer = plain.clone();
        longer.extend_from_slice(&[0; 4]);
        assert_eq!(sexp::plain_double_body(&longer), None);
        assert_eq!(sexp::plain_double_body(&plain[..plain.len() - 4]), None);
    }

    /// The threshold past which the XT header takes its large form.
    const LARGE: usize = frame::LARGE_THRESHOLD as usize;
}

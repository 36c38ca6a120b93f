//! QAP1 framing: the 32-byte ID string, the 16-byte message header (with its 64-bit
//! length split over two words), command and response codes, and the DT_* parameter
//! list that request and response payloads carry (qap1.md §2-§6).
//!
//! Owns byte layout only: no I/O, no R values (those are in [`crate::sexp`]). Every
//! length read from the wire is checked against the bytes actually present and
//! against the caller's size limit before it is used.

use thiserror::Error;

/// Size of every message header.
pub const HEADER_LEN: usize = 16;

/// The ID string a server without authentication sends on connect (§2.1).
pub const ID_STRING: [u8; 32] = *b"Rsrv0103QAP1\r\n\r\n--------------\r\n";

/// Largest length a small (4-byte) parameter or object header can hold.
pub const SMALL_MAX: u64 = 0x00ff_ffff;

/// Rserve switches to the large header form above this many bytes.
pub const LARGE_THRESHOLD: u64 = 0x00ff_fff0;

/// Largest length an 8-byte (large) header can hold: 24 + 32 bits.
pub const LARGE_MAX: u64 = (1 << 56) - 1;

/// Rserve parses at most this many parameters per message (§6).
pub const MAX_PARAMS: usize = 16;

/// Request command codes (§5).
pub mod cmd {
    pub const LOGIN: u32 = 0x001;
    pub const VOID_EVAL: u32 = 0x002;
    pub const EVAL: u32 = 0x003;
    pub const SHUTDOWN: u32 = 0x004;
    pub const SWITCH: u32 = 0x005;
    pub const KEY_REQ: u32 = 0x006;
    pub const SEC_LOGIN: u32 = 0x007;
    pub const OC_CALL: u32 = 0x00f;
    /// Server to client only: the first message in OCAP mode (reads `RsOC`).
    pub const OC_INIT: u32 = 0x434f_7352;
    pub const OPEN_FILE: u32 = 0x010;
    pub const CREATE_FILE: u32 = 0x011;
    pub const CLOSE_FILE: u32 = 0x012;
    pub const READ_FILE: u32 = 0x013;
    pub const WRITE_FILE: u32 = 0x014;
    pub const REMOVE_FILE: u32 = 0x015;
    pub const SET_SEXP: u32 = 0x020;
    pub const ASSIGN_SEXP: u32 = 0x021;
    pub const DETACH_SESSION: u32 = 0x030;
    pub const DETACHED_VOID_EVAL: u32 = 0x031;
    pub const ATTACH_SESSION: u32 = 0x032;
    pub const CTRL_EVAL: u32 = 0x042;
    pub const CTRL_SHUTDOWN: u32 = 0x044;
    pub const CTRL_SOURCE: u32 = 0x045;
    pub const SET_BUFFER_SIZE: u32 = 0x081;
    pub const SET_ENCODING: u32 = 0x082;
    pub const SER_EVAL: u32 = 0x0f5;
    pub const SER_ASSIGN: u32 = 0x0f6;
    pub const SER_EEVAL: u32 = 0x0f7;
}

/// Response words and flags (§4).
pub mod resp {
    /// Set on every response.
    pub const CMD_RESP: u32 = 0x0001_0000;
    pub const OK: u32 = 0x0001_0001;
    pub const ERR: u32 = 0x0001_0002;
    /// Set on unsolicited server-to-client messages.
    pub const CMD_OOB: u32 = 0x0002_0000;
    pub const OOB_SEND: u32 = 0x0002_1000;
    pub const OOB_MSG: u32 = 0x0002_2000;
}

/// Status codes carried in bits 24-30 of an error response (§4).
pub mod status {
    pub const PARSE_INCOMPLETE: u8 = 0x02;
    pub const PARSE_ERROR: u8 = 0x03;
    pub const PARSE_EOF: u8 = 0x04;
    pub const AUTH_FAILED: u8 = 0x41;
    pub const CONN_BROKEN: u8 = 0x42;
    pub const INV_CMD: u8 = 0x43;
    pub const INV_PAR: u8 = 0x44;
    pub const R_ERROR_UNUSED: u8 = 0x45;
    pub const IO_ERROR: u8 = 0x46;
    pub const NOT_OPEN: u8 = 0x47;
    pub const ACCESS_DENIED: u8 = 0x48;
    pub const UNSUPPORTED_CMD: u8 = 0x49;
    pub const UNKNOWN_CMD: u8 = 0x4a;
    pub const DATA_OVERFLOW: u8 = 0x4b;
    pub const OBJECT_TOO_BIG: u8 = 0x4c;
    pub const OUT_OF_MEM: u8 = 0x4d;
    pub const CTRL_CLOSED: u8 = 0x4e;
    pub const SESSION_BUSY: u8 = 0x50;
    pub const DETACH_FAILED: u8 = 0x51;
    pub const DISABLED: u8 = 0x61;
    pub const UNAVAILABLE: u8 = 0x62;
    pub const CRYPT_ERROR: u8 = 0x63;
    pub const SECURITY_CLOSE: u8 = 0x64;
    /// An R error during evaluation (Rserve sends no error text).
    pub const R_ERROR: u8 = 0x7f;
}

/// Parameter type codes (§6).
pub mod dt {
    pub const INT: u8 = 1;
    pub const CHAR: u8 = 2;
    pub const DOUBLE: u8 = 3;
    pub const STRING: u8 = 4;
    pub const BYTESTREAM: u8 = 5;
    pub const SEXP: u8 = 10;
    pub const ARRAY: u8 = 11;
    pub const CUSTOM: u8 = 32;
    /// Flag: the header is 8 bytes long.
    pub const LARGE: u8 = 64;
}

/// Everything that can be wrong with QAP1 bytes, as plain data.
///
/// A server answers [`QapError::TooLarge`] with `ERR_data_overflow` and every other
/// variant with `ERR_inv_par` (see [`QapError::status`]).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum QapError {
    #[error("message of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge { len: u64, max: u64 },
    #[error("{what} needs {need} bytes but only {have} are left")]
    Truncated {
        what: &'static str,
        need: u64,
        have: u64,
    },
    #[error("malformed {what}: {detail}")]
    Malformed { what: &'static str, detail: String },
    #[error("objects nested deeper than {max} levels")]
    TooDeep { max: usize },
    #[error("more than {max} parameters in one message")]
    TooManyParams { max: usize },
    #[error("XT type {xt} ({name}) has no Rookery value form")]
    Unsupported { xt: u8, name: &'static str },
    #[error("cannot encode: {0}")]
    Unencodable(String),
}

impl QapError {
    /// The QAP1 status a server sends for this error.
    pub fn status(&self) -> u8 {
        match self {
            QapError::TooLarge { .. } => status::DATA_OVERFLOW,
            _ => status::INV_PAR,
        }
    }

    pub fn malformed(what: &'static str, detail: impl Into<String>) -> QapError {
        QapError::Malformed {
            what,
            detail: detail.into(),
        }
    }
}

/// The response word for an error with `status` (§4).
pub fn resp_err(status: u8) -> u32 {
    resp::ERR | (u32::from(status & 0x7f) << 24)
}

/// The status packed into a response word.
pub fn status_of(word: u32) -> u8 {
    // Masked to 7 bits, so the cast cannot truncate.
    ((word >> 24) & 0x7f) as u8
}

/// True for the "special" commands whose payload is raw bytes, not parameters.
pub fn is_special(cmd: u32) -> bool {
    cmd & 0xf0 == 0xf0
}

/// The 16-byte message header (§3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Command code (request) or response word (response).
    pub cmd: u32,
    /// Payload length in bytes, not counting the header.
    pub len: u64,
    pub msg_id: u32,
}

impl Header {
    pub fn new(cmd: u32, len: u64) -> Header {
        Header {
            cmd,
            len,
            msg_id: 0,
        }
    }

    pub fn to_bytes(&self) -> [u8; HEADER_LEN] {
        let mut b = [0; HEADER_LEN];
        b[0..4].copy_from_slice(&self.cmd.to_le_bytes());
        b[4..8].copy_from_slice(&low_u32(self.len).to_le_bytes());
        b[8..12].copy_from_slice(&self.msg_id.to_le_bytes());
        b[12..16].copy_from_slice(&low_u32(self.len >> 32).to_le_bytes());
        b
    }

    /// Reads a header, rejecting a payload longer than `max_len` bytes.
    pub fn try_from_bytes(b: &[u8; HEADER_LEN], max_len: u64) -> Result<Header, QapError> {
        let lo = u64::from(word(b, 4));
        let hi = u64::from(word(b, 12));
        let len = lo | (hi << 32);
        if len > max_len {
            return Err(QapError::TooLarge { len, max: max_len });
        }
        Ok(Header {
            cmd: word(b, 0),
            len,
            msg_id: word(b, 8),
        })
    }
}

/// A whole message: header followed by `payload`.
pub fn encode_message(cmd: u32, msg_id: u32, payload: &[u8]) -> Vec<u8> {
    let header = Header {
        cmd,
        len: payload.len() as u64,
        msg_id,
    };
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    out.extend_from_slice(&header.to_bytes());
    out.extend_from_slice(payload);
    out
}

/// One decoded parameter: its DT code (without the large flag) and its data bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Param<'a> {
    pub dt: u8,
    pub data: &'a [u8],
}

impl<'a> Param<'a> {
    /// A DT_INT's value.
    pub fn as_int(&self) -> Result<i32, QapError> {
        self.expect(dt::INT)?;
        let b: [u8; 4] =
            self.data
                .get(..4)
                .and_then(|s| s.try_into().ok())
                .ok_or(QapError::Truncated {
                    what: "DT_INT",
                    need: 4,
                    have: self.data.len() as u64,
                })?;
        Ok(i32::from_le_bytes(b))
    }

    /// A DT_STRING's bytes up to the first NUL (all of them when there is none).
    pub fn as_string_bytes(&self) -> Result<&'a [u8], QapError> {
        self.expect(dt::STRING)?;
        let end = self.data.iter().position(|&b| b == 0);
        Ok(&self.data[..end.unwrap_or(self.data.len())])
    }

    /// A DT_STRING as UTF-8; invalid sequences become U+FFFD.
    pub fn as_str(&self) -> Result<String, QapError> {
        Ok(String::from_utf8_lossy(self.as_string_bytes()?).into_owned())
    }

    /// A DT_SEXP's encoded object (decode it with [`crate::sexp::decode`]).
    pub fn as_sexp(&self) -> Result<&'a [u8], QapError> {
        self.expect(dt::SEXP)?;
        Ok(self.data)
    }

    fn expect(&self, want: u8) -> Result<(), QapError> {
        if self.dt == want {
            return Ok(());
        }
        Err(QapError::malformed(
            "parameter",
            format!("expected DT type {want}, found {}", self.dt),
        ))
    }
}

/// Splits a request or response payload into its parameters (at most [`MAX_PARAMS`]).
/// A zero header word ends the list early, as Rserve allows.
pub fn decode_params(payload: &[u8]) -> Result<Vec<Param<'_>>, QapError> {
    let mut params = Vec::new();
    let mut rest = payload;
    while !rest.is_empty() {
        if rest.len() >= 4 && word(rest, 0) == 0 {
            break;
        }
        if params.len() == MAX_PARAMS {
            return Err(QapError::TooManyParams { max: MAX_PARAMS });
        }
        let (head, body) = split_item(rest, dt::LARGE, "parameter")?;
        params.push(Param {
            dt: head.kind,
            data: body,
        });
        // A DT_BYTESTREAM's length is exact; padding to 4 bytes follows it (a last
        // parameter without its padding is accepted).
        let consumed = align4(head.size + body.len()).min(rest.len());
        rest = &rest[consumed..];
    }
    Ok(params)
}

/// Appends a DT_BYTESTREAM: the exact length in the header, then zero padding
/// (qap1.md §6), so the receiver gets the bytes back without the padding.
pub fn push_bytes_param(out: &mut Vec<u8>, data: &[u8]) {
    push_item_header(out, dt::BYTESTREAM, dt::LARGE, data.len() as u64);
    out.extend_from_slice(data);
    out.resize(out.len() + align4(data.len()) - data.len(), 0);
}

/// Appends one parameter with `data`, zero-padded to a multiple of 4.
pub fn push_param(out: &mut Vec<u8>, dt: u8, data: &[u8]) {
    let padded = align4(data.len());
    push_item_header(out, dt, dt::LARGE, padded as u64);
    out.extend_from_slice(data);
    out.resize(out.len() + padded - data.len(), 0);
}

/// Appends a DT_STRING: the bytes, a NUL, NUL padding.
pub fn push_string_param(out: &mut Vec<u8>, s: &[u8]) {
    let mut data = Vec::with_capacity(s.len() + 1);
    data.extend_from_slice(s);
    data.push(0);
    push_param(out, dt::STRING, &data);
}

/// Appends a DT_INT.
pub fn push_int_param(out: &mut Vec<u8>, v: i32) {
    push_param(out, dt::INT, &v.to_le_bytes());
}

/// An item header: its type byte with the large flag removed, and its own size.
#[derive(Debug, Clone, Copy)]
pub struct ItemHeader {
    pub kind: u8,
    pub size: usize,
}

/// Reads a parameter or object header from `bytes` and returns it with the item's
/// body, checked to lie within `bytes`. `large_flag` is the type bit that selects
/// the 8-byte form (the same bit, 0x40, for DT_* and XT_*).
pub fn split_item<'a>(
    bytes: &'a [u8],
    large_flag: u8,
    what: &'static str,
) -> Result<(ItemHeader, &'a [u8]), QapError> {
    need(bytes, 4, what)?;
    let w0 = word(bytes, 0);
    let ty = low_u8(w0);
    let mut len = u64::from(w0 >> 8);
    let mut size = 4;
    if ty & large_flag != 0 {
        need(bytes, 8, what)?;
        len |= u64::from(word(bytes, 4)) << 24;
        size = 8;
    }
    let rest = &bytes[size..];
    need(rest, len, what)?;
    // `need` proved len <= rest.len(), so it fits in usize.
    let body = &rest[..len as usize];
    let head = ItemHeader {
        kind: ty & !large_flag,
        size,
    };
    Ok((head, body))
}

/// Writes an item header: small when `len` fits, else the 8-byte form.
pub fn push_item_header(out: &mut Vec<u8>, ty: u8, large_flag: u8, len: u64) {
    if len > LARGE_THRESHOLD {
        push_large_header(out, ty | large_flag, len);
    } else {
        push_small_header(out, ty, len);
    }
}

pub fn small_header(ty: u8, len: u64) -> [u8; 4] {
    ((low_u32(len & SMALL_MAX) << 8) | u32::from(ty)).to_le_bytes()
}

pub fn large_header(ty: u8, len: u64) -> [u8; 8] {
    let mut b = [0; 8];
    b[..4].copy_from_slice(&small_header(ty, len));
    b[4..].copy_from_slice(&low_u32(len >> 24).to_le_bytes());
    b
}

fn push_small_header(out: &mut Vec<u8>, ty: u8, len: u64) {
    out.extend_from_slice(&small_header(ty, len));
}

fn push_large_header(out: &mut Vec<u8>, ty: u8, len: u64) {
    out.extend_from_slice(&large_header(ty, len));
}

/// Fails with [`QapError::Truncated`] unless `bytes` holds at least `n` bytes.
pub fn need(bytes: &[u8], n: u64, what: &'static str) -> Result<(), QapError> {
    let have = bytes.len() as u64;
    if n > have {
        return Err(QapError::Truncated {
            what,
            need: n,
            have,
        });
    }
    Ok(())
}

/// The little-endian u32 at `at`; callers have checked `at + 4 <= b.len()`.
pub fn word(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

pub fn align4(n: usize) -> usize {
    n.div_ceil(4) * 4
}

/// The low 32 bits of `x` (truncation intended).
fn low_u32(x: u64) -> u32 {
    (x & 0xffff_ffff) as u32
}

/// The low 8 bits of `x` (truncation intended).
fn low_u8(x: u32) -> u8 {
    (x & 0xff) as u8
}

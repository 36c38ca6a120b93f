//! Parent <-> worker messages: the request and response types, their framing on a
//! Unix stream socket, and how a value travels as a [`Payload`].
//!
//! Owns the wire format. It must not know about processes, slots or R: the pool and
//! the worker loop decide when to send what; this module only turns messages into
//! bytes and back, and never panics on what the peer sends.
//!
//! ```text
//! frame   = len u32 LE (<= MAX_FRAME_LEN), postcard(Request | Response)
//! Payload = Inline(codec bytes)            small values, inside the frame
//!         | Shared { offset, len }         codec bytes in the worker's ShmRegion
//! ```
//!
//! Frames need a byte stream (`SOCK_STREAM`, e.g. `UnixStream::pair`): on a
//! `SOCK_SEQPACKET` socket, reading the 4-byte prefix would discard the rest of the
//! packet. They also need blocking reads: an error (a timeout included) in the middle
//! of a frame leaves the stream out of step, so treat any [`ProtocolError::Io`] as the
//! end of the connection. Shared payloads follow the turn-taking contract of [`crate::shm`]: the
//! sender calls [`ShmRegion::reset`] and writes its payloads before sending the
//! message; the receiver takes every payload before it replies.
#![cfg_attr(
    not(test),
    expect(dead_code, reason = "used by the worker pool (next milestone)")
)]

use std::io::{self, Read, Write};
use std::ops::Range;

use rookery_ffi::value::codec::{self, CodecError};
use rookery_ffi::{Output, Value};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::shm::{ShmError, ShmRegion};

/// The largest frame body either side writes or accepts: 64 MiB.
pub const MAX_FRAME_LEN: usize = 64 << 20;
/// Values whose codec bytes are at most this long travel inside the frame: 64 KiB.
pub const DEFAULT_INLINE_LIMIT: usize = 64 << 10;
/// The most a frame read reserves up front; bigger bodies grow as bytes arrive, so a
/// peer that announces a large frame and stops sending costs little memory.
const READ_RESERVE: usize = 1 << 20;

/// Parent -> worker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Request {
    /// Parse and evaluate `code` in the global environment.
    Eval {
        id: u64,
        code: String,
    },
    /// Call `function` with `args`; an empty name is a positional argument.
    Call {
        id: u64,
        function: String,
        args: Vec<(String, Payload)>,
    },
    /// Bind `name` to `value` in the global environment.
    Assign {
        id: u64,
        name: String,
        value: Payload,
    },
    /// The value bound to `name`.
    Get {
        id: u64,
        name: String,
    },
    /// Wipe the global environment and session state before the next user.
    Reset {
        id: u64,
    },
    Ping {
        id: u64,
    },
    /// Exit the worker; no response.
    Shutdown,
}

/// Worker -> parent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Response {
    Ok {
        id: u64,
        value: Payload,
        output: Output,
    },
    Err {
        id: u64,
        error: rookery_ffi::Error,
    },
    Pong {
        id: u64,
        pid: u32,
        rss_kb: u64,
    },
    /// Sent once, when the worker is ready for its first request.
    Ready {
        pid: u32,
    },
}

/// A value's codec bytes, inline or in the shared region.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Payload {
    Inline(#[serde(with = "inline_bytes")] Vec<u8>),
    Shared { offset: u64, len: u64 },
}

/// Why a message could not be sent or received.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProtocolError {
    /// The socket failed, or a frame was cut short (`UnexpectedEof`).
    #[error("socket I/O failed: {0}")]
    Io(#[from] io::Error),
    /// The peer closed the connection cleanly between frames.
    #[error("the peer closed the connection")]
    Closed,
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    FrameTooLarge { len: u64, max: usize },
    #[error("cannot encode a message: {0}")]
    Encode(postcard::Error),
    #[error("malformed message: {0}")]
    Decode(postcard::Error),
    #[error("malformed value: {0}")]
    Codec(#[from] CodecError),
    #[error(
        "shared payload of {len} bytes at offset {offset} is outside the {capacity}-byte region"
    )]
    ShmOutOfRange {
        offset: u64,
        len: u64,
        capacity: usize,
    },
    #[error(transparent)]
    Shm(#[from] ShmError),
}

/// A type that travels in a frame: [`Request`] or [`Response`].
pub trait Message: Serialize + DeserializeOwned + sealed::Sealed {}
impl Message for Request {}
impl Message for Response {}

mod sealed {
    pub trait Sealed {}
    impl Sealed for super::Request {}
    impl Sealed for super::Response {}
}

impl Request {
    /// The id the response will carry (`None` for [`Request::Shutdown`]).
    pub fn id(&self) -> Option<u64> {
        match self {
            Request::Eval { id, .. }
            | Request::Call { id, .. }
            | Request::Assign { id, .. }
            | Request::Get { id, .. }
            | Request::Reset { id }
            | Request::Ping { id } => Some(*id),
            Request::Shutdown => None,
        }
    }
}

impl Response {
    /// The id of the request this answers (`None` for [`Response::Ready`]).
    pub fn id(&self) -> Option<u64> {
        match self {
            Response::Ok { id, .. } | Response::Err { id, .. } | Response::Pong { id, .. } => {
                Some(*id)
            }
            Response::Ready { .. } => None,
        }
    }
}

impl std::fmt::Debug for Payload {
    /// Lengths only: a payload's bytes are not worth printing.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Payload::Inline(bytes) => write!(f, "Inline({} bytes)", bytes.len()),
            Payload::Shared { offset, len } => write!(f, "Shared({len} bytes at {offset})"),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Framing
// ---------------------------------------------------------------------------------------

/// Writes `msg` as one frame with a single `write_all`.
pub fn write_frame<M: Message>(w: &mut impl Write, msg: &M) -> Result<(), ProtocolError> {
    write_frame_max(w, msg, MAX_FRAME_LEN)
}

/// Reads one frame. [`ProtocolError::Closed`] if the peer hung up between frames.
pub fn read_frame<M: Message>(r: &mut impl Read) -> Result<M, ProtocolError> {
    read_frame_max(r, MAX_FRAME_LEN)
}

fn write_frame_max<M: Message>(
    w: &mut impl Write,
    msg: &M,
    max: usize,
) -> Result<(), ProtocolError> {
    let mut frame = postcard::to_extend(msg, vec![0; 4]).map_err(ProtocolError::Encode)?;
    let len = frame.len() - 4;
    let prefix = u32::try_from(len).ok().filter(|_| len <= max);
    let prefix = prefix.ok_or(ProtocolError::FrameTooLarge {
        len: len as u64,
        max,
    })?;
    frame[..4].copy_from_slice(&prefix.to_le_bytes());
    w.write_all(&frame)?;
    Ok(w.flush()?)
}

fn read_frame_max<M: Message>(r: &mut impl Read, max: usize) -> Result<M, ProtocolError> {
    let len = read_prefix(r)?.ok_or(ProtocolError::Closed)?;
    if usize::try_from(len).map_or(true, |len| len > max) {
        return Err(ProtocolError::FrameTooLarge {
            len: len.into(),
            max,
        });
    }
    let body = read_body(r, len as usize)?;
    let (msg, rest) = postcard::take_from_bytes(&body).map_err(ProtocolError::Decode)?;
    match rest.is_empty() {
        true => Ok(msg),
        false => Err(ProtocolError::Decode(
            postcard::Error::DeserializeBadEncoding,
        )),
    }
}

/// The length prefix, or `None` on a clean end of stream before its first byte.
fn read_prefix(r: &mut impl Read) -> Result<Option<u32>, ProtocolError> {
    let mut prefix = [0u8; 4];
    let mut filled = 0;
    while filled < prefix.len() {
        match r.read(&mut prefix[filled..]) {
            Ok(0) if filled == 0 => return Ok(None),
            Ok(0) => return Err(truncated(filled, prefix.len()).into()),
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(Some(u32::from_le_bytes(prefix)))
}

fn read_body(r: &mut impl Read, len: usize) -> io::Result<Vec<u8>> {
    let mut body = Vec::with_capacity(len.min(READ_RESERVE));
    r.take(len as u64).read_to_end(&mut body)?;
    match body.len() == len {
        true => Ok(body),
        false => Err(truncated(body.len(), len)),
    }
}

fn truncated(got: usize, wanted: usize) -> io::Error {
    let msg = format!("frame cut short: {got} of {wanted} bytes");
    io::Error::new(io::ErrorKind::UnexpectedEof, msg)
}

// ---------------------------------------------------------------------------------------
// Payloads
// ---------------------------------------------------------------------------------------

/// Encodes `value` inline if its codec bytes fit in `inline_limit`, otherwise into
/// `region` after the payloads already reserved there (growing it if needed).
pub fn put_value(
    value: &Value,
    region: &mut ShmRegion,
    inline_limit: usize,
) -> Result<Payload, ProtocolError> {
    let len = codec::encoded_len(value);
    if len <= inline_limit {
        let mut bytes = Vec::with_capacity(len);
        codec::encode(value, &mut bytes);
        return Ok(Payload::Inline(bytes));
    }
    let offset = region.alloc(len)?;
    codec::encode_into(value, &mut region.as_mut_slice()[offset..offset + len]);
    Ok(Payload::Shared {
        offset: offset as u64,
        len: len as u64,
    })
}

/// Decodes the value `payload` names, remapping `region` first if the peer grew it.
pub fn take_value(payload: &Payload, region: &mut ShmRegion) -> Result<Value, ProtocolError> {
    match payload {
        Payload::Inline(bytes) => Ok(codec::decode(bytes)?),
        Payload::Shared { offset, len } => {
            let range = shared_range(*offset, *len, region)?;
            Ok(codec::decode(&region.as_slice()[range])?)
        }
    }
}

/// The in-bounds byte range of a shared payload, after any remap it needs.
fn shared_range(
    offset: u64,
    len: u64,
    region: &mut ShmRegion,
) -> Result<Range<usize>, ProtocolError> {
    let out_of_range = |region: &ShmRegion| ProtocolError::ShmOutOfRange {
        offset,
        len,
        capacity: region.capacity(),
    };
    let end = offset
        .checked_add(len)
        .and_then(|end| usize::try_from(end).ok());
    let Some(end) = end else {
        return Err(out_of_range(region));
    };
    match region.remap_if_needed(end) {
        Ok(_) => Ok(end - len as usize..end),
        Err(ShmError::Short { .. } | ShmError::TooLarge { .. }) => Err(out_of_range(region)),
        Err(e) => Err(e.into()),
    }
}

// ---------------------------------------------------------------------------------------
// Conversions
// ---------------------------------------------------------------------------------------

/// `Vec<u8>` as one serde byte string (length + raw bytes), not a sequence of u8s.
mod inline_bytes {
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(bytes)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        d.deserialize_byte_buf(ByteBuf)
    }

    struct ByteBuf;

    impl serde::de::Visitor<'_> for ByteBuf {
        type Value = Vec<u8>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a byte string")
        }
        fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
            Ok(v.to_vec())
        }
        fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
            Ok(v)
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::net::UnixStream;
    use std::time::Instant;

    use rookery_ffi::Warning;

    use super::*;

    fn inline(value: &Value) -> Payload {
        let mut bytes = Vec::new();
        codec::encode(value, &mut bytes);
        Payload::Inline(bytes)
    }

    fn every_request() -> Vec<Request> {
        let x = inline(&Value::doubles(vec![1.0, 2.5]));
        let args = vec![
            (String::new(), x.clone()),
            ("na.rm".into(), Payload::Shared { offset: 8, len: 40 }),
        ];
        vec![
            Request::Eval {
                id: 1,
                code: "x <- 1:10; mean(x) # ünïcode".into(),
            },
            Request::Call {
                id: 2,
                function: "sum".into(),
                args,
            },
            Request::Assign {
                id: 3,
                name: "x".into(),
                value: x,
            },
            Request::Get {
                id: 4,
                name: "x".into(),
            },
            Request::Reset { id: 5 },
            Request::Ping { id: u64::MAX },
            Request::Shutdown,
        ]
    }

    fn some_output() -> Output {
        let warning = Warning {
            message: "NAs introduced".into(),
            call: Some("f()".into()),
        };
        Output {
            stdout: "[1] 1\n".into(),
            stderr: "oops\n".into(),
            warnings: vec![warning],
        }
    }

    fn every_response() -> Vec<Response> {
        let error = r_error();
        vec![
            Response::Ok {
                id: 1,
                value: inline(&Value::scalar_int(3)),
                output: some_output(),
            },
            Response::Ok {
                id: 2,
                value: Payload::Shared {
                    offset: 0,
                    len: 8_000_024,
                },
                output: Output::default(),
            },
            Response::Err { id: 3, error },
            Response::Err {
                id: 4,
                error: rookery_ffi::Error::Parse {
                    message: "unexpected ')'".into(),
                    line: 2,
                },
            },
            Response::Pong {
                id: 5,
                pid: 4242,
                rss_kb: 123_456,
            },
            Response::Ready { pid: 4242 },
        ]
    }

    fn r_error() -> rookery_ffi::Error {
        rookery_ffi::Error::R {
            message: "boom".into(),
            call: Some("stop(\"boom\")".into()),
            classes: vec!["simpleError".into(), "error".into(), "condition".into()],
            output: Box::new(some_output()),
        }
    }

    fn round_trip<M: Message + PartialEq + std::fmt::Debug>(messages: &[M]) {
        let (mut a, mut b) = UnixStream::pair().unwrap();
        for msg in messages {
            write_frame(&mut a, msg).unwrap();
        }
        drop(a);
        for msg in messages {
            assert_eq!(&read_frame::<M>(&mut b).unwrap(), msg);
        }
        assert!(matches!(
            read_frame::<M>(&mut b),
            Err(ProtocolError::Closed)
        ));
    }

    #[test]
    fn every_request_round_trips_through_a_socket() {
        round_trip(&every_request());
    }

    #[test]
    fn every_response_round_trips_through_a_socket() {
        round_trip(&every_response());
    }

    #[test]
    fn ids_match_requests_to_responses() {
        let ids: Vec<_> = every_request().iter().map(Request::id).collect();
        assert_eq!(
            ids,
            [
                Some(1),
                Some(2),
                Some(3),
                Some(4),
                Some(5),
                Some(u64::MAX),
                None
            ]
        );
        let ids: Vec<_> = every_response().iter().map(Response::id).collect();
        assert_eq!(ids, [Some(1), Some(2), Some(3), Some(4), Some(5), None]);
    }

    #[test]
    fn an_oversized_prefix_is_rejected_before_reading_the_body() {
        // Only the prefix is on the socket and the writer stays open: reading the
        // body (or allocating for it) would block or fail differently.
        let (mut a, mut b) = UnixStream::pair().unwrap();
        a.write_all(&u32::MAX.to_le_bytes()).unwrap();
        let err = read_frame::<Request>(&mut b).unwrap_err();
        assert!(matches!(
            err,
            ProtocolError::FrameTooLarge {
                len: 4_294_967_295,
                max: MAX_FRAME_LEN
            }
        ));
        let err = read_frame_max::<Request>(&mut &[11u8, 0, 0, 0][..], 10).unwrap_err();
        assert!(matches!(
            err,
            ProtocolError::FrameTooLarge { len: 11, max: 10 }
        ));
    }

    #[test]
    fn an_oversized_message_is_not_written() {
        let msg = Request::Eval {
            id: 1,
            code: "x".repeat(100),
        };
        let mut out = Vec::new();
        let err = write_frame_max(&mut out, &msg, 50).unwrap_err();
        assert!(matches!(err, ProtocolError::FrameTooLarge { max: 50, .. }));
        assert!(out.is_empty());
    }

    #[test]
    fn a_truncated_frame_is_an_error() {
        let mut frame = Vec::new();
        write_frame(
            &mut frame,
            &Request::Eval {
                id: 7,
                code: "1 + 1".into(),
            },
        )
        .unwrap();
        for cut in [1, 3, 4, frame.len() - 1] {
            let err = read_frame::<Request>(&mut &frame[..cut]).unwrap_err();
            let ProtocolError::Io(e) = err else {
                panic!("cut at {cut}: {err:?}")
            };
            assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
        }
    }

    #[test]
    fn garbage_bodies_are_decode_errors_not_panics() {
        let bodies: [&[u8]; 4] = [&[], &[200], &[0, 1, 0xff, 0xff, 0xff, 0xff, 0x0f], &[6, 0]];
        for body in bodies {
            let mut frame = (body.len() as u32).to_le_bytes().to_vec();
            frame.extend_from_slice(body);
            let err = read_frame::<Request>(&mut &frame[..]).unwrap_err();
            assert!(matches!(err, ProtocolError::Decode(_)), "{body:?}: {err:?}");
        }
    }

    #[test]
    fn every_ffi_error_survives_a_frame() {
        let all = [
            r_error(),
            rookery_ffi::Error::Interrupted {
                output: Box::default(),
            },
            rookery_ffi::Error::Unsupported {
                r_type: "closure".into(),
            },
            rookery_ffi::Error::InvalidValue("dim".into()),
            rookery_ffi::Error::Alloc("8 GB".into()),
            rookery_ffi::Error::AlreadyStarted,
            rookery_ffi::Error::Startup("no R_HOME".into()),
            rookery_ffi::Error::Parse {
                message: "eof".into(),
                line: 1,
            },
        ];
        for error in all {
            let mut frame = Vec::new();
            write_frame(
                &mut frame,
                &Response::Err {
                    id: 9,
                    error: error.clone(),
                },
            )
            .unwrap();
            match read_frame::<Response>(&mut &frame[..]).unwrap() {
                Response::Err { id: 9, error: back } => assert_eq!(back, error),
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn small_values_go_inline_and_large_ones_shared() {
        let mut region = ShmRegion::create(4096).unwrap();
        let small = Value::strings(["a", "b"]);
        let payload = put_value(&small, &mut region, DEFAULT_INLINE_LIMIT).unwrap();
        assert!(matches!(payload, Payload::Inline(_)));
        assert_eq!(take_value(&payload, &mut region).unwrap(), small);
        let large = Value::integers(vec![7; 20_000]);
        let payload = put_value(&large, &mut region, DEFAULT_INLINE_LIMIT).unwrap();
        assert_eq!(format!("{payload:?}"), "Shared(80024 bytes at 0)");
        assert_eq!(take_value(&payload, &mut region).unwrap(), large);
    }

    #[test]
    fn call_args_get_distinct_shared_offsets() {
        let mut parent = ShmRegion::create(4096).unwrap();
        let values = [
            Value::doubles(vec![1.5; 1000]),
            Value::scalar_int(1),
            Value::integers(vec![2; 3000]),
        ];
        let args: Vec<_> = values
            .iter()
            .map(|v| ("".to_owned(), put_value(v, &mut parent, 0).unwrap()))
            .collect();
        let (mut a, mut b) = UnixStream::pair().unwrap();
        write_frame(
            &mut a,
            &Request::Call {
                id: 9,
                function: "c".into(),
                args,
            },
        )
        .unwrap();
        let mut worker =
            ShmRegion::from_fd(parent.fd().try_clone_to_owned().unwrap(), 4096).unwrap();
        let Request::Call { args, .. } = read_frame(&mut b).unwrap() else {
            panic!("not a call")
        };
        let got: Vec<_> = args
            .iter()
            .map(|(_, p)| take_value(p, &mut worker).unwrap())
            .collect();
        assert_eq!(got, values);
    }

    #[test]
    fn a_million_doubles_cross_shared_memory_both_ways_with_grow_and_remap() {
        let mut parent = ShmRegion::create(1 << 20).unwrap();
        let fd = parent.fd().try_clone_to_owned().unwrap();
        let mut worker = ShmRegion::from_fd(fd, parent.capacity()).unwrap();
        let (mut parent_end, mut worker_end) = UnixStream::pair().unwrap();

        let x = Value::doubles((0..1_000_000).map(f64::from).collect::<Vec<_>>());
        let value = put_value(&x, &mut parent, DEFAULT_INLINE_LIMIT).unwrap();
        assert_eq!(parent.capacity(), 8 << 20);
        write_frame(
            &mut parent_end,
            &Request::Assign {
                id: 1,
                name: "x".into(),
                value,
            },
        )
        .unwrap();

        let Request::Assign { value, .. } = read_frame(&mut worker_end).unwrap() else {
            panic!()
        };
        assert_eq!(take_value(&value, &mut worker).unwrap(), x);
        assert_eq!(worker.capacity(), 8 << 20);

        worker.reset();
        let y = Value::doubles(vec![-0.5; 2_000_000])
            .with_attr("dim", Value::integers(vec![1000, 2000]));
        let value = put_value(&y, &mut worker, DEFAULT_INLINE_LIMIT).unwrap();
        assert_eq!(worker.capacity(), 16 << 20);
        write_frame(
            &mut worker_end,
            &Response::Ok {
                id: 1,
                value,
                output: Output::default(),
            },
        )
        .unwrap();

        let Response::Ok { value, .. } = read_frame(&mut parent_end).unwrap() else {
            panic!()
        };
        assert_eq!(take_value(&value, &mut parent).unwrap(), y);
        assert_eq!(parent.capacity(), 16 << 20);
    }

    #[test]
    fn out_of_range_shared_payloads_are_rejected() {
        let mut region = ShmRegion::create(4096).unwrap();
        let cases = [
            (4096, 1),
            (4000, 200),
            (u64::MAX, 2),
            (0, u64::MAX),
            (1 << 40, 8),
        ];
        for (offset, len) in cases {
            let err = take_value(&Payload::Shared { offset, len }, &mut region).unwrap_err();
            assert!(
                matches!(err, ProtocolError::ShmOutOfRange { capacity: 4096, .. }),
                "{err:?}"
            );
        }
        assert_eq!(region.capacity(), 4096);
        let err = take_value(&Payload::Shared { offset: 0, len: 16 }, &mut region).unwrap_err();
        assert!(matches!(err, ProtocolError::Codec(_)));
    }

    #[test]
    fn a_value_over_the_region_maximum_is_a_clear_error() {
        let mut region = ShmRegion::create(4096).unwrap();
        region.set_max_capacity(1 << 16);
        let err = put_value(&Value::doubles(vec![0.0; 10_000]), &mut region, 0).unwrap_err();
        assert!(matches!(
            err,
            ProtocolError::Shm(ShmError::TooLarge { max: 65_536, .. })
        ));
        assert!(err
            .to_string()
            .contains("exceeds the maximum of 65536 bytes"));
    }

    /// Run with `cargo test --release -p rookery-engine --lib -- --ignored --nocapture`.
    #[test]
    #[ignore = "timing, not a check"]
    fn time_a_million_doubles_through_shared_memory() {
        let mut parent = ShmRegion::create(16 << 20).unwrap();
        let mut worker =
            ShmRegion::from_fd(parent.fd().try_clone_to_owned().unwrap(), 16 << 20).unwrap();
        let x = Value::doubles((0..1_000_000).map(f64::from).collect::<Vec<_>>());
        for round in 0..5 {
            parent.reset();
            let start = Instant::now();
            let payload = put_value(&x, &mut parent, DEFAULT_INLINE_LIMIT).unwrap();
            let put = start.elapsed();
            let y = take_value(&payload, &mut worker).unwrap();
            let total = start.elapsed();
            assert_eq!(y.len(), 1_000_000);
            eprintln!("round {round}: put {put:?}, put+take {total:?}");
        }
    }
}

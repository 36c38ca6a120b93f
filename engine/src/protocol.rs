//! Parent <-> worker messages: the request and response types, how they become frames
//! in the worker's shared-memory region, and how a value travels as a [`Payload`].
//!
//! Owns the wire format. It must not know about processes, slots or R: the pool and
//! the worker loop decide when to send what; this module only turns messages into
//! bytes and back, and never panics on what the peer sends.
//!
//! ```text
//! frame   = postcard(Request | Response), at most MAX_FRAME_LEN bytes, written into
//!           the worker's ShmRegion and handed over as (offset, len)
//! Payload = Inline(codec bytes)            small values, inside the frame
//!         | Shared { offset, len }         codec bytes in the worker's ShmRegion
//! ```
//!
//! A frame has no length prefix: [`put_frame`] writes the message into the region after
//! the payloads already reserved there and returns its `(offset, len)`, which
//! [`crate::channel`] publishes in the [`crate::mailbox`] control page; the peer reads
//! that pair and decodes the same bytes with [`take_frame`]. No frame crosses the Unix
//! socket: it only carries doorbell bytes that wake a sleeping receiver, and its EOF is
//! the sign that the peer is gone. Frames and shared payloads follow the turn-taking
//! contract of [`crate::shm`]: the sender calls [`ShmRegion::reset`], writes its
//! payloads and then its frame before publishing it; the receiver takes the frame and
//! every payload it names before it replies.

use std::io;
use std::ops::Range;

use rookery_ffi::value::codec::{self, CodecError};
use rookery_ffi::{Output, Value};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::shm::{ShmError, ShmRegion};

/// The largest frame either side writes or accepts: 64 MiB.
pub const MAX_FRAME_LEN: usize = 64 << 20;
/// Values whose codec bytes are at most this long travel inside the frame: 64 KiB.
pub const DEFAULT_INLINE_LIMIT: usize = 64 << 10;

/// Parent -> worker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Request {
    /// Bind `bindings` where the call evaluates, then parse and evaluate `code`
    /// there (one trip for what would be an assign and an eval; the code may remove
    /// the bindings itself).
    Eval {
        id: u64,
        code: String,
        bindings: Vec<(String, Payload)>,
        /// The largest result the caller takes, in bytes (0: no cap); see
        /// `rookery_ffi::Error::ResultTooLarge`.
        max_result: u64,
    },
    /// Call `function` with `args`; an empty name is a positional argument.
    Call {
        id: u64,
        function: String,
        args: Vec<(String, Payload)>,
        max_result: u64,
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
        max_result: u64,
    },
    /// Start a session: from now on every request evaluates in one environment that
    /// persists until [`Request::Reset`]: R's global environment when `global` (a
    /// worker that serves this session alone, as Rserve's process per connection),
    /// else a private one (a worker that goes back to the pool afterwards).
    Open { id: u64, global: bool },
    /// End the session (or nothing, in stateless mode): drop its environment and check
    /// that the worker is still pristine; the answer says whether it must retire.
    Reset { id: u64 },
    /// Lock the worker in (identity, Landlock, seccomp, limits) and move it to its
    /// job's folder and temp dir. Irreversible: the worker serves only that job.
    Confine {
        id: u64,
        spec: Box<crate::confine::Confinement>,
    },
    /// Serve the QAP1 socket just handed over (`Channel::send_fd`) until a message
    /// needs the server, the client leaves, or notes are due (QAP1 direct mode, see
    /// [`crate::qap::direct`]). Answered with [`Response::Qap`].
    ServeQap {
        id: u64,
        options: crate::qap::direct::QapServe,
    },
    /// The answer to [`Response::Oob`], while the call that sent it waits: the
    /// client's reply for an `oobMessage` (`Some`), `None` once an `oobSend` is out,
    /// or why it did not get through.
    OobReply {
        id: u64,
        reply: Result<Option<Payload>, OobRefusal>,
    },
    /// Exit the worker; no response.
    Shutdown,
}

/// Why an OOB message from R code did not get through (see [`Request::OobReply`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OobRefusal {
    /// The client is gone (an `oobSend` then returns FALSE, as on Rserve).
    pub gone: bool,
    pub message: String,
}

/// Worker -> parent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Response {
    Ok {
        id: u64,
        value: Payload,
        /// R's visibility flag (`x <- 1` is invisible).
        visible: bool,
        output: Output,
        /// Set when the worker must not serve another caller, with the reason.
        retire: Option<String>,
    },
    Err {
        id: u64,
        error: rookery_ffi::Error,
        retire: Option<String>,
    },
    /// Sent once, when the worker is ready for its first request.
    Ready { pid: u32 },
    /// The answer to [`Request::ServeQap`]. A handed-back message's bytes travel in
    /// `message` (raw, inline or in the region), its command in `turn`.
    Qap {
        id: u64,
        turn: QapTurnWire,
        notes: Vec<crate::qap::direct::QapNote>,
        requests: u64,
    },
    /// R code of request `id`, still running, sends its client a message (Rserve's
    /// `self.oobSend`, or `self.oobMessage` when `message`) with a 12-bit user
    /// `code`; the worker waits for [`Request::OobReply`].
    Oob {
        id: u64,
        message: bool,
        code: u32,
        value: Payload,
    },
}

/// [`crate::qap::direct::QapTurn`] as it crosses the link.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum QapTurnWire {
    Message { command: u32, payload: Payload },
    Closed { reason: String },
    Notes,
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
    /// Ringing or waiting on the doorbell socket failed.
    #[error("socket I/O failed: {0}")]
    Io(#[from] io::Error),
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

/// A type that travels as a frame: [`Request`] or [`Response`].
pub trait Message: Serialize + DeserializeOwned + sealed::Sealed {}
impl Message for Request {}
impl Message for Response {}

mod sealed {
    pub trait Sealed {}
    impl Sealed for super::Request {}
    impl Sealed for super::Response {}
}

impl Request {
    /// The id the response will carry (`None` for [`Request::Shutdown`]); OOB
    /// messages of the call name it.
    pub fn id(&self) -> Option<u64> {
        match self {
            Request::Eval { id, .. }
            | Request::Call { id, .. }
            | Request::Assign { id, .. }
            | Request::Get { id, .. }
            | Request::Open { id, .. }
            | Request::Reset { id }
            | Request::Confine { id, .. }
            | Request::ServeQap { id, .. }
            | Request::OobReply { id, .. } => Some(*id),
            Request::Shutdown => None,
        }
    }
}

impl Response {
    /// The id of the request this answers (`None` for [`Response::Ready`]).
    pub fn id(&self) -> Option<u64> {
        match self {
            Response::Ok { id, .. }
            | Response::Err { id, .. }
            | Response::Qap { id, .. }
            | Response::Oob { id, .. } => Some(*id),
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
// Payloads and frames
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

/// Places raw `bytes` inline if they fit in `inline_limit`, otherwise into `region`
/// (see [`put_value`]).
pub fn put_bytes(
    bytes: &[u8],
    region: &mut ShmRegion,
    inline_limit: usize,
) -> Result<Payload, ProtocolError> {
    if bytes.len() <= inline_limit {
        return Ok(Payload::Inline(bytes.to_vec()));
    }
    let offset = region.alloc(bytes.len())?;
    region.as_mut_slice()[offset..offset + bytes.len()].copy_from_slice(bytes);
    Ok(Payload::Shared {
        offset: offset as u64,
        len: bytes.len() as u64,
    })
}

/// The raw bytes `payload` names (see [`put_bytes`]).
pub fn take_bytes(payload: Payload, region: &mut ShmRegion) -> Result<Vec<u8>, ProtocolError> {
    match payload {
        Payload::Inline(bytes) => Ok(bytes),
        Payload::Shared { offset, len } => {
            let range = shared_range(offset, len, region)?;
            let bytes = region.as_slice()[range.clone()].to_vec();
            region.release(range);
            Ok(bytes)
        }
    }
}

/// Decodes the value `payload` names, remapping `region` first if the peer grew it.
pub fn take_value(payload: &Payload, region: &mut ShmRegion) -> Result<Value, ProtocolError> {
    match payload {
        Payload::Inline(bytes) => Ok(codec::decode(bytes)?),
        Payload::Shared { offset, len } => {
            let range = shared_range(*offset, *len, region)?;
            let value = codec::decode(&region.as_slice()[range.clone()]);
            // A large payload's pages leave this process's RSS once it is decoded.
            region.release(range);
            Ok(value?)
        }
    }
}

/// Writes `msg` into `region` after the payloads already reserved there and returns
/// its `(offset, len)`, for a [`crate::mailbox::Mailbox`] to hand over.
pub fn put_frame<M: Message>(msg: &M, region: &mut ShmRegion) -> Result<(u64, u64), ProtocolError> {
    let bytes = postcard::to_allocvec(msg).map_err(ProtocolError::Encode)?;
    if bytes.len() > MAX_FRAME_LEN {
        return Err(ProtocolError::FrameTooLarge {
            len: bytes.len() as u64,
            max: MAX_FRAME_LEN,
        });
    }
    let offset = region.alloc(bytes.len())?;
    region.as_mut_slice()[offset..offset + bytes.len()].copy_from_slice(&bytes);
    Ok((offset as u64, bytes.len() as u64))
}

/// Decodes the message the peer wrote at `(offset, len)` of `region`, remapping it
/// first if the peer grew it. Rejects a `len` over [`MAX_FRAME_LEN`], a range outside
/// the region, and bytes that are not exactly one message.
pub fn take_frame<M: Message>(
    offset: u64,
    len: u64,
    region: &mut ShmRegion,
) -> Result<M, ProtocolError> {
    if len > MAX_FRAME_LEN as u64 {
        return Err(ProtocolError::FrameTooLarge {
            len,
            max: MAX_FRAME_LEN,
        });
    }
    let range = shared_range(offset, len, region)?;
    let (msg, rest) =
        postcard::take_from_bytes(&region.as_slice()[range]).map_err(ProtocolError::Decode)?;
    match rest.is_empty() {
        true => Ok(msg),
        false => Err(ProtocolError::Decode(
            postcard::Error::DeserializeBadEncoding,
        )),
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
    use std::time::Instant;

    use rookery_ffi::Warning;

    use super::*;

    /// The worker's mapping of the parent's region.
    fn peer_of(region: &ShmRegion) -> ShmRegion {
        let fd = region.fd().try_clone_to_owned().unwrap();
        ShmRegion::from_fd(fd, region.capacity()).unwrap()
    }

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
                bindings: Vec::new(),
                max_result: 0,
            },
            Request::Call {
                id: 2,
                function: "sum".into(),
                args,
                max_result: 0,
            },
            Request::Assign {
                id: 3,
                name: "x".into(),
                value: x,
            },
            Request::Get {
                id: 4,
                name: "x".into(),
                max_result: 0,
            },
            Request::Open {
                id: 5,
                global: true,
            },
            Request::Reset { id: u64::MAX },
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
                visible: true,
                output: some_output(),
                retire: None,
            },
            Response::Ok {
                id: 2,
                value: Payload::Shared {
                    offset: 0,
                    len: 8_000_024,
                },
                visible: false,
                output: Output::default(),
                retire: Some("options() changed".into()),
            },
            Response::Err {
                id: 3,
                error,
                retire: None,
            },
            Response::Err {
                id: 4,
                error: rookery_ffi::Error::Parse {
                    message: "unexpected ')'".into(),
                    line: 2,
                },
                retire: Some("search path changed".into()),
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

    /// Writes every message into `sender`'s side of a region, one after the other as
    /// payloads of one turn would be, and takes each back through `receiver`.
    fn round_trip<M: Message + PartialEq + std::fmt::Debug>(
        messages: &[M],
        sender: &mut ShmRegion,
        receiver: &mut ShmRegion,
    ) {
        sender.reset();
        let frames: Vec<_> = messages
            .iter()
            .map(|msg| put_frame(msg, sender).unwrap())
            .collect();
        for pair in frames.windows(2) {
            let ((a, a_len), (b, _)) = (pair[0], pair[1]);
            assert!(a + a_len <= b, "frames overlap: {frames:?}");
        }
        for (msg, &(offset, len)) in messages.iter().zip(&frames) {
            assert_eq!(&take_frame::<M>(offset, len, receiver).unwrap(), msg);
        }
    }

    #[test]
    fn every_request_round_trips_through_shared_memory() {
        let mut parent = ShmRegion::create(4096).unwrap();
        let mut worker = peer_of(&parent);
        round_trip(&every_request(), &mut parent, &mut worker);
    }

    #[test]
    fn every_response_round_trips_through_shared_memory() {
        let mut parent = ShmRegion::create(4096).unwrap();
        let mut worker = peer_of(&parent);
        round_trip(&every_response(), &mut worker, &mut parent);
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
        assert_eq!(ids, [Some(1), Some(2), Some(3), Some(4), None]);

        // A whole exchange: the worker answers each request with its id, in the
        // same region, and the parent matches the answer to the request.
        let mut parent = ShmRegion::create(4096).unwrap();
        let mut worker = peer_of(&parent);
        for request in every_request() {
            let Some(id) = request.id() else { continue };
            parent.reset();
            let (offset, len) = put_frame(&request, &mut parent).unwrap();
            let got: Request = take_frame(offset, len, &mut worker).unwrap();
            worker.reset();
            let answer = Response::Err {
                id: got.id().unwrap(),
                error: rookery_ffi::Error::AlreadyStarted,
                retire: None,
            };
            let (offset, len) = put_frame(&answer, &mut worker).unwrap();
            let back: Response = take_frame(offset, len, &mut parent).unwrap();
            assert_eq!(back.id(), Some(id));
        }
    }

    #[test]
    fn an_oversized_message_is_not_written() {
        let mut region = ShmRegion::create(4096).unwrap();
        let msg = Request::Eval {
            id: 1,
            code: "x".repeat(MAX_FRAME_LEN),
            bindings: Vec::new(),
            max_result: 0,
        };
        let err = put_frame(&msg, &mut region).unwrap_err();
        assert!(
            matches!(err, ProtocolError::FrameTooLarge { len, max: MAX_FRAME_LEN } if len > MAX_FRAME_LEN as u64),
            "{err:?}"
        );
        // Nothing was reserved or grown: the next frame starts at the beginning.
        assert_eq!(region.capacity(), 4096);
        assert_eq!(put_frame(&Request::Shutdown, &mut region).unwrap(), (0, 1));
    }

    #[test]
    fn a_frame_over_the_region_maximum_is_a_clear_error() {
        let mut region = ShmRegion::create(4096).unwrap();
        region.set_max_capacity(1 << 16);
        let msg = Request::Eval {
            id: 1,
            code: "x".repeat(100_000),
            bindings: Vec::new(),
            max_result: 0,
        };
        let err = put_frame(&msg, &mut region).unwrap_err();
        assert!(
            matches!(
                err,
                ProtocolError::Shm(ShmError::TooLarge { max: 65_536, .. })
            ),
            "{err:?}"
        );
    }

    #[test]
    fn an_oversized_len_is_rejected_before_mapping_anything() {
        // The file is big enough for the claimed frame, so only the length check
        // stands between a lying peer and a 64 MiB+ decode.
        let mut parent = ShmRegion::create(4096).unwrap();
        let mut worker = peer_of(&parent);
        parent.grow(128 << 20).unwrap();
        for len in [MAX_FRAME_LEN as u64 + 1, u32::MAX.into(), u64::MAX] {
            let err = take_frame::<Request>(0, len, &mut worker).unwrap_err();
            assert!(
                matches!(err, ProtocolError::FrameTooLarge { len: l, max: MAX_FRAME_LEN } if l == len),
                "{len}: {err:?}"
            );
        }
        assert_eq!(worker.capacity(), 4096);
    }

    #[test]
    fn an_out_of_range_frame_is_rejected() {
        let mut region = ShmRegion::create(4096).unwrap();
        let cases = [
            (4096, 1),
            (4000, 200),
            (u64::MAX, 2),
            (0, MAX_FRAME_LEN as u64),
            (1 << 40, 8),
        ];
        for (offset, len) in cases {
            let err = take_frame::<Response>(offset, len, &mut region).unwrap_err();
            assert!(
                matches!(err, ProtocolError::ShmOutOfRange { capacity: 4096, .. }),
                "({offset}, {len}): {err:?}"
            );
        }
        assert_eq!(region.capacity(), 4096);
    }

    #[test]
    fn a_truncated_frame_is_an_error() {
        let mut parent = ShmRegion::create(4096).unwrap();
        let mut worker = peer_of(&parent);
        let msg = Request::Eval {
            id: 7,
            code: "1 + 1".into(),
            bindings: Vec::new(),
            max_result: 0,
        };
        let (offset, len) = put_frame(&msg, &mut parent).unwrap();
        for cut in [0, 1, 2, len - 1] {
            let err = take_frame::<Request>(offset, cut, &mut worker).unwrap_err();
            assert!(
                matches!(err, ProtocolError::Decode(_)),
                "cut at {cut}: {err:?}"
            );
        }
        // A len past the end of the message leaves trailing bytes: also rejected.
        let err = take_frame::<Request>(offset, len + 1, &mut worker).unwrap_err();
        assert!(matches!(err, ProtocolError::Decode(_)), "{err:?}");
        assert_eq!(
            take_frame::<Request>(offset, len, &mut worker).unwrap(),
            msg
        );
    }

    #[test]
    fn garbage_bytes_are_decode_errors_not_panics() {
        let mut parent = ShmRegion::create(4096).unwrap();
        let mut worker = peer_of(&parent);
        // Empty; an unknown variant; a Call whose string claims ~4 GiB; Shutdown
        // followed by a stray byte.
        let bodies: [&[u8]; 4] = [&[], &[200], &[1, 1, 0xff, 0xff, 0xff, 0xff, 0x0f], &[6, 0]];
        for body in bodies {
            parent.as_mut_slice()[..body.len()].copy_from_slice(body);
            let err = take_frame::<Request>(0, body.len() as u64, &mut worker).unwrap_err();
            assert!(matches!(err, ProtocolError::Decode(_)), "{body:?}: {err:?}");
            let err = take_frame::<Response>(0, body.len() as u64, &mut worker).unwrap_err();
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
                output: Box::new(rookery_ffi::Output {
                    stdout: "printed first".into(),
                    ..Default::default()
                }),
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
        let mut parent = ShmRegion::create(4096).unwrap();
        let mut worker = peer_of(&parent);
        for error in all {
            worker.reset();
            let msg = Response::Err {
                id: 9,
                error: error.clone(),
                retire: None,
            };
            let (offset, len) = put_frame(&msg, &mut worker).unwrap();
            match take_frame::<Response>(offset, len, &mut parent).unwrap() {
                Response::Err {
                    id: 9, error: back, ..
                } => assert_eq!(back, error),
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
        let mut worker = peer_of(&parent);
        let values = [
            Value::doubles(vec![1.5; 1000]),
            Value::scalar_int(1),
            Value::integers(vec![2; 3000]),
        ];
        parent.reset();
        let args: Vec<_> = values
            .iter()
            .map(|v| ("".to_owned(), put_value(v, &mut parent, 0).unwrap()))
            .collect();
        let mut ranges: Vec<_> = args
            .iter()
            .map(|(_, p)| match p {
                Payload::Shared { offset, len } => (*offset, *len),
                Payload::Inline(_) => panic!("{p:?} is inline"),
            })
            .collect();
        let msg = Request::Call {
            id: 9,
            function: "c".into(),
            args,
            max_result: 0,
        };
        let (offset, len) = put_frame(&msg, &mut parent).unwrap();
        ranges.push((offset, len));
        for pair in ranges.windows(2) {
            let ((a, a_len), (b, _)) = (pair[0], pair[1]);
            assert!(a + a_len <= b, "overlap: {ranges:?}");
        }

        let Request::Call { args, .. } = take_frame(offset, len, &mut worker).unwrap() else {
            panic!("not a call")
        };
        assert_eq!(worker.capacity(), parent.capacity());
        let got: Vec<_> = args
            .iter()
            .map(|(_, p)| take_value(p, &mut worker).unwrap())
            .collect();
        assert_eq!(got, values);
    }

    #[test]
    fn a_million_doubles_cross_shared_memory_both_ways_with_grow_and_remap() {
        let mut parent = ShmRegion::create(1 << 20).unwrap();
        let mut worker = peer_of(&parent);

        parent.reset();
        let x = Value::doubles((0..1_000_000).map(f64::from).collect::<Vec<_>>());
        let value = put_value(&x, &mut parent, DEFAULT_INLINE_LIMIT).unwrap();
        assert_eq!(parent.capacity(), 8 << 20);
        let msg = Request::Assign {
            id: 1,
            name: "x".into(),
            value,
        };
        let (offset, len) = put_frame(&msg, &mut parent).unwrap();
        assert!(offset >= 8_000_024);

        // The frame itself lies past the worker's old mapping: taking it remaps.
        let Request::Assign { value, .. } = take_frame(offset, len, &mut worker).unwrap() else {
            panic!()
        };
        assert_eq!(worker.capacity(), 8 << 20);
        assert_eq!(take_value(&value, &mut worker).unwrap(), x);

        worker.reset();
        let y = Value::doubles(vec![-0.5; 2_000_000])
            .with_attr("dim", Value::integers(vec![1000, 2000]));
        let value = put_value(&y, &mut worker, DEFAULT_INLINE_LIMIT).unwrap();
        assert_eq!(worker.capacity(), 16 << 20);
        let msg = Response::Ok {
            id: 1,
            value,
            visible: true,
            output: Output::default(),
            retire: None,
        };
        let (offset, len) = put_frame(&msg, &mut worker).unwrap();

        let Response::Ok { value, .. } = take_frame(offset, len, &mut parent).unwrap() else {
            panic!()
        };
        assert_eq!(parent.capacity(), 16 << 20);
        assert_eq!(take_value(&value, &mut parent).unwrap(), y);
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
        let mut worker = peer_of(&parent);
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

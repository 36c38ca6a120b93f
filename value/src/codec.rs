//! The compact binary form of a [`Value`] for IPC between processes on one machine.
//!
//! Little-endian, not meant for storage or other machines. Every value starts on an
//! 8-byte boundary counted from the start of the message, so numeric payloads are
//! aligned and move with one `memcpy` each way:
//!
//! ```text
//! message = VERSION u8, 7 zero bytes, value
//! value   = tag u8, 3 zero bytes, attribute count u32, length u64,
//!           payload, attributes
//! payload = numbers: length * element size raw bytes, zero-padded to 8
//!           character: length * (byte count u32 | NA_STRING, UTF-8 bytes), padded to 8
//!           list: length * value
//!           NULL: nothing (length 0)
//! attribute = name (byte count u32, UTF-8 bytes, padded to 8), value
//! ```
//!
//! [`decode`] treats its input as hostile: every length is checked against the bytes
//! that remain before anything is allocated, nesting is capped at [`MAX_DEPTH`], strings
//! must be UTF-8, padding must be zero, trailing bytes are an error, and no input makes
//! it panic. The input slice need not be aligned. Encoding does not cap depth, so a
//! value nested deeper than [`MAX_DEPTH`] encodes but does not decode.

use std::mem::size_of;

use bytemuck::Pod;

use crate::{Attributes, Data, Value};

/// The first byte of every message: format version 1.
pub const VERSION: u8 = 0xB1;
/// The deepest nesting of lists and attributes that [`decode`] accepts.
pub const MAX_DEPTH: usize = 512;
/// The byte count that marks `NA_character_`.
const NA_STRING: u32 = u32::MAX;
const HEADER: usize = 8;
/// Tag, padding, attribute count, length.
const VALUE_HEADER: usize = 16;

/// Why bytes are not a valid message. Offsets are from the start of the message.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CodecError {
    #[error("not a value message: first byte {found:#04x}, expected {VERSION:#04x}")]
    BadVersion { found: u8 },
    #[error("truncated at byte {at}: {needed} more bytes needed")]
    Truncated { at: usize, needed: usize },
    #[error("unknown type tag {tag} at byte {at}")]
    BadTag { at: usize, tag: u8 },
    #[error("length {len} at byte {at} cannot fit in the message")]
    BadLength { at: usize, len: u64 },
    #[error("nesting deeper than {MAX_DEPTH} at byte {at}")]
    TooDeep { at: usize },
    #[error("invalid UTF-8 in the string at byte {at}")]
    InvalidUtf8 { at: usize },
    #[error("non-zero padding at byte {at}")]
    NonZeroPadding { at: usize },
    #[error("{extra} trailing bytes after the value at byte {at}")]
    TrailingBytes { at: usize, extra: usize },
}

/// Appends the message for `value` to `out`. Alignment counts from where it starts.
///
/// # Panics
/// If a string is 4 GiB or longer.
pub fn encode(value: &Value, out: &mut Vec<u8>) {
    out.reserve(encoded_len(value));
    let start = out.len();
    write_message(value, &mut VecSink { out, start });
}

/// The exact number of bytes [`encode`] and [`encode_into`] write for `value`.
pub fn encoded_len(value: &Value) -> usize {
    let mut counter = Counter(0);
    write_message(value, &mut counter);
    counter.0
}

/// Writes the message for `value` at the start of `buf`; returns the bytes written.
///
/// # Panics
/// If `buf` is shorter than [`encoded_len`]`(value)`, or a string is 4 GiB or longer.
pub fn encode_into(value: &Value, buf: &mut [u8]) -> usize {
    let needed = encoded_len(value);
    assert!(
        buf.len() >= needed,
        "buffer of {} bytes, message needs {needed}",
        buf.len()
    );
    let mut sink = SliceSink { buf, at: 0 };
    write_message(value, &mut sink);
    sink.at
}

/// Reads one message, which must fill `bytes` exactly.
pub fn decode(bytes: &[u8]) -> Result<Value, CodecError> {
    let mut r = Reader { buf: bytes, at: 0 };
    let version = r.take(1)?[0];
    if version != VERSION {
        return Err(CodecError::BadVersion { found: version });
    }
    r.zeros(HEADER - 1)?;
    let value = r.value(0)?;
    match bytes.len() - r.at {
        0 => Ok(value),
        extra => Err(CodecError::TrailingBytes { at: r.at, extra }),
    }
}

// ---------------------------------------------------------------------------------------
// Writing: one walk, three sinks, so the length is exact by construction.
// ---------------------------------------------------------------------------------------

trait Sink {
    fn put(&mut self, bytes: &[u8]);
    fn zeros(&mut self, n: usize);
    /// Bytes written since the message started.
    fn pos(&self) -> usize;
}

struct Counter(usize);

impl Sink for Counter {
    fn put(&mut self, bytes: &[u8]) {
        self.0 += bytes.len();
    }
    fn zeros(&mut self, n: usize) {
        self.0 += n;
    }
    fn pos(&self) -> usize {
        self.0
    }
}

struct VecSink<'a> {
    out: &'a mut Vec<u8>,
    start: usize,
}

impl Sink for VecSink<'_> {
    fn put(&mut self, bytes: &[u8]) {
        self.out.extend_from_slice(bytes);
    }
    fn zeros(&mut self, n: usize) {
        self.out.resize(self.out.len() + n, 0);
    }
    fn pos(&self) -> usize {
        self.out.len() - self.start
    }
}

struct SliceSink<'a> {
    buf: &'a mut [u8],
    at: usize,
}

impl Sink for SliceSink<'_> {
    fn put(&mut self, bytes: &[u8]) {
        self.buf[self.at..self.at + bytes.len()].copy_from_slice(bytes);
        self.at += bytes.len();
    }
    fn zeros(&mut self, n: usize) {
        self.buf[self.at..self.at + n].fill(0);
        self.at += n;
    }
    fn pos(&self) -> usize {
        self.at
    }
}

fn padding(pos: usize) -> usize {
    (8 - pos % 8) % 8
}

fn pad(sink: &mut impl Sink) {
    sink.zeros(padding(sink.pos()));
}

fn write_message(value: &Value, sink: &mut impl Sink) {
    sink.put(&[VERSION]);
    sink.zeros(HEADER - 1);
    write_value(value, sink);
}

fn tag(data: &Data) -> u8 {
    match data {
        Data::Null => 0,
        Data::Logical(_) => 1,
        Data::Integer(_) => 2,
        Data::Double(_) => 3,
        Data::Complex(_) => 4,
        Data::Character(_) => 5,
        Data::Raw(_) => 6,
        Data::List(_) => 7,
    }
}

fn write_value(value: &Value, sink: &mut impl Sink) {
    let attr_count = u32::try_from(value.attrs.0.len()).expect("fewer than 2^32 attributes");
    sink.put(&[tag(&value.data), 0, 0, 0]);
    sink.put(&attr_count.to_le_bytes());
    sink.put(&(value.len() as u64).to_le_bytes());
    write_payload(&value.data, sink);
    for (name, attr) in value.attrs.iter() {
        write_str(name, sink);
        pad(sink);
        write_value(attr, sink);
    }
}

fn write_payload(data: &Data, sink: &mut impl Sink) {
    match data {
        Data::Null => {}
        Data::Logical(v) => sink.put(bytemuck::cast_slice(v)),
        Data::Integer(v) => sink.put(bytemuck::cast_slice(v)),
        Data::Double(v) => sink.put(bytemuck::cast_slice(v)),
        Data::Complex(v) => sink.put(bytemuck::cast_slice(v)),
        Data::Raw(v) => sink.put(v),
        Data::Character(v) => v.iter().for_each(|s| write_rstring(s.as_deref(), sink)),
        Data::List(v) => v.iter().for_each(|item| write_value(item, sink)),
    }
    pad(sink);
}

fn write_rstring(s: Option<&str>, sink: &mut impl Sink) {
    match s {
        Some(s) => write_str(s, sink),
        None => sink.put(&NA_STRING.to_le_bytes()),
    }
}

fn write_str(s: &str, sink: &mut impl Sink) {
    let len = u32::try_from(s.len())
        .ok()
        .filter(|&n| n != NA_STRING)
        .expect("strings are shorter than 4 GiB");
    sink.put(&len.to_le_bytes());
    sink.put(s.as_bytes());
}

// ---------------------------------------------------------------------------------------
// Reading
// ---------------------------------------------------------------------------------------

struct Reader<'a> {
    buf: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn remaining(&self) -> usize {
        self.buf.len() - self.at
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], CodecError> {
        let truncated = CodecError::Truncated {
            at: self.at,
            needed: n.saturating_sub(self.remaining()),
        };
        let bytes = self
            .buf
            .get(self.at..self.at.checked_add(n).ok_or(truncated.clone())?)
            .ok_or(truncated)?;
        self.at += n;
        Ok(bytes)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], CodecError> {
        let mut out = [0; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    fn u32(&mut self) -> Result<u32, CodecError> {
        self.array().map(u32::from_le_bytes)
    }

    fn u64(&mut self) -> Result<u64, CodecError> {
        self.array().map(u64::from_le_bytes)
    }

    fn zeros(&mut self, n: usize) -> Result<(), CodecError> {
        let at = self.at;
        match self.take(n)?.iter().all(|&b| b == 0) {
            true => Ok(()),
            false => Err(CodecError::NonZeroPadding { at }),
        }
    }

    fn pad(&mut self) -> Result<(), CodecError> {
        self.zeros(padding(self.at))
    }

    /// A count of items each at least `min_size` bytes, checked against what remains.
    fn count(&mut self, min_size: usize) -> Result<usize, CodecError> {
        let at = self.at;
        let len = self.u64()?;
        let fits = usize::try_from(len).ok().filter(|&n| {
            n.checked_mul(min_size)
                .is_some_and(|b| b <= self.remaining())
        });
        fits.ok_or(CodecError::BadLength { at, len })
    }

    /// `len` elements of `T` in one copy: straight from the input when it is aligned
    /// (payloads are, if the message starts aligned), else through a zeroed buffer.
    fn pods<T: Pod>(&mut self, len: usize) -> Result<Vec<T>, CodecError> {
        let bytes = self.take(len * size_of::<T>())?;
        if let Ok(aligned) = bytemuck::try_cast_slice::<u8, T>(bytes) {
            return Ok(aligned.to_vec());
        }
        let mut out = vec![T::zeroed(); len];
        bytemuck::cast_slice_mut::<T, u8>(&mut out).copy_from_slice(bytes);
        Ok(out)
    }

    fn str(&mut self, len: u32) -> Result<String, CodecError> {
        let at = self.at;
        let bytes = self.take(len as usize)?;
        let text = std::str::from_utf8(bytes).map_err(|_| CodecError::InvalidUtf8 { at })?;
        Ok(text.to_owned())
    }

    fn rstring(&mut self) -> Result<Option<String>, CodecError> {
        match self.u32()? {
            NA_STRING => Ok(None),
            len => self.str(len).map(Some),
        }
    }

    fn value(&mut self, depth: usize) -> Result<Value, CodecError> {
        if depth > MAX_DEPTH {
            return Err(CodecError::TooDeep { at: self.at });
        }
        let at = self.at;
        let [tag, pad @ ..] = self.array::<4>()?;
        if pad != [0; 3] {
            return Err(CodecError::NonZeroPadding { at: at + 1 });
        }
        let attr_count = self.u32()?;
        let data = self.payload(tag, at, depth)?;
        let attrs = self.attributes(attr_count, depth)?;
        Ok(Value { data, attrs })
    }

    fn payload(&mut self, tag: u8, at: usize, depth: usize) -> Result<Data, CodecError> {
        let data = match tag {
            0 => self.null()?,
            1 => Data::Logical(self.numbers()?),
            2 => Data::Integer(self.numbers()?),
            3 => Data::Double(self.numbers()?),
            4 => Data::Complex(self.numbers()?),
            5 => Data::Character(self.strings()?),
            6 => Data::Raw(self.numbers()?),
            7 => Data::List(self.list(depth)?),
            tag => return Err(CodecError::BadTag { at, tag }),
        };
        self.pad()?;
        Ok(data)
    }

    fn null(&mut self) -> Result<Data, CodecError> {
        let at = self.at;
        match self.u64()? {
            0 => Ok(Data::Null),
            len => Err(CodecError::BadLength { at, len }),
        }
    }

    fn numbers<T: Pod>(&mut self) -> Result<Vec<T>, CodecError> {
        let len = self.count(size_of::<T>())?;
        self.pods(len)
    }

    fn strings(&mut self) -> Result<Vec<Option<String>>, CodecError> {
        let len = self.count(size_of::<u32>())?;
        (0..len).map(|_| self.rstring()).collect()
    }

    /// A plain loop rather than an iterator chain: fewer stack frames per nesting level.
    fn list(&mut self, depth: usize) -> Result<Vec<Value>, CodecError> {
        let len = self.count(VALUE_HEADER)?;
        let mut items = Vec::with_capacity(len);
        for _ in 0..len {
            items.push(self.value(depth + 1)?);
        }
        Ok(items)
    }

    fn attributes(&mut self, count: u32, depth: usize) -> Result<Attributes, CodecError> {
        let at = self.at;
        let min_size = 8 + VALUE_HEADER;
        if (count as usize).saturating_mul(min_size) > self.remaining() {
            return Err(CodecError::BadLength {
                at,
                len: count.into(),
            });
        }
        let mut attrs = Vec::with_capacity(count as usize);
        for _ in 0..count {
            let len = self.u32()?;
            let name = self.str(len)?;
            self.pad()?;
            attrs.push((name, self.value(depth + 1)?));
        }
        Ok(Attributes(attrs))
    }
}

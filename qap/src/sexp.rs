//! QAP1 R objects (XT_* encoding, qap1.md §7) to and from [`Value`].
//!
//! Encoding writes exactly what Rserve 1.8 writes for the same R object, including
//! when it switches to the 8-byte (XT_LARGE) header: Rserve decides that from its own
//! size *estimate* (`QAP_getStorageSize`), quirks and all, which [`estimate`] copies,
//! so that byte-for-byte comparisons with Rserve hold. Raw padding is zero.
//!
//! Decoding trusts nothing (§7.9): every length and count is checked against its
//! container before use, nesting is capped, and any input yields a value or a
//! [`QapError`], never a panic. What a [`Value`] cannot hold is an error, not a
//! stand-in: closures (XT_CLOS), S4 objects (XT_S4), environments and other opaque
//! objects (XT_UNKNOWN), symbols, pairlists, calls and expression vectors decode to
//! [`QapError::Unsupported`] — the same objects Rookery's own R conversion rejects.
//! The deprecated scalar forms XT_INT, XT_DOUBLE and XT_STR are read as length-1
//! vectors, as Rserve reads them. Strings that are not valid UTF-8 are converted
//! lossily (U+FFFD), as `rookery_ffi` converts native strings.
//!
//! This module must not do I/O or know about commands; framing is in [`crate::frame`].

use rookery_value::{codec, Attributes, Complex, Data, Logical, RString, Value};

use crate::frame::{
    align4, large_header, need, small_header, split_item, QapError, LARGE_MAX, LARGE_THRESHOLD,
    SMALL_MAX,
};

pub const XT_NULL: u8 = 0;
pub const XT_INT: u8 = 1;
pub const XT_DOUBLE: u8 = 2;
pub const XT_STR: u8 = 3;
pub const XT_LANG: u8 = 4;
pub const XT_SYM: u8 = 5;
pub const XT_BOOL: u8 = 6;
pub const XT_S4: u8 = 7;
pub const XT_VECTOR: u8 = 16;
pub const XT_LIST: u8 = 17;
pub const XT_CLOS: u8 = 18;
pub const XT_SYMNAME: u8 = 19;
pub const XT_LIST_NOTAG: u8 = 20;
pub const XT_LIST_TAG: u8 = 21;
pub const XT_LANG_NOTAG: u8 = 22;
pub const XT_LANG_TAG: u8 = 23;
pub const XT_VECTOR_EXP: u8 = 26;
pub const XT_VECTOR_STR: u8 = 27;
pub const XT_ARRAY_INT: u8 = 32;
pub const XT_ARRAY_DOUBLE: u8 = 33;
pub const XT_ARRAY_STR: u8 = 34;
pub const XT_ARRAY_BOOL_UA: u8 = 35;
pub const XT_ARRAY_BOOL: u8 = 36;
pub const XT_RAW: u8 = 37;
pub const XT_ARRAY_CPLX: u8 = 38;
pub const XT_UNKNOWN: u8 = 48;
/// Flag: 8-byte header.
pub const XT_LARGE: u8 = 0x40;
/// Flag: an XT_LIST_TAG of attributes precedes the data.
pub const XT_HAS_ATTR: u8 = 0x80;

/// Default cap on nesting when decoding (lists and attributes each add a level).
pub const MAX_DEPTH: usize = 64;

/// Logical bytes on the wire.
const WIRE_TRUE: u8 = 1;
const WIRE_NA: u8 = 2;
/// The one-byte string that stands for `NA_character_`, and the escape byte.
const NA_STRING_BYTE: u8 = 0xff;

/// A human name for an XT type, for error messages.
pub fn xt_name(xt: u8) -> &'static str {
    match xt {
        XT_NULL => "NULL",
        XT_INT | XT_ARRAY_INT => "integer",
        XT_DOUBLE | XT_ARRAY_DOUBLE => "double",
        XT_STR | XT_ARRAY_STR | XT_VECTOR_STR => "character",
        XT_LANG | XT_LANG_NOTAG | XT_LANG_TAG => "language (call)",
        XT_SYM | XT_SYMNAME => "symbol",
        XT_BOOL | XT_ARRAY_BOOL | XT_ARRAY_BOOL_UA => "logical",
        XT_S4 => "S4 object",
        XT_VECTOR => "list",
        XT_LIST | XT_LIST_NOTAG | XT_LIST_TAG => "pairlist",
        XT_CLOS => "closure",
        XT_VECTOR_EXP => "expression",
        XT_RAW => "raw",
        XT_ARRAY_CPLX => "complex",
        XT_UNKNOWN => "opaque R object (environment, builtin, pointer, ...)",
        _ => "unknown XT type",
    }
}

// ---------------------------------------------------------------------------------
// Encoding
// ---------------------------------------------------------------------------------

/// Encodes `v` as one XT object, as Rserve would send it.
pub fn encode(v: &Value) -> Result<Vec<u8>, QapError> {
    let mut out = Vec::new();
    encode_into(&mut out, v)?;
    Ok(out)
}

/// Appends the XT encoding of `v` to `out`.
pub fn encode_into(out: &mut Vec<u8>, v: &Value) -> Result<(), QapError> {
    encode_at(out, v, 0, Strings::Utf8)
}

/// How strings travel (`CMD_setEncoding`): UTF-8 (`utf8`, and `native` here), or
/// Latin-1, where a character beyond U+00FF is left out, as Rserve does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub enum Strings {
    #[default]
    Utf8,
    Latin1,
}

impl Strings {
    /// `s` in this encoding.
    pub fn bytes<'a>(self, s: &'a str) -> std::borrow::Cow<'a, [u8]> {
        match self {
            Strings::Latin1 if !s.is_ascii() => {
                let latin1 = s.chars().filter_map(|c| u8::try_from(u32::from(c)).ok());
                latin1.collect::<Vec<u8>>().into()
            }
            _ => s.as_bytes().into(),
        }
    }

    /// Bytes in this encoding as a string (invalid UTF-8 becomes U+FFFD).
    pub fn text(self, b: &[u8]) -> String {
        match self {
            Strings::Latin1 => b.iter().map(|&c| char::from(c)).collect(),
            Strings::Utf8 => lossy(b),
        }
    }
}

/// [`encode_into`] with strings in `strings`.
pub fn encode_into_as(out: &mut Vec<u8>, v: &Value, strings: Strings) -> Result<(), QapError> {
    encode_at(out, v, 0, strings)
}

fn encode_at(out: &mut Vec<u8>, v: &Value, depth: usize, enc: Strings) -> Result<(), QapError> {
    if depth > codec::MAX_DEPTH {
        return Err(QapError::Unencodable("value nested too deeply".into()));
    }
    let attr_flag = if v.attrs.is_empty() { 0 } else { XT_HAS_ATTR };
    // Rserve never writes NULL in the large form.
    let large = !v.is_null() && estimate(v) > LARGE_THRESHOLD;
    let start = begin_object(out, large);
    if !v.attrs.is_empty() {
        encode_attrs(out, &v.attrs, depth, enc)?;
    }
    encode_data(out, &v.data, depth, enc)?;
    finish_object(out, start, xt_of(&v.data) | attr_flag, large)
}

/// The header [`encode_into_as`] writes for a double vector of `n` numbers without
/// attributes (its body, `8 n` bytes, follows).
pub fn push_double_array_header(out: &mut Vec<u8>, n: usize) {
    let len = 8 * n as u64;
    if len > LARGE_THRESHOLD {
        out.extend_from_slice(&large_header(XT_ARRAY_DOUBLE | XT_LARGE, len));
    } else {
        out.extend_from_slice(&small_header(XT_ARRAY_DOUBLE, len));
    }
}

/// The body of `bytes` when they are exactly one XT_ARRAY_DOUBLE without
/// attributes: the numbers' little-endian bytes, for a caller that copies them
/// straight into R. `None` for anything else (decode it as usual).
pub fn plain_double_body(bytes: &[u8]) -> Option<&[u8]> {
    let (head, body) = split_item(bytes, XT_LARGE, "double vector").ok()?;
    let whole = head.size + body.len() == bytes.len();
    (head.kind == XT_ARRAY_DOUBLE && whole && body.len() % 8 == 0).then_some(body)
}

fn xt_of(data: &Data) -> u8 {
    match data {
        Data::Null => XT_NULL,
        Data::Logical(_) => XT_ARRAY_BOOL,
        Data::Integer(_) => XT_ARRAY_INT,
        Data::Double(_) => XT_ARRAY_DOUBLE,
        Data::Complex(_) => XT_ARRAY_CPLX,
        Data::Character(_) => XT_ARRAY_STR,
        Data::Raw(_) => XT_RAW,
        Data::List(_) => XT_VECTOR,
    }
}

/// Reserves room for a header and returns where it starts.
fn begin_object(out: &mut Vec<u8>, large: bool) -> usize {
    let start = out.len();
    out.resize(start + if large { 8 } else { 4 }, 0);
    start
}

/// Fills in the header reserved at `start` now that the body length is known. A
/// small header whose body outgrew 24 bits (Rserve's estimate can be low) is widened.
fn finish_object(out: &mut Vec<u8>, start: usize, ty: u8, large: bool) -> Result<(), QapError> {
    let head = if large { 8 } else { 4 };
    let len = (out.len() - start - head) as u64;
    if len > LARGE_MAX {
        return Err(QapError::Unencodable(format!("object of {len} bytes")));
    }
    if large {
        out[start..start + 8].copy_from_slice(&large_header(ty | XT_LARGE, len));
    } else if len > SMALL_MAX {
        out.splice(start..start + 4, large_header(ty | XT_LARGE, len));
    } else {
        out[start..start + 4].copy_from_slice(&small_header(ty, len));
    }
    Ok(())
}

fn encode_attrs(
    out: &mut Vec<u8>,
    attrs: &Attributes,
    depth: usize,
    enc: Strings,
) -> Result<(), QapError> {
    let large = estimate_attrs(attrs) > LARGE_THRESHOLD;
    let start = begin_object(out, large);
    for (name, value) in attrs.iter() {
        encode_at(out, value, depth + 1, enc)?;
        encode_symbol(out, name)?;
    }
    finish_object(out, start, XT_LIST_TAG, large)
}

fn encode_symbol(out: &mut Vec<u8>, name: &str) -> Result<(), QapError> {
    let start = begin_object(out, false);
    push_c_string(out, name.as_bytes(), 0)?;
    finish_object(out, start, XT_SYMNAME, false)
}

/// Appends `s`, a NUL, then `pad` bytes up to a multiple of 4.
fn push_c_string(out: &mut Vec<u8>, s: &[u8], pad: u8) -> Result<(), QapError> {
    if s.contains(&0) {
        return Err(QapError::Unencodable("string contains a NUL byte".into()));
    }
    let start = out.len();
    out.extend_from_slice(s);
    out.push(0);
    pad_to_4(out, start, pad);
    Ok(())
}

/// Pads what was written since `start` to a multiple of 4 with `pad`.
fn pad_to_4(out: &mut Vec<u8>, start: usize, pad: u8) {
    out.resize(start + align4(out.len() - start), pad);
}

fn encode_data(out: &mut Vec<u8>, data: &Data, depth: usize, enc: Strings) -> Result<(), QapError> {
    match data {
        Data::Null => {}
        Data::Logical(v) => encode_bytes(out, v.len(), v.iter().map(logical_byte), 0xff)?,
        Data::Raw(v) => encode_bytes(out, v.len(), v.iter().copied(), 0)?,
        Data::Integer(v) => put_fixed(out, v, |x| x.to_le_bytes()),
        Data::Double(v) => put_fixed(out, v, |x| x.to_le_bytes()),
        Data::Complex(v) => v.iter().for_each(|c| push_complex(out, c)),
        Data::Character(v) => encode_strings(out, v, enc)?,
        Data::List(v) => {
            for item in v {
                encode_at(out, item, depth + 1, enc)?;
            }
        }
    }
    Ok(())
}

/// Appends each item's `N` little-endian bytes: one resize, then a loop the compiler
/// turns into plain copies (large vectors are the common case of a big transfer).
#[inline]
fn put_fixed<T: bytemuck::Pod, const N: usize>(
    out: &mut Vec<u8>,
    v: &[T],
    bytes: impl Fn(T) -> [u8; N],
) {
    if cfg!(target_endian = "little") {
        // The values' memory is the wire format: one copy, nothing zeroed first.
        out.extend_from_slice(bytemuck::cast_slice(v));
        return;
    }
    let start = out.len();
    out.resize(start + N * v.len(), 0);
    for (dst, x) in out[start..].chunks_exact_mut(N).zip(v) {
        dst.copy_from_slice(&bytes(*x));
    }
}

/// Rserve's mapping: 0 and 1 as they are, anything else (NA) as 2.
fn logical_byte(l: &Logical) -> u8 {
    match l.0 {
        0 => 0,
        1 => WIRE_TRUE,
        _ => WIRE_NA,
    }
}

fn push_complex(out: &mut Vec<u8>, c: &Complex) {
    out.extend(c.re.to_bits().to_le_bytes());
    out.extend(c.im.to_bits().to_le_bytes());
}

/// XT_ARRAY_BOOL / XT_RAW body: int32 count, the bytes, `pad` up to a multiple of 4.
fn encode_bytes(
    out: &mut Vec<u8>,
    n: usize,
    bytes: impl Iterator<Item = u8>,
    pad: u8,
) -> Result<(), QapError> {
    let count = i32::try_from(n)
        .map_err(|_| QapError::Unencodable(format!("{n} elements exceed a 32-bit count")))?;
    let start = out.len();
    out.extend(count.to_le_bytes());
    out.extend(bytes);
    pad_to_4(out, start, pad);
    Ok(())
}

fn encode_strings(out: &mut Vec<u8>, v: &[RString], enc: Strings) -> Result<(), QapError> {
    let start = out.len();
    for s in v {
        match s {
            None => out.extend([NA_STRING_BYTE, 0]),
            Some(s) => push_string_element(out, &enc.bytes(s))?,
        }
    }
    // Padding with 0x01 keeps the NUL count equal to the element count.
    pad_to_4(out, start, 1);
    Ok(())
}

fn push_string_element(out: &mut Vec<u8>, s: &[u8]) -> Result<(), QapError> {
    if s.contains(&0) {
        return Err(QapError::Unencodable("string contains a NUL byte".into()));
    }
    if s.first() == Some(&NA_STRING_BYTE) {
        out.push(NA_STRING_BYTE);
    }
    out.extend_from_slice(s);
    out.push(0);
    Ok(())
}

/// [`estimate`] of a plain double vector of `n` numbers, without the vector.
pub fn estimate_doubles(n: usize) -> u64 {
    widen_estimate(4 + 8 * n as u64)
}

/// Rserve's `QAP_getStorageSize` for `v`: the size estimate (header included) that
/// decides whether Rserve writes the large header. It is *not* the encoded size:
/// short logical/raw vectors, NULL and strings are estimated differently, and see
/// [`estimate_attrs`] for the attribute quirk.
pub fn estimate(v: &Value) -> u64 {
    let mut len = 4;
    if !v.attrs.is_empty() {
        len += estimate_attrs(&v.attrs);
    }
    len += match &v.data {
        Data::Null => 4,
        Data::Complex(x) => 16 * x.len() as u64,
        Data::Double(x) => 8 * x.len() as u64,
        Data::Integer(x) => 4 * x.len() as u64,
        Data::Logical(x) => estimate_bytes(x.len()),
        Data::Raw(x) => estimate_bytes(x.len()),
        Data::Character(x) => x.iter().map(estimate_string).sum(),
        Data::List(x) => x.iter().map(estimate).sum(),
    };
    widen_estimate(len)
}

/// Rserve walks the attribute pairlist but sizes its *first* element once per
/// attribute (it reads `CAR(x)` instead of `CAR(l)`); tags always count, since a
/// symbol is never smaller than 8 bytes.
fn estimate_attrs(attrs: &Attributes) -> u64 {
    let Some((name, value)) = attrs.0.first() else {
        return 8;
    };
    let n = attrs.0.len() as u64;
    widen_estimate(4 + n * (estimate(value) + estimate_chars(name.len())))
}

fn estimate_bytes(n: usize) -> u64 {
    if n > 1 {
        4 + align4(n) as u64
    } else {
        4
    }
}

/// A CHARSXP: header plus the aligned C string; NA is the string "NA".
fn estimate_string(s: &RString) -> u64 {
    estimate_chars(s.as_ref().map_or(2, String::len))
}

fn estimate_chars(n: usize) -> u64 {
    widen_estimate(4 + align4(n + 1) as u64)
}

fn widen_estimate(len: u64) -> u64 {
    if len > LARGE_THRESHOLD {
        len + 4
    } else {
        len
    }
}

// ---------------------------------------------------------------------------------
// Decoding
// ---------------------------------------------------------------------------------

/// Decodes exactly one XT object filling all of `bytes` (a DT_SEXP's data), nesting
/// capped at [`MAX_DEPTH`].
pub fn decode(bytes: &[u8]) -> Result<Value, QapError> {
    decode_with_depth(bytes, MAX_DEPTH)
}

/// [`decode`] with an explicit nesting cap.
pub fn decode_with_depth(bytes: &[u8], max_depth: usize) -> Result<Value, QapError> {
    decode_as(bytes, max_depth, Strings::Utf8)
}

/// [`decode_with_depth`] with strings in `strings`.
pub fn decode_as(bytes: &[u8], max_depth: usize, strings: Strings) -> Result<Value, QapError> {
    let d = Decoder { max_depth, strings };
    let (value, rest) = d.object(bytes, 0)?;
    if !rest.is_empty() {
        let detail = format!("{} bytes after the object", rest.len());
        return Err(QapError::malformed("SEXP", detail));
    }
    Ok(value)
}

/// A call as `CMD_OCcall` sends it (XT_LANG_NOTAG / XT_LANG_TAG): its first element
/// (in OCAP mode, the capability reference) and its arguments with their tags.
#[derive(Debug, Clone, PartialEq)]
pub struct Call {
    pub head: Value,
    pub args: Vec<(Option<String>, Value)>,
}

/// Most arguments a decoded call may have.
const MAX_CALL_ARGS: usize = 1024;

/// Decodes exactly one call filling all of `bytes`. Its elements must have a value
/// form (no nested calls, symbols or closures).
pub fn decode_call(bytes: &[u8]) -> Result<Call, QapError> {
    let (head, body) = split_item(bytes, XT_LARGE, "call")?;
    if head.size + body.len() != bytes.len() {
        return Err(QapError::malformed("call", "bytes after the call"));
    }
    let tagged = match head.kind {
        XT_LANG_NOTAG => false,
        XT_LANG_TAG => true,
        other => {
            let detail = format!("expected XT_LANG_NOTAG or XT_LANG_TAG, found type {other}");
            return Err(QapError::malformed("call", detail));
        }
    };
    let d = Decoder {
        max_depth: MAX_DEPTH,
        strings: Strings::Utf8,
    };
    let mut items = Vec::new();
    let mut rest = body;
    while !rest.is_empty() {
        if items.len() > MAX_CALL_ARGS {
            return Err(QapError::malformed("call", "too many arguments"));
        }
        let (value, after) = d.object(rest, 1)?;
        let (tag, after) = if tagged {
            optional_tag(after)?
        } else {
            (None, after)
        };
        items.push((tag, value));
        rest = after;
    }
    let mut items = items.into_iter();
    let (_, head) = items
        .next()
        .ok_or_else(|| QapError::malformed("call", "no function"))?;
    Ok(Call {
        head,
        args: items.collect(),
    })
}

/// A pairlist tag: XT_NULL (no tag) or a symbol; an empty name is no tag.
fn optional_tag(bytes: &[u8]) -> Result<(Option<String>, &[u8]), QapError> {
    let (head, body) = split_item(bytes, XT_LARGE, "tag")?;
    if head.kind == XT_NULL && body.is_empty() {
        return Ok((None, &bytes[head.size..]));
    }
    let (name, rest) = tag_name(bytes)?;
    Ok(((!name.is_empty()).then_some(name), rest))
}

struct Decoder {
    max_depth: usize,
    strings: Strings,
}

impl Decoder {
    /// One object from the front of `bytes`; returns it and the bytes after it.
    fn object<'a>(&self, bytes: &'a [u8], depth: usize) -> Result<(Value, &'a [u8]), QapError> {
        if depth > self.max_depth {
            return Err(QapError::TooDeep {
                max: self.max_depth,
            });
        }
        let (head, mut body) = split_item(bytes, XT_LARGE, "SEXP")?;
        let rest = &bytes[head.size + body.len()..];
        let mut attrs = Attributes::default();
        if head.kind & XT_HAS_ATTR != 0 {
            (attrs, body) = self.attributes(body, depth)?;
        }
        let data = self.data(head.kind & !XT_HAS_ATTR, body, depth)?;
        if matches!(data, Data::Null) && !attrs.is_empty() {
            return Err(QapError::malformed("SEXP", "NULL with attributes"));
        }
        Ok((Value { data, attrs }, rest))
    }

    /// The XT_LIST_TAG at the front of `body`, and the bytes after it.
    fn attributes<'a>(
        &self,
        body: &'a [u8],
        depth: usize,
    ) -> Result<(Attributes, &'a [u8]), QapError> {
        let (head, mut list) = split_item(body, XT_LARGE, "attributes")?;
        if head.kind != XT_LIST_TAG {
            let detail = format!("expected XT_LIST_TAG, found type {}", head.kind);
            return Err(QapError::malformed("attributes", detail));
        }
        let rest = &body[head.size + list.len()..];
        let mut attrs = Vec::new();
        while !list.is_empty() {
            let (value, after) = self.object(list, depth + 1)?;
            let (name, after) = tag_name(after)?;
            attrs.push((name, value));
            list = after;
        }
        Ok((Attributes(attrs), rest))
    }

    fn data(&self, xt: u8, body: &[u8], depth: usize) -> Result<Data, QapError> {
        Ok(match xt {
            XT_NULL => expect_empty(body).map(|()| Data::Null)?,
            XT_INT | XT_ARRAY_INT => Data::Integer(fixed_pod(body, "integer", i32_at)?),
            XT_DOUBLE | XT_ARRAY_DOUBLE => Data::Double(fixed_pod(body, "double", f64_at)?),
            XT_ARRAY_CPLX => Data::Complex(fixed(body, 16, "complex", complex_at)?),
            XT_ARRAY_STR => Data::Character(strings(body, self.strings)),
            XT_STR => Data::Character(vec![Some(self.strings.text(c_string(body)))]),
            XT_ARRAY_BOOL => Data::Logical(counted(body, "logical")?.map(wire_logical).collect()),
            XT_RAW => Data::Raw(counted(body, "raw")?.copied().collect()),
            XT_VECTOR => Data::List(self.list(body, depth)?),
            other => {
                return Err(QapError::Unsupported {
                    xt: other,
                    name: xt_name(other),
                })
            }
        })
    }

    fn list(&self, mut body: &[u8], depth: usize) -> Result<Vec<Value>, QapError> {
        let mut items = Vec::new();
        while !body.is_empty() {
            let (item, rest) = self.object(body, depth + 1)?;
            items.push(item);
            body = rest;
        }
        Ok(items)
    }
}

/// An attribute tag: XT_SYMNAME (what Rserve sends) or XT_STR.
fn tag_name(bytes: &[u8]) -> Result<(String, &[u8]), QapError> {
    let (head, body) = split_item(bytes, XT_LARGE, "attribute tag")?;
    if head.kind != XT_SYMNAME && head.kind != XT_STR {
        let detail = format!("expected a symbol, found type {}", head.kind);
        return Err(QapError::malformed("attribute tag", detail));
    }
    Ok((lossy(c_string(body)), &bytes[head.size + body.len()..]))
}

fn expect_empty(body: &[u8]) -> Result<(), QapError> {
    if body.is_empty() {
        Ok(())
    } else {
        Err(QapError::malformed(
            "NULL",
            format!("{} data bytes", body.len()),
        ))
    }
}

/// Fixed-width elements: the body must be a whole number of `width`-byte items.
/// Generic over `read` so it inlines into one tight loop (large vectors are the
/// common case of a big transfer).
#[inline]
fn fixed<T>(
    body: &[u8],
    width: usize,
    what: &'static str,
    read: impl Fn(&[u8]) -> T,
) -> Result<Vec<T>, QapError> {
    if body.len() % width != 0 {
        let detail = format!("{} bytes is not a multiple of {width}", body.len());
        return Err(QapError::malformed(what, detail));
    }
    Ok(body.chunks_exact(width).map(read).collect())
}

/// [`fixed`] for plain numbers: on a little-endian host with the body aligned for
/// `T` (the usual case: payloads start aligned and headers are 4 or 8 bytes), one
/// copy of the bytes.
#[inline]
fn fixed_pod<T: bytemuck::Pod>(
    body: &[u8],
    what: &'static str,
    read: impl Fn(&[u8]) -> T,
) -> Result<Vec<T>, QapError> {
    if cfg!(target_endian = "little") {
        if let Ok(items) = bytemuck::try_cast_slice::<u8, T>(body) {
            return Ok(items.to_vec());
        }
    }
    fixed(body, std::mem::size_of::<T>(), what, read)
}

#[inline]
fn i32_at(b: &[u8]) -> i32 {
    i32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

#[inline]
fn f64_at(b: &[u8]) -> f64 {
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&b[..8]);
    f64::from_le_bytes(bytes)
}

fn complex_at(b: &[u8]) -> Complex {
    Complex {
        re: f64_at(&b[..8]),
        im: f64_at(&b[8..]),
    }
}

/// XT_ARRAY_BOOL / XT_RAW: an int32 count, that many bytes, then at most 3 padding
/// bytes (whose values are ignored: Rserve leaves raw padding uninitialised).
fn counted<'a>(body: &'a [u8], what: &'static str) -> Result<std::slice::Iter<'a, u8>, QapError> {
    need(body, 4, what)?;
    let n = i32_at(body);
    let n =
        u64::try_from(n).map_err(|_| QapError::malformed(what, format!("negative count {n}")))?;
    let data = &body[4..];
    need(data, n, what)?;
    let n = n as usize; // <= data.len(), checked by `need`.
    if data.len() - n > 3 {
        let detail = format!("{} bytes after {n} elements", data.len() - n);
        return Err(QapError::malformed(what, detail));
    }
    Ok(data[..n].iter())
}

/// 0 is FALSE, 1 is TRUE and every other byte is NA, as Rserve reads them.
fn wire_logical(b: &u8) -> Logical {
    match *b {
        0 => Logical::FALSE,
        WIRE_TRUE => Logical::TRUE,
        _ => Logical::NA,
    }
}

/// XT_ARRAY_STR: one element per NUL; bytes after the last NUL are padding.
fn strings(body: &[u8], enc: Strings) -> Vec<RString> {
    let Some(end) = body.iter().rposition(|&b| b == 0) else {
        return Vec::new();
    };
    body[..end]
        .split(|&b| b == 0)
        .map(|s| string_element(s, enc))
        .collect()
}

fn string_element(s: &[u8], enc: Strings) -> RString {
    match s {
        [NA_STRING_BYTE] => None,
        [NA_STRING_BYTE, rest @ ..] => Some(enc.text(rest)),
        _ => Some(enc.text(s)),
    }
}

/// The bytes before the first NUL (all of them when there is none).
fn c_string(body: &[u8]) -> &[u8] {
    let end = body.iter().position(|&b| b == 0).unwrap_or(body.len());
    &body[..end]
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

//! Conversion between live R objects and [`Value`]s.
//!
//! Reading never allocates in R except to materialize an ALTREP vector or translate a
//! string from another encoding, and both go through the shim. Writing allocates only
//! through the shim. Numeric payloads move with one `memcpy`, because [`Value`] keeps
//! R's own element layout and NA encodings. Attributes are read from the raw attribute
//! list, so compact row names and every other attribute come back unchanged.

use std::os::raw::{c_char, c_int, c_void};

use crate::sexp::{Protected, RToken};
use crate::sys::{self, sexptype::*, SEXP};
use crate::value::{Attributes, Complex, Data, Logical, Value};
use crate::Error;

/// Nesting depth beyond which a value is refused (R itself rarely nests past 100).
const MAX_DEPTH: usize = 2048;

/// Strings handed to R per shim call when building a character vector.
const STRING_BATCH: usize = 4096;

/// Allocates a vector of R type `t` and length `n`.
pub(crate) fn alloc(r: RToken<'_>, t: i32, n: usize) -> Result<Protected<'_>, Error> {
    let len = isize::try_from(n).map_err(|_| Error::InvalidValue("vector too long".into()))?;
    let mut cell = std::ptr::null_mut();
    // SAFETY: the shim allocates inside a toplevel context; `t` is a vector type.
    if unsafe { sys::rk_alloc(t as u32, len, &mut cell) } == 0 {
        return Err(match r.take_failure() {
            Error::R { message, .. } => Error::Alloc(message),
            other => other,
        });
    }
    // SAFETY: fresh cell from the shim.
    Ok(unsafe { Protected::assume_owned(r, cell) })
}

/// Builds a new R object from `v`.
pub(crate) fn from_value<'r>(r: RToken<'r>, v: &Value) -> Result<Protected<'r>, Error> {
    from_value_at(r, v, 0)
}

fn from_value_at<'r>(r: RToken<'r>, v: &Value, depth: usize) -> Result<Protected<'r>, Error> {
    if depth > MAX_DEPTH {
        return Err(Error::InvalidValue("value nested too deeply".into()));
    }
    let x = match &v.data {
        Data::Null if v.attrs.is_empty() => {
            // SAFETY: R_NilValue is a permanent object.
            return unsafe { Protected::try_preserve(r, sys::R_NilValue) };
        }
        Data::Null => return Err(Error::InvalidValue("NULL cannot carry attributes".into())),
        Data::Logical(xs) => copy_vector(r, LGLSXP, xs)?,
        Data::Integer(xs) => copy_vector(r, INTSXP, xs)?,
        Data::Double(xs) => copy_vector(r, REALSXP, xs)?,
        Data::Complex(xs) => copy_vector(r, CPLXSXP, xs)?,
        Data::Raw(xs) => copy_vector(r, RAWSXP, xs)?,
        Data::Character(xs) => strings(r, xs)?,
        Data::List(items) => list(r, items, depth)?,
    };
    for (name, a) in v.attrs.iter() {
        let a = from_value_at(r, a, depth + 1)?;
        r.set_attr(&x, name, &a)?;
    }
    Ok(x)
}

fn copy_vector<'r, T: bytemuck::Pod>(
    r: RToken<'r>,
    t: i32,
    xs: &[T],
) -> Result<Protected<'r>, Error> {
    let x = alloc(r, t, xs.len())?;
    if !xs.is_empty() {
        // SAFETY: `x` is a fresh, non-ALTREP vector of xs.len() elements whose layout
        // matches T (checked by the callers' types: i32 for LGLSXP/INTSXP, f64, the
        // two-double Complex, u8); DATAPTR_OR_NULL does not allocate for it.
        unsafe {
            let dst = sys::DATAPTR_OR_NULL(x.sexp()).cast_mut().cast::<T>();
            std::ptr::copy_nonoverlapping(xs.as_ptr(), dst, xs.len());
        }
    }
    Ok(x)
}

/// A new double vector holding the little-endian numbers in `bytes` (a multiple of
/// 8 bytes long, any alignment): one copy, no [`Value`] in between.
pub(crate) fn doubles_from_le<'r>(r: RToken<'r>, bytes: &[u8]) -> Result<Protected<'r>, Error> {
    if bytes.len() % 8 != 0 {
        return Err(Error::InvalidValue(format!(
            "{} bytes are not a whole number of doubles",
            bytes.len()
        )));
    }
    let n = bytes.len() / 8;
    let x = alloc(r, REALSXP, n)?;
    if n > 0 {
        if cfg!(target_endian = "little") {
            // SAFETY: `x` is a fresh, non-ALTREP vector of n doubles (8 n bytes);
            // DATAPTR_OR_NULL does not allocate for it; a byte copy needs no alignment.
            unsafe {
                let dst = sys::DATAPTR_OR_NULL(x.sexp()).cast_mut().cast::<u8>();
                std::ptr::copy_nonoverlapping(bytes.as_ptr(), dst, bytes.len());
            }
        } else {
            let xs: Vec<f64> = bytes
                .chunks_exact(8)
                .map(|b| f64::from_le_bytes(b.try_into().expect("8 bytes")))
                .collect();
            // SAFETY: as above, with n doubles of the host's layout.
            unsafe {
                let dst = sys::DATAPTR_OR_NULL(x.sexp()).cast_mut().cast::<f64>();
                std::ptr::copy_nonoverlapping(xs.as_ptr(), dst, n);
            }
        }
    }
    Ok(x)
}

fn strings<'r>(r: RToken<'r>, xs: &[Option<String>]) -> Result<Protected<'r>, Error> {
    let x = alloc(r, STRSXP, xs.len())?;
    let (mut ptrs, mut lens) = (
        Vec::with_capacity(STRING_BATCH),
        Vec::with_capacity(STRING_BATCH),
    );
    for (chunk_no, chunk) in xs.chunks(STRING_BATCH).enumerate() {
        ptrs.clear();
        lens.clear();
        for s in chunk {
            let (p, l) = match s {
                Some(s) => (
                    s.as_ptr().cast::<c_char>(),
                    c_int::try_from(s.len())
                        .map_err(|_| Error::InvalidValue("string longer than 2 GiB".into()))?,
                ),
                None => (std::ptr::null(), -1),
            };
            ptrs.push(p);
            lens.push(l);
        }
        let offset = (chunk_no * STRING_BATCH) as isize;
        // SAFETY: `x` is a protected STRSXP with room for offset + chunk.len(); each
        // pointer addresses `len` bytes of a live String (or is NA with len -1).
        let ok = unsafe {
            sys::rk_set_strings(
                x.sexp(),
                offset,
                chunk.len() as isize,
                ptrs.as_ptr(),
                lens.as_ptr(),
            )
        };
        if ok == 0 {
            return Err(string_error(r));
        }
    }
    Ok(x)
}

fn string_error(r: RToken<'_>) -> Error {
    match r.take_failure() {
        Error::R { message, .. } => Error::InvalidValue(format!("R rejected a string: {message}")),
        other => other,
    }
}

fn list<'r>(r: RToken<'r>, items: &[Value], depth: usize) -> Result<Protected<'r>, Error> {
    let x = alloc(r, VECSXP, items.len())?;
    for (i, item) in items.iter().enumerate() {
        let elt = from_value_at(r, item, depth + 1)?;
        // SAFETY: `x` is a protected list of items.len() elements; setting an in-range
        // element neither allocates nor jumps; `x` now keeps `elt` alive.
        unsafe { sys::SET_VECTOR_ELT(x.sexp(), i as isize, elt.sexp()) };
    }
    Ok(x)
}

/// Copies an R object into a [`Value`].
pub(crate) fn to_value(r: RToken<'_>, x: &Protected<'_>) -> Result<Value, Error> {
    // SAFETY: `x` is protected, and everything reached from it stays reachable.
    unsafe { read(r, x.sexp(), 0) }
}

/// # Safety
/// `x` must be a valid SEXP reachable from a protected object for the whole call.
unsafe fn read(r: RToken<'_>, x: SEXP, depth: usize) -> Result<Value, Error> {
    if depth > MAX_DEPTH {
        return Err(Error::InvalidValue("R object nested too deeply".into()));
    }
    // SAFETY: (whole block) `x` is valid per the contract; every read below is of its
    // header, its data, or objects it references, none of which allocate.
    unsafe {
        let t = sys::rk_typeof(x);
        let n = usize::try_from(sys::Rf_xlength(x)).unwrap_or(0);
        let data = match t {
            NILSXP => Data::Null,
            LGLSXP => Data::Logical(copy_out::<Logical>(x, n)?),
            INTSXP => Data::Integer(copy_out::<i32>(x, n)?),
            REALSXP => Data::Double(copy_out::<f64>(x, n)?),
            CPLXSXP => Data::Complex(copy_out::<Complex>(x, n)?),
            RAWSXP => Data::Raw(copy_out::<u8>(x, n)?),
            STRSXP => Data::Character(read_strings(x, n)?),
            VECSXP => Data::List(
                (0..n)
                    .map(|i| read(r, sys::VECTOR_ELT(x, i as isize), depth + 1))
                    .collect::<Result<_, _>>()?,
            ),
            other => {
                return Err(Error::Unsupported {
                    r_type: crate::sexp::type_name(other).to_owned(),
                    output: Box::default(),
                })
            }
        };
        let attrs = read_attrs(r, x, depth)?;
        Ok(Value { data, attrs })
    }
}

/// When `x` is a double vector with no attributes: calls `header(out, n)` with its length, then appends its `n`
/// numbers in little-endian bytes to `out`, and returns true. For anything else it
/// appends nothing and returns false. One copy, straight from R's memory: no
/// [`Value`] in between.
pub(crate) fn append_plain_doubles_le(
    x: &Protected<'_>,
    out: &mut Vec<u8>,
    header: impl FnOnce(&mut Vec<u8>, usize),
) -> bool {
    let s = x.sexp();
    // SAFETY: `x` is protected, so `s` is a valid object for this whole call; reading
    // its type, attribute list, length and data pointer allocates nothing and runs
    // no R code (an ALTREP's materialization runs in the shim's toplevel context, and
    // its expanded data is kept by the object). The pointer addresses `n` doubles that
    // stay put while `x` is protected (R never moves objects), and no R code runs
    // while they are copied.
    unsafe {
        if sys::rk_typeof(s) != REALSXP || sys::ATTRIB(s) != sys::R_NilValue {
            return false;
        }
        let Ok(n) = usize::try_from(sys::Rf_xlength(s)) else {
            return false;
        };
        let mut p = sys::DATAPTR_OR_NULL(s).cast_mut();
        if n > 0 && p.is_null() {
            // A deferred ALTREP vector (`as.double(1:n)`): the shim materializes it
            // inside a toplevel context, as `copy_out` does.
            let mut q: *mut c_void = std::ptr::null_mut();
            if sys::rk_dataptr(s, &mut q) == 0 || q.is_null() {
                return false;
            }
            p = q;
        }
        header(out, n);
        if n == 0 {
            return true;
        }
        let doubles = std::slice::from_raw_parts(p.cast::<f64>(), n);
        if cfg!(target_endian = "little") {
            out.extend_from_slice(bytemuck::cast_slice(doubles));
        } else {
            out.reserve(8 * n);
            for d in doubles {
                out.extend_from_slice(&d.to_le_bytes());
            }
        }
        true
    }
}

/// # Safety
/// `x` must be a valid, reachable vector of `n` elements whose element layout is `T`.
unsafe fn copy_out<T: bytemuck::Pod>(x: SEXP, n: usize) -> Result<Vec<T>, Error> {
    if n == 0 {
        return Ok(Vec::new());
    }
    // SAFETY: reading the data pointer of a valid vector; may be null for ALTREP.
    let mut p = unsafe { sys::DATAPTR_OR_NULL(x) }.cast_mut();
    if p.is_null() {
        let mut q: *mut c_void = std::ptr::null_mut();
        // SAFETY: the shim materializes the ALTREP vector inside a toplevel context.
        if unsafe { sys::rk_dataptr(x, &mut q) } == 0 || q.is_null() {
            return Err(Error::Alloc("materializing an ALTREP vector".into()));
        }
        p = q;
    }
    // SAFETY: `p` addresses n elements of layout T, alive while `x` is.
    Ok(unsafe { std::slice::from_raw_parts(p.cast::<T>(), n) }.to_vec())
}

/// # Safety
/// `x` must be a valid, reachable STRSXP of `n` elements.
unsafe fn read_strings(x: SEXP, n: usize) -> Result<Vec<Option<String>>, Error> {
    // SAFETY: contract of this function; ALTREP strings are expanded first so that
    // STRING_ELT reads stored CHARSXPs instead of allocating them.
    unsafe {
        if n > 0 && sys::rk_is_altrep(x) != 0 {
            let mut q: *mut c_void = std::ptr::null_mut();
            if sys::rk_dataptr(x, &mut q) == 0 {
                return Err(Error::Alloc(
                    "materializing an ALTREP character vector".into(),
                ));
            }
        }
        (0..n)
            .map(|i| read_charsxp(sys::STRING_ELT(x, i as isize)))
            .collect()
    }
}

/// # Safety
/// `c` must be a CHARSXP reachable from a protected object.
unsafe fn read_charsxp(c: SEXP) -> Result<Option<String>, Error> {
    // SAFETY: contract of this function.
    unsafe {
        if c == sys::R_NaString {
            return Ok(None);
        }
        let len = usize::try_from(sys::Rf_xlength(c)).unwrap_or(0);
        let bytes = std::slice::from_raw_parts(sys::R_CHAR(c).cast::<u8>(), len);
        if bytes.is_ascii() {
            return Ok(Some(std::str::from_utf8_unchecked(bytes).to_owned()));
        }
        match sys::Rf_getCharCE(c) as u32 {
            // CE_LATIN1: let R translate.
            2 => {
                let mut out = std::ptr::null();
                if sys::rk_translate_utf8(c, &mut out) == 0 || out.is_null() {
                    return Err(Error::Alloc("translating a string to UTF-8".into()));
                }
                Ok(Some(
                    std::ffi::CStr::from_ptr(out).to_string_lossy().into_owned(),
                ))
            }
            // CE_BYTES: keep the bytes readable, as R prints them.
            3 => Ok(Some(escape_bytes(bytes))),
            // UTF-8 and native (R runs in a UTF-8 locale).
            _ => Ok(Some(String::from_utf8_lossy(bytes).into_owned())),
        }
    }
}

fn escape_bytes(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|&b| {
            if b.is_ascii() {
                (b as char).to_string()
            } else {
                format!("\\x{b:02x}")
            }
        })
        .collect()
}

/// # Safety
/// `x` must be a valid SEXP reachable from a protected object.
unsafe fn read_attrs(r: RToken<'_>, x: SEXP, depth: usize) -> Result<Attributes, Error> {
    let mut attrs = Vec::new();
    // SAFETY: walking the attribute pairlist of a reachable object reads CAR/TAG/CDR
    // only; symbol names are CHARSXPs that live as long as the symbol table.
    unsafe {
        let nil = sys::R_NilValue;
        let mut node = sys::ATTRIB(x);
        while node != nil {
            let name = read_charsxp(sys::PRINTNAME(sys::TAG(node)))?.unwrap_or_default();
            attrs.push((name, read(r, sys::CAR(node), depth + 1)?));
            node = sys::CDR(node);
        }
    }
    Ok(Attributes(attrs))
}

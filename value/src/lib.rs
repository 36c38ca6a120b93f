//! rookery-value: the Rust model of an R value: plain data, no SEXP, safe to send anywhere.
//!
//! A [`Value`] is a vector payload ([`Data`]) plus an ordered attribute list, which is
//! exactly how R stores objects. Factors, data frames, matrices, `Date` and `POSIXct` are
//! therefore not separate variants but ordinary vectors whose attributes say what they
//! are; the constructors and views below build and read them. This keeps the model
//! lossless: whatever attributes R had come back unchanged.
//!
//! NA follows R's own representation so that vectors move between R and Rust with one
//! `memcpy`: integer NA is `i32::MIN`, double NA is the NaN with payload 1954 (distinct
//! from an ordinary NaN), logical NA is [`Logical::NA`], character NA is `None`.
//!
//! This crate owns the types and their structural helpers. JSON (jsonlite's
//! conventions) lives in [`json`], the compact binary IPC form in [`codec`], frame
//! slicing in [`frame`]. Conversion to and from live R objects is `rookery-ffi`'s:
//! this crate never links R.

pub mod codec;
pub mod frame;
pub mod json;
mod num;
#[cfg(test)]
mod tests;

use bytemuck::{Pod, Zeroable};
use serde::{Deserialize, Serialize};

/// R's `NA_integer_`.
pub const NA_INTEGER: i32 = i32::MIN;
/// The bit pattern of R's `NA_real_` (a NaN whose low word is 1954).
pub const NA_REAL_BITS: u64 = 0x7FF0_0000_0000_07A2;

/// R's `NA_real_`.
#[inline]
pub fn na_real() -> f64 {
    f64::from_bits(NA_REAL_BITS)
}

/// True when `x` is R's `NA_real_` (and not an ordinary `NaN`), as `R_IsNA` decides.
#[inline]
pub fn is_na_real(x: f64) -> bool {
    x.is_nan() && (x.to_bits() & 0xFFFF_FFFF) == 1954
}

/// One element of a logical vector, stored as R stores it (an `int`).
#[repr(transparent)]
#[derive(Clone, Copy, PartialEq, Eq, Hash, Pod, Zeroable, Serialize, Deserialize)]
pub struct Logical(pub i32);

impl Logical {
    pub const FALSE: Logical = Logical(0);
    pub const TRUE: Logical = Logical(1);
    pub const NA: Logical = Logical(NA_INTEGER);

    /// `None` for NA.
    pub fn to_option(self) -> Option<bool> {
        match self.0 {
            NA_INTEGER => None,
            0 => Some(false),
            _ => Some(true),
        }
    }

    pub fn is_na(self) -> bool {
        self.0 == NA_INTEGER
    }
}

impl From<bool> for Logical {
    fn from(b: bool) -> Self {
        Logical(b as i32)
    }
}

impl From<Option<bool>> for Logical {
    fn from(b: Option<bool>) -> Self {
        b.map_or(Logical::NA, Logical::from)
    }
}

impl std::fmt::Debug for Logical {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.to_option() {
            None => f.write_str("NA"),
            Some(true) => f.write_str("TRUE"),
            Some(false) => f.write_str("FALSE"),
        }
    }
}

/// One element of a complex vector, laid out as R's `Rcomplex`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Pod, Zeroable, Serialize, Deserialize)]
pub struct Complex {
    pub re: f64,
    pub im: f64,
}

/// One element of a character vector: `None` is `NA_character_`.
pub type RString = Option<String>;

/// The payload of an R object. Each variant maps to one SEXPTYPE.
#[derive(Clone, Debug, PartialEq)]
pub enum Data {
    /// `NULL` (NILSXP). Never carries attributes.
    Null,
    /// LGLSXP.
    Logical(Vec<Logical>),
    /// INTSXP; NA is [`NA_INTEGER`].
    Integer(Vec<i32>),
    /// REALSXP; NA is [`na_real()`], which is distinct from `NaN`.
    Double(Vec<f64>),
    /// CPLXSXP.
    Complex(Vec<Complex>),
    /// STRSXP; NA is `None`. Strings are UTF-8.
    Character(Vec<RString>),
    /// RAWSXP.
    Raw(Vec<u8>),
    /// VECSXP: a generic vector (list), possibly nested.
    List(Vec<Value>),
}

/// An R object: payload plus attributes, in R's order.
#[derive(Clone, Debug, PartialEq)]
pub struct Value {
    pub data: Data,
    pub attrs: Attributes,
}

/// An ordered list of `(name, value)` attributes, as R keeps them.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Attributes(pub Vec<(String, Value)>);

impl Attributes {
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.0.iter().find(|(n, _)| n == name).map(|(_, v)| v)
    }

    /// Sets `name`, replacing an existing attribute in place (R keeps its position).
    pub fn set(&mut self, name: &str, value: Value) {
        match self.0.iter_mut().find(|(n, _)| n == name) {
            Some(slot) => slot.1 = value,
            None => self.0.push((name.to_owned(), value)),
        }
    }

    pub fn remove(&mut self, name: &str) -> Option<Value> {
        let at = self.0.iter().position(|(n, _)| n == name)?;
        Some(self.0.remove(at).1)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.0.iter().map(|(n, v)| (n.as_str(), v))
    }
}

impl From<Data> for Value {
    fn from(data: Data) -> Self {
        Value {
            data,
            attrs: Attributes::default(),
        }
    }
}

impl Data {
    /// R's `length()` of the payload.
    pub fn len(&self) -> usize {
        match self {
            Data::Null => 0,
            Data::Logical(v) => v.len(),
            Data::Integer(v) => v.len(),
            Data::Double(v) => v.len(),
            Data::Complex(v) => v.len(),
            Data::Character(v) => v.len(),
            Data::Raw(v) => v.len(),
            Data::List(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// R's `typeof()`.
    pub fn type_name(&self) -> &'static str {
        match self {
            Data::Null => "NULL",
            Data::Logical(_) => "logical",
            Data::Integer(_) => "integer",
            Data::Double(_) => "double",
            Data::Complex(_) => "complex",
            Data::Character(_) => "character",
            Data::Raw(_) => "raw",
            Data::List(_) => "list",
        }
    }
}

impl Value {
    pub const NULL: Value = Value {
        data: Data::Null,
        attrs: Attributes(Vec::new()),
    };

    pub fn logicals(v: impl IntoIterator<Item = impl Into<Logical>>) -> Value {
        Data::Logical(v.into_iter().map(Into::into).collect()).into()
    }

    pub fn integers(v: impl Into<Vec<i32>>) -> Value {
        Data::Integer(v.into()).into()
    }

    pub fn doubles(v: impl Into<Vec<f64>>) -> Value {
        Data::Double(v.into()).into()
    }

    pub fn complexes(v: impl Into<Vec<Complex>>) -> Value {
        Data::Complex(v.into()).into()
    }

    pub fn raw(v: impl Into<Vec<u8>>) -> Value {
        Data::Raw(v.into()).into()
    }

    /// A character vector from anything string-like; use [`Value::strings_na`] for NA.
    pub fn strings<S: Into<String>>(v: impl IntoIterator<Item = S>) -> Value {
        Data::Character(v.into_iter().map(|s| Some(s.into())).collect()).into()
    }

    /// A character vector whose `None` elements are `NA_character_`.
    pub fn strings_na(v: impl Into<Vec<RString>>) -> Value {
        Data::Character(v.into()).into()
    }

    pub fn list(items: impl Into<Vec<Value>>) -> Value {
        Data::List(items.into()).into()
    }

    /// A named list, as `list(a = ..., b = ...)`.
    pub fn named_list<S: Into<String>>(items: impl IntoIterator<Item = (S, Value)>) -> Value {
        let (names, values): (Vec<_>, Vec<_>) =
            items.into_iter().map(|(n, v)| (Some(n.into()), v)).unzip();
        Value::list(values).with_attr("names", Value::strings_na(names))
    }

    pub fn scalar_double(x: f64) -> Value {
        Value::doubles(vec![x])
    }

    pub fn scalar_int(x: i32) -> Value {
        Value::integers(vec![x])
    }

    pub fn scalar_string(s: impl Into<String>) -> Value {
        Value::strings([s.into()])
    }

    pub fn scalar_bool(b: bool) -> Value {
        Value::logicals([b])
    }

    /// Builder form of [`Attributes::set`].
    pub fn with_attr(mut self, name: &str, value: Value) -> Value {
        self.attrs.set(name, value);
        self
    }

    pub fn attr(&self, name: &str) -> Option<&Value> {
        self.attrs.get(name)
    }

    pub fn len(&self) -> usize {
        self.data.len()
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    pub fn is_null(&self) -> bool {
        matches!(self.data, Data::Null)
    }

    /// The `class` attribute, if any.
    pub fn class(&self) -> Option<&[RString]> {
        self.attr("class").and_then(Value::as_strings)
    }

    /// R's `inherits(x, what)` for an explicit `class` attribute.
    pub fn inherits(&self, what: &str) -> bool {
        self.class()
            .is_some_and(|c| c.iter().any(|s| s.as_deref() == Some(what)))
    }

    /// The `names` attribute, if any.
    pub fn names(&self) -> Option<&[RString]> {
        self.attr("names").and_then(Value::as_strings)
    }

    /// The `dim` attribute, if any.
    pub fn dim(&self) -> Option<&[i32]> {
        self.attr("dim").and_then(Value::as_integers)
    }

    pub fn as_strings(&self) -> Option<&[RString]> {
        match &self.data {
            Data::Character(v) => Some(v),
            _ => None,
        }
    }

    pub fn as_integers(&self) -> Option<&[i32]> {
        match &self.data {
            Data::Integer(v) => Some(v),
            _ => None,
        }
    }

    pub fn as_doubles(&self) -> Option<&[f64]> {
        match &self.data {
            Data::Double(v) => Some(v),
            _ => None,
        }
    }

    pub fn as_logicals(&self) -> Option<&[Logical]> {
        match &self.data {
            Data::Logical(v) => Some(v),
            _ => None,
        }
    }

    pub fn as_list(&self) -> Option<&[Value]> {
        match &self.data {
            Data::List(v) => Some(v),
            _ => None,
        }
    }

    /// The first element as `f64`, converting integers and logicals (NA -> `NA_real_`).
    pub fn as_f64(&self) -> Option<f64> {
        let na = |i: i32| {
            if i == NA_INTEGER {
                na_real()
            } else {
                f64::from(i)
            }
        };
        match &self.data {
            Data::Double(v) => v.first().copied(),
            Data::Integer(v) => v.first().map(|&i| na(i)),
            Data::Logical(v) => v.first().map(|l| na(l.0)),
            _ => None,
        }
    }

    /// The first element of a character vector.
    pub fn as_str(&self) -> Option<&str> {
        self.as_strings()?.first()?.as_deref()
    }

    /// A factor from 1-based codes (NA allowed) and its levels.
    pub fn factor(codes: impl Into<Vec<i32>>, levels: impl Into<Vec<RString>>) -> Value {
        Value::integers(codes)
            .with_attr("levels", Value::strings_na(levels))
            .with_attr("class", Value::strings(["factor"]))
    }

    /// A `Date` vector from days since 1970-01-01.
    pub fn date(days: impl Into<Vec<f64>>) -> Value {
        Value::doubles(days).with_attr("class", Value::strings(["Date"]))
    }

    /// A `POSIXct` vector from seconds since the epoch; `tz` of `""` is local time.
    pub fn posixct(seconds: impl Into<Vec<f64>>, tz: &str) -> Value {
        Value::doubles(seconds)
            .with_attr("class", Value::strings(["POSIXct", "POSIXt"]))
            .with_attr("tzone", Value::scalar_string(tz))
    }

    /// A matrix from column-major data and its dimensions.
    pub fn matrix(data: Data, nrow: usize, ncol: usize) -> Value {
        let dim = vec![dim_i32(nrow), dim_i32(ncol)];
        Value::from(data).with_attr("dim", Value::integers(dim))
    }
}

fn dim_i32(n: usize) -> i32 {
    i32::try_from(n).expect("matrix dimension exceeds R's integer range")
}

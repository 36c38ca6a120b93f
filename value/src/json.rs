//! JSON for [`Value`]s in the conventions of R's jsonlite (`toJSON` / `fromJSON`).
//!
//! Writing streams: [`Json`] implements [`Serialize`] straight over the value, so
//! [`to_json_writer`] never builds an intermediate tree, even for a million-row frame.
//! The shapes follow jsonlite's defaults:
//!
//! | R value | JSON |
//! | --- | --- |
//! | atomic vector | array; a length-1 vector is a scalar with `auto_unbox` |
//! | `NA`, `NaN`, `Inf` | `null` (or `"NA"`, `"NaN"`, `"Inf"` when `na_as_null` is off) |
//! | `NULL` | `{}` |
//! | named / unnamed list | object (missing names become 1-based positions) / array |
//! | factor, `Date`, `POSIXct` | level strings, `"2020-01-01"`, `"2020-01-01 12:34:56"` |
//! | matrix / array | row-major nested arrays |
//! | data frame | array of row records with NA fields left out, or object of columns |
//! | complex / raw | `"1+2i"` strings / one base64 string |
//!
//! `POSIXct` is shown in its `tzone` (a missing or empty `tzone` is the process's local
//! zone), using the system time-zone database; an unknown zone falls back to UTC.
//! Whole doubles below 1e15 are written as integers (`100`, as jsonlite does); other
//! doubles use the shortest form that reads back to the same bits, unless `digits` asks
//! for jsonlite-style rounding.
//!
//! Reading ([`from_json`]) follows `fromJSON(simplifyVector = TRUE,
//! simplifyDataFrame = TRUE, simplifyMatrix = TRUE)`: see [`from_json`]. Numbers too large
//! for a double (`1e400`) are a parse error rather than `Inf`.
//!
//! This module owns only the text form; it never touches R.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::io;

use jiff::tz::TimeZone;
use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::ser::{Serialize, SerializeMap, Serializer};

pub use crate::frame::list_to_data_frame;
use crate::frame::{frame_with_rows, gather};
use crate::num::{complex_string, is_integral, non_finite_name, number_string, round_digits};
use crate::{na_real, Complex, Data, Logical, RString, Value, NA_INTEGER};

/// How a data frame is laid out, as jsonlite's `dataframe` argument.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DataFrameLayout {
    /// An array of one object per row; NA fields are left out of the record.
    #[default]
    Rows,
    /// One object whose members are the column arrays.
    Columns,
}

/// The `toJSON` arguments that Rookery supports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JsonOptions {
    /// Write length-1 atomic vectors as scalars (never matrices, lists or frame columns).
    pub auto_unbox: bool,
    pub dataframe: DataFrameLayout,
    /// `None`: shortest round-trip form. `Some(d)`: round to `d` decimal places as
    /// jsonlite does (magnitudes under 1e-5 keep `d` decimals in scientific form, those
    /// of 1e15 and over keep 15 significant digits).
    pub digits: Option<u32>,
    /// Write NA, NaN and Inf as `null` (default) instead of `"NA"`, `"NaN"`, `"Inf"`.
    pub na_as_null: bool,
}

impl Default for JsonOptions {
    fn default() -> Self {
        JsonOptions {
            auto_unbox: false,
            dataframe: DataFrameLayout::Rows,
            digits: None,
            na_as_null: true,
        }
    }
}

/// A [`Value`] ready to serialize with `opts`; serialize it with any serde serializer.
#[derive(Clone, Copy, Debug)]
pub struct Json<'a> {
    pub value: &'a Value,
    pub opts: &'a JsonOptions,
}

impl Serialize for Json<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        serialize_value(self.value, self.opts, false, s)
    }
}

/// The JSON text of `value`.
pub fn to_json(value: &Value, opts: &JsonOptions) -> String {
    let mut out = Vec::new();
    let written = to_json_writer(&mut out, value, opts);
    debug_assert!(written.is_ok(), "writing JSON to a Vec cannot fail");
    String::from_utf8(out).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// Streams the JSON text of `value` to `writer`, which should be buffered.
pub fn to_json_writer<W: io::Write>(
    writer: W,
    value: &Value,
    opts: &JsonOptions,
) -> io::Result<()> {
    serde_json::to_writer(writer, &Json { value, opts }).map_err(io::Error::from)
}

/// Invalid JSON text, located as serde_json reports it (1-based; 0 when unknown).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct JsonError {
    pub message: String,
    pub line: usize,
    pub column: usize,
}

impl From<serde_json::Error> for JsonError {
    fn from(e: serde_json::Error) -> Self {
        JsonError {
            message: e.to_string(),
            line: e.line(),
            column: e.column(),
        }
    }
}

/// Parses JSON as `jsonlite::fromJSON` with its default simplification:
///
/// - `null` is `NULL`; a scalar is a length-1 vector; an object is a named list.
/// - An array of scalars is one atomic vector: all booleans give logical; integer
///   literals that fit give integer; other numbers give double (booleans count as 0/1);
///   any other string makes it character. `null` is NA of that type, and the strings
///   `"NA"`, `"NaN"`, `"Inf"`, `"-Inf"` mixed with numbers or booleans are those values.
///   An array of nothing but nulls (and `"NA"`) is a logical NA vector.
/// - An array of objects (or nulls) is a data frame: the union of keys in first-seen
///   order, missing fields NA; nested objects become nested frames, arrays list columns.
/// - An array of equal-length arrays of scalars is a matrix (rows first), or a higher
///   array when nested deeper; `[]` is `list()`; anything else is a list.
pub fn from_json(text: &str) -> Result<Value, JsonError> {
    let node: Node = serde_json::from_str(text)?;
    Ok(simplify(node))
}

// ---------------------------------------------------------------------------------------
// Writing
// ---------------------------------------------------------------------------------------

fn serialize_value<S: Serializer>(
    v: &Value,
    opts: &JsonOptions,
    boxed: bool,
    s: S,
) -> Result<S::Ok, S::Error> {
    match &v.data {
        Data::Null => s.serialize_map(Some(0))?.end(),
        Data::List(_) if v.is_data_frame() => Frame::new(v, opts).serialize(s),
        Data::List(items) if has_names(v) => serialize_object(v, items, opts, s),
        Data::Raw(bytes) if opts.auto_unbox && !boxed => s.serialize_str(&base64(bytes)),
        Data::Raw(bytes) => s.collect_seq([base64(bytes)]),
        _ => match array_dims(v) {
            Some(dims) => NdArray::serialize_top(&Cells::new(v, opts), &dims, opts, s),
            None => serialize_vector(v, opts, boxed, s),
        },
    }
}

/// Serializes one child value; lists and frames recurse through here.
struct Ser<'a> {
    value: &'a Value,
    opts: &'a JsonOptions,
    boxed: bool,
}

impl Serialize for Ser<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        serialize_value(self.value, self.opts, self.boxed, s)
    }
}

fn serialize_vector<S: Serializer>(
    v: &Value,
    opts: &JsonOptions,
    boxed: bool,
    s: S,
) -> Result<S::Ok, S::Error> {
    let cells = Cells::new(v, opts);
    let is_list = matches!(v.data, Data::List(_));
    if opts.auto_unbox && !boxed && !is_list && v.len() == 1 {
        return cells.cell(0, opts).serialize(s);
    }
    s.collect_seq((0..v.len()).map(|i| cells.cell(i, opts)))
}

fn has_names(v: &Value) -> bool {
    v.names().is_some_and(|n| n.len() == v.len())
}

/// A member name: the R name, or the 1-based position when it is missing or empty.
fn key(names: &[RString], i: usize) -> Cow<'_, str> {
    match names.get(i) {
        Some(Some(n)) if !n.is_empty() => Cow::Borrowed(n),
        _ => Cow::Owned((i + 1).to_string()),
    }
}

fn serialize_object<S: Serializer>(
    v: &Value,
    items: &[Value],
    opts: &JsonOptions,
    s: S,
) -> Result<S::Ok, S::Error> {
    let names = v.names().unwrap_or_default();
    let mut map = s.serialize_map(Some(items.len()))?;
    for (i, value) in items.iter().enumerate() {
        let child = Ser {
            value,
            opts,
            boxed: false,
        };
        map.serialize_entry(&key(names, i), &child)?;
    }
    map.end()
}

/// The extents of a matrix or array whose `dim` matches its length.
fn array_dims(v: &Value) -> Option<Vec<usize>> {
    let dim = v.dim().filter(|d| d.len() >= 2)?;
    let dims: Vec<usize> = dim
        .iter()
        .map(|&d| usize::try_from(d).ok())
        .collect::<Option<_>>()?;
    let size = dims.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d))?;
    (size == v.len()).then_some(dims)
}

/// One level of a row-major nested array over column-major cells.
struct NdArray<'c> {
    cells: &'c Cells<'c>,
    dims: &'c [usize],
    strides: &'c [usize],
    base: usize,
    opts: &'c JsonOptions,
}

impl NdArray<'_> {
    fn serialize_top<S: Serializer>(
        cells: &Cells<'_>,
        dims: &[usize],
        opts: &JsonOptions,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        let strides: Vec<usize> = dims
            .iter()
            .scan(1usize, |acc, &d| {
                Some(std::mem::replace(acc, acc.saturating_mul(d)))
            })
            .collect();
        let top = NdArray {
            cells,
            dims,
            strides: &strides,
            base: 0,
            opts,
        };
        top.serialize(s)
    }
}

impl Serialize for NdArray<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let (Some((&n, inner)), Some((&step, strides))) =
            (self.dims.split_first(), self.strides.split_first())
        else {
            return s.serialize_unit();
        };
        let at = |k: usize| self.base + k * step;
        if inner.is_empty() {
            return s.collect_seq((0..n).map(|k| self.cells.cell(at(k), self.opts)));
        }
        let sub = |k| NdArray {
            dims: inner,
            strides,
            base: at(k),
            ..*self
        };
        s.collect_seq((0..n).map(sub))
    }
}

/// A data frame prepared for writing: one [`Cells`] per column.
struct Frame<'a> {
    values: &'a [Value],
    keys: Vec<Cow<'a, str>>,
    columns: Vec<Cells<'a>>,
    nrow: usize,
    row_names: Option<&'a [RString]>,
    opts: &'a JsonOptions,
}

impl<'a> Frame<'a> {
    fn new(v: &'a Value, opts: &'a JsonOptions) -> Frame<'a> {
        let values = v.as_list().unwrap_or_default();
        let names = v.names().unwrap_or_default();
        Frame {
            values,
            keys: (0..values.len()).map(|i| key(names, i)).collect(),
            columns: values.iter().map(|c| Cells::column(c, opts)).collect(),
            nrow: v.nrow().unwrap_or(0),
            row_names: v.attr("row.names").and_then(Value::as_strings),
            opts,
        }
    }

    fn serialize_columns<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(None)?;
        for (key, value) in self.keys.iter().zip(self.values) {
            map.serialize_entry(
                key,
                &Ser {
                    value,
                    opts: self.opts,
                    boxed: true,
                },
            )?;
        }
        if let Some(rn) = self.row_names {
            map.serialize_entry("_row", rn)?;
        }
        map.end()
    }
}

impl Serialize for Frame<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.opts.dataframe {
            DataFrameLayout::Rows => {
                s.collect_seq((0..self.nrow).map(|row| Record { frame: self, row }))
            }
            DataFrameLayout::Columns => self.serialize_columns(s),
        }
    }
}

/// One data-frame row as an object.
struct Record<'c> {
    frame: &'c Frame<'c>,
    row: usize,
}

impl Serialize for Record<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let Frame {
            keys,
            columns,
            opts,
            ..
        } = self.frame;
        let mut map = s.serialize_map(None)?;
        for (key, column) in keys.iter().zip(columns) {
            let cell = column.cell(self.row, opts);
            if !(opts.na_as_null && matches!(cell, Cell::Na(_))) {
                map.serialize_entry(key, &cell)?;
            }
        }
        if let Some(Some(name)) = self.frame.row_names.and_then(|rn| rn.get(self.row)) {
            map.serialize_entry("_row", name)?;
        }
        map.end()
    }
}

/// One row of a matrix column inside a data frame.
struct MatrixRow<'c> {
    inner: &'c Cells<'c>,
    row: usize,
    nrow: usize,
    ncol: usize,
    opts: &'c JsonOptions,
}

impl Serialize for MatrixRow<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let at = |j: usize| self.row + j * self.nrow;
        s.collect_seq((0..self.ncol).map(|j| self.inner.cell(at(j), self.opts)))
    }
}

/// The elements of one vector, with how each element is written decided once.
enum Cells<'a> {
    Empty,
    Logical(&'a [Logical]),
    Integer(&'a [i32]),
    Double(&'a [f64]),
    Complex(&'a [Complex]),
    Character(&'a [RString]),
    Raw(&'a [u8]),
    Factor(&'a [i32], &'a [RString]),
    Date(Numbers<'a>),
    Time(Numbers<'a>, Zone),
    List(&'a [Value]),
    Frame(Box<Frame<'a>>),
    Matrix(Box<Cells<'a>>, usize, usize),
}

/// One element, ready to write.
enum Cell<'c> {
    /// Missing: `null`, or the given text when NA is written as strings.
    Na(Option<&'static str>),
    Bool(bool),
    Int(i64),
    Num(f64),
    Str(Cow<'c, str>),
    Value(&'c Value, &'c JsonOptions),
    Record(Record<'c>),
    Row(MatrixRow<'c>),
}

impl<'a> Cells<'a> {
    fn new(v: &'a Value, opts: &'a JsonOptions) -> Cells<'a> {
        match &v.data {
            Data::Integer(codes) if v.inherits("factor") => Cells::Factor(codes, levels(v)),
            Data::Integer(_) | Data::Double(_) if v.inherits("Date") => {
                Cells::Date(Numbers::of(&v.data))
            }
            Data::Integer(_) | Data::Double(_) if v.inherits("POSIXct") => {
                Cells::Time(Numbers::of(&v.data), Zone::of(v))
            }
            Data::List(_) if v.is_data_frame() => Cells::Frame(Box::new(Frame::new(v, opts))),
            Data::Null => Cells::Empty,
            Data::Logical(x) => Cells::Logical(x),
            Data::Integer(x) => Cells::Integer(x),
            Data::Double(x) => Cells::Double(x),
            Data::Complex(x) => Cells::Complex(x),
            Data::Character(x) => Cells::Character(x),
            Data::Raw(x) => Cells::Raw(x),
            Data::List(x) => Cells::List(x),
        }
    }

    /// A data-frame column: like [`Cells::new`], but a matrix column yields its rows.
    fn column(v: &'a Value, opts: &'a JsonOptions) -> Cells<'a> {
        match array_dims(v).as_deref() {
            Some(&[nrow, ncol]) => Cells::Matrix(Box::new(Cells::new(v, opts)), nrow, ncol),
            _ => Cells::new(v, opts),
        }
    }

    /// Element `i`; out-of-range elements are NA, so malformed values never panic.
    fn cell<'c>(&'c self, i: usize, opts: &'c JsonOptions) -> Cell<'c> {
        let na = || Cell::Na((!opts.na_as_null).then_some("NA"));
        let text = |t: Option<String>| t.map_or_else(na, |t| Cell::Str(t.into()));
        match self {
            Cells::Empty => na(),
            Cells::Logical(v) => v
                .get(i)
                .and_then(|l| l.to_option())
                .map_or_else(na, Cell::Bool),
            Cells::Integer(v) => v
                .get(i)
                .filter(|&&x| x != NA_INTEGER)
                .map_or_else(na, |&x| Cell::Int(x.into())),
            Cells::Double(v) => v.get(i).map_or_else(na, |&x| double_cell(x, opts)),
            Cells::Complex(v) => text(v.get(i).and_then(|&c| complex_string(c, opts.digits))),
            Cells::Character(v) => v
                .get(i)
                .and_then(Option::as_deref)
                .map_or_else(na, |t| Cell::Str(t.into())),
            Cells::Raw(v) => text(v.get(i).map(|b| format!("{b:02x}"))),
            Cells::Factor(codes, levels) => {
                factor_level(codes, levels, i).map_or_else(na, |t| Cell::Str(t.into()))
            }
            Cells::Date(n) => text(n.get(i).and_then(date_string)),
            Cells::Time(n, zone) => text(n.get(i).and_then(|x| zone.format(x))),
            Cells::List(v) => v.get(i).map_or_else(na, |x| Cell::Value(x, opts)),
            Cells::Frame(frame) => Cell::Record(Record { frame, row: i }),
            Cells::Matrix(inner, nrow, ncol) => Cell::Row(MatrixRow {
                inner,
                row: i,
                nrow: *nrow,
                ncol: *ncol,
                opts,
            }),
        }
    }
}

impl Serialize for Cell<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Cell::Na(None) => s.serialize_unit(),
            Cell::Na(Some(t)) => s.serialize_str(t),
            Cell::Bool(b) => s.serialize_bool(*b),
            Cell::Int(i) => s.serialize_i64(*i),
            Cell::Num(x) => s.serialize_f64(*x),
            Cell::Str(t) => s.serialize_str(t),
            Cell::Value(value, opts) => serialize_value(value, opts, false, s),
            Cell::Record(r) => r.serialize(s),
            Cell::Row(r) => r.serialize(s),
        }
    }
}

fn levels(v: &Value) -> &[RString] {
    v.attr("levels")
        .and_then(Value::as_strings)
        .unwrap_or_default()
}

fn factor_level<'c>(codes: &[i32], levels: &'c [RString], i: usize) -> Option<&'c str> {
    let code = usize::try_from(*codes.get(i)?).ok()?;
    levels.get(code.checked_sub(1)?)?.as_deref()
}

fn double_cell<'c>(x: f64, opts: &JsonOptions) -> Cell<'c> {
    if !x.is_finite() {
        return Cell::Na((!opts.na_as_null).then_some(non_finite_name(x)));
    }
    let x = round_digits(x, opts.digits);
    match is_integral(x) {
        true => Cell::Int(x as i64),
        false => Cell::Num(x),
    }
}

fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let word = chunk
            .iter()
            .enumerate()
            .fold(0u32, |w, (k, &b)| w | u32::from(b) << (16 - 8 * k));
        for k in 0..4 {
            let symbol = match k <= chunk.len() {
                true => char::from(ALPHABET[(word >> (18 - 6 * k) & 63) as usize]),
                false => '=',
            };
            out.push(symbol);
        }
    }
    out
}

// ---------------------------------------------------------------------------------------
// Dates and times
// ---------------------------------------------------------------------------------------

/// The numbers behind a `Date` or `POSIXct`, which R may store as integer or double.
enum Numbers<'a> {
    Int(&'a [i32]),
    Double(&'a [f64]),
    None,
}

impl<'a> Numbers<'a> {
    fn of(data: &'a Data) -> Numbers<'a> {
        match data {
            Data::Integer(v) => Numbers::Int(v),
            Data::Double(v) => Numbers::Double(v),
            _ => Numbers::None,
        }
    }

    /// Element `i` rounded down to a whole unit; `None` for NA, non-finite, or beyond
    /// any calendar.
    fn get(&self, i: usize) -> Option<i64> {
        let x = match self {
            Numbers::Int(v) => v
                .get(i)
                .copied()
                .filter(|&x| x != NA_INTEGER)
                .map(f64::from)?,
            Numbers::Double(v) => *v.get(i)?,
            Numbers::None => return None,
        };
        (x.is_finite() && x.abs() < 1e15).then(|| x.floor() as i64)
    }
}

/// The zone a `POSIXct` is shown in.
enum Zone {
    Utc,
    Tz(TimeZone),
}

impl Zone {
    fn of(v: &Value) -> Zone {
        match v.attr("tzone").and_then(Value::as_str) {
            Some("UTC" | "GMT" | "Etc/UTC") => Zone::Utc,
            Some(name) if !name.is_empty() => TimeZone::get(name).map_or(Zone::Utc, Zone::Tz),
            _ => Zone::Tz(TimeZone::system()),
        }
    }

    /// `"YYYY-MM-DD HH:MM:SS"` for whole seconds since the epoch.
    fn format(&self, utc: i64) -> Option<String> {
        let local = utc.checked_add(self.offset(utc))?;
        let (days, secs) = (local.div_euclid(86_400), local.rem_euclid(86_400));
        let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
        Some(format!("{} {h:02}:{m:02}:{s:02}", date_string(days)?))
    }

    fn offset(&self, utc: i64) -> i64 {
        match self {
            Zone::Utc => 0,
            Zone::Tz(tz) => jiff::Timestamp::from_second(utc)
                .map_or(0, |t| i64::from(tz.to_offset(t).seconds())),
        }
    }
}

/// `"YYYY-MM-DD"` for days since 1970-01-01 (proleptic Gregorian calendar).
fn date_string(days: i64) -> Option<String> {
    let (y, m, d) = civil_from_days(days)?;
    Some(format!("{y:04}-{m:02}-{d:02}"))
}

/// Year, month, day from days since the epoch, counting in 400-year eras that start on
/// 1 March so that the leap day falls at the end of each year.
fn civil_from_days(days: i64) -> Option<(i64, i64, i64)> {
    const ERA_DAYS: i64 = 146_097;
    let z = days.checked_add(719_468)?;
    let (era, doe) = (z.div_euclid(ERA_DAYS), z.rem_euclid(ERA_DAYS));
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / (ERA_DAYS - 1)) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    Some((year, month, day))
}

// ---------------------------------------------------------------------------------------
// Reading
// ---------------------------------------------------------------------------------------

/// Parsed JSON that keeps member order, duplicate keys, and integer vs. decimal literals.
#[derive(Clone, Debug)]
enum Node {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Array(Vec<Node>),
    Object(Vec<(String, Node)>),
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Node, D::Error> {
        d.deserialize_any(NodeVisitor)
    }
}

struct NodeVisitor;

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Node;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_unit<E: de::Error>(self) -> Result<Node, E> {
        Ok(Node::Null)
    }

    fn visit_bool<E: de::Error>(self, b: bool) -> Result<Node, E> {
        Ok(Node::Bool(b))
    }

    fn visit_i64<E: de::Error>(self, i: i64) -> Result<Node, E> {
        Ok(Node::Int(i))
    }

    fn visit_u64<E: de::Error>(self, u: u64) -> Result<Node, E> {
        Ok(i64::try_from(u).map_or(Node::Float(u as f64), Node::Int))
    }

    fn visit_f64<E: de::Error>(self, x: f64) -> Result<Node, E> {
        Ok(Node::Float(x))
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<Node, E> {
        Ok(Node::Str(s.to_owned()))
    }

    fn visit_string<E: de::Error>(self, s: String) -> Result<Node, E> {
        Ok(Node::Str(s))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Node::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
        let mut entries = Vec::new();
        while let Some(entry) = map.next_entry()? {
            entries.push(entry);
        }
        Ok(Node::Object(entries))
    }
}

fn simplify(node: Node) -> Value {
    match node {
        Node::Null => Value::NULL,
        Node::Object(entries) => {
            Value::named_list(entries.into_iter().map(|(k, v)| (k, simplify(v))))
        }
        Node::Array(items) => simplify_array(items),
        scalar => scalars(vec![scalar]),
    }
}

fn is_scalar(node: &Node) -> bool {
    !matches!(node, Node::Array(_) | Node::Object(_))
}

fn is_record(node: &Node) -> bool {
    matches!(node, Node::Object(_) | Node::Null)
}

fn simplify_array(items: Vec<Node>) -> Value {
    if items.is_empty() {
        return Value::list(Vec::new());
    }
    if items.iter().all(is_scalar) {
        return scalars(items);
    }
    if items.iter().all(is_record) {
        return records(items);
    }
    let all_arrays = items.iter().all(|n| matches!(n, Node::Array(_)));
    let values: Vec<Value> = items.into_iter().map(simplify).collect();
    match all_arrays {
        true => stack(values),
        false => Value::list(values),
    }
}

/// The type an array of scalars simplifies to, from a census of its elements.
#[derive(Default)]
struct Census {
    bools: bool,
    ints: bool,
    doubles: bool,
    /// `"NaN"`, `"Inf"` or `"-Inf"`: numeric only when mixed with numbers or booleans.
    special: bool,
    text: bool,
}

impl Census {
    fn take(mut self, node: &Node) -> Census {
        match node {
            Node::Bool(_) => self.bools = true,
            Node::Int(i) if as_r_int(*i).is_some() => self.ints = true,
            Node::Int(_) | Node::Float(_) => self.doubles = true,
            Node::Str(s) if s == "NA" => {}
            Node::Str(s) if special_double(s).is_some() => self.special = true,
            Node::Str(_) => self.text = true,
            Node::Null | Node::Array(_) | Node::Object(_) => {}
        }
        self
    }
}

/// An integer literal that R can hold as integer (`NA_integer_` itself cannot be one).
fn as_r_int(i: i64) -> Option<i32> {
    i32::try_from(i).ok().filter(|&i| i != NA_INTEGER)
}

fn special_double(s: &str) -> Option<f64> {
    match s {
        "NaN" => Some(f64::NAN),
        "Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        _ => None,
    }
}

fn scalars(items: Vec<Node>) -> Value {
    let census = items.iter().fold(Census::default(), Census::take);
    if census.text {
        return Value::strings_na(items.into_iter().map(node_string).collect::<Vec<_>>());
    }
    if census.doubles || census.special {
        return Value::doubles(items.iter().map(node_double).collect::<Vec<_>>());
    }
    if census.ints {
        return Value::integers(items.iter().map(node_int).collect::<Vec<_>>());
    }
    Value::logicals(items.iter().map(|n| match n {
        Node::Bool(b) => Some(*b),
        _ => None,
    }))
}

fn node_string(node: Node) -> RString {
    match node {
        Node::Str(s) => Some(s),
        Node::Bool(b) => Some(if b { "TRUE" } else { "FALSE" }.to_owned()),
        Node::Int(i) => Some(i.to_string()),
        Node::Float(x) => Some(number_string(x)),
        Node::Null | Node::Array(_) | Node::Object(_) => None,
    }
}

fn node_double(node: &Node) -> f64 {
    match node {
        Node::Bool(b) => f64::from(u8::from(*b)),
        Node::Int(i) => *i as f64,
        Node::Float(x) => *x,
        Node::Str(s) => special_double(s).unwrap_or_else(na_real),
        Node::Null | Node::Array(_) | Node::Object(_) => na_real(),
    }
}

fn node_int(node: &Node) -> i32 {
    match node {
        Node::Bool(b) => i32::from(*b),
        Node::Int(i) => as_r_int(*i).unwrap_or(NA_INTEGER),
        _ => NA_INTEGER,
    }
}

/// An array of objects (and nulls, which become all-NA rows) as a data frame.
fn records(items: Vec<Node>) -> Value {
    let nrow = items.len();
    let mut keys: Vec<String> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    let mut columns: Vec<Vec<Node>> = Vec::new();
    for (row, item) in items.into_iter().enumerate() {
        let Node::Object(entries) = item else {
            continue;
        };
        for (pos, (k, v)) in entries.into_iter().enumerate() {
            let c = match keys.get(pos) == Some(&k) {
                true => pos,
                false => *index.entry(k.clone()).or_insert_with(|| {
                    keys.push(k);
                    columns.push(vec![Node::Null; nrow]);
                    keys.len() - 1
                }),
            };
            columns[c][row] = v;
        }
    }
    let columns = keys.into_iter().zip(columns.into_iter().map(record_column));
    frame_with_rows(columns.collect(), nrow)
}

fn record_column(nodes: Vec<Node>) -> Value {
    if nodes.iter().all(is_scalar) {
        scalars(nodes)
    } else if nodes.iter().all(is_record) {
        records(nodes)
    } else {
        Value::list(nodes.into_iter().map(simplify).collect::<Vec<_>>())
    }
}

/// Equal-shaped atomic rows as a matrix (or a higher array when the rows are matrices);
/// anything else stays a list. Element `k` of row `i` lands at `i + n * k`.
fn stack(rows: Vec<Value>) -> Value {
    let Some(first) = rows.first() else {
        return Value::list(rows);
    };
    let (len, inner_dim) = (first.len(), first.dim().map(<[i32]>::to_vec));
    let stackable = |v: &Value| {
        let atomic = matches!(
            v.data,
            Data::Logical(_) | Data::Integer(_) | Data::Double(_) | Data::Character(_)
        );
        let only_dim = v.attrs.iter().all(|(name, _)| name == "dim");
        atomic && only_dim && v.len() == len && v.dim().map(<[i32]>::to_vec) == inner_dim
    };
    if len == 0 || !rows.iter().all(stackable) {
        return Value::list(rows);
    }
    match Value::concat(&rows) {
        Ok(joined) => transpose_rows(joined, rows.len(), len, inner_dim),
        Err(_) => Value::list(rows),
    }
}

fn transpose_rows(joined: Value, n: usize, len: usize, inner_dim: Option<Vec<i32>>) -> Value {
    let index: Vec<usize> = (0..len)
        .flat_map(|k| (0..n).map(move |i| i * len + k))
        .collect();
    let inner = inner_dim.unwrap_or_else(|| vec![dim_i32(len)]);
    let dims: Vec<i32> = std::iter::once(dim_i32(n)).chain(inner).collect();
    Value::from(gather(&joined.data, &index)).with_attr("dim", Value::integers(dims))
}

fn dim_i32(n: usize) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

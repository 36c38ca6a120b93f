//! Data-frame and vector structure: build, measure, cut into row chunks and glue back.
//!
//! The batch engine splits a data frame into row ranges, scores each range on its own
//! worker and reassembles the answers, which may be data frames, matrices or plain
//! vectors. [`Value::slice_rows`] is the cut and [`Value::concat_rows`] the glue; together
//! they are the identity. Both keep every attribute that still describes the result
//! (factor levels, `class`, `tzone`, ...), re-derive the ones that depend on the length
//! (`names`, `row.names`, `dim`, `dimnames`), and never panic: ranges are clamped and
//! parts that do not fit together are a [`ValueError`].
//!
//! Only structure lives here: no R, no JSON, no I/O. Number-to-text coercion (needed
//! when parts of different types are combined, as R's `c()` does) borrows the JSON
//! module's R-style number formatting.

use std::borrow::Cow;
use std::ops::Range;

use crate::num::{complex_string, number_string};
use crate::{is_na_real, na_real, Complex, Data, RString, Value, NA_INTEGER};

/// A structural error: parts that cannot be combined or a frame that cannot be built.
/// Plain data, so it can cross threads and processes.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ValueError {
    /// A data-frame column whose row count differs from the first column's.
    #[error("column `{column}` has {found} rows, expected {expected}")]
    LengthMismatch {
        column: String,
        expected: usize,
        found: usize,
    },
    /// A list that should become a data frame lacks a name for every element.
    #[error("expected a list with a name for every element")]
    NotANamedList,
    /// Part `part` (0-based) cannot be combined with the parts before it.
    #[error("part {part} does not match the first part: {reason}")]
    Mismatch { part: usize, reason: String },
    /// Combining a data-frame column failed.
    #[error("in column `{column}`: {source}")]
    InColumn {
        column: String,
        #[source]
        source: Box<ValueError>,
    },
    /// More rows than R's integer row names can count.
    #[error("{0} rows exceed R's integer range")]
    TooManyRows(usize),
}

impl Value {
    /// A data frame from named columns, as `data.frame(..., check.names = FALSE)` without
    /// conversions: checks that every column has the same number of rows and sets
    /// `names`, `class = "data.frame"` and compact `row.names`.
    pub fn data_frame(columns: Vec<(String, Value)>) -> Result<Value, ValueError> {
        let nrow = columns.first().map_or(0, |(_, c)| row_count(c));
        if let Some((name, col)) = columns.iter().find(|(_, c)| row_count(c) != nrow) {
            return Err(ValueError::LengthMismatch {
                column: name.clone(),
                expected: nrow,
                found: row_count(col),
            });
        }
        if i32::try_from(nrow).is_err() {
            return Err(ValueError::TooManyRows(nrow));
        }
        Ok(frame_with_rows(columns, nrow))
    }

    /// True for a list whose class includes `"data.frame"`.
    pub fn is_data_frame(&self) -> bool {
        matches!(self.data, Data::List(_)) && self.inherits("data.frame")
    }

    /// True for a vector with a two-element `dim`.
    pub fn is_matrix(&self) -> bool {
        self.dim().is_some_and(|d| d.len() == 2)
    }

    /// The number of rows of a data frame, read from compact or explicit `row.names`;
    /// `None` for anything that is not a data frame.
    pub fn nrow(&self) -> Option<usize> {
        if !self.is_data_frame() {
            return None;
        }
        match self.attr("row.names") {
            Some(rn) => Some(row_names_len(rn)),
            None => Some(self.as_list()?.first().map_or(0, row_count)),
        }
    }

    /// The element called `name` of a data frame or named list.
    pub fn column(&self, name: &str) -> Option<&Value> {
        let at = self
            .names()?
            .iter()
            .position(|n| n.as_deref() == Some(name))?;
        self.as_list()?.get(at)
    }

    /// Elements `range` of a vector, as `x[i]`: keeps attributes, slices `names`, drops
    /// `dim` and `dimnames`. The range is clamped to the vector's length.
    pub fn slice(&self, range: Range<usize>) -> Value {
        let range = clamp(range, self.len());
        let mut out = Value {
            data: slice_data(&self.data, range.clone()),
            attrs: self.attrs.clone(),
        };
        out.attrs.remove("dim");
        out.attrs.remove("dimnames");
        if let Some(names) = self.attr("names") {
            out.attrs.set("names", names.slice(range));
        }
        out
    }

    /// Rows `range` of a data frame (every column, with compact `row.names` unless they
    /// were explicit), of a matrix, or elements of a vector. Clamped to the row count.
    pub fn slice_rows(&self, range: Range<usize>) -> Value {
        if self.is_data_frame() {
            self.slice_frame_rows(range)
        } else if self.is_matrix() {
            self.slice_matrix_rows(range)
        } else {
            self.slice(range)
        }
    }

    /// Concatenates vectors in order, as R's `c()`: attributes come from the first part,
    /// `names` are joined (`""` for unnamed parts), factor levels are merged, and
    /// logical < integer < double < complex < character are coerced upwards. `NULL` parts
    /// are skipped; no parts at all give `NULL`.
    pub fn concat(parts: &[Value]) -> Result<Value, ValueError> {
        concat_refs(&parts.iter().collect::<Vec<_>>())
    }

    /// Reassembles row chunks in order: data frames with the same columns (column by
    /// column, recursively), matrices with the same column count (`rbind`), or vectors
    /// ([`Value::concat`]). `NULL` parts are skipped.
    pub fn concat_rows(parts: &[Value]) -> Result<Value, ValueError> {
        concat_rows_refs(&parts.iter().collect::<Vec<_>>())
    }

    fn slice_frame_rows(&self, range: Range<usize>) -> Value {
        let range = clamp(range, self.nrow().unwrap_or(0));
        let columns = self.as_list().unwrap_or_default();
        let columns = columns.iter().map(|c| c.slice_rows(range.clone()));
        let mut out = Value {
            data: Data::List(columns.collect()),
            attrs: self.attrs.clone(),
        };
        let row_names = match self.attr("row.names") {
            Some(rn) if !is_compact(rn) => rn.slice(range),
            _ => compact_row_names(range.len()),
        };
        out.attrs.set("row.names", row_names);
        out
    }

    fn slice_matrix_rows(&self, range: Range<usize>) -> Value {
        let (nrow, ncol) = matrix_shape(self);
        if nrow.checked_mul(ncol) != Some(self.len()) {
            return self.slice(range);
        }
        let range = clamp(range, nrow);
        let index: Vec<usize> = (0..ncol)
            .flat_map(|j| range.clone().map(move |i| j * nrow + i))
            .collect();
        let mut out = Value {
            data: gather(&self.data, &index),
            attrs: self.attrs.clone(),
        };
        out.attrs
            .set("dim", Value::integers([dim(range.len()), dim(ncol)]));
        if let Some(dn) = self.attr("dimnames").and_then(Value::as_list) {
            let rows = dn.first().map_or(Value::NULL, |r| r.slice(range));
            let dimnames = Value::list([rows, dn.get(1).cloned().unwrap_or(Value::NULL)]);
            out.attrs.set("dimnames", dimnames);
        }
        out
    }
}

/// Turns a named list of equal-length columns (as JSON's column layout parses) into a
/// data frame.
pub fn list_to_data_frame(v: Value) -> Result<Value, ValueError> {
    let names = v.names().ok_or(ValueError::NotANamedList)?.to_vec();
    let Data::List(columns) = v.data else {
        return Err(ValueError::NotANamedList);
    };
    if names.len() != columns.len() || names.iter().any(Option::is_none) {
        return Err(ValueError::NotANamedList);
    }
    let named = names.into_iter().flatten().zip(columns);
    Value::data_frame(named.collect())
}

/// A data frame with `nrow` rows from columns already known to fit, which may be none
/// (JSON's `[{}]` is a frame with one row and no columns).
pub(super) fn frame_with_rows(columns: Vec<(String, Value)>, nrow: usize) -> Value {
    Value::named_list(columns)
        .with_attr("class", Value::strings(["data.frame"]))
        .with_attr("row.names", compact_row_names(nrow))
}

/// R's compact `row.names`: `c(NA_integer_, -n)`, or `integer(0)` for no rows.
fn compact_row_names(n: usize) -> Value {
    match n {
        0 => Value::integers(Vec::new()),
        n => Value::integers([NA_INTEGER, -dim(n)]),
    }
}

fn is_compact(rn: &Value) -> bool {
    matches!(rn.as_integers(), Some([NA_INTEGER, _]) | Some([]))
}

fn row_names_len(rn: &Value) -> usize {
    match rn.as_integers() {
        Some(&[NA_INTEGER, n]) => n.unsigned_abs() as usize,
        _ => rn.len(),
    }
}

/// Rows of a data-frame column: a nested frame's rows, a matrix's first extent, or the
/// vector length.
fn row_count(v: &Value) -> usize {
    if let Some(n) = v.nrow() {
        return n;
    }
    match v.dim() {
        Some([n, ..]) => usize::try_from(*n).unwrap_or(0),
        _ => v.len(),
    }
}

fn matrix_shape(v: &Value) -> (usize, usize) {
    let d = v.dim().unwrap_or_default();
    let get = |i: usize| d.get(i).map_or(0, |&n| usize::try_from(n).unwrap_or(0));
    (get(0), get(1))
}

/// An R extent; lengths of real vectors always fit, anything else saturates.
fn dim(n: usize) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

fn clamp(range: Range<usize>, len: usize) -> Range<usize> {
    let end = range.end.min(len);
    range.start.min(end)..end
}

fn slice_data(data: &Data, r: Range<usize>) -> Data {
    match data {
        Data::Null => Data::Null,
        Data::Logical(v) => Data::Logical(v[r].to_vec()),
        Data::Integer(v) => Data::Integer(v[r].to_vec()),
        Data::Double(v) => Data::Double(v[r].to_vec()),
        Data::Complex(v) => Data::Complex(v[r].to_vec()),
        Data::Character(v) => Data::Character(v[r].to_vec()),
        Data::Raw(v) => Data::Raw(v[r].to_vec()),
        Data::List(v) => Data::List(v[r].to_vec()),
    }
}

/// Elements at `index`, which the caller has checked are in bounds.
pub(super) fn gather(data: &Data, index: &[usize]) -> Data {
    fn pick<T: Clone>(v: &[T], index: &[usize]) -> Vec<T> {
        index.iter().map(|&i| v[i].clone()).collect()
    }
    match data {
        Data::Null => Data::Null,
        Data::Logical(v) => Data::Logical(pick(v, index)),
        Data::Integer(v) => Data::Integer(pick(v, index)),
        Data::Double(v) => Data::Double(pick(v, index)),
        Data::Complex(v) => Data::Complex(pick(v, index)),
        Data::Character(v) => Data::Character(pick(v, index)),
        Data::Raw(v) => Data::Raw(pick(v, index)),
        Data::List(v) => Data::List(pick(v, index)),
    }
}

fn non_null<'a>(parts: &[&'a Value]) -> Vec<&'a Value> {
    parts.iter().copied().filter(|p| !p.is_null()).collect()
}

fn mismatch(part: usize, reason: impl Into<String>) -> ValueError {
    ValueError::Mismatch {
        part,
        reason: reason.into(),
    }
}

fn concat_rows_refs(parts: &[&Value]) -> Result<Value, ValueError> {
    let parts = non_null(parts);
    match parts.first() {
        None => Ok(Value::NULL),
        Some(first) if first.is_data_frame() => concat_frames(&parts),
        Some(first) if first.is_matrix() => rbind(&parts),
        Some(_) => concat_refs(&parts),
    }
}

fn concat_refs(parts: &[&Value]) -> Result<Value, ValueError> {
    let parts = non_null(parts);
    let Some(first) = parts.first() else {
        return Ok(Value::NULL);
    };
    check_same_class(&parts)?;
    let mut out = Value {
        data: Data::Null,
        attrs: first.attrs.clone(),
    };
    out.attrs.remove("dim");
    out.attrs.remove("dimnames");
    if first.inherits("factor") {
        let (codes, levels) = concat_factors(&parts)?;
        out.data = codes;
        out.attrs.set("levels", levels);
    } else {
        out.data = concat_data(&parts)?;
    }
    if let Some(names) = concat_names(&parts) {
        out.attrs.set("names", names);
    }
    Ok(out)
}

fn check_same_class(parts: &[&Value]) -> Result<(), ValueError> {
    let class = parts[0].class();
    match parts.iter().position(|p| p.class() != class) {
        Some(at) => Err(mismatch(at, "class differs")),
        None => Ok(()),
    }
}

fn concat_names(parts: &[&Value]) -> Option<Value> {
    parts.iter().find(|p| p.names().is_some())?;
    let names = parts.iter().flat_map(|p| match p.names() {
        Some(n) if n.len() == p.len() => n.to_vec(),
        _ => vec![Some(String::new()); p.len()],
    });
    Some(Value::strings_na(names.collect::<Vec<_>>()))
}

/// Joins factor codes. Parts with the same levels as the first keep their codes; others
/// are re-coded against the union of all levels in first-seen order, as `c.factor` does.
fn concat_factors(parts: &[&Value]) -> Result<(Data, Value), ValueError> {
    let first_levels = parts[0].attr("levels");
    if parts.iter().all(|p| p.attr("levels") == first_levels) {
        let levels = first_levels
            .cloned()
            .unwrap_or_else(|| Value::strings_na(Vec::new()));
        return Ok((concat_data(parts)?, levels));
    }
    let mut levels: Vec<RString> = Vec::new();
    let mut codes = Vec::with_capacity(parts.iter().map(|p| p.len()).sum());
    for (at, part) in parts.iter().enumerate() {
        let own = part
            .attr("levels")
            .and_then(Value::as_strings)
            .unwrap_or_default();
        let map: Vec<i32> = own.iter().map(|l| level_code(&mut levels, l)).collect();
        let part_codes = part
            .as_integers()
            .ok_or_else(|| mismatch(at, "factor codes are not integer"))?;
        codes.extend(part_codes.iter().map(|&c| recode(&map, c)));
    }
    Ok((Data::Integer(codes), Value::strings_na(levels)))
}

fn level_code(levels: &mut Vec<RString>, level: &RString) -> i32 {
    let at = levels.iter().position(|l| l == level).unwrap_or_else(|| {
        levels.push(level.clone());
        levels.len() - 1
    });
    dim(at + 1)
}

fn recode(map: &[i32], code: i32) -> i32 {
    let index = code.checked_sub(1).and_then(|i| usize::try_from(i).ok());
    index
        .and_then(|i| map.get(i).copied())
        .unwrap_or(NA_INTEGER)
}

fn concat_data(parts: &[&Value]) -> Result<Data, ValueError> {
    let data: Vec<&Data> = parts.iter().map(|p| &p.data).collect();
    let unified = unify(&data)?;
    let mut out = empty_like(&unified[0], unified.iter().map(|d| d.len()).sum());
    for d in &unified {
        extend_same(&mut out, d, 0..d.len());
    }
    Ok(out)
}

fn concat_frames(parts: &[&Value]) -> Result<Value, ValueError> {
    let first = parts[0];
    check_same_columns(parts)?;
    let names = first.names().unwrap_or_default();
    let ncol = first.as_list().map_or(0, <[Value]>::len);
    let columns = (0..ncol)
        .map(|c| concat_column(parts, c, names.get(c)))
        .collect::<Result<Vec<_>, _>>()?;
    let mut out = Value {
        data: Data::List(columns),
        attrs: first.attrs.clone(),
    };
    out.attrs.set("row.names", join_row_names(parts));
    Ok(out)
}

fn check_same_columns(parts: &[&Value]) -> Result<(), ValueError> {
    let names = parts[0].names();
    for (at, part) in parts.iter().enumerate() {
        if !part.is_data_frame() {
            return Err(mismatch(at, "not a data frame"));
        }
        if part.names() != names || part.len() != parts[0].len() {
            return Err(mismatch(at, "columns differ"));
        }
    }
    Ok(())
}

fn concat_column(parts: &[&Value], c: usize, name: Option<&RString>) -> Result<Value, ValueError> {
    let column: Vec<&Value> = parts.iter().filter_map(|p| p.as_list()?.get(c)).collect();
    concat_rows_refs(&column).map_err(|e| ValueError::InColumn {
        column: name.cloned().flatten().unwrap_or_default(),
        source: Box::new(e),
    })
}

/// Explicit row names are joined when every part with rows has them; anything else
/// becomes compact row names for the total.
fn join_row_names(parts: &[&Value]) -> Value {
    let rows = |p: &&Value| p.nrow().unwrap_or(0);
    let total = parts.iter().map(rows).sum();
    let mut considered: Vec<&Value> = parts.iter().copied().filter(|p| rows(p) > 0).collect();
    if considered.is_empty() {
        considered = parts.to_vec();
    }
    let explicit: Vec<&Value> = considered
        .iter()
        .filter_map(|p| p.attr("row.names").filter(|rn| !is_compact(rn)))
        .collect();
    if explicit.len() != considered.len() {
        return compact_row_names(total);
    }
    match concat_refs(&explicit) {
        Ok(joined) if joined.len() == total => joined,
        _ => compact_row_names(total),
    }
}

fn rbind(parts: &[&Value]) -> Result<Value, ValueError> {
    let (_, ncol) = matrix_shape(parts[0]);
    let shapes = parts.iter().enumerate().map(|(at, p)| {
        let (nr, nc) = matrix_shape(p);
        let fits = p.is_matrix() && nc == ncol && nr.checked_mul(nc) == Some(p.len());
        fits.then_some(nr)
            .ok_or_else(|| mismatch(at, "not a matrix with the same columns"))
    });
    let nrows = shapes.collect::<Result<Vec<_>, _>>()?;
    let data: Vec<&Data> = parts.iter().map(|p| &p.data).collect();
    let unified = unify(&data)?;
    let total: usize = nrows.iter().sum();
    let mut out = empty_like(&unified[0], total * ncol);
    for j in 0..ncol {
        for (d, &nr) in unified.iter().zip(&nrows) {
            extend_same(&mut out, d, j * nr..(j + 1) * nr);
        }
    }
    let mut value = Value {
        data: out,
        attrs: parts[0].attrs.clone(),
    };
    value
        .attrs
        .set("dim", Value::integers([dim(total), dim(ncol)]));
    rbind_dimnames(parts, &mut value);
    Ok(value)
}

/// Row names are joined when every part has them; column names come from the first.
fn rbind_dimnames(parts: &[&Value], out: &mut Value) {
    let Some(first) = parts[0].attr("dimnames").and_then(Value::as_list) else {
        return;
    };
    let rows: Vec<&Value> = parts
        .iter()
        .filter_map(|p| p.attr("dimnames")?.as_list()?.first())
        .filter(|r| !r.is_null())
        .collect();
    let rows = match rows.len() == parts.len() {
        true => concat_refs(&rows).unwrap_or(Value::NULL),
        false => Value::NULL,
    };
    let cols = first.get(1).cloned().unwrap_or(Value::NULL);
    out.attrs.set("dimnames", Value::list([rows, cols]));
}

/// R's coercion ladder for combining atomic vectors; raw and list only join themselves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Null,
    Logical,
    Integer,
    Double,
    Complex,
    Character,
    Raw,
    List,
}

fn kind(d: &Data) -> Kind {
    match d {
        Data::Null => Kind::Null,
        Data::Logical(_) => Kind::Logical,
        Data::Integer(_) => Kind::Integer,
        Data::Double(_) => Kind::Double,
        Data::Complex(_) => Kind::Complex,
        Data::Character(_) => Kind::Character,
        Data::Raw(_) => Kind::Raw,
        Data::List(_) => Kind::List,
    }
}

/// Brings every part to the highest kind among them; fails for raw or list mixed with
/// anything else.
fn unify<'a>(parts: &[&'a Data]) -> Result<Vec<Cow<'a, Data>>, ValueError> {
    let target = parts.iter().map(|d| kind(d)).max().unwrap_or(Kind::Null);
    let coerce_one = |(at, d): (usize, &&'a Data)| match kind(d) == target {
        true => Ok(Cow::Borrowed(*d)),
        false => coerce(d, target).map(Cow::Owned).ok_or_else(|| {
            mismatch(
                at,
                format!("cannot combine {} with the rest", d.type_name()),
            )
        }),
    };
    parts.iter().enumerate().map(coerce_one).collect()
}

fn coerce(d: &Data, to: Kind) -> Option<Data> {
    match to {
        Kind::Integer => ints(d).map(Data::Integer),
        Kind::Double => doubles(d).map(Data::Double),
        Kind::Complex => complexes(d).map(Data::Complex),
        Kind::Character => strings(d).map(Data::Character),
        _ => None,
    }
}

fn ints(d: &Data) -> Option<Vec<i32>> {
    match d {
        Data::Logical(v) => Some(v.iter().map(|l| l.0).collect()),
        _ => None,
    }
}

fn int_to_double(i: i32) -> f64 {
    match i {
        NA_INTEGER => na_real(),
        i => f64::from(i),
    }
}

fn doubles(d: &Data) -> Option<Vec<f64>> {
    match d {
        Data::Double(v) => Some(v.clone()),
        Data::Integer(v) => Some(v.iter().copied().map(int_to_double).collect()),
        Data::Logical(v) => Some(v.iter().map(|l| int_to_double(l.0)).collect()),
        _ => None,
    }
}

fn complexes(d: &Data) -> Option<Vec<Complex>> {
    let na = |re: f64| match is_na_real(re) {
        true => Complex { re, im: re },
        false => Complex { re, im: 0.0 },
    };
    Some(doubles(d)?.into_iter().map(na).collect())
}

fn strings(d: &Data) -> Option<Vec<RString>> {
    Some(match d {
        Data::Logical(v) => v
            .iter()
            .map(|l| l.to_option().map(|b| bool_string(b).to_owned()))
            .collect(),
        Data::Integer(v) => v
            .iter()
            .map(|&i| (i != NA_INTEGER).then(|| i.to_string()))
            .collect(),
        Data::Double(v) => v
            .iter()
            .map(|&x| (!is_na_real(x)).then(|| number_string(x)))
            .collect(),
        Data::Complex(v) => v.iter().map(|&c| complex_string(c, None)).collect(),
        _ => return None,
    })
}

fn bool_string(b: bool) -> &'static str {
    match b {
        true => "TRUE",
        false => "FALSE",
    }
}

fn empty_like(d: &Data, capacity: usize) -> Data {
    match d {
        Data::Null => Data::Null,
        Data::Logical(_) => Data::Logical(Vec::with_capacity(capacity)),
        Data::Integer(_) => Data::Integer(Vec::with_capacity(capacity)),
        Data::Double(_) => Data::Double(Vec::with_capacity(capacity)),
        Data::Complex(_) => Data::Complex(Vec::with_capacity(capacity)),
        Data::Character(_) => Data::Character(Vec::with_capacity(capacity)),
        Data::Raw(_) => Data::Raw(Vec::with_capacity(capacity)),
        Data::List(_) => Data::List(Vec::with_capacity(capacity)),
    }
}

/// Appends `part[range]` to `out`; both were unified to the same kind beforehand.
fn extend_same(out: &mut Data, part: &Data, r: Range<usize>) {
    match (out, part) {
        (Data::Null, Data::Null) => {}
        (Data::Logical(a), Data::Logical(b)) => a.extend_from_slice(&b[r]),
        (Data::Integer(a), Data::Integer(b)) => a.extend_from_slice(&b[r]),
        (Data::Double(a), Data::Double(b)) => a.extend_from_slice(&b[r]),
        (Data::Complex(a), Data::Complex(b)) => a.extend_from_slice(&b[r]),
        (Data::Character(a), Data::Character(b)) => a.extend_from_slice(&b[r]),
        (Data::Raw(a), Data::Raw(b)) => a.extend_from_slice(&b[r]),
        (Data::List(a), Data::List(b)) => a.extend_from_slice(&b[r]),
        _ => debug_assert!(false, "extend_same called on different kinds"),
    }
}

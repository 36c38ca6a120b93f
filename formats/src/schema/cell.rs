//! What each declared column type accepts: the coercion rules every input format shares.
//!
//! Readers hand each cell over as a [`Scalar`], whatever it was on the wire (a JSON
//! number, an R double, an Arrow string...), and the functions here decide whether the
//! declared type can take it:
//!
//! | declared | accepts |
//! | --- | --- |
//! | double | numbers; `"NaN"`, `"Inf"`, `"-Inf"` (jsonlite's spellings) |
//! | integer | whole numbers in R's integer range |
//! | logical | `true` / `false` |
//! | character | strings (and factor levels) |
//! | factor | strings that are declared levels |
//! | date | `"YYYY-MM-DD"`, dates, numbers (days since 1970-01-01) |
//! | timestamp | RFC 3339 text, date-times, dates, numbers (seconds since the epoch) |
//!
//! NA (`null`, or the string `"NA"` outside character columns) is accepted anywhere and
//! refused later (by `column`) for columns that are not nullable. This file owns the rules
//! only; walking JSON or R values into scalars is the readers' job.

use std::borrow::Cow;
use std::collections::HashMap;

use rookery_value::{is_na_real, Logical, RString, NA_INTEGER};

use super::time::{parse_date, parse_timestamp};
use super::{CellProblem, ColumnType};

/// One cell as read, before it meets its declared type.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Scalar<'a> {
    Na,
    Bool(bool),
    Int(i64),
    Num(f64),
    Str(Cow<'a, str>),
    /// Days since 1970-01-01, from an R `Date`.
    Date(f64),
    /// Seconds since the epoch, from an R `POSIXct`.
    Time(f64),
    /// Something no column takes, described for the error: `"an object"`, `"a list"`.
    Other(&'static str),
}

fn expected(what: &'static str, got: &Scalar<'_>) -> CellProblem {
    CellProblem::Expected {
        expected: what,
        got: describe(got),
    }
}

/// NA, or the string `"NA"` in a column where text is not a value.
fn is_na(cell: &Scalar<'_>) -> bool {
    match cell {
        Scalar::Na => true,
        Scalar::Str(s) => s == "NA",
        _ => false,
    }
}

const NUMBER: &str = "a number";
const INTEGER: &str = "an integer";
const LOGICAL: &str = "true or false";
const STRING: &str = "a string";
const LEVEL: &str = "a string naming a level";
const DATE: &str = "a date (\"YYYY-MM-DD\" or days since 1970-01-01)";
const TIMESTAMP: &str = "a date-time (RFC 3339 or seconds since 1970-01-01)";

pub(super) fn double(cell: &Scalar<'_>) -> Result<Option<f64>, CellProblem> {
    match cell {
        _ if is_na(cell) => Ok(None),
        Scalar::Num(x) if is_na_real(*x) => Ok(None),
        Scalar::Num(x) => Ok(Some(*x)),
        Scalar::Int(i) => Ok(Some(*i as f64)),
        Scalar::Str(s) => special_double(s)
            .map(Some)
            .ok_or_else(|| expected(NUMBER, cell)),
        _ => Err(expected(NUMBER, cell)),
    }
}

fn special_double(text: &str) -> Option<f64> {
    match text {
        "NaN" => Some(f64::NAN),
        "Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        _ => None,
    }
}

pub(super) fn integer(cell: &Scalar<'_>) -> Result<Option<i32>, CellProblem> {
    let fits = |i: i32| (i != NA_INTEGER).then_some(Some(i));
    let found = match cell {
        _ if is_na(cell) => Some(None),
        Scalar::Num(x) if is_na_real(*x) => Some(None),
        Scalar::Int(i) => i32::try_from(*i).ok().and_then(fits),
        Scalar::Num(x) => whole_i32(*x).and_then(fits),
        _ => None,
    };
    found.ok_or_else(|| expected(INTEGER, cell))
}

/// `x` when it is a whole number inside `i32`'s range.
fn whole_i32(x: f64) -> Option<i32> {
    let in_range = x >= f64::from(i32::MIN) && x <= f64::from(i32::MAX);
    (in_range && x.fract() == 0.0).then_some(x as i32)
}

pub(super) fn logical(cell: &Scalar<'_>) -> Result<Option<Logical>, CellProblem> {
    match cell {
        _ if is_na(cell) => Ok(None),
        Scalar::Bool(b) => Ok(Some(Logical::from(*b))),
        _ => Err(expected(LOGICAL, cell)),
    }
}

pub(super) fn string(cell: Scalar<'_>) -> Result<RString, CellProblem> {
    match cell {
        Scalar::Na => Ok(None),
        Scalar::Str(s) => Ok(Some(s.into_owned())),
        other => Err(expected(STRING, &other)),
    }
}

pub(super) fn code(
    codes: &HashMap<&str, i32>,
    ty: &ColumnType,
    cell: &Scalar<'_>,
) -> Result<Option<i32>, CellProblem> {
    match cell {
        Scalar::Na => Ok(None),
        Scalar::Str(s) => match codes.get(s.as_ref()) {
            Some(&code) => Ok(Some(code)),
            None if s == "NA" => Ok(None),
            None => Err(not_a_level(s, ty)),
        },
        _ => Err(expected(LEVEL, cell)),
    }
}

fn not_a_level(text: &str, ty: &ColumnType) -> CellProblem {
    let levels = match ty {
        ColumnType::Factor { levels } => &levels[..],
        _ => &[],
    };
    let mut shown: Vec<String> = levels.iter().take(10).map(|l| quote(l)).collect();
    if levels.len() > shown.len() {
        shown.push("...".to_owned());
    }
    CellProblem::NotALevel {
        got: quote(text),
        levels: shown.join(", "),
    }
}

pub(super) fn date(cell: &Scalar<'_>) -> Result<Option<f64>, CellProblem> {
    let found = match cell {
        _ if is_na(cell) => Some(None),
        Scalar::Num(x) if is_na_real(*x) => Some(None),
        Scalar::Date(days) | Scalar::Num(days) => Some(Some(*days)),
        Scalar::Int(days) => Some(Some(*days as f64)),
        Scalar::Str(s) => parse_date(s).map(Some),
        _ => None,
    };
    found.ok_or_else(|| expected(DATE, cell))
}

pub(super) fn timestamp(cell: &Scalar<'_>) -> Result<Option<f64>, CellProblem> {
    let found = match cell {
        _ if is_na(cell) => Some(None),
        Scalar::Num(x) if is_na_real(*x) => Some(None),
        Scalar::Time(secs) | Scalar::Num(secs) => Some(Some(*secs)),
        Scalar::Int(secs) => Some(Some(*secs as f64)),
        Scalar::Date(days) => Some(Some(days * 86_400.0)),
        Scalar::Str(s) => parse_timestamp(s).map(Some),
        _ => None,
    };
    found.ok_or_else(|| expected(TIMESTAMP, cell))
}

/// How a refused cell is shown in an error: JSON-like, strings quoted and shortened.
fn describe(cell: &Scalar<'_>) -> String {
    match cell {
        Scalar::Na => "NA".to_owned(),
        Scalar::Bool(b) => b.to_string(),
        Scalar::Int(i) => i.to_string(),
        Scalar::Num(x) => number(*x),
        Scalar::Str(s) => quote(s),
        Scalar::Date(_) => "a date".to_owned(),
        Scalar::Time(_) => "a date-time".to_owned(),
        Scalar::Other(what) => (*what).to_owned(),
    }
}

fn number(x: f64) -> String {
    match x {
        x if x.is_nan() => "NaN".to_owned(),
        x if x == f64::INFINITY => "Inf".to_owned(),
        x if x == f64::NEG_INFINITY => "-Inf".to_owned(),
        x => format!("{x:?}"),
    }
}

/// A JSON string literal of at most about 40 characters.
fn quote(text: &str) -> String {
    const MAX: usize = 40;
    let short: String = text.chars().take(MAX).collect();
    let mut quoted = serde_json::Value::from(short).to_string();
    if text.chars().nth(MAX).is_some() {
        quoted.insert(quoted.len() - 1, '…');
    }
    quoted
}

//! Bringing a decoded data frame to exactly the declared columns.
//!
//! [`Schema::validate`] picks the declared columns out of a frame (extra ones are
//! dropped), moves each one through unchanged when it already has the declared
//! representation, and otherwise walks it cell by cell through the shared rules of
//! `cell`. Errors are plain data that name the column and the first offending row.

use rookery_value::Value;
use rookery_value::{is_na_real, Data, Logical, RString, NA_INTEGER};

use super::cell::Scalar;
use super::column::{ColumnBuilder, Store};
use super::{ColumnSpec, ColumnType, Schema};

/// A table that does not fit the declaration. Plain data.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ValidationError {
    #[error("expected a table (a data frame), got {0}")]
    NotATable(String),
    #[error("missing column \"{0}\"")]
    MissingColumn(String),
    #[error("the table has more than {max} rows, the most this service accepts")]
    TooManyRows { max: usize },
    /// Row `row` (1-based) of `column` is the first that cannot be used.
    #[error("column \"{column}\" row {row}: {problem}")]
    Cell {
        column: String,
        row: usize,
        problem: CellProblem,
    },
}

/// Why one cell was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CellProblem {
    /// The value (`got`, shown as JSON) is not of the declared type.
    #[error("expected {expected}, got {got}")]
    Expected { expected: &'static str, got: String },
    #[error("NA not allowed")]
    NaNotAllowed,
    #[error("{got} is not one of the levels {levels}")]
    NotALevel { got: String, levels: String },
}

impl Schema {
    /// Checks a data frame against the declaration and returns a frame with exactly the
    /// declared columns, in order. Lossless coercions are made (integer to double, whole
    /// doubles to integer, text to factor, date or timestamp, numbers to dates and
    /// timestamps); NA in a column that is not nullable, a missing column and more rows
    /// than `max_rows` are errors.
    pub fn validate(&self, table: Value) -> Result<Value, ValidationError> {
        let rows = table
            .nrow()
            .ok_or_else(|| ValidationError::NotATable(kind_of(&table).to_owned()))?;
        self.check_rows(rows)?;
        let mut columns = into_columns(table);
        let declared = self.columns.iter().map(|spec| {
            let column = take(&mut columns, &spec.name)
                .ok_or_else(|| ValidationError::MissingColumn(spec.name.clone()))?;
            Ok((spec.name.clone(), conform(spec, column, rows)?.finish()?))
        });
        let declared = declared.collect::<Result<Vec<_>, ValidationError>>()?;
        Value::data_frame(declared).map_err(|e| ValidationError::NotATable(e.to_string()))
    }
}

/// A short description of what arrived instead of a data frame.
fn kind_of(value: &Value) -> &'static str {
    match &value.data {
        Data::Null => "NULL",
        Data::List(_) => "a list",
        _ if value.is_matrix() => "a matrix",
        _ => "a vector",
    }
}

fn into_columns(table: Value) -> Vec<(RString, Value)> {
    let names = table.names().map(<[RString]>::to_vec).unwrap_or_default();
    let Data::List(columns) = table.data else {
        return Vec::new();
    };
    names.into_iter().zip(columns).collect()
}

fn take(columns: &mut Vec<(RString, Value)>, name: &str) -> Option<Value> {
    let at = columns
        .iter()
        .position(|(n, _)| n.as_deref() == Some(name))?;
    Some(columns.swap_remove(at).1)
}

/// The column in the declared representation: moved through when it already is, else
/// rebuilt cell by cell.
fn conform(
    spec: &ColumnSpec,
    column: Value,
    rows: usize,
) -> Result<ColumnBuilder<'_>, ValidationError> {
    if !fits_as_is(&spec.ty, &column) {
        return rebuild(spec, &column, rows);
    }
    let tz = column
        .attr("tzone")
        .and_then(Value::as_str)
        .map(str::to_owned);
    match Store::adopt(&spec.ty, column.data) {
        Ok(store) => Ok(ColumnBuilder::adopted(spec, store).with_tz(tz.as_deref())),
        Err(data) => rebuild(
            spec,
            &Value {
                data,
                attrs: column.attrs,
            },
            rows,
        ),
    }
}

/// True when the column's class says it already is the declared type (its storage is
/// checked by `Store::adopt`).
fn fits_as_is(ty: &ColumnType, column: &Value) -> bool {
    let plain = column.class().is_none() && column.dim().is_none();
    match ty {
        ColumnType::Double | ColumnType::Integer | ColumnType::Logical => plain,
        ColumnType::Character => plain,
        ColumnType::Date => column.inherits("Date") && column.dim().is_none(),
        ColumnType::Timestamp => column.inherits("POSIXct") && column.dim().is_none(),
        ColumnType::Factor { levels } => same_factor(levels, column),
    }
}

/// A factor with exactly the declared levels and only valid codes.
fn same_factor(levels: &[String], column: &Value) -> bool {
    let own = column.attr("levels").and_then(Value::as_strings);
    let same = own.is_some_and(|own| {
        own.iter()
            .map(Option::as_deref)
            .eq(levels.iter().map(|l| Some(l.as_str())))
    });
    let n = i32::try_from(levels.len()).unwrap_or(i32::MAX);
    let valid = |&c: &i32| c == NA_INTEGER || (1..=n).contains(&c);
    let codes_ok = column
        .as_integers()
        .is_some_and(|codes| codes.iter().all(valid));
    column.inherits("factor") && same && codes_ok
}

fn rebuild<'s>(
    spec: &'s ColumnSpec,
    column: &Value,
    rows: usize,
) -> Result<ColumnBuilder<'s>, ValidationError> {
    let source = Source::of(column, rows);
    let tz = column.attr("tzone").and_then(Value::as_str);
    let tz = matches!(source, Source::Time(_)).then_some(tz).flatten();
    let mut builder = ColumnBuilder::new(spec, None, rows).with_tz(tz);
    for row in 0..rows {
        builder.push(source.get(row))?;
    }
    Ok(builder)
}

/// A data-frame column seen as a sequence of [`Scalar`]s.
enum Source<'a> {
    Logical(&'a [Logical]),
    Integer(&'a [i32]),
    Double(&'a [f64]),
    Character(&'a [RString]),
    Factor(&'a [i32], &'a [RString]),
    Date(Numbers<'a>),
    Time(Numbers<'a>),
    Other(&'static str),
}

/// The numbers behind a `Date` or `POSIXct`, which R may store either way.
#[derive(Clone, Copy)]
enum Numbers<'a> {
    Int(&'a [i32]),
    Double(&'a [f64]),
}

impl<'a> Source<'a> {
    fn of(column: &'a Value, rows: usize) -> Source<'a> {
        if column.is_data_frame() {
            return Source::Other("a data frame");
        }
        if column.dim().is_some() || column.len() != rows {
            return Source::Other("a matrix");
        }
        let numbers = match &column.data {
            Data::Integer(v) => Some(Numbers::Int(v)),
            Data::Double(v) => Some(Numbers::Double(v)),
            _ => None,
        };
        match (&column.data, numbers) {
            (Data::Integer(codes), _) if column.inherits("factor") => {
                let levels = column.attr("levels").and_then(Value::as_strings);
                Source::Factor(codes, levels.unwrap_or_default())
            }
            (_, Some(n)) if column.inherits("Date") => Source::Date(n),
            (_, Some(n)) if column.inherits("POSIXct") => Source::Time(n),
            (data, _) => Source::plain(data),
        }
    }

    fn plain(data: &'a Data) -> Source<'a> {
        match data {
            Data::Logical(v) => Source::Logical(v),
            Data::Integer(v) => Source::Integer(v),
            Data::Double(v) => Source::Double(v),
            Data::Character(v) => Source::Character(v),
            Data::Null => Source::Other("NULL"),
            Data::Complex(_) => Source::Other("a complex number"),
            Data::Raw(_) => Source::Other("a raw byte"),
            Data::List(_) => Source::Other("a list"),
        }
    }

    /// Cell `row`, which the caller keeps below the column's length.
    fn get(&self, row: usize) -> Scalar<'a> {
        let scalar = match self {
            Source::Logical(v) => v.get(row).and_then(|l| l.to_option()).map(Scalar::Bool),
            Source::Integer(v) => v
                .get(row)
                .filter(|&&i| i != NA_INTEGER)
                .map(|&i| Scalar::Int(i.into())),
            Source::Double(v) => v
                .get(row)
                .filter(|&&x| !is_na_real(x))
                .map(|&x| Scalar::Num(x)),
            Source::Character(v) => v
                .get(row)
                .and_then(Option::as_deref)
                .map(|s| Scalar::Str(s.into())),
            Source::Factor(codes, levels) => {
                level(codes, levels, row).map(|s| Scalar::Str(s.into()))
            }
            Source::Date(n) => n.get(row).map(Scalar::Date),
            Source::Time(n) => n.get(row).map(Scalar::Time),
            Source::Other(what) => Some(Scalar::Other(what)),
        };
        scalar.unwrap_or(Scalar::Na)
    }
}

impl Numbers<'_> {
    /// Element `row`; `None` for NA.
    fn get(self, row: usize) -> Option<f64> {
        match self {
            Numbers::Int(v) => v
                .get(row)
                .filter(|&&i| i != NA_INTEGER)
                .map(|&i| f64::from(i)),
            Numbers::Double(v) => v.get(row).copied().filter(|&x| !is_na_real(x)),
        }
    }
}

fn level<'a>(codes: &[i32], levels: &'a [RString], row: usize) -> Option<&'a str> {
    let code = usize::try_from(*codes.get(row)?).ok()?;
    levels.get(code.checked_sub(1)?)?.as_deref()
}

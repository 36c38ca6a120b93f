//! One declared column being filled cell by cell.
//!
//! [`ColumnBuilder`] keeps the column's values in R's representation while a reader
//! pushes cells into it, notes the first NA, and refuses NA at the end when the column
//! is not nullable. What each declared type accepts is decided in `cell`; walking JSON
//! or R values into cells is the readers' job.

use std::collections::HashMap;

use rookery_value::Value;
use rookery_value::{is_na_real, na_real, Data, Logical, RString, NA_INTEGER};

use super::cell::{code, date, double, integer, logical, string, timestamp, Scalar};
use super::{CellProblem, ColumnSpec, ColumnType, ValidationError};

/// The values of a column being built, already in R's representation.
#[derive(Debug)]
pub(super) enum Store {
    Double(Vec<f64>),
    Integer(Vec<i32>),
    Logical(Vec<Logical>),
    Character(Vec<RString>),
    /// 1-based codes into the declared levels.
    Factor(Vec<i32>),
    Date(Vec<f64>),
    Time(Vec<f64>),
}

impl Store {
    fn empty(ty: &ColumnType, capacity: usize) -> Store {
        match ty {
            ColumnType::Double => Store::Double(Vec::with_capacity(capacity)),
            ColumnType::Integer => Store::Integer(Vec::with_capacity(capacity)),
            ColumnType::Logical => Store::Logical(Vec::with_capacity(capacity)),
            ColumnType::Character => Store::Character(Vec::with_capacity(capacity)),
            ColumnType::Factor { .. } => Store::Factor(Vec::with_capacity(capacity)),
            ColumnType::Date => Store::Date(Vec::with_capacity(capacity)),
            ColumnType::Timestamp => Store::Time(Vec::with_capacity(capacity)),
        }
    }

    /// Takes R data that already has the declared representation, or gives it back.
    /// The caller has checked the class (a factor's levels, a `Date`...).
    pub(super) fn adopt(ty: &ColumnType, data: Data) -> Result<Store, Data> {
        match (ty, data) {
            (ColumnType::Double, Data::Double(v)) => Ok(Store::Double(v)),
            (ColumnType::Integer, Data::Integer(v)) => Ok(Store::Integer(v)),
            (ColumnType::Logical, Data::Logical(v)) => Ok(Store::Logical(v)),
            (ColumnType::Character, Data::Character(v)) => Ok(Store::Character(v)),
            (ColumnType::Factor { .. }, Data::Integer(v)) => Ok(Store::Factor(v)),
            (ColumnType::Date, Data::Double(v)) => Ok(Store::Date(v)),
            (ColumnType::Timestamp, Data::Double(v)) => Ok(Store::Time(v)),
            (_, data) => Err(data),
        }
    }

    fn len(&self) -> usize {
        match self {
            Store::Double(v) | Store::Date(v) | Store::Time(v) => v.len(),
            Store::Integer(v) | Store::Factor(v) => v.len(),
            Store::Logical(v) => v.len(),
            Store::Character(v) => v.len(),
        }
    }

    /// The index of the first NA, as R's `is.na` sees it (a plain `NaN` is a value).
    fn first_na(&self) -> Option<usize> {
        match self {
            Store::Double(v) | Store::Date(v) | Store::Time(v) => {
                v.iter().position(|&x| is_na_real(x))
            }
            Store::Integer(v) | Store::Factor(v) => v.iter().position(|&i| i == NA_INTEGER),
            Store::Logical(v) => v.iter().position(|l| l.is_na()),
            Store::Character(v) => v.iter().position(Option::is_none),
        }
    }

    fn into_value(self, ty: &ColumnType, tz: Option<&str>) -> Value {
        match self {
            Store::Double(v) => Value::doubles(v),
            Store::Integer(v) => Value::integers(v),
            Store::Logical(v) => Value::from(Data::Logical(v)),
            Store::Character(v) => Value::strings_na(v),
            Store::Factor(v) => Value::factor(v, declared_levels(ty)),
            Store::Date(v) => Value::date(v),
            Store::Time(v) => Value::posixct(v, tz.unwrap_or("UTC")),
        }
    }
}

fn declared_levels(ty: &ColumnType) -> Vec<RString> {
    match ty {
        ColumnType::Factor { levels } => levels.iter().cloned().map(Some).collect(),
        _ => Vec::new(),
    }
}

/// Fills one declared column; the row of the next cell is [`ColumnBuilder::len`].
#[derive(Debug)]
pub(crate) struct ColumnBuilder<'s> {
    spec: &'s ColumnSpec,
    store: Store,
    /// Level -> 1-based code, for factor columns.
    codes: HashMap<&'s str, i32>,
    /// The `tzone` of a timestamp column; UTC when `None`.
    tz: Option<String>,
    first_na: Option<usize>,
    limit: Option<usize>,
}

impl<'s> ColumnBuilder<'s> {
    /// An empty column that refuses a cell beyond `limit` rows.
    pub(crate) fn new(spec: &'s ColumnSpec, limit: Option<usize>, capacity: usize) -> Self {
        let capacity = limit.map_or(capacity, |max| capacity.min(max));
        ColumnBuilder {
            spec,
            store: Store::empty(&spec.ty, capacity),
            codes: level_codes(&spec.ty),
            tz: None,
            first_na: None,
            limit,
        }
    }

    /// A column whose values arrived ready-made.
    pub(super) fn adopted(spec: &'s ColumnSpec, store: Store) -> Self {
        let first_na = store.first_na();
        ColumnBuilder {
            store,
            first_na,
            ..ColumnBuilder::new(spec, None, 0)
        }
    }

    /// Sets the `tzone` a timestamp column keeps (from a `POSIXct` source).
    pub(super) fn with_tz(mut self, tz: Option<&str>) -> Self {
        self.tz = tz.map(str::to_owned);
        self
    }

    pub(crate) fn name(&self) -> &'s str {
        &self.spec.name
    }

    pub(crate) fn len(&self) -> usize {
        self.store.len()
    }

    /// Appends one cell, or says why the declared type cannot take it.
    pub(crate) fn push(&mut self, cell: Scalar<'_>) -> Result<(), ValidationError> {
        let row = self.len();
        if let Some(max) = self.limit.filter(|&max| row >= max) {
            return Err(ValidationError::TooManyRows { max });
        }
        let missing = self.store_cell(cell).map_err(|p| self.error(row, p))?;
        if missing && self.first_na.is_none() {
            self.first_na = Some(row);
        }
        Ok(())
    }

    /// The finished R vector; fails on the first NA of a column that is not nullable.
    pub(crate) fn finish(self) -> Result<Value, ValidationError> {
        if let (false, Some(row)) = (self.spec.nullable, self.first_na) {
            return Err(self.error(row, CellProblem::NaNotAllowed));
        }
        Ok(self.store.into_value(&self.spec.ty, self.tz.as_deref()))
    }

    fn error(&self, row: usize, problem: CellProblem) -> ValidationError {
        ValidationError::Cell {
            column: self.spec.name.clone(),
            row: row + 1,
            problem,
        }
    }

    /// Stores the cell; `true` when it is NA.
    fn store_cell(&mut self, cell: Scalar<'_>) -> Result<bool, CellProblem> {
        Ok(match &mut self.store {
            Store::Double(v) => put(v, double(&cell)?, na_real()),
            Store::Integer(v) => put(v, integer(&cell)?, NA_INTEGER),
            Store::Logical(v) => put(v, logical(&cell)?, Logical::NA),
            Store::Character(v) => {
                let text = string(cell)?;
                let missing = text.is_none();
                v.push(text);
                missing
            }
            Store::Factor(v) => put(v, code(&self.codes, &self.spec.ty, &cell)?, NA_INTEGER),
            Store::Date(v) => put(v, date(&cell)?, na_real()),
            Store::Time(v) => put(v, timestamp(&cell)?, na_real()),
        })
    }
}

fn level_codes(ty: &ColumnType) -> HashMap<&str, i32> {
    let ColumnType::Factor { levels } = ty else {
        return HashMap::new();
    };
    let codes = (1..)
        .zip(levels)
        .map(|(code, level)| (level.as_str(), code));
    codes.collect()
}

fn put<T>(v: &mut Vec<T>, x: Option<T>, na: T) -> bool {
    let missing = x.is_none();
    v.push(x.unwrap_or(na));
    missing
}

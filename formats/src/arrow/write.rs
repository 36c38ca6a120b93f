//! Writing a call's result as one Arrow IPC record batch (stream format).
//!
//! A data frame gives one field per column, an atomic vector one field named `value`,
//! a matrix one field per matrix column (named from `colnames`, else `V1`, `V2`...), and
//! `NULL` an empty table. Every field is nullable and NA is written as null. Lists that
//! are not data frames, nested frames, matrix columns, complex and raw vectors have no
//! Arrow form here and are refused with the column's name.

use std::borrow::Cow;
use std::sync::Arc;

use arrow_array::types::Int32Type;
use arrow_array::{
    ArrayRef, BooleanArray, Date32Array, DictionaryArray, Float64Array, Int32Array,
    LargeStringArray, RecordBatch, RecordBatchOptions, StringArray, TimestampMicrosecondArray,
};
use arrow_ipc::writer::StreamWriter;
use arrow_schema::{Field, Schema as ArrowSchema};
use rookery_value::Value;
use rookery_value::{is_na_real, Data, RString, NA_INTEGER};

use super::ArrowError;

/// A result as an Arrow IPC stream holding one record batch.
pub fn value_to_ipc(value: &Value) -> Result<Vec<u8>, ArrowError> {
    let (columns, rows) = table_columns(value)?;
    let arrays = columns
        .iter()
        .map(|(name, column)| to_array(name, column))
        .collect::<Result<Vec<_>, _>>()?;
    let fields = columns
        .iter()
        .zip(&arrays)
        .map(|((name, _), array)| Field::new(name.as_str(), array.data_type().clone(), true));
    let schema = Arc::new(ArrowSchema::new(fields.collect::<Vec<_>>()));
    let options = RecordBatchOptions::new().with_row_count(Some(rows));
    let batch =
        RecordBatch::try_new_with_options(Arc::clone(&schema), arrays, &options).map_err(encode)?;
    write_stream(&schema, &batch)
}

fn encode(e: arrow_schema::ArrowError) -> ArrowError {
    ArrowError::Encode(e.to_string())
}

fn write_stream(schema: &ArrowSchema, batch: &RecordBatch) -> Result<Vec<u8>, ArrowError> {
    let mut writer = StreamWriter::try_new(Vec::new(), schema).map_err(encode)?;
    writer.write(batch).map_err(encode)?;
    writer.finish().map_err(encode)?;
    writer.into_inner().map_err(encode)
}

type Columns<'v> = Vec<(String, Cow<'v, Value>)>;

/// The named columns of a result and its row count.
fn table_columns(value: &Value) -> Result<(Columns<'_>, usize), ArrowError> {
    if value.is_data_frame() {
        return Ok(frame_columns(value));
    }
    match &value.data {
        Data::Null => Ok((Vec::new(), 0)),
        Data::List(_) => Err(ArrowError::NotATable(
            "a list that is not a data frame".into(),
        )),
        _ if value.is_matrix() => matrix_columns(value),
        _ if value.dim().is_some() => Err(ArrowError::NotATable("an array".into())),
        _ => Ok((
            vec![("value".to_owned(), Cow::Borrowed(value))],
            value.len(),
        )),
    }
}

fn frame_columns(frame: &Value) -> (Columns<'_>, usize) {
    let names = frame.names().unwrap_or_default();
    let columns = frame.as_list().unwrap_or_default().iter().enumerate();
    let named = columns.map(|(i, c)| (column_name(names, i), Cow::Borrowed(c)));
    (named.collect(), frame.nrow().unwrap_or(0))
}

/// The name of column `i`: its own, or R's `V1`, `V2`... when it has none.
fn column_name(names: &[RString], i: usize) -> String {
    match names.get(i) {
        Some(Some(name)) if !name.is_empty() => name.clone(),
        _ => format!("V{}", i + 1),
    }
}

fn matrix_columns(matrix: &Value) -> Result<(Columns<'_>, usize), ArrowError> {
    let dims = matrix.dim().unwrap_or_default();
    let extent = |i: usize| dims.get(i).and_then(|&d| usize::try_from(d).ok());
    let (Some(rows), Some(cols)) = (extent(0), extent(1)) else {
        return Err(ArrowError::NotATable(
            "a matrix with invalid dimensions".into(),
        ));
    };
    if rows.checked_mul(cols) != Some(matrix.len()) {
        return Err(ArrowError::NotATable(
            "a matrix with invalid dimensions".into(),
        ));
    }
    let dimnames = matrix.attr("dimnames").and_then(Value::as_list);
    let names = dimnames
        .and_then(|d| d.get(1)?.as_strings())
        .unwrap_or_default();
    let columns = (0..cols).map(|j| {
        let column = matrix.slice(j * rows..(j + 1) * rows);
        (column_name(names, j), Cow::Owned(column))
    });
    Ok((columns.collect(), rows))
}

fn unwritable(column: &str, what: &str) -> ArrowError {
    ArrowError::Unwritable {
        column: column.to_owned(),
        what: what.to_owned(),
    }
}

/// One R column as an Arrow array.
fn to_array(name: &str, column: &Value) -> Result<ArrayRef, ArrowError> {
    if column.is_data_frame() {
        return Err(unwritable(name, "a nested data frame"));
    }
    if column.dim().is_some() {
        return Err(unwritable(name, "a matrix column"));
    }
    let array: ArrayRef = match &column.data {
        Data::Integer(codes) if column.inherits("factor") => factor_array(codes, column)?,
        Data::Integer(_) | Data::Double(_) if column.inherits("Date") => date_array(column),
        Data::Integer(_) | Data::Double(_) if column.inherits("POSIXct") => time_array(column),
        Data::Logical(v) => Arc::new(v.iter().map(|l| l.to_option()).collect::<BooleanArray>()),
        Data::Integer(v) => Arc::new(v.iter().map(|&i| not_na(i)).collect::<Int32Array>()),
        Data::Double(v) => {
            let values = v.iter().map(|&x| (!is_na_real(x)).then_some(x));
            Arc::new(values.collect::<Float64Array>())
        }
        Data::Character(v) => string_array(v),
        other => return Err(unwritable(name, &format!("a {} vector", other.type_name()))),
    };
    Ok(array)
}

fn not_na(i: i32) -> Option<i32> {
    (i != NA_INTEGER).then_some(i)
}

/// Utf8, or LargeUtf8 when the text outgrows 32-bit offsets.
fn string_array(values: &[RString]) -> ArrayRef {
    let bytes: usize = values.iter().flatten().map(String::len).sum();
    let items = values.iter().map(Option::as_deref);
    match i32::try_from(bytes) {
        Ok(_) => Arc::new(items.collect::<StringArray>()),
        Err(_) => Arc::new(items.collect::<LargeStringArray>()),
    }
}

/// Dictionary(Int32, Utf8) over the levels; NA and invalid codes are null.
fn factor_array(codes: &[i32], column: &Value) -> Result<ArrayRef, ArrowError> {
    let levels = column.attr("levels").and_then(Value::as_strings);
    let levels = levels.unwrap_or_default();
    let key = |code: i32| {
        let key = code.checked_sub(1)?;
        (usize::try_from(key).ok()? < levels.len()).then_some(key)
    };
    let keys: Int32Array = codes.iter().map(|&c| key(c)).collect();
    let dictionary = DictionaryArray::<Int32Type>::try_new(keys, string_array(levels));
    Ok(Arc::new(dictionary.map_err(encode)?))
}

/// The finite numbers of a `Date` or `POSIXct`, `None` for NA, NaN and infinities.
fn numbers(column: &Value) -> Vec<Option<f64>> {
    match &column.data {
        Data::Integer(v) => v.iter().map(|&i| not_na(i).map(f64::from)).collect(),
        Data::Double(v) => v.iter().map(|&x| x.is_finite().then_some(x)).collect(),
        _ => Vec::new(),
    }
}

fn date_array(column: &Value) -> ArrayRef {
    let day = |d: f64| {
        let d = d.floor();
        (d >= f64::from(i32::MIN) && d <= f64::from(i32::MAX)).then_some(d as i32)
    };
    let days = numbers(column).into_iter().map(|d| d.and_then(day));
    Arc::new(days.collect::<Date32Array>())
}

/// Timestamp(Microsecond) in the column's `tzone`, or UTC when it has none.
fn time_array(column: &Value) -> ArrayRef {
    const LIMIT: f64 = 9.2e18;
    let micros = |s: f64| {
        let us = (s * 1e6).round();
        (us.abs() < LIMIT).then_some(us as i64)
    };
    let values = numbers(column).into_iter().map(|s| s.and_then(micros));
    let tz = column.attr("tzone").and_then(Value::as_str);
    let tz = tz.filter(|tz| !tz.is_empty()).unwrap_or("UTC");
    Arc::new(
        values
            .collect::<TimestampMicrosecondArray>()
            .with_timezone(tz),
    )
}

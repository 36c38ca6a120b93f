//! JSON tables on the wire: a call's input as records or columns, a result as JSON.
//!
//! A table arrives either as records (`[{"x": 1, "g": "a"}, ...]`, jsonlite's default
//! data-frame layout; a missing field is NA) or as columns (`{"x": [1, ...], "g": [...]}`,
//! all of one length; a scalar is a column of one). With a declared [`Schema`] the body is
//! streamed straight into the declared R vectors (see `read`), so `1` in a double column
//! is a double, a string in a number column is an error naming column and row, and
//! undeclared fields are skipped without being stored. Without a schema the body goes
//! through jsonlite's simplification (`value::json::from_json`) and must come out a data
//! frame.
//!
//! Results go out with [`value_to_json`]: jsonlite's `toJSON` without unboxing, so a
//! vector is always an array and clients see one shape whatever the length.
//!
//! This module owns the JSON forms of tables only; Arrow is `arrow`'s, the coercion rules
//! are `schema`'s.

mod read;

#[cfg(test)]
mod tests;

use rookery_value::json::{
    from_json, list_to_data_frame, to_json_writer, DataFrameLayout, JsonError, JsonOptions,
};
use rookery_value::Data;
use rookery_value::Value;

use super::schema::{Schema, ValidationError};

/// A JSON body that is not a usable table. Plain data.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum TableError {
    /// Not JSON at all; `message` is serde_json's, `line` and `column` 1-based.
    #[error("invalid JSON: {message}")]
    Json {
        message: String,
        line: usize,
        column: usize,
    },
    #[error("expected a table (an array of records or an object of columns), got {0}")]
    NotATable(String),
    /// Element `row` (1-based) of a records array is neither an object nor `null`.
    #[error("row {row} is not a record: expected an object, got {got}")]
    NotARecord { row: usize, got: &'static str },
    #[error("column \"{column}\" has {found} values, expected {expected} like the others")]
    Ragged {
        column: String,
        expected: usize,
        found: usize,
    },
    /// A record (`row`, 1-based) names the same field twice.
    #[error("row {row}: field \"{column}\" is given twice")]
    DuplicateField { column: String, row: usize },
    /// An object of columns names the same column twice.
    #[error("column \"{0}\" is given twice")]
    DuplicateColumn(String),
    #[error(transparent)]
    Invalid(#[from] ValidationError),
}

impl From<JsonError> for TableError {
    fn from(e: JsonError) -> Self {
        TableError::Json {
            message: e.message,
            line: e.line,
            column: e.column,
        }
    }
}

impl From<serde_json::Error> for TableError {
    fn from(e: serde_json::Error) -> Self {
        TableError::from(JsonError::from(e))
    }
}

/// How a data frame is written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Layout {
    /// An array of one object per row; NA fields are left out.
    #[default]
    Records,
    /// One object of column arrays; NA is `null`.
    Columns,
}

/// Reads a JSON table into a data frame. With a schema the frame has exactly the declared
/// columns, typed and checked as [`Schema::validate`] would (`max_rows` included);
/// without one, jsonlite's simplification decides the column types. A leading UTF-8
/// byte-order mark is ignored.
pub fn table_from_json(bytes: &[u8], schema: Option<&Schema>) -> Result<Value, TableError> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    match schema {
        Some(schema) => read::with_schema(bytes, schema),
        None => without_schema(bytes),
    }
}

/// [`table_from_json`] with a schema, reading the JSON text from `input` as it
/// arrives, so the text is never whole in memory: only the columns being filled and
/// a 64 KiB buffer are. A read error of `input` is a [`TableError::Json`] naming it.
pub fn table_from_json_reader<R: std::io::Read>(
    mut input: R,
    schema: &Schema,
) -> Result<Value, TableError> {
    use std::io::Read;
    // A leading byte-order mark is skipped, however the first bytes arrive.
    let mut head = [0u8; 3];
    let mut got = 0;
    while got < head.len() {
        match input.read(&mut head[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(serde_json::Error::io(e).into()),
        }
    }
    let skip = if head[..got] == *b"\xEF\xBB\xBF" {
        3
    } else {
        0
    };
    let rest = std::io::Cursor::new(head[skip..got].to_vec()).chain(input);
    read::with_schema_from(std::io::BufReader::with_capacity(64 << 10, rest), schema)
}

/// The JSON text of a call's result: a data frame as records or columns, a vector as an
/// array (even of length one), a named list as an object, NA as `null`.
pub fn value_to_json(value: &Value, layout: Layout) -> Vec<u8> {
    let mut out = Vec::new();
    let written = value_to_json_writer(&mut out, value, layout);
    debug_assert!(written.is_ok(), "writing JSON to a Vec cannot fail");
    out
}

/// [`value_to_json`], streamed to `writer` (which should be buffered).
pub fn value_to_json_writer<W: std::io::Write>(
    writer: W,
    value: &Value,
    layout: Layout,
) -> std::io::Result<()> {
    let opts = JsonOptions {
        auto_unbox: false,
        dataframe: match layout {
            Layout::Records => DataFrameLayout::Rows,
            Layout::Columns => DataFrameLayout::Columns,
        },
        digits: None,
        na_as_null: true,
    };
    to_json_writer(writer, value, &opts)
}

fn without_schema(bytes: &[u8]) -> Result<Value, TableError> {
    let text = std::str::from_utf8(bytes).map_err(|e| utf8_error(bytes, e.valid_up_to()))?;
    into_frame(from_json(text)?)
}

/// Invalid UTF-8 after `valid` good bytes, located as serde_json locates errors (1-based
/// line, column in bytes).
fn utf8_error(bytes: &[u8], valid: usize) -> TableError {
    let before = bytes.get(..valid).unwrap_or_default();
    let line_start = before
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |p| p + 1);
    let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
    let column = valid - line_start + 1;
    TableError::Json {
        message: format!("invalid UTF-8 at line {line} column {column}"),
        line,
        column,
    }
}

/// A parsed body as a data frame: a frame as is, `[]` as an empty frame, an object of
/// equal-length vectors (or scalars) column by column.
fn into_frame(value: Value) -> Result<Value, TableError> {
    if value.is_data_frame() {
        return Ok(value);
    }
    match &value.data {
        Data::List(items) if items.is_empty() => Ok(empty_frame()),
        Data::List(items) if value.names().is_some() => {
            check_atomic(value.names().unwrap_or_default(), items)?;
            list_to_data_frame(value).map_err(ragged)
        }
        Data::List(_) => Err(TableError::NotATable("an array of non-records".into())),
        Data::Null => Err(TableError::NotATable("null".into())),
        _ => Err(TableError::NotATable(
            "a scalar or an array of scalars".into(),
        )),
    }
}

fn empty_frame() -> Value {
    Value::data_frame(Vec::new()).unwrap_or(Value::NULL)
}

/// Every member of an object of columns must be an array of scalars (or a scalar).
fn check_atomic(names: &[Option<String>], items: &[Value]) -> Result<(), TableError> {
    let atomic = |v: &Value| {
        let vector = matches!(
            v.data,
            Data::Logical(_) | Data::Integer(_) | Data::Double(_) | Data::Character(_)
        );
        vector && v.dim().is_none()
    };
    match items.iter().position(|v| !atomic(v)) {
        Some(at) => {
            let name = names.get(at).cloned().flatten().unwrap_or_default();
            let what = format!("an object whose member \"{name}\" is not an array of scalars");
            Err(TableError::NotATable(what))
        }
        None => Ok(()),
    }
}

fn ragged(e: rookery_value::frame::ValueError) -> TableError {
    use rookery_value::frame::ValueError;
    match e {
        ValueError::LengthMismatch {
            column,
            expected,
            found,
        } => TableError::Ragged {
            column,
            expected,
            found,
        },
        other => TableError::NotATable(other.to_string()),
    }
}

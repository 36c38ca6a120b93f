//! Reading a declaration from JSON, with an error that says exactly what is wrong.
//!
//! Parsing is written by hand rather than derived so that every refusal names the column
//! (by position and name) and the field at fault. This file only checks declarations;
//! what a declared column accepts is `column`'s business.

use std::collections::HashSet;
use std::fmt;

use serde_json::{Map, Value as Json};

use super::{ColumnSpec, ColumnType, Schema};

/// A declaration that cannot be used. Plain data.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SchemaError {
    #[error("the input schema must be a JSON object with a \"columns\" array")]
    NotAnObject,
    #[error("\"columns\" must be an array of column objects")]
    ColumnsNotAnArray,
    #[error("the input schema declares no columns")]
    NoColumns,
    #[error("unknown schema field \"{0}\" (expected \"columns\" or \"max_rows\")")]
    UnknownField(String),
    #[error("\"max_rows\" must be a positive integer")]
    BadMaxRows,
    #[error("duplicate column name \"{0}\"")]
    DuplicateColumn(String),
    /// Column `position` (1-based) is malformed.
    #[error("{}: {problem}", ColumnLabel(*position, name.as_deref()))]
    Column {
        position: usize,
        name: Option<String>,
        problem: ColumnProblem,
    },
}

/// What is wrong with one column declaration.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ColumnProblem {
    #[error("expected an object with \"name\" and \"type\"")]
    NotAnObject,
    #[error("\"name\" must be a non-empty string")]
    BadName,
    #[error("missing \"type\"")]
    MissingType,
    #[error(
        "unknown type {0} (expected one of double, integer, logical, character, factor, \
         date, timestamp)"
    )]
    UnknownType(String),
    #[error("a factor needs a non-empty \"levels\" array of strings")]
    NoLevels,
    #[error("duplicate level \"{0}\"")]
    DuplicateLevel(String),
    #[error("\"levels\" is only allowed for factor columns")]
    LevelsNotAllowed,
    #[error("\"nullable\" must be true or false")]
    BadNullable,
    #[error("unknown field \"{0}\" (expected name, type, levels, nullable)")]
    UnknownField(String),
}

/// `column 2 ("g")`, or `column 2` when the name is unknown.
struct ColumnLabel<'a>(usize, Option<&'a str>);

impl fmt::Display for ColumnLabel<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.1 {
            Some(name) => write!(f, "column {} (\"{name}\")", self.0),
            None => write!(f, "column {}", self.0),
        }
    }
}

pub(super) fn schema(json: &Json) -> Result<Schema, SchemaError> {
    let object = json.as_object().ok_or(SchemaError::NotAnObject)?;
    if let Some(key) = unknown_key(object, &["columns", "max_rows"]) {
        return Err(SchemaError::UnknownField(key.to_owned()));
    }
    let columns = columns(object.get("columns").ok_or(SchemaError::NotAnObject)?)?;
    let max_rows = max_rows(object.get("max_rows"))?;
    Ok(Schema { columns, max_rows })
}

fn unknown_key<'a>(object: &'a Map<String, Json>, known: &[&str]) -> Option<&'a str> {
    object
        .keys()
        .map(String::as_str)
        .find(|k| !known.contains(k))
}

fn max_rows(json: Option<&Json>) -> Result<Option<usize>, SchemaError> {
    match json {
        None | Some(Json::Null) => Ok(None),
        Some(n) => match n.as_u64().and_then(|n| usize::try_from(n).ok()) {
            Some(n) if n > 0 => Ok(Some(n)),
            _ => Err(SchemaError::BadMaxRows),
        },
    }
}

fn columns(json: &Json) -> Result<Vec<ColumnSpec>, SchemaError> {
    let items = json.as_array().ok_or(SchemaError::ColumnsNotAnArray)?;
    if items.is_empty() {
        return Err(SchemaError::NoColumns);
    }
    let columns = items
        .iter()
        .enumerate()
        .map(|(i, item)| column(item).map_err(|problem| column_error(i, item, problem)))
        .collect::<Result<Vec<_>, _>>()?;
    let mut seen = HashSet::new();
    match columns.iter().find(|c| !seen.insert(c.name.as_str())) {
        Some(dup) => Err(SchemaError::DuplicateColumn(dup.name.clone())),
        None => Ok(columns),
    }
}

fn column_error(index: usize, item: &Json, problem: ColumnProblem) -> SchemaError {
    let name = item.get("name").and_then(Json::as_str).map(str::to_owned);
    SchemaError::Column {
        position: index + 1,
        name: name.filter(|n| !n.is_empty()),
        problem,
    }
}

fn column(json: &Json) -> Result<ColumnSpec, ColumnProblem> {
    let object = json.as_object().ok_or(ColumnProblem::NotAnObject)?;
    if let Some(key) = unknown_key(object, &["name", "type", "levels", "nullable"]) {
        return Err(ColumnProblem::UnknownField(key.to_owned()));
    }
    let name = match object.get("name").and_then(Json::as_str) {
        Some(name) if !name.is_empty() => name.to_owned(),
        _ => return Err(ColumnProblem::BadName),
    };
    let nullable = match object.get("nullable") {
        None | Some(Json::Null) => false,
        Some(flag) => flag.as_bool().ok_or(ColumnProblem::BadNullable)?,
    };
    let ty = column_type(object)?;
    Ok(ColumnSpec { name, ty, nullable })
}

fn column_type(object: &Map<String, Json>) -> Result<ColumnType, ColumnProblem> {
    let name = object.get("type").ok_or(ColumnProblem::MissingType)?;
    let ty = match name.as_str() {
        Some("double") => ColumnType::Double,
        Some("integer") => ColumnType::Integer,
        Some("logical") => ColumnType::Logical,
        Some("character") => ColumnType::Character,
        Some("date") => ColumnType::Date,
        Some("timestamp") => ColumnType::Timestamp,
        Some("factor") => {
            return levels(object.get("levels")).map(|levels| ColumnType::Factor { levels })
        }
        _ => return Err(ColumnProblem::UnknownType(name.to_string())),
    };
    match object.contains_key("levels") {
        true => Err(ColumnProblem::LevelsNotAllowed),
        false => Ok(ty),
    }
}

fn levels(json: Option<&Json>) -> Result<Vec<String>, ColumnProblem> {
    let items = json
        .and_then(Json::as_array)
        .ok_or(ColumnProblem::NoLevels)?;
    let levels: Vec<String> = items
        .iter()
        .map(|l| l.as_str().map(str::to_owned))
        .collect::<Option<_>>()
        .ok_or(ColumnProblem::NoLevels)?;
    if levels.is_empty() {
        return Err(ColumnProblem::NoLevels);
    }
    let mut seen = HashSet::new();
    match levels.iter().find(|l| !seen.insert(l.as_str())) {
        Some(dup) => Err(ColumnProblem::DuplicateLevel(dup.clone())),
        None => Ok(levels),
    }
}

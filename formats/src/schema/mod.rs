//! The declared input of a published service: which columns, of which R type, how many
//! rows at most.
//!
//! A service record stores its input declaration as JSON:
//!
//! ```json
//! {"columns": [{"name": "x1", "type": "double"},
//!              {"name": "n", "type": "integer", "nullable": true},
//!              {"name": "g", "type": "factor", "levels": ["a", "b"]}],
//!  "max_rows": 1000000}
//! ```
//!
//! [`Schema::parse`] checks such a declaration (unknown fields are refused, so a typo
//! such as `"nulable"` cannot silently make a column strict), [`Schema::to_json_schema`]
//! describes the records form of a call for the OpenAPI document, and
//! [`Schema::validate`] brings a decoded table to exactly the declared columns, in order,
//! with the declared R types. The per-cell coercion rules live in `cell` and `column` and
//! are shared with `tabular`, which builds declared columns straight from JSON.
//!
//! This module owns the declaration and the coercion rules; it never reads bytes off the
//! wire (`tabular` and `arrow` do) and never touches R.

mod cell;
mod column;
mod parse;
mod time;
mod validate;

#[cfg(test)]
pub(crate) mod testing;
#[cfg(test)]
mod tests;

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value as Json};

pub(crate) use cell::Scalar;
pub(crate) use column::ColumnBuilder;
pub use parse::{ColumnProblem, SchemaError};
pub use validate::{CellProblem, ValidationError};

/// A service's declared input table.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "serde_json::Value")]
pub struct Schema {
    /// The columns the R function receives, in this order. Never empty once parsed.
    pub columns: Vec<ColumnSpec>,
    /// The most rows one call may send; `None` for no limit of its own.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_rows: Option<usize>,
}

/// One declared column.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ColumnSpec {
    pub name: String,
    #[serde(flatten)]
    pub ty: ColumnType,
    /// Whether NA (JSON `null`, Arrow null) is allowed; `false` unless declared.
    pub nullable: bool,
}

/// The R type a column arrives as.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum ColumnType {
    /// A double vector.
    Double,
    /// An integer vector.
    Integer,
    /// A logical vector.
    Logical,
    /// A character vector.
    Character,
    /// A factor with exactly these levels, in this order.
    Factor { levels: Vec<String> },
    /// A `Date` vector.
    Date,
    /// A `POSIXct` vector (seconds since 1970-01-01 UTC).
    Timestamp,
}

impl ColumnType {
    /// The name used in declarations: `"double"`, `"factor"`, ...
    pub fn name(&self) -> &'static str {
        match self {
            ColumnType::Double => "double",
            ColumnType::Integer => "integer",
            ColumnType::Logical => "logical",
            ColumnType::Character => "character",
            ColumnType::Factor { .. } => "factor",
            ColumnType::Date => "date",
            ColumnType::Timestamp => "timestamp",
        }
    }

    /// The JSON Schema of one non-null cell.
    fn json_schema(&self) -> Map<String, Json> {
        let schema = match self {
            ColumnType::Double => json!({"type": "number"}),
            ColumnType::Integer => json!({"type": "integer"}),
            ColumnType::Logical => json!({"type": "boolean"}),
            ColumnType::Character => json!({"type": "string"}),
            ColumnType::Factor { levels } => json!({"type": "string", "enum": levels}),
            ColumnType::Date => json!({
                "type": ["string", "number"], "format": "date",
                "description": "\"YYYY-MM-DD\", or days since 1970-01-01"
            }),
            ColumnType::Timestamp => json!({
                "type": ["string", "number"], "format": "date-time",
                "description": "RFC 3339 date-time (UTC when no offset is given), \
                                or seconds since 1970-01-01T00:00:00Z"
            }),
        };
        match schema {
            Json::Object(map) => map,
            _ => Map::new(),
        }
    }
}

impl ColumnSpec {
    /// The JSON Schema of one record field, `null` included when the column is nullable.
    fn json_schema(&self) -> Json {
        let mut schema = self.ty.json_schema();
        if self.nullable {
            allow_null(&mut schema);
        }
        Json::Object(schema)
    }
}

/// Adds `null` to a schema's `type` list and, for enumerations, to its `enum`.
fn allow_null(schema: &mut Map<String, Json>) {
    let types = match schema.remove("type") {
        Some(Json::Array(types)) => types,
        Some(one) => vec![one],
        None => Vec::new(),
    };
    let null = Json::from("null");
    schema.insert("type".into(), Json::Array([types, vec![null]].concat()));
    if let Some(Json::Array(values)) = schema.get_mut("enum") {
        values.push(Json::Null);
    }
}

impl Schema {
    /// Parses and checks a declaration: see [`SchemaError`] for what is refused.
    pub fn parse(json: &Json) -> Result<Schema, SchemaError> {
        parse::schema(json)
    }

    /// The JSON Schema (draft 2020-12, OpenAPI 3.1's dialect) of the records form of a
    /// call: an array of objects. Non-nullable columns are required, since NA fields are
    /// left out of records; undeclared fields are allowed (and dropped).
    pub fn to_json_schema(&self) -> Json {
        let properties: Map<String, Json> = self
            .columns
            .iter()
            .map(|c| (c.name.clone(), c.json_schema()))
            .collect();
        let required: Vec<&str> = self
            .columns
            .iter()
            .filter(|c| !c.nullable)
            .map(|c| c.name.as_str())
            .collect();
        let items = json!({"type": "object", "properties": properties, "required": required});
        let mut schema = json!({"type": "array", "items": items});
        if let Some(max) = self.max_rows {
            schema["maxItems"] = Json::from(max);
        }
        schema
    }

    /// The declared column called `name`.
    pub fn column(&self, name: &str) -> Option<&ColumnSpec> {
        self.columns.iter().find(|c| c.name == name)
    }

    /// Refuses a table longer than `max_rows`.
    pub(crate) fn check_rows(&self, rows: usize) -> Result<(), ValidationError> {
        match self.max_rows {
            Some(max) if rows > max => Err(ValidationError::TooManyRows { max }),
            _ => Ok(()),
        }
    }
}

impl TryFrom<Json> for Schema {
    type Error = SchemaError;

    fn try_from(json: Json) -> Result<Schema, SchemaError> {
        Schema::parse(&json)
    }
}

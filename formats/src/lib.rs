//! rookery-formats: the wire formats of service calls: the declared input, JSON tables, Arrow IPC tables.
//!
//! ```text
//! request body ──► tabular::table_from_json(bytes, Some(schema)) ──► frame, declared columns
//!              └─► arrow::table_from_ipc(bytes) ──► frame ──► Schema::validate ──┘
//! R result     ──► tabular::value_to_json(value, layout) | arrow::value_to_ipc(value)
//! ```
//!
//! [`schema`] owns a service's declared input and the coercion rules shared by every
//! reader; [`tabular`] owns the JSON forms (records and columns), [`arrow`] the Arrow IPC
//! forms (stream and file). Everything here is plain data in and out: no R, no HTTP.

pub mod arrow;
pub mod schema;
pub mod tabular;

pub use arrow::{table_from_ipc, value_to_ipc, ArrowError, ARROW_FILE, ARROW_STREAM};
pub use schema::{ColumnSpec, ColumnType, Schema, SchemaError, ValidationError};
pub use tabular::{table_from_json, value_to_json, Layout, TableError};

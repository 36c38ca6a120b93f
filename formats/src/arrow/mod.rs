//! Arrow IPC tables on the wire, in both directions.
//!
//! [`table_from_ipc`] reads the stream format (`application/vnd.apache.arrow.stream`)
//! or the file format (`application/vnd.apache.arrow.file`, told apart by its `ARROW1`
//! magic) into a data frame, every record batch concatenated:
//!
//! | Arrow | R |
//! | --- | --- |
//! | Float16/32/64 | double |
//! | Int8, Int16, Int32, UInt8, UInt16 | integer (double if a value is R's NA bit pattern) |
//! | Int64, UInt32, UInt64 | integer when every value fits, else double |
//! | Boolean | logical |
//! | Utf8, LargeUtf8, Utf8View | character |
//! | Dictionary(any integer, any of those strings) | factor |
//! | Date32, Date64 | `Date` |
//! | Timestamp(unit, tz) | `POSIXct` seconds with `tzone` = tz (`"UTC"` when naive) |
//! | Null | logical NA |
//!
//! Nulls are NA. Any other type is an error naming the column and the type.
//! [`value_to_ipc`] writes a result as one record batch in the stream format: a data
//! frame column by column, an atomic vector as a column named `value`, a matrix as one
//! column per matrix column; factors become Dictionary(Int32, Utf8), `Date` Date32,
//! `POSIXct` Timestamp(Microsecond, tzone or `"UTC"`).
//!
//! Input is untrusted: the message framing is checked before `arrow-ipc` sees it, so no
//! allocation is larger than the body, and a panic inside the decoder becomes an error.
//! This module owns the Arrow forms of tables only; checking a table against a service's
//! declaration is `schema`'s job (`Schema::validate` on the frame read here).

mod read;
mod write;

#[cfg(test)]
mod tests;

pub use read::table_from_ipc;
pub use write::value_to_ipc;

/// The media type of the Arrow IPC stream format.
pub const ARROW_STREAM: &str = "application/vnd.apache.arrow.stream";
/// The media type of the Arrow IPC file format.
pub const ARROW_FILE: &str = "application/vnd.apache.arrow.file";

/// An Arrow body that cannot be read, or a value that cannot be written. Plain data.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ArrowError {
    /// Not a well-formed Arrow IPC stream or file.
    #[error("invalid Arrow IPC data: {0}")]
    Invalid(String),
    /// A column of a type R has no equivalent for here.
    #[error("column \"{column}\": Arrow type {data_type} is not supported")]
    UnsupportedType { column: String, data_type: String },
    /// A result column that has no Arrow form here (a list, complex numbers...).
    #[error("column \"{column}\": cannot write {what} as Arrow")]
    Unwritable { column: String, what: String },
    /// A result that is not a table: a list that is not a data frame, an array...
    #[error("cannot write {0} as an Arrow table (expected a data frame or an atomic vector)")]
    NotATable(String),
    /// The Arrow writer refused the batch.
    #[error("could not encode Arrow IPC: {0}")]
    Encode(String),
}

//! Streaming a JSON table straight into its declared columns.
//!
//! serde drives the parse: each cell is handed to its column's
//! [`ColumnBuilder`](crate::schema::ColumnBuilder) as it is read, so no JSON tree
//! is built and undeclared fields are skipped without being stored. A refusal inside
//! the parse (a bad cell, a duplicate field, too many rows) is kept as a [`TableError`]
//! in the [`Reader`] and the parse is stopped with a placeholder serde error, which
//! [`with_schema`] then replaces by the kept error.
//!
//! This file owns the walk over the JSON shapes (records, columns); what a column
//! accepts is decided in `schema::cell`.

use std::collections::HashMap;
use std::fmt;

use rookery_value::Value;
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use super::TableError;
use crate::schema::{ColumnBuilder, Scalar, Schema, ValidationError};

/// Reads records or columns into a frame with exactly the declared columns.
pub(super) fn with_schema(bytes: &[u8], schema: &Schema) -> Result<Value, TableError> {
    parse(serde_json::Deserializer::from_slice(bytes), schema)
}

/// [`with_schema`], reading the JSON text from `input` as it comes (buffer it: the
/// parser asks for one byte at a time).
pub(super) fn with_schema_from<R: std::io::Read>(
    input: R,
    schema: &Schema,
) -> Result<Value, TableError> {
    parse(serde_json::Deserializer::from_reader(input), schema)
}

fn parse<'de, R: serde_json::de::Read<'de>>(
    mut de: serde_json::Deserializer<R>,
    schema: &Schema,
) -> Result<Value, TableError> {
    let mut reader = Reader::new(schema);
    let parsed = Top(&mut reader)
        .deserialize(&mut de)
        .and_then(|()| de.end());
    if let Some(failure) = reader.failure.take() {
        return Err(failure);
    }
    parsed?;
    reader.finish()
}

/// The body's layout, known once the parse has seen it.
enum Shape {
    Unknown,
    Records(usize),
    Columns,
}

/// The columns being filled, and the first refusal if any.
struct Reader<'s> {
    schema: &'s Schema,
    index: HashMap<&'s str, usize>,
    builders: Vec<ColumnBuilder<'s>>,
    seen: Vec<bool>,
    shape: Shape,
    failure: Option<TableError>,
}

impl<'s> Reader<'s> {
    fn new(schema: &'s Schema) -> Self {
        let index = schema.columns.iter().enumerate();
        let builders = schema.columns.iter();
        Reader {
            schema,
            index: index.map(|(i, c)| (c.name.as_str(), i)).collect(),
            builders: builders
                .map(|c| ColumnBuilder::new(c, schema.max_rows, 0))
                .collect(),
            seen: vec![false; schema.columns.len()],
            shape: Shape::Unknown,
            failure: None,
        }
    }

    /// Keeps `failure` and returns the error that stops the parse.
    fn fail<E: de::Error>(&mut self, failure: impl Into<TableError>) -> E {
        self.failure = Some(failure.into());
        E::custom("the table was refused")
    }

    fn push<E: de::Error>(&mut self, column: usize, cell: Scalar<'_>) -> Result<(), E> {
        match self.builders[column].push(cell) {
            Ok(()) => Ok(()),
            Err(e) => Err(self.fail(e)),
        }
    }

    /// NA for every column record `row` left out.
    fn fill_row<E: de::Error>(&mut self, row: usize) -> Result<(), E> {
        for column in 0..self.builders.len() {
            if self.builders[column].len() == row {
                self.push(column, Scalar::Na)?;
            }
        }
        Ok(())
    }

    fn finish(self) -> Result<Value, TableError> {
        match self.shape {
            Shape::Records(rows) => self.check_records(rows)?,
            Shape::Columns => self.check_columns()?,
            Shape::Unknown => return Err(TableError::NotATable("nothing".into())),
        }
        let columns = self
            .builders
            .into_iter()
            .map(|b| Ok((b.name().to_owned(), b.finish()?)))
            .collect::<Result<Vec<_>, ValidationError>>()?;
        Value::data_frame(columns).map_err(|e| TableError::NotATable(e.to_string()))
    }

    /// A column no record mentions is missing, unless it may be all NA (nullable, or
    /// there are no rows at all).
    fn check_records(&self, rows: usize) -> Result<(), TableError> {
        let mut declared = self.schema.columns.iter().zip(&self.seen);
        match declared.find(|(spec, &seen)| !seen && !spec.nullable && rows > 0) {
            Some((spec, _)) => Err(ValidationError::MissingColumn(spec.name.clone()).into()),
            None => Ok(()),
        }
    }

    /// Every declared column given, all of the first one's length.
    fn check_columns(&self) -> Result<(), TableError> {
        if let Some(at) = self.seen.iter().position(|&seen| !seen) {
            let name = self.builders[at].name().to_owned();
            return Err(ValidationError::MissingColumn(name).into());
        }
        let expected = self.builders.first().map_or(0, ColumnBuilder::len);
        match self.builders.iter().find(|b| b.len() != expected) {
            Some(b) => Err(TableError::Ragged {
                column: b.name().to_owned(),
                expected,
                found: b.len(),
            }),
            None => Ok(()),
        }
    }
}

/// Looks a member name up among the declared columns.
struct Key<'a, 's>(&'a HashMap<&'s str, usize>);

impl<'de> DeserializeSeed<'de> for Key<'_, '_> {
    type Value = Option<usize>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Option<usize>, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for Key<'_, '_> {
    type Value = Option<usize>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a field name")
    }

    fn visit_str<E: de::Error>(self, name: &str) -> Result<Option<usize>, E> {
        Ok(self.0.get(name).copied())
    }
}

/// The whole body: an array of records or an object of columns.
struct Top<'r, 's>(&'r mut Reader<'s>);

impl<'de> DeserializeSeed<'de> for Top<'_, '_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl Top<'_, '_> {
    fn refuse<E: de::Error>(self, got: &str) -> Result<(), E> {
        Err(self.0.fail(TableError::NotATable(got.to_owned())))
    }
}

impl<'de> Visitor<'de> for Top<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array of records or an object of columns")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let reader = self.0;
        let mut row = 0;
        while let Some(()) = seq.next_element_seed(Record {
            reader: &mut *reader,
            row,
        })? {
            row += 1;
        }
        reader.shape = Shape::Records(row);
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let reader = self.0;
        reader.shape = Shape::Columns;
        while let Some(key) = map.next_key_seed(Key(&reader.index))? {
            let Some(column) = key else {
                map.next_value::<IgnoredAny>()?;
                continue;
            };
            if std::mem::replace(&mut reader.seen[column], true) {
                let name = reader.builders[column].name().to_owned();
                return Err(reader.fail(TableError::DuplicateColumn(name)));
            }
            map.next_value_seed(Cell {
                reader: &mut *reader,
                column,
                whole: true,
            })?;
        }
        Ok(())
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        self.refuse("a boolean")
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        self.refuse("a number")
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        self.refuse("a number")
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        self.refuse("a number")
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        self.refuse("a string")
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.refuse("null")
    }
}

/// One element of a records array: an object, or `null` for a row of NA.
struct Record<'r, 's> {
    reader: &'r mut Reader<'s>,
    row: usize,
}

impl<'de> DeserializeSeed<'de> for Record<'_, '_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl Record<'_, '_> {
    fn refuse<E: de::Error>(self, got: &'static str) -> Result<(), E> {
        let row = self.row + 1;
        Err(self.reader.fail(TableError::NotARecord { row, got }))
    }
}

impl<'de> Visitor<'de> for Record<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a record (an object)")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let Record { reader, row } = self;
        while let Some(key) = map.next_key_seed(Key(&reader.index))? {
            let Some(column) = key else {
                map.next_value::<IgnoredAny>()?;
                continue;
            };
            if reader.builders[column].len() > row {
                let column = reader.builders[column].name().to_owned();
                return Err(reader.fail(TableError::DuplicateField {
                    column,
                    row: row + 1,
                }));
            }
            reader.seen[column] = true;
            map.next_value_seed(Cell {
                reader: &mut *reader,
                column,
                whole: false,
            })?;
        }
        reader.fill_row(row)
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.reader.fill_row(self.row)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, _: A) -> Result<(), A::Error> {
        self.refuse("an array")
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        self.refuse("a boolean")
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        self.refuse("a number")
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        self.refuse("a number")
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        self.refuse("a number")
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        self.refuse("a string")
    }
}

/// One cell pushed into `column`; with `whole`, the member of an object of columns, where
/// an array is the column's cells and a scalar a column of one.
struct Cell<'r, 's> {
    reader: &'r mut Reader<'s>,
    column: usize,
    whole: bool,
}

impl<'de> DeserializeSeed<'de> for Cell<'_, '_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl Cell<'_, '_> {
    fn push<E: de::Error>(self, cell: Scalar<'_>) -> Result<(), E> {
        self.reader.push(self.column, cell)
    }
}

impl<'de> Visitor<'de> for Cell<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a cell")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        if !self.whole {
            return self.push(Scalar::Other("an array"));
        }
        let (reader, column) = (self.reader, self.column);
        while let Some(()) = seq.next_element_seed(Cell {
            reader: &mut *reader,
            column,
            whole: false,
        })? {}
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, _: A) -> Result<(), A::Error> {
        self.push(Scalar::Other("an object"))
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.push(Scalar::Na)
    }

    fn visit_bool<E: de::Error>(self, b: bool) -> Result<(), E> {
        self.push(Scalar::Bool(b))
    }

    fn visit_i64<E: de::Error>(self, i: i64) -> Result<(), E> {
        self.push(Scalar::Int(i))
    }

    fn visit_u64<E: de::Error>(self, u: u64) -> Result<(), E> {
        self.push(i64::try_from(u).map_or(Scalar::Num(u as f64), Scalar::Int))
    }

    fn visit_f64<E: de::Error>(self, x: f64) -> Result<(), E> {
        self.push(Scalar::Num(x))
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<(), E> {
        self.push(Scalar::Str(s.into()))
    }

    fn visit_string<E: de::Error>(self, s: String) -> Result<(), E> {
        self.push(Scalar::Str(s.into()))
    }
}

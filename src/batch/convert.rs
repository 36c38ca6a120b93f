//! Record batches to R values and back, through the server's Arrow IPC forms
//! (`rookery_server::formats::arrow`), so `rookery batch` maps types exactly as the
//! HTTP API does (Int64 to integer or double, dictionaries to factors, NA as null).
//!
//! Owns only the conversion and conforming a chunk's result to the first chunk's
//! columns; it must not do I/O.

use std::io::Cursor;
use std::sync::Arc;

use arrow_array::{ArrayRef, RecordBatch, RecordBatchOptions};
use arrow_ipc::reader::StreamReader;
use arrow_ipc::writer::StreamWriter;
use arrow_schema::SchemaRef;
use rookery_engine::Value;
use rookery_server::formats::arrow::{table_from_ipc, value_to_ipc};

/// A chunk as an R data frame.
pub fn batch_to_frame(batch: &RecordBatch) -> Result<Value, String> {
    table_from_ipc(&batch_to_ipc(batch)?).map_err(|e| e.to_string())
}

/// A chunk as one Arrow IPC stream.
pub fn batch_to_ipc(batch: &RecordBatch) -> Result<Vec<u8>, String> {
    let size = batch.get_array_memory_size() + 4096;
    let fail = |e: arrow_schema::ArrowError| format!("encoding a chunk as Arrow: {e}");
    let mut w = StreamWriter::try_new(Vec::with_capacity(size), &batch.schema()).map_err(fail)?;
    w.write(batch).map_err(fail)?;
    w.finish().map_err(fail)?;
    w.into_inner().map_err(fail)
}

/// An R result (data frame, vector or matrix) as one record batch.
pub fn value_to_batch(value: &Value) -> Result<RecordBatch, String> {
    let bytes = value_to_ipc(value).map_err(|e| format!("the result has no table form: {e}"))?;
    ipc_to_batch(bytes)
}

/// The one record batch of an Arrow IPC stream (all of them, concatenated).
pub fn ipc_to_batch(bytes: Vec<u8>) -> Result<RecordBatch, String> {
    let fail = |e: arrow_schema::ArrowError| format!("decoding a result: {e}");
    let reader = StreamReader::try_new(Cursor::new(bytes), None).map_err(fail)?;
    let schema = reader.schema();
    let batches = reader.collect::<Result<Vec<_>, _>>().map_err(fail)?;
    match batches.len() {
        1 => Ok(batches.into_iter().next().unwrap_or_else(|| unreachable!())),
        _ => arrow_select::concat::concat_batches(&schema, &batches).map_err(fail),
    }
}

/// The input's columns `keep` (indices), then the result's: a result column of the
/// same name as a kept one is an error.
pub fn with_kept(
    input: &RecordBatch,
    keep: &[usize],
    out: RecordBatch,
) -> Result<RecordBatch, String> {
    if keep.is_empty() {
        return Ok(out);
    }
    let kept = input.project(keep).map_err(|e| e.to_string())?;
    let kept_schema = kept.schema();
    if let Some(f) = out
        .schema()
        .fields()
        .iter()
        .find(|f| kept_schema.field_with_name(f.name()).is_ok())
    {
        return Err(format!(
            "the result has a column \"{}\" like a --keep column",
            f.name()
        ));
    }
    let fields: Vec<_> = kept_schema
        .fields()
        .iter()
        .chain(out.schema().fields())
        .cloned()
        .collect();
    let columns = kept
        .columns()
        .iter()
        .chain(out.columns())
        .cloned()
        .collect();
    let schema = Arc::new(arrow_schema::Schema::new(fields));
    RecordBatch::try_new(schema, columns).map_err(|e| e.to_string())
}

/// `batch` with exactly `schema`'s columns and types: a chunk whose result came out
/// with another type (an all-NA column is logical in R, an integer column may be
/// double elsewhere) is cast; one with other columns is an error.
pub fn conform(batch: RecordBatch, schema: &SchemaRef) -> Result<RecordBatch, String> {
    if batch.schema().fields() == schema.fields() {
        return Ok(batch);
    }
    let names = |s: &SchemaRef| s.fields().iter().map(|f| f.name().clone()).collect();
    let (got, want): (Vec<String>, Vec<String>) = (names(&batch.schema()), names(schema));
    if got != want {
        return Err(format!(
            "the result has columns {got:?}, but the first chunk's had {want:?}"
        ));
    }
    let columns = batch.columns().iter().zip(schema.fields());
    let columns = columns
        .map(|(c, f)| {
            arrow_cast::cast(c, f.data_type()).map_err(|e| {
                format!(
                    "column \"{}\" is {} here but {} in the first chunk: {e}",
                    f.name(),
                    c.data_type(),
                    f.data_type()
                )
            })
        })
        .collect::<Result<Vec<ArrayRef>, _>>()?;
    let opts = RecordBatchOptions::new().with_row_count(Some(batch.num_rows()));
    RecordBatch::try_new_with_options(Arc::clone(schema), columns, &opts).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::{Float64Array, Int32Array};
    use arrow_schema::{DataType, Field, Schema};

    #[test]
    fn a_batch_goes_to_r_and_back() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("x", DataType::Float64, true),
            Field::new("n", DataType::Int32, true),
        ]));
        let x: ArrayRef = Arc::new(Float64Array::from(vec![Some(1.5), None]));
        let n: ArrayRef = Arc::new(Int32Array::from(vec![Some(2), Some(3)]));
        let batch = RecordBatch::try_new(schema.clone(), vec![x, n]).unwrap();
        let frame = batch_to_frame(&batch).unwrap();
        assert_eq!(frame.nrow(), Some(2));
        let back = value_to_batch(&frame).unwrap();
        assert_eq!(back.num_rows(), 2);
        assert_eq!(back.schema().field(0).name(), "x");
    }

    #[test]
    fn a_result_of_another_type_is_cast_to_the_first() {
        let want = Arc::new(Schema::new(vec![Field::new(
            "value",
            DataType::Float64,
            true,
        )]));
        let got = value_to_batch(&Value::integers(vec![1, 2])).unwrap();
        let fixed = conform(got, &want).unwrap();
        assert_eq!(fixed.schema().field(0).data_type(), &DataType::Float64);
        let other = value_to_batch(
            &Value::data_frame(vec![("y".into(), Value::integers(vec![1]))]).unwrap(),
        )
        .unwrap();
        assert!(conform(other, &want).unwrap_err().contains("columns"));
    }
}

//! Reading the input file as a stream of record batches of `chunk_rows` rows each.
//!
//! Only one chunk (plus the reader's own buffer: a Parquet row group's pages, a CSV
//! block) is in memory at a time, so a file larger than memory streams through.
//! Owns opening each format, the row count when the format knows it up front
//! (Parquet's footer), and re-cutting batches to exactly `chunk_rows` rows. It must
//! not convert to R values: that is `convert`'s job, on the workers' threads.

use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::Path;
use std::sync::Arc;

use arrow_array::RecordBatch;
use arrow_schema::{ArrowError, SchemaRef};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use super::format::Format;

/// Rows sampled to infer the column types of a CSV file.
const CSV_INFER_ROWS: usize = 10_000;

type Batches = Box<dyn Iterator<Item = Result<RecordBatch, ArrowError>> + Send>;

/// An input file, read chunk by chunk.
pub struct ChunkReader {
    inner: Batches,
    pending: Option<RecordBatch>,
    chunk_rows: usize,
    schema: SchemaRef,
    /// Rows in the file, when the format says so without reading it all.
    pub total_rows: Option<u64>,
    /// Rows handed out so far (the next chunk's first row, 0-based).
    pub rows_read: usize,
}

impl std::fmt::Debug for ChunkReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChunkReader")
            .field("chunk_rows", &self.chunk_rows)
            .field("total_rows", &self.total_rows)
            .field("rows_read", &self.rows_read)
            .finish()
    }
}

impl ChunkReader {
    /// Opens `path` as `format`; errors name the file and what is wrong with it.
    pub fn open(path: &Path, format: Format, chunk_rows: usize) -> Result<ChunkReader, String> {
        let file = File::open(path).map_err(|e| format!("cannot open {}: {e}", path.display()))?;
        let bad = |e: &dyn std::fmt::Display| {
            format!("{} is not a readable {format:?} file: {e}", path.display())
        };
        let (inner, schema, total_rows) = match format {
            Format::Csv => open_csv(file, chunk_rows).map_err(|e| bad(&e))?,
            Format::Arrow | Format::Arrows => open_ipc(file).map_err(|e| bad(&e))?,
            Format::Parquet => open_parquet(file, chunk_rows).map_err(|e| bad(&e))?,
        };
        Ok(ChunkReader {
            inner,
            pending: None,
            chunk_rows: chunk_rows.max(1),
            schema,
            total_rows,
            rows_read: 0,
        })
    }

    /// The input's columns.
    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    /// The next chunk: `chunk_rows` rows, fewer only at the end of the file.
    pub fn next_chunk(&mut self) -> Option<Result<RecordBatch, String>> {
        let mut parts: Vec<RecordBatch> = Vec::new();
        let mut rows = 0;
        while rows < self.chunk_rows {
            let batch = match self.pending.take().map(Ok).or_else(|| self.inner.next()) {
                None => break,
                Some(Ok(b)) => b,
                Some(Err(e)) => return Some(Err(self.read_error(rows, &e))),
            };
            let take = (self.chunk_rows - rows).min(batch.num_rows());
            if take < batch.num_rows() {
                self.pending = Some(batch.slice(take, batch.num_rows() - take));
            }
            rows += take;
            parts.push(batch.slice(0, take));
        }
        if rows == 0 {
            return None;
        }
        let chunk = match parts.len() {
            1 => parts.pop().map(Ok),
            _ => Some(arrow_select::concat::concat_batches(&self.schema, &parts)),
        };
        self.rows_read += rows;
        chunk.map(|c| c.map_err(|e| e.to_string()))
    }

    fn read_error(&self, rows_in_chunk: usize, e: &ArrowError) -> String {
        format!(
            "reading the input after row {}: {e}",
            self.rows_read + rows_in_chunk
        )
    }
}

fn open_csv(
    mut file: File,
    chunk_rows: usize,
) -> Result<(Batches, SchemaRef, Option<u64>), ArrowError> {
    let format = arrow_csv::reader::Format::default().with_header(true);
    let (schema, _) = format.infer_schema(BufReader::new(&mut file), Some(CSV_INFER_ROWS))?;
    if schema.fields().is_empty() {
        return Err(ArrowError::CsvError("no header line".into()));
    }
    file.seek(SeekFrom::Start(0))?;
    let schema = Arc::new(schema);
    let reader = arrow_csv::ReaderBuilder::new(schema.clone())
        .with_format(format)
        .with_batch_size(chunk_rows.clamp(1, 1 << 16))
        .build(BufReader::with_capacity(1 << 20, file))?;
    Ok((Box::new(reader), schema, None))
}

fn open_ipc(mut file: File) -> Result<(Batches, SchemaRef, Option<u64>), ArrowError> {
    let mut magic = [0u8; 6];
    let is_file = file.read_exact(&mut magic).is_ok() && &magic == b"ARROW1";
    file.seek(SeekFrom::Start(0))?;
    if is_file {
        let reader = arrow_ipc::reader::FileReader::try_new(BufReader::new(file), None)?;
        let schema = reader.schema();
        return Ok((Box::new(reader), schema, None));
    }
    let reader = arrow_ipc::reader::StreamReader::try_new(BufReader::new(file), None)?;
    let schema = reader.schema();
    Ok((Box::new(reader), schema, None))
}

fn open_parquet(
    file: File,
    chunk_rows: usize,
) -> Result<(Batches, SchemaRef, Option<u64>), ArrowError> {
    let builder = ParquetRecordBatchReaderBuilder::try_new(file)?;
    let rows = u64::try_from(builder.metadata().file_metadata().num_rows()).ok();
    let schema = builder.schema().clone();
    let reader = builder.with_batch_size(chunk_rows.max(1)).build()?;
    Ok((Box::new(reader), schema, rows))
}

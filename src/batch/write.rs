//! Writing the scored chunks, in input order, to `FILE.partial`; renamed to `FILE`
//! only once every chunk is written and the format's footer is on disk.
//!
//! A run that stops early (Ctrl-C, `--on-error stop`, a read error) closes the
//! partial file so what it holds stays readable, and leaves it under the `.partial`
//! name: a truncated file is never found under the final name. Owns the three
//! writers and the rename; it must not reorder (the pipeline hands chunks in order).

use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;

use super::format::Format;

/// Rows per Parquet row group (the writer buffers one group).
const PARQUET_GROUP_ROWS: usize = 256 * 1024;

enum Inner {
    Csv(Box<arrow_csv::Writer<BufWriter<File>>>),
    Arrow(arrow_ipc::writer::FileWriter<BufWriter<File>>),
    Arrows(arrow_ipc::writer::StreamWriter<BufWriter<File>>),
    Parquet(Box<ArrowWriter<BufWriter<File>>>),
}

/// The output file being written.
pub struct OutputFile {
    inner: Inner,
    schema: SchemaRef,
    partial: PathBuf,
    target: PathBuf,
    /// Rows written so far.
    pub rows: u64,
}

impl std::fmt::Debug for OutputFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutputFile")
            .field("partial", &self.partial)
            .field("rows", &self.rows)
            .finish()
    }
}

/// `FILE.partial`, beside `FILE`.
pub fn partial_path(target: &Path) -> PathBuf {
    let mut name = target.file_name().unwrap_or_default().to_os_string();
    name.push(".partial");
    target.with_file_name(name)
}

impl OutputFile {
    /// Creates `FILE.partial` for tables of `schema`.
    pub fn create(target: &Path, format: Format, schema: SchemaRef) -> Result<OutputFile, String> {
        let partial = partial_path(target);
        let file = File::create(&partial)
            .map_err(|e| format!("cannot create {}: {e}", partial.display()))?;
        let out = BufWriter::with_capacity(1 << 20, file);
        let fail = |e: &dyn std::fmt::Display| format!("writing {}: {e}", partial.display());
        let inner = match format {
            Format::Csv => Inner::Csv(Box::new(
                arrow_csv::WriterBuilder::new().with_header(true).build(out),
            )),
            Format::Arrow => Inner::Arrow(
                arrow_ipc::writer::FileWriter::try_new(out, &schema).map_err(|e| fail(&e))?,
            ),
            Format::Arrows => Inner::Arrows(
                arrow_ipc::writer::StreamWriter::try_new(out, &schema).map_err(|e| fail(&e))?,
            ),
            Format::Parquet => {
                let props = WriterProperties::builder()
                    .set_compression(Compression::SNAPPY)
                    .set_max_row_group_size(PARQUET_GROUP_ROWS)
                    .build();
                let w =
                    ArrowWriter::try_new(out, schema.clone(), Some(props)).map_err(|e| fail(&e))?;
                Inner::Parquet(Box::new(w))
            }
        };
        Ok(OutputFile {
            inner,
            schema,
            partial,
            target: target.to_owned(),
            rows: 0,
        })
    }

    /// The columns every chunk must have.
    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    /// Appends one chunk's rows.
    pub fn write(&mut self, batch: &RecordBatch) -> Result<(), String> {
        let result = match &mut self.inner {
            Inner::Csv(w) => w.write(batch),
            Inner::Arrow(w) => w.write(batch),
            Inner::Arrows(w) => w.write(batch),
            Inner::Parquet(w) => w.write(batch).map_err(Into::into),
        };
        result.map_err(|e| format!("writing {}: {e}", self.partial.display()))?;
        self.rows += batch.num_rows() as u64;
        Ok(())
    }

    /// Closes the file (footer, flush, fsync) and, when `complete`, renames it to its
    /// final name. Returns where the rows are.
    pub fn finish(self, complete: bool) -> Result<PathBuf, String> {
        let fail = |e: &dyn std::fmt::Display| format!("closing {}: {e}", self.partial.display());
        let out = match self.inner {
            Inner::Csv(w) => w.into_inner(),
            Inner::Arrow(mut w) => {
                w.finish().map_err(|e| fail(&e))?;
                w.into_inner().map_err(|e| fail(&e))?
            }
            Inner::Arrows(mut w) => {
                w.finish().map_err(|e| fail(&e))?;
                w.into_inner().map_err(|e| fail(&e))?
            }
            Inner::Parquet(w) => w.into_inner().map_err(|e| fail(&e))?,
        };
        let file = out.into_inner().map_err(|e| fail(&e.error().to_string()))?;
        file.sync_all().map_err(|e| fail(&e))?;
        drop(file);
        if !complete {
            return Ok(self.partial);
        }
        std::fs::rename(&self.partial, &self.target).map_err(|e| {
            format!(
                "renaming {} to {}: {e}",
                self.partial.display(),
                self.target.display()
            )
        })?;
        Ok(self.target)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partial_sits_beside_the_target() {
        assert_eq!(
            partial_path(Path::new("out/scores.parquet")),
            Path::new("out/scores.parquet.partial")
        );
    }
}

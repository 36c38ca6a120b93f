//! File formats of `rookery batch`: which one a file is, from a flag or its extension.
//!
//! Owns only the naming (`csv`, `arrow`, `arrows`, `parquet`) and the guess from a
//! path; reading and writing are `read` and `write`.

use std::path::Path;

/// A table file format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Comma-separated values with a header line.
    Csv,
    /// Arrow IPC file format (`.arrow`, `.feather`, `.ipc`); reading also accepts
    /// the stream format.
    Arrow,
    /// Arrow IPC stream format (`.arrows`).
    Arrows,
    /// Apache Parquet (`.parquet`, `.pq`).
    Parquet,
}

impl Format {
    /// The format named by `flag`, else the one `path`'s extension names.
    pub fn choose(flag: Option<Format>, path: &Path, what: &str) -> Result<Format, String> {
        if let Some(f) = flag {
            return Ok(f);
        }
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase);
        let known = match ext.as_deref() {
            Some("csv") => Some(Format::Csv),
            Some("arrow" | "feather" | "ipc") => Some(Format::Arrow),
            Some("arrows") => Some(Format::Arrows),
            Some("parquet" | "pq") => Some(Format::Parquet),
            _ => None,
        };
        known.ok_or_else(|| {
            format!(
                "cannot tell the format of {what} {} from its extension: name it .csv, \
                 .arrow, .arrows or .parquet, or pass --{what}-format",
                path.display()
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extensions_and_flags() {
        let f = |p: &str| Format::choose(None, Path::new(p), "input");
        assert_eq!(f("a.CSV"), Ok(Format::Csv));
        assert_eq!(f("a/b.feather"), Ok(Format::Arrow));
        assert_eq!(f("x.arrows"), Ok(Format::Arrows));
        assert_eq!(f("x.parquet"), Ok(Format::Parquet));
        assert!(f("x.txt").unwrap_err().contains("--input-format"));
        let forced = Format::choose(Some(Format::Csv), Path::new("x.txt"), "input");
        assert_eq!(forced, Ok(Format::Csv));
    }
}

//! The results report: `NAME.results.csv` (one row per record, in input order)
//! and `NAME.summary.json` (written last: its presence means the report is complete).

use crate::domain::RowError;
pub use crate::domain::{Summary, SummaryError, SummaryMapping};
use std::fs::{File, OpenOptions};
use std::io::{self, Seek, SeekFrom};
use std::path::Path;

pub const RESULTS_HEADER: [&str; 7] =
    ["line", "ref", "status", "customer_id", "error_code", "error_field", "error_message"];

/// A record's status in the report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowStatus {
    Created,
    Updated,
    Unchanged,
    Failed,
}

impl RowStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Created => "created",
            Self::Updated => "updated",
            Self::Unchanged => "unchanged",
            Self::Failed => "failed",
        }
    }
}

/// One line of `NAME.results.csv`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowResult {
    pub line: u64,
    pub customer_ref: String,
    pub status: RowStatus,
    pub customer_id: String,
    /// All of the record's errors; the first gives `error_code` and `error_field`.
    pub errors: Vec<RowError>,
}

/// Appends result lines to a job's results file, resumable at a byte offset.
pub struct ResultsWriter {
    csv: csv::Writer<File>,
}

impl ResultsWriter {
    /// Opens the results file for a job that has written `offset` bytes so far
    /// (0: a fresh file, the header is written, after a UTF-8 BOM with `bom`).
    pub fn open(path: &Path, offset: u64, bom: bool) -> io::Result<Self> {
        let mut file = OpenOptions::new().create(true).write(true).truncate(false).open(path)?;
        file.set_len(offset)?;
        file.seek(SeekFrom::Start(offset))?;
        if offset == 0 && bom {
            io::Write::write_all(&mut file, b"\xEF\xBB\xBF")?;
        }
        let mut csv = csv::WriterBuilder::new().has_headers(false).from_writer(file);
        if offset == 0 {
            csv.write_record(RESULTS_HEADER)?;
        }
        Ok(ResultsWriter { csv })
    }

    pub fn write(&mut self, r: &RowResult) -> io::Result<()> {
        let line = r.line.to_string();
        let (code, field) = r.errors.first().map(|e| (e.code.code(), e.field.as_str())).unwrap_or(("", ""));
        let message = listed_messages(&r.errors);
        // Cells are written as a spreadsheet shows them, as text (a ref
        // `=HYPERLINK(...)` is never run by whoever opens the report), and
        // control characters written out (`\u{1b}`): no escape sequence
        // reaches whoever prints the report.
        use crate::domain::shown::shown;
        self.csv
            .write_record([
                line.as_str(),
                &shown(&r.customer_ref),
                r.status.as_str(),
                &shown(&r.customer_id),
                code,
                &shown(field),
                &shown(&message),
            ])
            .map_err(into_io)
    }

    /// Hands everything written to the OS; returns the file's length, the
    /// offset to resume from.
    pub fn flush(&mut self) -> io::Result<u64> {
        self.csv.flush()?;
        let mut file: &File = self.csv.get_ref();
        file.stream_position()
    }

    /// Waits until what was flushed is on disk.
    pub fn sync(&mut self) -> io::Result<()> {
        self.csv.get_ref().sync_data()
    }

    /// Flushes to disk.
    pub fn finish(mut self) -> io::Result<()> {
        self.csv.flush()?;
        self.csv.get_ref().sync_data()
    }
}

/// The I/O error inside a CSV writer's error as it was (a full disk stays
/// ENOSPC: a transient fault, retried), anything else wrapped.
fn into_io(error: csv::Error) -> io::Error {
    if matches!(error.kind(), csv::ErrorKind::Io(_)) {
        if let csv::ErrorKind::Io(e) = error.into_kind() {
            return e;
        }
        return io::Error::other("a CSV writer error");
    }
    io::Error::other(error)
}

/// A record's error messages, `; `-separated: the first few and how many more,
/// so a report stays in proportion to its upload.
pub fn listed_messages(errors: &[RowError]) -> String {
    use super::rows::MAX_LISTED_ERRORS;
    let mut message = errors.iter().take(MAX_LISTED_ERRORS).map(|e| e.message.as_str()).collect::<Vec<_>>().join("; ");
    if errors.len() > MAX_LISTED_ERRORS {
        message += &format!("; and {} more errors", errors.len() - MAX_LISTED_ERRORS);
    }
    message
}

/// Counts the `error_code` column of a results file.
pub fn count_error_codes(path: &Path) -> io::Result<std::collections::BTreeMap<String, u64>> {
    let mut counts = std::collections::BTreeMap::new();
    let mut reader = csv::ReaderBuilder::new().has_headers(true).from_path(path)?;
    let mut record = csv::ByteRecord::new();
    while reader.read_byte_record(&mut record).map_err(io::Error::other)? {
        let code = record.get(4).unwrap_or_default();
        if !code.is_empty() {
            *counts.entry(String::from_utf8_lossy(code).into_owned()).or_insert(0) += 1;
        }
    }
    Ok(counts)
}

//! `NAME.failed.csv`: the header and every failed record exactly as
//! uploaded — the same bytes, so the same encoding, delimiter, quoting and
//! line breaks — in input order and nothing else, so a merchant fixes the
//! cells and uploads the file again. The n-th record of it is the n-th
//! `failed` row of the results. Derived when a job's outcome is decided,
//! from the committed results and the upload, so it is redone whole after
//! a crash, like the decision it belongs to.

use super::rows::{FileLimits, RecordSpan, RowReader};
use super::upload;
use crate::domain::AccountSettings;
use crate::openpgp::Opening;
use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, Read, Write};
use std::path::Path;
use std::sync::Arc;

const BOM: &[u8] = b"\xEF\xBB\xBF";

/// Writes the failed records of `upload` (those the results file at
/// `results` lists as `failed`) to `out`; returns how many. Memory stays
/// bounded by one record.
pub fn write(
    upload_path: &Path,
    results: &Path,
    out: &Path,
    account: &AccountSettings,
    limits: FileLimits,
    pgp: &Arc<Opening>,
) -> io::Result<u64> {
    let content = upload::open(File::open(upload_path)?, limits.max_gzip_ratio, pgp)?;
    let mut records = match RowReader::open(content.reader, account.clone(), limits)? {
        Ok(reader) => reader,
        // A rejected file has no failed records, only its error.
        Err(_) => return Ok(0),
    };
    let mut raw = Raw::open(upload_path, limits, pgp)?;
    let mut writer = BufWriter::new(File::create(out)?);
    if raw.bom {
        writer.write_all(BOM)?;
    }
    let header = records.header_span();
    let terminator = raw.copy(&header, &mut writer, b"\n")?;
    let mut copied = 0;
    for line in failed_lines(results)? {
        let line = line?;
        let span = loop {
            match records.next_span()? {
                Some(span) if span.line == line => break span,
                Some(span) if span.line < line => continue,
                _ => return Err(io::Error::other(format!("the results name line {line}, which starts no record"))),
            }
        };
        raw.copy(&span, &mut writer, &terminator)?;
        copied += 1;
    }
    let file = writer.into_inner().map_err(|e| e.into_error())?;
    file.sync_data()?;
    Ok(copied)
}

/// The `line` of every `failed` row of a results file, in order.
fn failed_lines(results: &Path) -> io::Result<impl Iterator<Item = io::Result<u64>>> {
    let reader = csv::ReaderBuilder::new().has_headers(true).from_path(results)?;
    Ok(reader.into_byte_records().filter_map(|record| match record {
        Err(e) => Some(Err(io::Error::other(e))),
        Ok(r) if r.get(2) == Some(b"failed") => {
            let line = std::str::from_utf8(r.get(0).unwrap_or_default()).ok().and_then(|l| l.parse().ok());
            Some(line.ok_or_else(|| io::Error::other("a results row without a line number")))
        }
        Ok(_) => None,
    }))
}

/// The upload's content read a second time, forwards, for its bytes.
struct Raw {
    reader: BufReader<Box<dyn Read + Send>>,
    /// Where `reader` stands, in content offsets (after any BOM).
    at: u64,
    bom: bool,
    max_record_bytes: u64,
}

impl Raw {
    fn open(upload_path: &Path, limits: FileLimits, pgp: &Arc<Opening>) -> io::Result<Raw> {
        let content = upload::open(File::open(upload_path)?, limits.max_gzip_ratio, pgp)?;
        let mut reader = BufReader::with_capacity(64 * 1024, content.reader);
        let bom = reader.fill_buf()?.starts_with(BOM);
        if bom {
            reader.consume(BOM.len());
        }
        Ok(Raw { reader, at: 0, bom, max_record_bytes: limits.max_record_bytes as u64 })
    }

    /// Copies the record at `span` without the blank lines around it,
    /// ending it with its own line break, or `fallback` when it has none (the
    /// last line of a file); returns the line break used.
    fn copy(&mut self, span: &RecordSpan, out: &mut impl Write, fallback: &[u8]) -> io::Result<Vec<u8>> {
        // The CSV reader ends a CRLF record after its CR: the LF that
        // starts the next span may have been copied with this one already.
        let mut start = span.start.max(self.at);
        io::copy(&mut (&mut self.reader).take(start - self.at), &mut io::sink())?;
        self.at = start;
        // The blank lines before the record (a span may start with any run
        // of them) are passed over, not held.
        while start < span.end {
            let buf = self.reader.fill_buf()?;
            let breaks =
                buf.iter().take((span.end - start) as usize).take_while(|b| **b == b'\r' || **b == b'\n').count();
            if breaks == 0 {
                break;
            }
            self.reader.consume(breaks);
            start += breaks as u64;
        }
        self.at = start;
        if span.end < start || span.end - start > self.max_record_bytes + 64 * 1024 {
            return Err(io::Error::other(format!("the record on line {} cannot be copied", span.line)));
        }
        let mut bytes = Vec::with_capacity((span.end - start) as usize);
        (&mut self.reader).take(span.end - start).read_to_end(&mut bytes)?;
        self.at = span.end;
        if bytes.ends_with(b"\r") && self.reader.fill_buf()?.first() == Some(&b'\n') {
            self.reader.consume(1);
            self.at += 1;
            bytes.push(b'\n');
        }
        let is_break = |b: &u8| *b == b'\r' || *b == b'\n';
        let first = bytes.iter().position(|b| !is_break(b)).unwrap_or(bytes.len());
        let last = bytes.iter().rposition(|b| !is_break(b)).map_or(first, |i| i + 1);
        let trailing = &bytes[last..];
        let terminator = if trailing.starts_with(b"\r\n") {
            b"\r\n".to_vec()
        } else if let Some(&b) = trailing.first() {
            vec![b]
        } else {
            fallback.to_vec()
        };
        out.write_all(&bytes[first..last])?;
        out.write_all(&terminator)?;
        Ok(terminator)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::report::{ResultsWriter, RowResult, RowStatus};

    fn account() -> AccountSettings {
        AccountSettings::new(crate::domain::AccountId::parse("a").unwrap())
    }

    /// The failed.csv of `upload` when the records on `failed` lines failed.
    fn failed_csv(upload: &[u8], failed: &[u64]) -> Vec<u8> {
        let dir = tempfile::tempdir().unwrap();
        let (up, results, out) = (dir.path().join("u.csv"), dir.path().join("r.csv"), dir.path().join("f.csv"));
        std::fs::write(&up, upload).unwrap();
        let mut writer = ResultsWriter::open(&results, 0, false).unwrap();
        let mut reader = RowReader::open(upload, account(), FileLimits::default()).unwrap().unwrap();
        while let Some(span) = reader.next_span().unwrap() {
            let status = if failed.contains(&span.line) { RowStatus::Failed } else { RowStatus::Created };
            let row = RowResult {
                line: span.line,
                customer_ref: String::new(),
                status,
                customer_id: String::new(),
                errors: vec![],
            };
            writer.write(&row).unwrap();
        }
        writer.finish().unwrap();
        let n = write(&up, &results, &out, &account(), FileLimits::default(), &Arc::new(Opening::none())).unwrap();
        assert_eq!(n, failed.len() as u64);
        std::fs::read(&out).unwrap()
    }

    #[test]
    fn failed_records_keep_their_bytes_quotes_and_line_breaks() {
        let upload = b"\xEF\xBB\xBFref;address\r\nA1;+15555550001\r\n\r\n\"A;2\";\"x\r\ny\"\r\nA3;bad\r\nA4;\xE9";
        let failed = failed_csv(upload, &[4, 6, 7]);
        assert_eq!(failed, b"\xEF\xBB\xBFref;address\r\n\"A;2\";\"x\r\ny\"\r\nA3;bad\r\nA4;\xE9\r\n");
    }

    #[test]
    fn a_long_run_of_blank_lines_before_a_failed_record_is_passed_over() {
        let mut upload = b"ref,address\nS1,+15555550001\n".to_vec();
        upload.extend(std::iter::repeat_n(b'\n', 2 * 1024 * 1024));
        upload.extend(b"\r\n\r\nS2,bad\n");
        let line = 3 + 2 * 1024 * 1024 + 2;
        assert_eq!(failed_csv(&upload, &[line]), b"ref,address\nS2,bad\n");
    }

    #[test]
    fn a_file_without_failures_gives_the_header_alone() {
        assert_eq!(failed_csv(b"ref,address\nA1,+15555550001\n", &[]), b"ref,address\n");
    }

    #[test]
    fn a_compressed_upload_gives_its_records_uncompressed() {
        use flate2::write::GzEncoder;
        let mut gz = GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(b"ref,address\nA1,+15555550001\nA2,nope\n").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let (up, results, out) = (dir.path().join("u.csv.gz"), dir.path().join("r.csv"), dir.path().join("f.csv"));
        std::fs::write(&up, gz.finish().unwrap()).unwrap();
        std::fs::write(
            &results,
            "line,ref,status,customer_id,error_code,error_field,error_message\n3,A2,failed,,x,y,z\n",
        )
        .unwrap();
        write(&up, &results, &out, &account(), FileLimits::default(), &Arc::new(Opening::none())).unwrap();
        assert_eq!(std::fs::read(&out).unwrap(), b"ref,address\nA2,nope\n");
    }
}

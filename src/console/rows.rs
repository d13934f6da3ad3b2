//! A job's failed rows, a page at a time, from its results file and its
//! `failed.csv` — never read whole into memory. One sequential pass over
//! the results (the first time a job's rows are shown) keeps a sparse
//! index: the byte offsets of every `STRIDE`-th failed row in both files,
//! and the failed rows per column. A page then seeks to the checkpoint
//! before it and reads at most `STRIDE + PAGE` records, so the last page of
//! a 10-million-row report costs what the first does.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

/// Failed rows per page.
pub(super) const PAGE: u64 = 50;
/// A checkpoint every this many failed rows.
const STRIDE: u64 = 256;
/// Indexes kept in memory (each is small: 16 bytes per `STRIDE` rows).
const CACHED: usize = 64;

const BOM: &[u8] = b"\xEF\xBB\xBF";

/// What one pass over a job's reports learnt.
#[derive(Debug)]
pub(super) struct Index {
    /// Failed rows in the results.
    pub failed: u64,
    /// Failed rows per `error_field` (`""`: the whole row), most first.
    pub by_column: Vec<(String, u64)>,
    /// `failed.csv`'s header (empty without the file).
    pub header: Vec<String>,
    delimiter: u8,
    /// Offset of the `k * STRIDE`-th failed row in the results.
    results_at: Vec<u64>,
    /// Offset of the `k * STRIDE`-th record after the header in `failed.csv`.
    failed_at: Vec<u64>,
}

/// A failed row: its result and its record as uploaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct FailedRow {
    pub line: u64,
    pub code: String,
    pub field: String,
    pub message: String,
    /// Empty without `failed.csv`.
    pub cells: Vec<String>,
}

/// Indexes of report files, by path, size and modification time (a
/// report replaced by a later upload is indexed anew).
#[derive(Default)]
pub(super) struct IndexCache {
    entries: Mutex<HashMap<IndexKey, Arc<Index>>>,
}

/// A report file as it is now: its path, size and modification time.
type IndexKey = (PathBuf, u64, Option<SystemTime>);

impl IndexCache {
    pub(super) fn get(&self, results: &Path, failed: Option<&Path>) -> io::Result<Arc<Index>> {
        let meta = std::fs::metadata(results)?;
        let key = (results.to_path_buf(), meta.len(), meta.modified().ok());
        if let Some(found) = self.entries.lock().unwrap_or_else(|e| e.into_inner()).get(&key) {
            return Ok(found.clone());
        }
        let index = Arc::new(build(results, failed)?);
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.len() >= CACHED {
            entries.clear();
        }
        entries.insert(key, index.clone());
        Ok(index)
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Skips a UTF-8 BOM; how many bytes it had.
fn skip_bom(file: &mut BufReader<File>) -> io::Result<u64> {
    let head = file.fill_buf()?;
    if head.starts_with(BOM) {
        file.consume(BOM.len());
        return Ok(BOM.len() as u64);
    }
    Ok(0)
}

fn reader<R: Read>(inner: R, delimiter: u8) -> csv::Reader<R> {
    csv::ReaderBuilder::new().has_headers(false).flexible(true).delimiter(delimiter).from_reader(inner)
}

fn csv_err(e: csv::Error) -> io::Error {
    io::Error::other(e)
}

/// One pass over the results (and `failed.csv`): counts and checkpoints.
pub(super) fn build(results: &Path, failed: Option<&Path>) -> io::Result<Index> {
    let mut file = BufReader::with_capacity(256 * 1024, File::open(results)?);
    let base = skip_bom(&mut file)?;
    let mut rows = reader(file, b',');
    let mut record = csv::ByteRecord::new();
    let mut results_at = Vec::new();
    let mut columns: BTreeMap<String, u64> = BTreeMap::new();
    let mut count = 0u64;
    let mut first = true;
    loop {
        let at = rows.position().byte();
        if !rows.read_byte_record(&mut record).map_err(csv_err)? {
            break;
        }
        if std::mem::take(&mut first) {
            continue; // the header
        }
        if record.get(2) != Some(b"failed") {
            continue;
        }
        if count.is_multiple_of(STRIDE) {
            results_at.push(base + at);
        }
        count += 1;
        let field = String::from_utf8_lossy(record.get(5).unwrap_or_default());
        match columns.get_mut(field.as_ref()) {
            Some(n) => *n += 1,
            None => {
                columns.insert(field.into_owned(), 1);
            }
        }
    }
    let (header, delimiter, failed_at) = match failed {
        Some(path) => index_failed(path)?,
        None => (Vec::new(), b',', Vec::new()),
    };
    let mut by_column: Vec<(String, u64)> = columns.into_iter().collect();
    by_column.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    Ok(Index { failed: count, by_column, header, delimiter, results_at, failed_at })
}

/// `failed.csv`: its header, delimiter and checkpoints.
fn index_failed(path: &Path) -> io::Result<(Vec<String>, u8, Vec<u64>)> {
    let mut file = BufReader::with_capacity(256 * 1024, File::open(path)?);
    let base = skip_bom(&mut file)?;
    let head = file.fill_buf()?;
    let first_line = head.split(|&b| b == b'\n' || b == b'\r').next().unwrap_or(&[]);
    let delimiter = crate::ingest::rows::detect_delimiter(first_line);
    let mut records = reader(file, delimiter);
    let mut record = csv::ByteRecord::new();
    if !records.read_byte_record(&mut record).map_err(csv_err)? {
        return Ok((Vec::new(), delimiter, Vec::new()));
    }
    let header = record.iter().map(text).collect();
    let mut at = Vec::new();
    let mut n = 0u64;
    loop {
        let pos = records.position().byte();
        if !records.read_byte_record(&mut record).map_err(csv_err)? {
            break;
        }
        if n.is_multiple_of(STRIDE) {
            at.push(base + pos);
        }
        n += 1;
    }
    Ok((header, delimiter, at))
}

/// Failed rows `[start, start + PAGE)` (fewer at the end).
pub(super) fn page(index: &Index, results: &Path, failed: Option<&Path>, start: u64) -> io::Result<Vec<FailedRow>> {
    if start >= index.failed {
        return Ok(Vec::new());
    }
    let checkpoint = (start / STRIDE) as usize;
    let skip = start - checkpoint as u64 * STRIDE;
    let mut file = File::open(results)?;
    file.seek(SeekFrom::Start(index.results_at[checkpoint]))?;
    let mut rows = reader(BufReader::with_capacity(64 * 1024, file), b',');
    let mut record = csv::ByteRecord::new();
    let mut out = Vec::new();
    let mut seen = 0u64;
    while out.len() < PAGE as usize && rows.read_byte_record(&mut record).map_err(csv_err)? {
        if record.get(2) != Some(b"failed") {
            continue;
        }
        seen += 1;
        if seen <= skip {
            continue;
        }
        let get = |i| text(record.get(i).unwrap_or_default());
        out.push(FailedRow {
            line: get(0).parse().unwrap_or(0),
            code: get(4),
            field: get(5),
            message: get(6),
            cells: Vec::new(),
        });
    }
    if let (Some(path), Some(&offset)) = (failed, index.failed_at.get(checkpoint)) {
        let mut file = File::open(path)?;
        file.seek(SeekFrom::Start(offset))?;
        let mut records = reader(BufReader::with_capacity(64 * 1024, file), index.delimiter);
        let mut seen = 0u64;
        let mut filled = 0;
        while filled < out.len() && records.read_byte_record(&mut record).map_err(csv_err)? {
            seen += 1;
            if seen <= skip {
                continue;
            }
            out[filled].cells = record.iter().map(text).collect();
            filled += 1;
        }
    }
    Ok(out)
}

/// What the grid's page says about the rows it showed, by failed-row
/// index: `Some(cells)` kept (as edited), `None` left out.
pub(super) type PageEdits = BTreeMap<u64, Option<Vec<String>>>;

/// Writes every failed row of `failed` (`failed.csv`) to `out` as a CSV
/// file with its header, the rows of `edits` replaced or left out; returns
/// how many rows were written. One record in memory at a time: the rows
/// not on the page are copied as their fields' bytes (their encoding kept).
pub(super) fn write_all_failed(index: &Index, failed: &Path, edits: &PageEdits, out: &Path) -> io::Result<u64> {
    let mut file = BufReader::with_capacity(256 * 1024, File::open(failed)?);
    skip_bom(&mut file)?;
    let mut records = reader(file, index.delimiter);
    let mut writer = csv::WriterBuilder::new()
        .flexible(true)
        .from_writer(std::io::BufWriter::with_capacity(256 * 1024, File::create(out)?));
    let mut record = csv::ByteRecord::new();
    if !records.read_byte_record(&mut record).map_err(csv_err)? {
        return Ok(0);
    }
    writer.write_byte_record(&record).map_err(csv_err)?;
    let mut n = 0u64;
    let mut written = 0u64;
    while records.read_byte_record(&mut record).map_err(csv_err)? {
        match edits.get(&n) {
            Some(Some(cells)) => writer.write_record(cells).map_err(csv_err)?,
            Some(None) => {}
            None => writer.write_byte_record(&record).map_err(csv_err)?,
        }
        if !matches!(edits.get(&n), Some(None)) {
            written += 1;
        }
        n += 1;
    }
    let buffered = writer.into_inner().map_err(|e| io::Error::other(e.to_string()))?;
    let file = buffered.into_inner().map_err(|e| e.into_error())?;
    file.sync_all()?;
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// A results file of `n` rows where every third fails, and its failed.csv.
    fn reports(dir: &Path, n: u64, bom: bool) -> (PathBuf, PathBuf) {
        let results = dir.join("r.csv");
        let failed = dir.join("f.csv");
        let mut r = std::io::BufWriter::new(File::create(&results).unwrap());
        let mut f = std::io::BufWriter::new(File::create(&failed).unwrap());
        if bom {
            r.write_all(BOM).unwrap();
            f.write_all(BOM).unwrap();
        }
        writeln!(r, "line,ref,status,customer_id,error_code,error_field,error_message").unwrap();
        writeln!(f, "ref;phone").unwrap();
        for i in 0..n {
            let line = i + 2;
            if i % 3 == 0 {
                writeln!(r, "{line},r{i},failed,,invalid_phone,phone,\"bad, \"\"phone\"\" {i}\"").unwrap();
                writeln!(f, "r{i};\"x\n{i}\"").unwrap();
            } else {
                writeln!(r, "{line},r{i},created,c{i},,,").unwrap();
            }
        }
        (results, failed)
    }

    #[test]
    fn every_page_holds_its_rows_with_their_cells_whatever_the_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let (results, failed) = reports(dir.path(), 3000, true);
        let index = build(&results, Some(&failed)).unwrap();
        assert_eq!(index.failed, 1000);
        assert_eq!(index.header, vec!["ref", "phone"]);
        assert_eq!(index.by_column, vec![("phone".to_owned(), 1000)]);
        for start in [0, 50, 250, 300, 950, 999] {
            let rows = page(&index, &results, Some(&failed), start).unwrap();
            assert_eq!(rows.len() as u64, PAGE.min(1000 - start), "at {start}");
            for (k, row) in rows.iter().enumerate() {
                let i = (start + k as u64) * 3;
                assert_eq!(row.line, i + 2);
                assert_eq!(row.message, format!("bad, \"phone\" {i}"));
                assert_eq!(row.cells, vec![format!("r{i}"), format!("x\n{i}")]);
            }
        }
        assert!(page(&index, &results, Some(&failed), 1000).unwrap().is_empty());
    }

    #[test]
    fn a_page_without_failed_csv_has_results_only() {
        let dir = tempfile::tempdir().unwrap();
        let (results, _) = reports(dir.path(), 10, false);
        let index = build(&results, None).unwrap();
        let rows = page(&index, &results, None, 0).unwrap();
        assert_eq!(rows.len(), 4);
        assert!(rows[0].cells.is_empty());
    }

    #[test]
    fn all_failed_rows_are_written_with_the_page_edits_applied() {
        let dir = tempfile::tempdir().unwrap();
        let (results, failed) = reports(dir.path(), 3000, true);
        let index = build(&results, Some(&failed)).unwrap();
        let out = dir.path().join("all.csv");
        let mut edits = PageEdits::new();
        edits.insert(1, Some(vec!["fixed".to_owned(), "+15555001234".to_owned()]));
        edits.insert(2, None);
        assert_eq!(write_all_failed(&index, &failed, &edits, &out).unwrap(), 999);
        let mut rows = csv::ReaderBuilder::new().has_headers(false).from_path(&out).unwrap();
        let all: Vec<csv::StringRecord> = rows.records().map(|r| r.unwrap()).collect();
        assert_eq!(all.len(), 1000, "the header and 999 rows");
        assert_eq!(&all[0], vec!["ref", "phone"]);
        assert_eq!(&all[1], vec!["r0", "x\n0"]);
        assert_eq!(&all[2], vec!["fixed", "+15555001234"]);
        assert_eq!(&all[3], vec!["r9", "x\n9"], "the third failed row (r6) is left out");
        assert_eq!(&all[999], vec!["r2997", "x\n2997"]);
    }
}

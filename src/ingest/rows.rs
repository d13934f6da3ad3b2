//! Reads a customer CSV file as a stream of records and turns each into a
//! `CreateCustomer` or the row's errors. Knows nothing about SFTP or SQL.
//!
//! Memory stays flat: one record is held at a time.

use crate::domain::customer::quote;
use crate::domain::mapping::{self, AppliedMapping, Feed, MappedHeader, MappingChoice, Selection};
pub use crate::domain::FileLimits;
use crate::domain::{
    AccountSettings, Address, AddressKind, Addresses, CreateCustomer, CustomerRef, FileEncoding, FileError,
    FileErrorCode, Invalid, JsonObject, RowError, RowErrorCode,
};
use crate::openpgp::{MessageError, Opening};
use serde_json::{Map, Value};
use std::borrow::Cow;
use std::io::{self, BufRead, BufReader, Read};
use std::sync::Arc;

/// The largest cell, in bytes; a longer one fails its row with `field_too_long`.
pub const MAX_CELL_BYTES: usize = 64 * 1024;
/// The longest header name, in bytes.
pub const MAX_HEADER_NAME_BYTES: usize = 1024;
/// How deep `metadata.a.b...` columns and JSON objects in a cell may nest.
pub const MAX_NESTING: usize = 32;
/// The errors a row's report lists; more are counted ("and N more").
pub const MAX_LISTED_ERRORS: usize = 10;
/// Values of one `addresses` cell checked after it already failed this often.
const MAX_ERRORS_PER_CELL: usize = 5;
const BOM: &[u8] = b"\xEF\xBB\xBF";

/// What a header column means.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Column {
    Ref,
    /// `address`, `address_N`, `email`, `phone`: one value.
    Address(AddressKind),
    /// `addresses`: a list separated by commas or semicolons.
    AddressList,
    /// `metadata` / `appdata`: a whole JSON object.
    Object(Target),
    /// `metadata.a.b` / `appdata.a.b`: one (nested) key.
    Key(Target, Vec<String>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    Metadata,
    Appdata,
}

impl Target {
    fn name(self) -> &'static str {
        match self {
            Target::Metadata => "metadata",
            Target::Appdata => "appdata",
        }
    }

    fn code(self) -> RowErrorCode {
        match self {
            Target::Metadata => RowErrorCode::InvalidMetadata,
            Target::Appdata => RowErrorCode::InvalidAppdata,
        }
    }
}

/// What a column name means: the fixed names and the `metadata.`/`appdata.`
/// prefixes are case-insensitive; a key keeps its case (`metadata.firstName`
/// sets `firstName`).
fn column_of(raw: &str) -> Option<Column> {
    let raw = raw.trim();
    let lower = raw.to_lowercase();
    let name = lower.as_str();
    match name {
        "ref" => return Some(Column::Ref),
        "address" => return Some(Column::Address(AddressKind::Any)),
        "addresses" => return Some(Column::AddressList),
        "email" => return Some(Column::Address(AddressKind::Email)),
        "phone" => return Some(Column::Address(AddressKind::Phone)),
        "metadata" => return Some(Column::Object(Target::Metadata)),
        "appdata" => return Some(Column::Object(Target::Appdata)),
        _ => {}
    }
    if let Some(n) = name.strip_prefix("address_") {
        let n: usize = n.parse().ok().filter(|_| !n.starts_with('0'))?;
        return (1..=10).contains(&n).then_some(Column::Address(AddressKind::Any));
    }
    for target in [Target::Metadata, Target::Appdata] {
        let prefix = target.name().len() + 1;
        if name.starts_with(target.name()) && name[target.name().len()..].starts_with('.') {
            let path = &raw[prefix..];
            let keys: Vec<String> = path.split('.').map(str::to_owned).collect();
            if keys.iter().any(|k| k.is_empty()) {
                return None;
            }
            return Some(Column::Key(target, keys));
        }
    }
    None
}

/// The file's header: one meaning per column, in file order.
#[derive(Debug, Clone)]
pub struct Header {
    /// Per column: the name `error_field` gives (for a mapped column, the
    /// merchant's own column as normalised).
    names: Vec<String>,
    columns: Vec<Column>,
    ref_index: usize,
    /// Set when a mapping profile reads the file: `columns` are then the
    /// vocabulary's columns it produces, not the file's.
    mapping: Option<Arc<Mapped>>,
}

/// How a profile turns the file's header into the vocabulary's columns.
#[derive(Debug)]
struct Mapped {
    header: MappedHeader,
    /// Per produced column: how its messages name it (`"Mobile" (phone)`).
    labels: Vec<String>,
    /// Fallback region for numbers without `+` (the profile's, over the account's).
    default_region: Option<crate::domain::PhoneRegion>,
    strip_apostrophe: bool,
}

impl Header {
    /// Checks a header line's names (already decoded).
    pub fn parse(raw_names: &[String], max_columns: usize) -> Result<Header, FileError> {
        if raw_names.len() > max_columns {
            return Err(FileError::new(
                FileErrorCode::TooManyColumns,
                format!("the header has {} columns; the limit is {max_columns}", raw_names.len()),
            ));
        }
        if let Some((i, name)) = raw_names.iter().enumerate().find(|(_, n)| n.len() > MAX_HEADER_NAME_BYTES) {
            return Err(FileError::new(
                FileErrorCode::UnknownColumn,
                format!(
                    "the name of column {} is {} bytes long; the limit is {MAX_HEADER_NAME_BYTES}",
                    i + 1,
                    name.len()
                ),
            ));
        }
        let names: Vec<String> = raw_names.iter().map(|n| n.trim().to_lowercase()).collect();
        let columns: Vec<Option<Column>> = raw_names.iter().map(|n| column_of(n)).collect();
        if columns.iter().all(Option::is_none) {
            return Err(FileError::new(
                FileErrorCode::MissingHeader,
                format!(
                    "the first line must name the columns (ref, address, ...); it reads {}",
                    quote(&raw_names.join(","))
                ),
            ));
        }
        let mut seen = std::collections::HashSet::with_capacity(names.len());
        for name in &names {
            if !seen.insert(name.as_str()) {
                return Err(FileError::new(
                    FileErrorCode::DuplicateColumn,
                    format!("the column {} appears more than once in the header", quote(name)),
                ));
            }
        }
        if let Some(i) = columns.iter().position(Option::is_none) {
            let shown = if names[i].is_empty() { "(an empty name)".to_owned() } else { quote(&names[i]) };
            return Err(FileError::new(
                FileErrorCode::UnknownColumn,
                format!(
                    "unknown column {shown} in the header; known columns are ref, address, addresses, \
                     address_1..address_10, email, phone, metadata, metadata.KEY, appdata, appdata.KEY"
                ),
            ));
        }
        let columns: Vec<Column> = columns.into_iter().map(Option::unwrap).collect();
        if let Some(i) = columns.iter().position(|c| matches!(c, Column::Key(_, keys) if keys.len() > MAX_NESTING)) {
            return Err(FileError::new(
                FileErrorCode::UnknownColumn,
                format!(
                    "the column {} nests {} levels deep; the limit is {MAX_NESTING}",
                    quote(&names[i].chars().take(64).collect::<String>()),
                    names[i].split('.').count() - 1
                ),
            ));
        }
        let ref_index = columns
            .iter()
            .position(|c| *c == Column::Ref)
            .ok_or_else(|| FileError::new(FileErrorCode::MissingRefColumn, "the header has no `ref` column"))?;
        if !columns.iter().any(|c| matches!(c, Column::Address(_) | Column::AddressList)) {
            return Err(FileError::new(
                FileErrorCode::MissingAddressColumn,
                "the header has no address column (address, addresses, address_N, email or phone)",
            ));
        }
        Ok(Header { names, columns, ref_index, mapping: None })
    }

    /// Reads a header line's names with the account's mapping: the profile
    /// chosen for the file, or the one [`mapping::select`] picks.
    pub fn read(raw_names: &[String], account: &AccountSettings, max_columns: usize) -> Result<Header, FileError> {
        let plain = Header::parse(raw_names, max_columns);
        match &account.mapping {
            MappingChoice::Unmapped => plain,
            MappingChoice::Chosen(applied) => {
                let mapped = applied
                    .profile
                    .apply(raw_names)
                    .map_err(|why| FileError::new(FileErrorCode::UnknownColumn, why))?;
                Header::mapped(mapped, account)
            }
            MappingChoice::Select { file_name, profiles } => {
                let plain_ok = match &plain {
                    Ok(_) => true,
                    Err(e) if is_mappable(e.code) => false,
                    Err(_) => return plain,
                };
                let normalised: Vec<String> = raw_names.iter().map(|n| n.trim().to_lowercase()).collect();
                let mut seen = std::collections::HashSet::with_capacity(normalised.len());
                if let Some(dup) = normalised.iter().find(|n| !seen.insert(n.as_str())) {
                    return Err(FileError::new(
                        FileErrorCode::DuplicateColumn,
                        format!("the column {} appears more than once in the header", quote(dup)),
                    ));
                }
                match mapping::select(profiles, file_name, raw_names, plain_ok) {
                    Selection::Plain => plain,
                    Selection::Mapped(mapped) => Header::mapped(mapped, account),
                    Selection::Refused(why) => Err(FileError::new(FileErrorCode::UnknownColumn, why)),
                }
            }
        }
    }

    /// The header a profile produces.
    fn mapped(mapped: MappedHeader, account: &AccountSettings) -> Result<Header, FileError> {
        let mut names = Vec::with_capacity(mapped.columns.len());
        let mut columns = Vec::with_capacity(mapped.columns.len());
        let mut labels = Vec::with_capacity(mapped.columns.len());
        for column in &mapped.columns {
            let meaning = column_of(&column.target).ok_or_else(|| {
                FileError::new(FileErrorCode::UnknownColumn, format!("unknown target {}", quote(&column.target)))
            })?;
            if let Column::Key(_, keys) = &meaning {
                if keys.len() > MAX_NESTING {
                    return Err(FileError::new(
                        FileErrorCode::UnknownColumn,
                        format!("the target {} nests too deep; the limit is {MAX_NESTING}", quote(&column.target)),
                    ));
                }
            }
            let name = mapped.field_name(column);
            labels.push(match &column.feed {
                Feed::Cell { index: Some(_), .. } => format!("\"{}\" ({})", name, column.target),
                _ => format!("({})", column.target),
            });
            names.push(name);
            columns.push(meaning);
        }
        let ref_index = columns
            .iter()
            .position(|c| *c == Column::Ref)
            .ok_or_else(|| FileError::new(FileErrorCode::MissingRefColumn, "the mapping gives no `ref` column"))?;
        let profile = &mapped.profile;
        let mapping = Mapped {
            default_region: profile.default_region.or(account.default_region),
            strip_apostrophe: profile.strip_apostrophe,
            labels,
            header: mapped,
        };
        Ok(Header { names, columns, ref_index, mapping: Some(Arc::new(mapping)) })
    }

    fn empty() -> Header {
        Header { names: Vec::new(), columns: Vec::new(), ref_index: 0, mapping: None }
    }

    /// The number of fields a record of the file has.
    pub fn len(&self) -> usize {
        match &self.mapping {
            Some(m) => m.header.source_names.len(),
            None => self.columns.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The profile that reads the file, with the columns it ignores.
    pub fn applied(&self) -> Option<AppliedMapping> {
        self.mapping
            .as_ref()
            .map(|m| AppliedMapping { profile: Arc::clone(&m.header.profile), ignored: m.header.ignored.clone() })
    }

    /// The file's column `i`, as normalised.
    fn source_name(&self, i: usize) -> &str {
        match &self.mapping {
            Some(m) => &m.header.source_names[i],
            None => &self.names[i],
        }
    }

    fn first_address_name(&self) -> &str {
        self.columns
            .iter()
            .position(|c| matches!(c, Column::Address(_) | Column::AddressList))
            .map(|i| self.names[i].as_str())
            .unwrap_or("address")
    }
}

/// Whether a profile may explain a header the vocabulary rejects this way.
pub fn is_mappable(code: FileErrorCode) -> bool {
    matches!(
        code,
        FileErrorCode::UnknownColumn
            | FileErrorCode::MissingHeader
            | FileErrorCode::MissingRefColumn
            | FileErrorCode::MissingAddressColumn
    )
}

/// One record of the file, parsed.
#[derive(Debug)]
pub struct ParsedRow {
    /// The physical line where the record starts (header = 1 when it is the first line).
    pub line: u64,
    /// The trimmed ref this record carries, valid or not; the first record
    /// carrying a ref claims it within the file.
    pub claim: Option<String>,
    pub outcome: Result<CreateCustomer, Vec<RowError>>,
    /// The record's size in the file, in bytes (batches are bounded by it).
    pub bytes: usize,
}

impl ParsedRow {
    /// The values the record keeps once parsed (addresses, metadata and
    /// appdata keys): what its parsed form costs in memory, about.
    pub fn values(&self) -> usize {
        self.outcome
            .as_ref()
            .map_or(1, |c| c.addresses().len() + c.metadata().as_map().len() + c.appdata().as_map().len())
    }

    /// Records that another record of the file claimed this ref first.
    pub fn mark_duplicate(&mut self, first_line: u64) {
        let error = RowError::new(
            RowErrorCode::DuplicateRef,
            "ref",
            format!("ref is already used on line {first_line} of this file"),
        );
        match &mut self.outcome {
            Ok(_) => self.outcome = Err(vec![error]),
            Err(errors) => {
                // After the ref's own errors, before the address columns'.
                let at = errors.iter().take_while(|e| is_record_level(e.code) || e.field == "ref").count();
                errors.insert(at, error);
            }
        }
    }
}

fn is_record_level(code: RowErrorCode) -> bool {
    matches!(code, RowErrorCode::WrongFieldCount | RowErrorCode::InvalidEncoding)
}

/// Picks the delimiter from the header line: `,` unless `;` or TAB is more frequent.
pub fn detect_delimiter(first_line: &[u8]) -> u8 {
    let (mut comma, mut semi, mut tab, mut quoted) = (0, 0, 0, false);
    for &b in first_line {
        match b {
            b'"' => quoted = !quoted,
            b',' if !quoted => comma += 1,
            b';' if !quoted => semi += 1,
            b'\t' if !quoted => tab += 1,
            _ => {}
        }
    }
    if semi > comma && semi >= tab {
        b';'
    } else if tab > comma && tab > semi {
        b'\t'
    } else {
        b','
    }
}

/// Sits under the CSV reader and sees every byte it consumes: remembers
/// where lines start with content, so a record's byte offset gives the
/// physical line its content starts on (after any blank lines the CSV reader
/// skipped; quoted line breaks counted), and stops a record that grows past
/// the record limit before the CSV reader holds it whole. Only what lies
/// ahead of the last record asked about is kept: memory stays bounded by
/// the reader's look-ahead, whatever runs of blank lines a file holds.
struct LineCounter<R> {
    inner: R,
    offset: u64,
    newlines: u64,
    /// Offsets of bytes that follow a line break (or start the stream) and
    /// are not one, with the number of line breaks before each.
    content_starts: std::collections::VecDeque<(u64, u64)>,
    after_break: bool,
    after_cr: bool,
    /// Where the record being read starts (past the blank lines before
    /// it), and how far it may grow.
    record_start: u64,
    content_since_start: bool,
    max_record_bytes: u64,
}

/// The io error a [`LineCounter`] stops a record with.
#[derive(Debug, thiserror::Error)]
#[error("a record is over {limit} bytes")]
struct RecordTooLarge {
    limit: u64,
}

/// What the CSV reader may read beyond the record it returns.
const LOOK_AHEAD: u64 = 64 * 1024;

impl<R> LineCounter<R> {
    fn new(inner: R, max_record_bytes: usize) -> Self {
        LineCounter {
            inner,
            offset: 0,
            newlines: 0,
            content_starts: Default::default(),
            after_break: true,
            after_cr: false,
            record_start: 0,
            content_since_start: false,
            max_record_bytes: max_record_bytes as u64,
        }
    }

    /// Marks where the next record starts: the CSV reader's position after
    /// the record it returned.
    fn mark_record_start(&mut self, offset: u64) {
        if offset > self.record_start {
            self.record_start = offset;
            self.content_since_start = self.content_starts.back().is_some_and(|&(c, _)| c >= offset);
        }
    }

    /// The 1-based line of the first content byte at or after `offset`, the
    /// position the CSV reader gives for a record; offsets must not go
    /// backwards. Also marks `offset` as where the record being read starts.
    fn record_line(&mut self, offset: u64) -> u64 {
        while self.content_starts.front().is_some_and(|&(c, _)| c < offset) {
            self.content_starts.pop_front();
        }
        match self.content_starts.front() {
            Some(&(_, before)) => before + 1,
            None => self.newlines + 1,
        }
    }
}

impl<R: Read> Read for LineCounter<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.offset.saturating_sub(self.record_start) > self.max_record_bytes + LOOK_AHEAD {
            return Err(io::Error::other(RecordTooLarge { limit: self.max_record_bytes }));
        }
        let n = self.inner.read(buf)?;
        let bytes = &buf[..n];
        let mut i = 0;
        while i < n {
            // A run of content up to the next line break (found by memchr,
            // not byte by byte): only its first byte can start a line.
            let end = memchr::memchr2(b'\n', b'\r', &bytes[i..]).map_or(n, |p| i + p);
            if end > i {
                if self.after_break {
                    self.content_starts.push_back((self.offset + i as u64, self.newlines));
                }
                self.after_break = false;
                self.after_cr = false;
                self.content_since_start = true;
                i = end;
                continue;
            }
            let b = bytes[i];
            // CRLF, LF and a bare CR (old Mac files) each end one line.
            if b == b'\r' || !self.after_cr {
                self.newlines += 1;
            }
            self.after_cr = b == b'\r';
            self.after_break = true;
            // Blank lines before a record are no part of it (the CSV reader skips them).
            if !self.content_since_start {
                self.record_start = self.offset + i as u64 + 1;
            }
            i += 1;
        }
        self.offset += n as u64;
        Ok(n)
    }
}

/// Whether a CSV error is a [`LineCounter`] stopping a record.
fn is_record_too_large(e: &io::Error) -> bool {
    e.get_ref().is_some_and(|inner| inner.is::<RecordTooLarge>())
}

/// Opens a byte stream for CSV reading: drops a UTF-8 BOM and detects the
/// delimiter from the first non-blank line.
fn prepare<R: Read>(inner: R) -> io::Result<(BufReader<R>, u8)> {
    let mut reader = BufReader::with_capacity(64 * 1024, inner);
    let buf = reader.fill_buf()?;
    let skip = if buf.starts_with(BOM) { BOM.len() } else { 0 };
    reader.consume(skip);
    let buf = reader.fill_buf()?;
    // CR alone ends a line too (old Mac exports).
    let first_line =
        buf.split(|&b| b == b'\n' || b == b'\r').find(|line| !line.iter().all(u8::is_ascii_whitespace)).unwrap_or(&[]);
    let delimiter = sep_line(first_line).unwrap_or_else(|| detect_delimiter(first_line));
    Ok((reader, delimiter))
}

/// Excel's `sep=,` first line (also `;`, TAB, `|`): the delimiter it names.
fn sep_line(line: &[u8]) -> Option<u8> {
    let line = line.trim_ascii();
    match line {
        [s, e, p, b'=', d] if [*s, *e, *p].eq_ignore_ascii_case(b"sep") && matches!(d, b',' | b';' | b'\t' | b'|') => {
            Some(*d)
        }
        _ => None,
    }
}

/// Whether a record is Excel's `sep=X` line, read with the delimiter it names.
fn is_sep_record(record: &csv::ByteRecord) -> bool {
    record.len() == 2 && record[0].trim_ascii().eq_ignore_ascii_case(b"sep=") && record[1].trim_ascii().is_empty()
}

fn csv_reader<R: Read>(reader: R, delimiter: u8) -> csv::Reader<R> {
    csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .delimiter(delimiter)
        .buffer_capacity(64 * 1024)
        .from_reader(reader)
}

fn is_blank(record: &csv::ByteRecord) -> bool {
    record.iter().all(|f| f.iter().all(u8::is_ascii_whitespace))
}

fn csv_io_error(e: csv::Error) -> io::Error {
    match e.into_kind() {
        csv::ErrorKind::Io(e) => e,
        other => io::Error::other(format!("{other:?}")),
    }
}

/// What a first pass over a file learns before any row is applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileScan {
    pub sha256: String,
    pub bytes: u64,
    /// Non-blank records after the header.
    pub records: u64,
    /// Set when the file must be rejected whole.
    pub rejection: Option<FileError>,
    /// The mapping profile that reads the file, when one does.
    pub mapping: Option<AppliedMapping>,
    /// The merchant key (40 hex) whose signature on an OpenPGP upload verified.
    pub pgp_signer: Option<String>,
}

/// Hashes what passes through it.
struct Hashing<R> {
    inner: R,
    hasher: sha2::Sha256,
    bytes: u64,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        use sha2::Digest;
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
}

/// Keeps the first bytes of the content, to decide whether it is text, and
/// counts them all (decompressed, for a gzip upload).
struct Head<R> {
    inner: R,
    head: Vec<u8>,
    total: u64,
}

impl<R: Read> Read for Head<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.total += n as u64;
        if self.head.len() < 8192 {
            let take = n.min(8192 - self.head.len());
            self.head.extend_from_slice(&buf[..take]);
        }
        Ok(n)
    }
}

/// What the content pass of [`scan`] found.
#[derive(Default)]
struct ContentScan {
    header: Option<Result<Header, FileError>>,
    records: u64,
    too_large: bool,
    record_too_large: Option<u64>,
    binary: bool,
    unreadable: Option<super::upload::ContentError>,
    pgp_signer: Option<String>,
}

/// Reads the whole file once: its hash and size (as uploaded), record
/// count, and whether it is to be rejected (empty, not text, not valid
/// gzip, no valid header, too large — decompressed or by its ratio —, too
/// many rows, a record over the limit). Memory stays bounded by the record limit.
pub fn scan(file: impl Read + Send, account: &AccountSettings, limits: FileLimits) -> io::Result<FileScan> {
    scan_with(file, account, limits, &Arc::new(Opening::none()))
}

/// [`scan`], an OpenPGP upload opened with `pgp` (decrypted, and its
/// signature checked to the end before any row is applied).
pub fn scan_with(
    file: impl Read + Send,
    account: &AccountSettings,
    limits: FileLimits,
    pgp: &Arc<Opening>,
) -> io::Result<FileScan> {
    use sha2::Digest;
    let mut hashing = Hashing { inner: file, hasher: sha2::Sha256::new(), bytes: 0 };
    let found = match scan_content(&mut hashing, account, limits, pgp) {
        Ok(found) => found,
        Err(e) => match super::upload::ContentError::of(&e) {
            Some(problem) => ContentScan { unreadable: Some(problem.clone()), ..Default::default() },
            None => return Err(e),
        },
    };
    // The hash and size are of the whole upload, wherever reading stopped.
    io::copy(&mut hashing, &mut io::sink())?;
    let mapping = match &found.header {
        Some(Ok(header)) => header.applied(),
        _ => None,
    };
    let rejection = if let Some(problem) = found.unreadable {
        let code = match problem {
            super::upload::ContentError::NotGzip(_) => FileErrorCode::NotText,
            super::upload::ContentError::TooCompressed { .. } => FileErrorCode::FileTooLarge,
            super::upload::ContentError::Pgp(ref e) => match e {
                MessageError::DecryptFailed(_) => FileErrorCode::DecryptFailed,
                MessageError::IntegrityMissing => FileErrorCode::IntegrityMissing,
                MessageError::SignatureRequired => FileErrorCode::SignatureRequired,
                MessageError::BadSignature(_) => FileErrorCode::BadSignature,
                MessageError::EncryptionRequired => FileErrorCode::EncryptionRequired,
            },
        };
        Some(FileError::new(code, problem.to_string()))
    } else if hashing.bytes > limits.max_file_bytes || found.too_large {
        Some(FileError::new(
            FileErrorCode::FileTooLarge,
            if found.too_large && hashing.bytes <= limits.max_file_bytes {
                format!("the file decompresses to more than {} bytes, the limit", limits.max_file_bytes)
            } else {
                format!("the file is {} bytes; the limit is {} bytes", hashing.bytes, limits.max_file_bytes)
            },
        ))
    } else if found.binary {
        Some(FileError::new(FileErrorCode::NotText, "the file is not text (it contains NUL bytes); upload a CSV file"))
    } else if let Some(line) = found.record_too_large {
        Some(FileError::new(
            FileErrorCode::RecordTooLarge,
            format!(
                "the record on line {line} is over {} bytes, the limit for one record (a missing closing quote \
                 makes the rest of the file one record)",
                limits.max_record_bytes
            ),
        ))
    } else {
        match found.header {
            None => Some(FileError::new(FileErrorCode::EmptyFile, "the file is empty")),
            Some(Err(e)) => Some(e),
            Some(Ok(_)) if found.records > limits.max_rows => Some(FileError::new(
                FileErrorCode::TooManyRows,
                format!("the file has {} records; the limit is {}", found.records, limits.max_rows),
            )),
            Some(Ok(_)) => None,
        }
    };
    let records = found.records;
    let mapping = if rejection.is_none() { mapping } else { None };
    let pgp_signer = found.pgp_signer;
    Ok(FileScan {
        sha256: hex::encode(hashing.hasher.finalize()),
        bytes: hashing.bytes,
        records,
        rejection,
        mapping,
        pgp_signer,
    })
}

/// The content pass of [`scan`]: reads records until the end or the first
/// reason to reject the file.
fn scan_content(
    raw: impl Read + Send,
    account: &AccountSettings,
    limits: FileLimits,
    pgp: &Arc<Opening>,
) -> io::Result<ContentScan> {
    let content = super::upload::open(raw, limits.max_gzip_ratio, pgp)?;
    let outcome = content.pgp.clone();
    let (prepared, delimiter) = prepare(Head { inner: content.reader, head: Vec::new(), total: 0 })?;
    let mut csv = csv_reader(LineCounter::new(prepared, limits.max_record_bytes), delimiter);
    let mut record = csv::ByteRecord::new();
    let mut found = ContentScan::default();
    let mut sep_skipped = false;
    // Binary content is known from the first bytes: no need to parse it.
    if csv.get_ref().inner.get_ref().head.contains(&0) {
        found.binary = true;
        return Ok(found);
    }
    loop {
        match csv.read_byte_record(&mut record) {
            Ok(false) => break,
            Ok(true) => {}
            Err(e) => {
                let e = csv_io_error(e);
                if !is_record_too_large(&e) {
                    return Err(e);
                }
                let next = csv.position().byte();
                found.record_too_large = Some(csv.get_mut().record_line(next));
                break;
            }
        }
        if csv.position().byte() > limits.max_file_bytes {
            found.too_large = true;
            break;
        }
        let start = record.position().map(|p| p.byte()).unwrap_or(0);
        let line = csv.get_mut().record_line(start);
        let next = csv.position().byte();
        csv.get_mut().mark_record_start(next);
        if is_blank(&record) {
            continue;
        }
        // The reader stops a record at the limit and its look-ahead; the
        // limit itself is this.
        if record.as_slice().len() + record.len() > limits.max_record_bytes {
            found.record_too_large = Some(line);
            break;
        }
        if found.header.is_none() {
            if !sep_skipped && is_sep_record(&record) {
                sep_skipped = true;
                continue;
            }
            found.header = Some(decode_header(&record, account, limits.max_columns));
        } else {
            found.records += 1;
        }
    }
    let head = csv.get_ref().inner.get_ref();
    found.binary = head.head.contains(&0);
    // Blank lines at the end are content too.
    found.too_large |= head.total > limits.max_file_bytes;
    found.pgp_signer = outcome.and_then(|o| o.lock().expect("not poisoned").signer.clone());
    Ok(found)
}

fn decode_header(record: &csv::ByteRecord, account: &AccountSettings, max_columns: usize) -> Result<Header, FileError> {
    let encoding = account.encoding;
    let mut names = Vec::with_capacity(record.len());
    for field in record.iter() {
        match decode(field, encoding) {
            Some(name) => names.push(name.into_owned()),
            None => {
                return Err(FileError::new(
                    FileErrorCode::NotText,
                    format!("the header line is not valid {} text", encoding.as_str()),
                ))
            }
        }
    }
    Header::read(&names, account, max_columns)
}

/// The names of a file's header line, decoded (`None`: no header line, or
/// not text), for the suggestion made for a rejected file. Reads up to the
/// first non-blank record past Excel's `sep=` line.
pub fn header_names(file: impl Read, encoding: FileEncoding, limits: FileLimits) -> io::Result<Option<Vec<String>>> {
    let (prepared, delimiter) = prepare(file)?;
    let mut csv = csv_reader(LineCounter::new(prepared, limits.max_record_bytes), delimiter);
    let mut record = csv::ByteRecord::new();
    let mut sep_skipped = false;
    loop {
        match csv.read_byte_record(&mut record) {
            Ok(true) => {}
            Ok(false) | Err(_) => return Ok(None),
        }
        if is_blank(&record) {
            continue;
        }
        if !sep_skipped && is_sep_record(&record) {
            sep_skipped = true;
            continue;
        }
        if record.len() > limits.max_columns {
            return Ok(None);
        }
        return Ok(record.iter().map(|f| decode(f, encoding).map(|n| n.into_owned())).collect());
    }
}

/// Decodes a cell; `None` for bytes not valid in the encoding. NUL is not
/// text in any of them (and no database column takes it).
fn decode(bytes: &[u8], encoding: FileEncoding) -> Option<Cow<'_, str>> {
    if bytes.contains(&0) {
        return None;
    }
    match encoding {
        FileEncoding::Utf8 => std::str::from_utf8(bytes).ok().map(Cow::Borrowed),
        FileEncoding::Windows1252 => {
            // Undefined in windows-1252 (encoding_rs maps them to C1 controls).
            if bytes.iter().any(|b| matches!(b, 0x81 | 0x8D | 0x8F | 0x90 | 0x9D)) {
                return None;
            }
            Some(encoding_rs::WINDOWS_1252.decode_without_bom_handling(bytes).0)
        }
    }
}

/// Streams the records of a file that passed `scan`.
pub struct RowReader<R: Read> {
    csv: csv::Reader<LineCounter<BufReader<R>>>,
    header: Header,
    account: AccountSettings,
    record: csv::ByteRecord,
    /// Where the last record read lies in the content (after any BOM).
    span: RecordSpan,
}

/// Where one record lies in a file's content (after any BOM): from its
/// first byte up to the end of its line break (or of the content).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RecordSpan {
    /// The physical line the record starts on.
    pub line: u64,
    pub start: u64,
    pub end: u64,
}

impl<R: Read> RowReader<R> {
    /// Reads up to and including the header line.
    pub fn open(file: R, account: AccountSettings, limits: FileLimits) -> io::Result<Result<Self, FileError>> {
        let (prepared, delimiter) = prepare(file)?;
        let csv = csv_reader(LineCounter::new(prepared, limits.max_record_bytes), delimiter);
        let mut reader = RowReader {
            csv,
            header: Header::empty(),
            account,
            record: csv::ByteRecord::new(),
            span: RecordSpan::default(),
        };
        if reader.next_record()?.is_none() {
            return Ok(Err(FileError::new(FileErrorCode::EmptyFile, "the file is empty")));
        }
        if is_sep_record(&reader.record) && reader.next_record()?.is_none() {
            return Ok(Err(FileError::new(FileErrorCode::EmptyFile, "the file is empty")));
        }
        reader.header = match decode_header(&reader.record, &reader.account, limits.max_columns) {
            Ok(header) => header,
            Err(e) => return Ok(Err(e)),
        };
        Ok(Ok(reader))
    }

    /// Reads the next non-blank record into `self.record`; returns its line.
    fn next_record(&mut self) -> io::Result<Option<u64>> {
        loop {
            if !self.csv.read_byte_record(&mut self.record).map_err(csv_io_error)? {
                return Ok(None);
            }
            // Lets the line counter forget what lies before this record.
            let byte = self.record.position().map(|p| p.byte()).unwrap_or(0);
            let line = self.csv.get_mut().record_line(byte);
            let next = self.csv.position().byte();
            self.csv.get_mut().mark_record_start(next);
            if !is_blank(&self.record) {
                self.span = RecordSpan { line, start: byte, end: next };
                return Ok(Some(line));
            }
        }
    }

    #[cfg(test)]
    fn counter_is_small(&self) -> bool {
        self.csv.get_ref().content_starts.len() < 64
    }

    /// Passes over the next non-blank record (one already done before a restart).
    pub fn skip_row(&mut self) -> io::Result<bool> {
        Ok(self.next_record()?.is_some())
    }

    /// Where the header lies, once opened.
    pub fn header_span(&self) -> RecordSpan {
        self.span
    }

    /// Where the next non-blank record lies, without parsing it.
    pub fn next_span(&mut self) -> io::Result<Option<RecordSpan>> {
        Ok(self.next_record()?.map(|_| self.span))
    }

    /// The next non-blank record, parsed; `None` at the end of the file.
    pub fn next_row(&mut self) -> io::Result<Option<ParsedRow>> {
        let Some(line) = self.next_record()? else { return Ok(None) };
        let mut row = parse_record(&self.header, &self.account, &self.record, line);
        row.bytes = self.record.as_slice().len() + self.record.len();
        Ok(Some(row))
    }
}

/// Turns one record into a command or its errors, in header order: the
/// record as a whole (field count, encoding), then `ref`, then the address
/// columns, then metadata and appdata.
fn parse_record(header: &Header, account: &AccountSettings, record: &csv::ByteRecord, line: u64) -> ParsedRow {
    let cells = match decode_cells(header, account, record) {
        Ok(cells) => cells,
        Err(error) => {
            let claim = ref_source(header)
                .and_then(|i| record.get(i))
                .and_then(|f| decode(f, account.encoding))
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty());
            return ParsedRow { line, claim, outcome: Err(vec![error]), bytes: 0 };
        }
    };
    let cells = match &header.mapping {
        None => cells,
        Some(mapped) => mapped_cells(mapped, cells),
    };
    let mut row = Cells { header, cells, errors: Vec::new() };
    let ref_cell = row.cells[header.ref_index].trim();
    let claim = (!ref_cell.is_empty()).then(|| ref_cell.to_owned());
    let customer_ref = row.parse_ref();
    let addresses = row.parse_addresses(account);
    let [metadata, appdata] = [Target::Metadata, Target::Appdata].map(|target| row.parse_object(target));
    let outcome = match (row.errors.is_empty(), customer_ref, addresses) {
        (true, Some(customer_ref), Some(addresses)) => Ok(CreateCustomer::new(
            customer_ref,
            addresses,
            JsonObject::metadata(metadata),
            JsonObject::appdata(appdata),
        )),
        _ => Err(row.errors),
    };
    ParsedRow { line, claim, outcome, bytes: 0 }
}

/// The file's column the ref is read from (a mapped ref: its own column).
fn ref_source(header: &Header) -> Option<usize> {
    match &header.mapping {
        None => Some(header.ref_index),
        Some(m) => match &m.header.columns[header.ref_index].feed {
            Feed::Cell { index, fallbacks } => index.or_else(|| fallbacks.first().copied()),
            Feed::Constant(_) => None,
        },
    }
}

/// The cells of the columns a profile produces, from the file's cells:
/// fallbacks for empty ones, constants, and one leading `'` dropped where
/// a spreadsheet-safe export added it.
fn mapped_cells<'r>(mapped: &Mapped, cells: Vec<Cow<'r, str>>) -> Vec<Cow<'r, str>> {
    let strip = |cell: &Cow<'r, str>| -> Cow<'r, str> {
        match cell {
            Cow::Borrowed(text) if mapped.strip_apostrophe => Cow::Borrowed(strip_apostrophe(text)),
            Cow::Owned(text) if mapped.strip_apostrophe => Cow::Owned(strip_apostrophe(text).to_owned()),
            other => other.clone(),
        }
    };
    mapped
        .header
        .columns
        .iter()
        .map(|column| match &column.feed {
            Feed::Constant(value) => Cow::Owned(value.clone()),
            Feed::Cell { index, fallbacks } => {
                let own = index.map(|i| strip(&cells[i]));
                match own {
                    Some(cell) if !cell.trim().is_empty() => cell,
                    own => fallbacks
                        .iter()
                        .map(|&i| strip(&cells[i]))
                        .find(|c| !c.trim().is_empty())
                        .or(own)
                        .unwrap_or(Cow::Borrowed("")),
                }
            }
        })
        .collect()
}

/// Drops the one leading `'` a spreadsheet-safe export puts before a number,
/// a phone number or a date (`'+15551234567`, `'0042`, `'2024-05-01`).
fn strip_apostrophe(text: &str) -> &str {
    let trimmed = text.trim();
    match trimmed.strip_prefix('\'') {
        Some(rest)
            if rest.bytes().any(|b| b.is_ascii_digit())
                && rest.bytes().all(|b| b.is_ascii_digit() || b" +-./:()TZ".contains(&b)) =>
        {
            rest
        }
        _ => text,
    }
}

/// A phone value a spreadsheet turned into a number in E notation
/// (`1.5551234567E+10`): its digits are lost.
fn is_e_notation(value: &str) -> bool {
    let v = value.trim();
    let Some((mantissa, exponent)) = v.split_once(['E', 'e']) else { return false };
    let exponent = exponent.strip_prefix('+').unwrap_or(exponent);
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    !int.is_empty()
        && int.bytes().all(|b| b.is_ascii_digit())
        && frac.bytes().all(|b| b.is_ascii_digit())
        && !exponent.is_empty()
        && exponent.bytes().all(|b| b.is_ascii_digit())
}

/// The record's cells as text, or the one record-level error that stops it.
fn decode_cells<'r>(
    header: &Header,
    account: &AccountSettings,
    record: &'r csv::ByteRecord,
) -> Result<Vec<Cow<'r, str>>, RowError> {
    if record.len() != header.len() {
        return Err(RowError::new(
            RowErrorCode::WrongFieldCount,
            "",
            format!("the record has {} fields; the header has {}", record.len(), header.len()),
        ));
    }
    let mut cells = Vec::with_capacity(record.len());
    let mut undecodable = Vec::new();
    for (i, field) in record.iter().enumerate() {
        match decode(field, account.encoding) {
            Some(text) => cells.push(text),
            None => undecodable.push(quote(header.source_name(i))),
        }
    }
    if undecodable.is_empty() {
        return Ok(cells);
    }
    let verb = if undecodable.len() == 1 { " is" } else { " are" };
    Err(RowError::new(
        RowErrorCode::InvalidEncoding,
        "",
        format!("{}{verb} not valid {} text", undecodable.join(", "), account.encoding.as_str()),
    ))
}

/// A record's decoded cells and the errors found in them so far.
struct Cells<'h, 'r> {
    header: &'h Header,
    cells: Vec<Cow<'r, str>>,
    errors: Vec<RowError>,
}

impl<'r> Cells<'_, 'r> {
    /// A message about column `i`, naming our target for a mapped column
    /// (`"Mobile" (phone): ...`).
    fn describe(&self, i: usize, message: impl Into<String>) -> String {
        match &self.header.mapping {
            Some(m) => format!("{}: {}", m.labels[i], message.into()),
            None => message.into(),
        }
    }

    /// The trimmed cell `i` when it is worth reading: not empty, and not
    /// over the size limit (that is its error).
    fn usable(&mut self, i: usize) -> Option<&str> {
        let cell = self.cells[i].trim();
        if cell.is_empty() {
            return None;
        }
        if cell.len() > MAX_CELL_BYTES {
            let name = self.header.names[i].clone();
            let message = self
                .describe(i, format!("{name} is {} bytes long; the limit is {MAX_CELL_BYTES}", self.cells[i].len()));
            self.errors.push(RowError::new(RowErrorCode::FieldTooLong, name, message));
            return None;
        }
        Some(self.cells[i].trim())
    }

    /// Cell `i`, trimmed, without borrowing the row: the record's own
    /// bytes when they were valid UTF-8 (a copy only for a decoded cell).
    fn trimmed(&self, i: usize) -> Cow<'r, str> {
        match &self.cells[i] {
            Cow::Borrowed(text) => Cow::Borrowed(text.trim()),
            Cow::Owned(text) => Cow::Owned(text.trim().to_owned()),
        }
    }

    fn parse_ref(&mut self) -> Option<CustomerRef> {
        let i = self.header.ref_index;
        if self.cells[i].trim().len() > MAX_CELL_BYTES {
            self.usable(i);
            return None;
        }
        match CustomerRef::parse(self.cells[i].trim()) {
            Ok(r) => Some(r),
            Err(Invalid { code, message }) => {
                let field = if self.header.mapping.is_some() { self.header.names[i].clone() } else { "ref".to_owned() };
                let message = self.describe(i, message);
                self.errors.push(RowError::new(code, field, message));
                None
            }
        }
    }

    /// The addresses of every address column, in column order. An
    /// `addresses` list is read only as far as it can still be valid: past
    /// 10 distinct addresses, or past a few errors, the rest is not checked.
    fn parse_addresses(&mut self, account: &AccountSettings) -> Option<Addresses> {
        let header = self.header;
        // Distinct, in column order; at most 11 (a list past 10 is not checked further).
        let mut addresses: Vec<Address> = Vec::new();
        let mut any_value = false;
        let errors_before = self.errors.len();
        for (i, column) in header.columns.iter().enumerate() {
            let kind = match column {
                Column::Address(kind) => Some(*kind),
                Column::AddressList => None,
                _ => continue,
            };
            any_value |= !self.cells[i].trim().is_empty();
            if self.usable(i).is_none() {
                continue;
            }
            let cell = self.trimmed(i);
            // One value per column, or a list split at `,` and `;`.
            let separators: &[char] = if kind.is_some() { &[] } else { &[',', ';'] };
            let values = cell.split(separators).map(str::trim).filter(|v| !v.is_empty());
            // Only a list repeats a value; most cells hold one.
            let mut seen_raw = std::collections::HashSet::new();
            let (mut cell_errors, mut unchecked) = (0, 0usize);
            for value in values {
                if cell_errors >= MAX_ERRORS_PER_CELL || addresses.len() > crate::domain::customer::MAX_ADDRESSES {
                    unchecked += 1;
                    continue;
                }
                if kind.is_none() && !seen_raw.insert(value) {
                    continue;
                }
                if header.mapping.is_some() && kind != Some(AddressKind::Email) && is_e_notation(value) {
                    cell_errors += 1;
                    let message = self.describe(
                        i,
                        format!(
                            "{} is a number in E notation: a spreadsheet turned the phone number into a number \
                             and its digits are lost; format the column as text and export again",
                            quote(value)
                        ),
                    );
                    self.errors.push(RowError::new(RowErrorCode::InvalidPhone, header.names[i].clone(), message));
                    continue;
                }
                let region = header.mapping.as_ref().map_or(account.default_region, |m| m.default_region);
                match Address::parse(value, kind.unwrap_or(AddressKind::Any), region, account.phone_check) {
                    Ok(address) => {
                        if !addresses.contains(&address) {
                            addresses.push(address);
                        }
                    }
                    Err(Invalid { code, message }) => {
                        cell_errors += 1;
                        let message = self.describe(i, message);
                        self.errors.push(RowError::new(code, header.names[i].clone(), message));
                    }
                }
            }
            if unchecked > 0 && cell_errors >= MAX_ERRORS_PER_CELL {
                if let Some(last) = self.errors.last_mut() {
                    last.message += &format!(" (and {unchecked} more values of {} not checked)", header.names[i]);
                }
            }
        }
        // No value at all, or only separators (`,;`): no address, and no
        // other error says so.
        if !any_value || (addresses.is_empty() && self.errors.len() == errors_before) {
            self.errors.push(RowError::new(
                RowErrorCode::MissingAddress,
                header.first_address_name(),
                "the customer has no address (a phone number or an email)",
            ));
            return None;
        }
        if addresses.is_empty() {
            return None;
        }
        match Addresses::new(addresses) {
            Ok(a) => Some(a),
            Err(Invalid { code, message }) => {
                self.errors.push(RowError::new(code, header.first_address_name(), message));
                None
            }
        }
    }

    /// `metadata` or `appdata`: the whole-object cell first, then the
    /// dotted keys merged into it.
    fn parse_object(&mut self, target: Target) -> Map<String, Value> {
        let header = self.header;
        let mut object = Map::new();
        for (i, column) in header.columns.iter().enumerate() {
            if *column != Column::Object(target) {
                continue;
            }
            let Some(cell) = self.usable(i) else { continue };
            let problem = match json_depth(cell) {
                depth if depth > MAX_NESTING => {
                    Some(format!("{} nests {depth} levels deep; the limit is {MAX_NESTING}", target.name()))
                }
                _ => match serde_json::from_str::<Value>(cell) {
                    Ok(Value::Object(map)) if has_nul(&map) => {
                        Some(format!("{} contains a NUL character (\\u0000), which cannot be stored", target.name()))
                    }
                    Ok(Value::Object(map)) => match duplicate_key(cell) {
                        Some(key) => Some(format!(
                            "{} sets the key {} twice (one of the values would be lost)",
                            target.name(),
                            quote(&key)
                        )),
                        None => {
                            object = map;
                            None
                        }
                    },
                    Ok(_) => Some(format!("{} must be a JSON object such as {{\"key\": \"value\"}}", target.name())),
                    Err(e) => Some(format!("{} is not valid JSON ({})", target.name(), json_reason(&e))),
                },
            };
            if let Some(message) = problem {
                let field = if header.mapping.is_some() { header.names[i].clone() } else { target.name().to_owned() };
                let message = self.describe(i, message);
                self.errors.push(RowError::new(target.code(), field, message));
            }
        }
        for (i, column) in header.columns.iter().enumerate() {
            let Column::Key(t, keys) = column else { continue };
            if *t != target {
                continue;
            }
            let Some(cell) = self.usable(i).map(str::to_owned) else { continue };
            if !insert_path(&mut object, keys, Value::String(cell)) {
                let message = self.describe(i, format!("{} sets a key that this row already sets", header.names[i]));
                self.errors.push(RowError::new(target.code(), header.names[i].clone(), message));
            }
        }
        object
    }
}

/// One customer given as values (the API's JSON body) instead of a CSV
/// record: the same parse functions, limits, codes and messages as a row's
/// cells. `ref_value`/`addresses` are `None` when the body lacks them;
/// errors name the body's fields (`ref`, `addresses[2]`, `metadata`).
pub fn parse_values(
    ref_value: Option<&str>,
    addresses: Option<&[String]>,
    metadata: Option<&Map<String, Value>>,
    appdata: Option<&Map<String, Value>>,
    account: &AccountSettings,
) -> Result<CreateCustomer, Vec<RowError>> {
    let mut errors = Vec::new();
    let customer_ref = match ref_value {
        Some(raw) if raw.len() > MAX_CELL_BYTES => {
            let message = format!("ref is {} bytes long; the limit is {MAX_CELL_BYTES}", raw.len());
            errors.push(RowError::new(RowErrorCode::FieldTooLong, "ref", message));
            None
        }
        raw => match CustomerRef::parse(raw.unwrap_or_default()) {
            Ok(r) => Some(r),
            Err(Invalid { code, message }) => {
                errors.push(RowError::new(code, "ref", message));
                None
            }
        },
    };
    let mut parsed: Vec<Address> = Vec::new();
    let values = addresses.unwrap_or_default();
    for (i, value) in values.iter().enumerate() {
        let field = format!("addresses[{i}]");
        if value.trim().is_empty() {
            continue;
        }
        if value.len() > MAX_CELL_BYTES {
            let message = format!("{field} is {} bytes long; the limit is {MAX_CELL_BYTES}", value.len());
            errors.push(RowError::new(RowErrorCode::FieldTooLong, field, message));
            continue;
        }
        match Address::parse(value, AddressKind::Any, account.default_region, account.phone_check) {
            Ok(address) => parsed.push(address),
            Err(Invalid { code, message }) => errors.push(RowError::new(code, field, message)),
        }
    }
    let addresses = if parsed.is_empty() {
        if values.iter().all(|v| v.trim().is_empty()) {
            errors.push(RowError::new(
                RowErrorCode::MissingAddress,
                "addresses",
                "the customer has no address (a phone number or an email)",
            ));
        }
        None
    } else {
        match Addresses::new(parsed) {
            Ok(a) => Some(a),
            Err(Invalid { code, message }) => {
                errors.push(RowError::new(code, "addresses", message));
                None
            }
        }
    };
    let mut object = |map: Option<&Map<String, Value>>, target: Target| {
        let map = map.cloned().unwrap_or_default();
        let depth = value_depth(&map, MAX_NESTING + 1);
        let problem = if depth > MAX_NESTING {
            Some(format!("{} nests more than {MAX_NESTING} levels deep", target.name()))
        } else if has_nul(&map) {
            Some(format!("{} contains a NUL character (\\u0000), which cannot be stored", target.name()))
        } else {
            None
        };
        if let Some(message) = problem {
            errors.push(RowError::new(target.code(), target.name(), message));
        }
        map
    };
    let metadata = object(metadata, Target::Metadata);
    let appdata = object(appdata, Target::Appdata);
    match (errors.is_empty(), customer_ref, addresses) {
        (true, Some(customer_ref), Some(addresses)) => Ok(CreateCustomer::new(
            customer_ref,
            addresses,
            JsonObject::metadata(metadata),
            JsonObject::appdata(appdata),
        )),
        _ => Err(errors),
    }
}

/// How deep an object's arrays and objects nest, counting at most to `stop`
/// (the recursion never goes deeper than that).
fn value_depth(map: &Map<String, Value>, stop: usize) -> usize {
    fn depth(v: &Value, stop: usize) -> usize {
        if stop == 0 {
            return 0;
        }
        match v {
            Value::Array(a) => 1 + a.iter().map(|v| depth(v, stop - 1)).max().unwrap_or(0),
            Value::Object(m) => 1 + m.values().map(|v| depth(v, stop - 1)).max().unwrap_or(0),
            _ => 0,
        }
    }
    1 + map.values().map(|v| depth(v, stop.saturating_sub(1))).max().unwrap_or(0)
}

/// How deep the arrays and objects of a JSON text nest (strings skipped),
/// counted without parsing, so that no parser recurses over it.
fn json_depth(text: &str) -> usize {
    let (mut depth, mut deepest, mut in_string, mut escaped) = (0usize, 0usize, false, false);
    for b in text.bytes() {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' | b'[' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    deepest
}

/// The first key set twice in one object of a JSON text (that is valid
/// JSON; depth already bounded), found without building anything.
fn duplicate_key(text: &str) -> Option<String> {
    use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
    struct Check<'a>(&'a std::cell::RefCell<Option<String>>);
    impl<'de> DeserializeSeed<'de> for Check<'_> {
        type Value = ();
        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
            d.deserialize_any(self)
        }
    }
    impl<'de> Visitor<'de> for Check<'_> {
        type Value = ();
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("JSON")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
            let mut keys = std::collections::HashSet::new();
            while let Some(key) = map.next_key::<String>()? {
                if !keys.insert(key.clone()) && self.0.borrow().is_none() {
                    *self.0.borrow_mut() = Some(key);
                }
                map.next_value_seed(Check(self.0))?;
            }
            Ok(())
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
            while seq.next_element_seed(Check(self.0))?.is_some() {}
            Ok(())
        }
        fn visit_bool<E>(self, _: bool) -> Result<(), E> {
            Ok(())
        }
        fn visit_i64<E>(self, _: i64) -> Result<(), E> {
            Ok(())
        }
        fn visit_u64<E>(self, _: u64) -> Result<(), E> {
            Ok(())
        }
        fn visit_f64<E>(self, _: f64) -> Result<(), E> {
            Ok(())
        }
        fn visit_str<E>(self, _: &str) -> Result<(), E> {
            Ok(())
        }
        fn visit_unit<E>(self) -> Result<(), E> {
            Ok(())
        }
    }
    let found = std::cell::RefCell::new(None);
    let mut de = serde_json::Deserializer::from_str(text);
    Check(&found).deserialize(&mut de).ok()?;
    found.into_inner()
}

fn has_nul(map: &Map<String, Value>) -> bool {
    fn value_has_nul(v: &Value) -> bool {
        match v {
            Value::String(s) => s.contains('\0'),
            Value::Array(a) => a.iter().any(value_has_nul),
            Value::Object(m) => has_nul(m),
            _ => false,
        }
    }
    map.iter().any(|(k, v)| k.contains('\0') || value_has_nul(v))
}

fn json_reason(e: &serde_json::Error) -> String {
    // serde_json's messages name positions and expectations, never the content.
    format!("{} error at column {}", format!("{:?}", e.classify()).to_lowercase(), e.column())
}

/// Sets `keys` (a nested path) to `value`; false when the path is already set
/// or passes through a value that is not an object.
fn insert_path(object: &mut Map<String, Value>, keys: &[String], value: Value) -> bool {
    let (last, parents) = keys.split_last().expect("a dotted column has at least one key");
    let mut current = object;
    for key in parents {
        let entry = current.entry(key.clone()).or_insert_with(|| Value::Object(Map::new()));
        match entry {
            Value::Object(map) => current = map,
            _ => return false,
        }
    }
    if current.contains_key(last) {
        return false;
    }
    current.insert(last.clone(), value);
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::PhoneRegion;

    fn account() -> AccountSettings {
        AccountSettings::new(crate::domain::AccountId::parse("acme").unwrap())
    }

    fn rows_of(text: &[u8], account: AccountSettings) -> Vec<ParsedRow> {
        let mut reader = RowReader::open(text, account, FileLimits::default()).unwrap().unwrap();
        let mut rows = Vec::new();
        while let Some(row) = reader.next_row().unwrap() {
            rows.push(row);
        }
        rows
    }

    fn rows(text: &str) -> Vec<ParsedRow> {
        rows_of(text.as_bytes(), account())
    }

    fn first_error(row: &ParsedRow) -> (&'static str, String) {
        let errors = row.outcome.as_ref().unwrap_err();
        (errors[0].code.code(), errors[0].field.clone())
    }

    fn reject(text: &[u8]) -> FileErrorCode {
        scan(text, &account(), FileLimits::default()).unwrap().rejection.expect("rejected").code
    }

    #[test]
    fn the_two_minimal_payments_api_files_work_unchanged() {
        let r = rows("ref,address\nc1,+15555001234\nc2,ann@example.com\n");
        assert_eq!(r.len(), 2);
        assert!(r.iter().all(|r| r.outcome.is_ok()));
        let r = rows("ref,addresses\nc1,\"+15555001234, ann@example.com\"\n");
        let c = r[0].outcome.as_ref().unwrap();
        let got: Vec<&str> = c.addresses().iter().map(|a| a.as_str()).collect();
        assert_eq!(got, ["+15555001234", "ann@example.com"]);
    }

    #[test]
    fn semicolons_and_tabs_are_detected_from_the_header() {
        assert!(rows("ref;address\nc1;+15555001234\n")[0].outcome.is_ok());
        assert!(rows("ref\taddress\nc1\t+15555001234\n")[0].outcome.is_ok());
        assert_eq!(detect_delimiter(b"ref,\"a;b;c\",x"), b',');
    }

    #[test]
    fn a_bom_crlf_and_blank_lines_are_handled_and_lines_are_physical() {
        let r = rows("\u{feff}REF ; Address \r\n\r\nc1;+15555001234\r\n;;\r\nc2;\"ann@example.com\"\r\n");
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].line, 3);
        assert_eq!(r[1].line, 5);
        assert!(r[1].outcome.is_ok());
    }

    #[test]
    fn a_quoted_line_break_keeps_the_next_records_line_number() {
        let r = rows("ref,address,metadata.note\nc1,+15555001234,\"two\r\nlines\"\nc2,+15555001235,x\n");
        assert_eq!(r[0].line, 2);
        assert_eq!(r[1].line, 4);
        let note = &r[0].outcome.as_ref().unwrap().metadata().as_map()["note"];
        assert_eq!(note, "two\r\nlines");
    }

    #[test]
    fn a_wrong_field_count_fails_only_that_row() {
        let r = rows("ref,address\nc1,+15555001234,extra\nc2,+15555001234\n");
        assert_eq!(first_error(&r[0]), ("wrong_field_count", String::new()));
        assert_eq!(r[0].claim.as_deref(), Some("c1"));
        assert!(r[1].outcome.is_ok());
    }

    #[test]
    fn invalid_utf8_fails_the_row_with_invalid_encoding() {
        let r = rows_of(b"ref,address\nc\xff1,+15555001234\nc2,+15555001234\n", account());
        assert_eq!(first_error(&r[0]), ("invalid_encoding", String::new()));
        assert!(r[1].outcome.is_ok());
    }

    #[test]
    fn nul_characters_fail_the_row_not_the_database() {
        let r = rows_of(
            b"ref,address,metadata\nc\x001,+15555001234,\nc2,+15555001234,\"{\"\"a\"\":\"\"x\\u0000\"\"}\"\n",
            account(),
        );
        assert_eq!(first_error(&r[0]), ("invalid_encoding", String::new()));
        assert_eq!(r[0].claim, None);
        assert_eq!(first_error(&r[1]), ("invalid_metadata", "metadata".into()));
    }

    #[test]
    fn bytes_undefined_in_windows_1252_fail_the_row() {
        let mut acct = account();
        acct.encoding = FileEncoding::Windows1252;
        let r = rows_of(b"ref;address\nc\x81;+15555001234\nc2;+15555001234\n", acct);
        assert_eq!(first_error(&r[0]), ("invalid_encoding", String::new()));
        assert!(r[1].outcome.is_ok());
    }

    #[test]
    fn a_ref_cell_over_64_kib_is_field_too_long() {
        let r = rows(&format!("ref,address\n{},+15555001234\n", "r".repeat(MAX_CELL_BYTES + 1)));
        assert_eq!(first_error(&r[0]), ("field_too_long", "ref".into()));
    }

    #[test]
    fn windows_1252_accounts_decode_excel_exports() {
        let mut acct = account();
        acct.encoding = FileEncoding::Windows1252;
        let r = rows_of(b"ref;address;metadata.name\nc1;+15555001234;Ren\xe9e\n", acct);
        assert_eq!(r[0].outcome.as_ref().unwrap().metadata().as_map()["name"], "Renée");
    }

    #[test]
    fn errors_come_in_header_order_and_all_are_listed() {
        let r = rows("ref,email,phone,metadata\n,not-an-email,12,[1]\n");
        let errors = r[0].outcome.as_ref().unwrap_err();
        let codes: Vec<(&str, &str)> = errors.iter().map(|e| (e.code.code(), e.field.as_str())).collect();
        assert_eq!(
            codes,
            [
                ("missing_ref", "ref"),
                ("invalid_email", "email"),
                ("invalid_phone", "phone"),
                ("invalid_metadata", "metadata")
            ]
        );
    }

    #[test]
    fn a_row_without_any_address_is_missing_address() {
        let r = rows("ref,phone,email\nc1, , \n");
        assert_eq!(first_error(&r[0]), ("missing_address", "phone".into()));
    }

    #[test]
    fn address_columns_keep_header_order_and_drop_duplicates() {
        let r = rows("ref,email,address_2,address_1\nc1,ann@EXAMPLE.com,+15555001234,ann@example.com\n");
        let c = r[0].outcome.as_ref().unwrap();
        let got: Vec<&str> = c.addresses().iter().map(|a| a.as_str()).collect();
        assert_eq!(got, ["ann@example.com", "+15555001234"]);
    }

    #[test]
    fn eleven_distinct_addresses_are_too_many() {
        let list: Vec<String> = (0..11).map(|i| format!("a{i}@example.com")).collect();
        let r = rows(&format!("ref,addresses\nc1,\"{}\"\n", list.join(";")));
        assert_eq!(first_error(&r[0]), ("too_many_addresses", "addresses".into()));
    }

    #[test]
    fn dotted_metadata_nests_and_merges_with_the_object_cell() {
        let r = rows("ref,address,metadata,metadata.a.b,appdata.k\nc1,+15555001234,\"{\"\"x\"\":1}\",v,w\n");
        let c = r[0].outcome.as_ref().unwrap();
        assert_eq!(Value::Object(c.metadata().as_map().clone()), serde_json::json!({"x":1,"a":{"b":"v"}}));
        assert_eq!(Value::Object(c.appdata().as_map().clone()), serde_json::json!({"k":"w"}));
    }

    #[test]
    fn the_same_key_from_the_object_cell_and_a_dotted_column_is_an_error() {
        let r = rows("ref,address,appdata,appdata.x\nc1,+15555001234,\"{\"\"x\"\":1}\",2\n");
        assert_eq!(first_error(&r[0]), ("invalid_appdata", "appdata.x".into()));
    }

    #[test]
    fn a_cell_over_64_kib_fails_its_row() {
        let r = rows(&format!("ref,address,metadata.note\nc1,+15555001234,{}\n", "x".repeat(MAX_CELL_BYTES + 1)));
        assert_eq!(first_error(&r[0]), ("field_too_long", "metadata.note".into()));
    }

    #[test]
    fn a_national_number_uses_the_accounts_default_region() {
        let mut acct = account();
        acct.default_region = Some(PhoneRegion::parse("us").unwrap());
        let r = rows_of(b"ref,phone\nc1,555-500-1234\n", acct);
        assert_eq!(r[0].outcome.as_ref().unwrap().addresses().iter().next().unwrap().as_str(), "+15555001234");
    }

    #[test]
    fn a_duplicate_is_reported_after_the_refs_own_errors() {
        let mut r = rows("ref,address\nc1,bad\n");
        r[0].mark_duplicate(2);
        let codes: Vec<&str> = r[0].outcome.as_ref().unwrap_err().iter().map(|e| e.code.code()).collect();
        assert_eq!(codes, ["duplicate_ref", "invalid_phone"]);
    }

    #[test]
    fn file_errors_are_detected_before_any_row() {
        assert_eq!(reject(b""), FileErrorCode::EmptyFile);
        assert_eq!(reject(b"\xEF\xBB\xBF \r\n\n"), FileErrorCode::EmptyFile);
        assert_eq!(reject(b"c1,+15555001234\n"), FileErrorCode::MissingHeader);
        assert_eq!(reject(b"address,email\n"), FileErrorCode::MissingRefColumn);
        assert_eq!(reject(b"ref,metadata.x\n"), FileErrorCode::MissingAddressColumn);
        assert_eq!(reject(b"ref,adress\n"), FileErrorCode::UnknownColumn);
        assert_eq!(reject(b"ref,address,Address\n"), FileErrorCode::DuplicateColumn);
        assert_eq!(reject(b"ref,address\n\x00\x01\x02"), FileErrorCode::NotText);
        assert_eq!(reject(b"ref,address_11\n"), FileErrorCode::UnknownColumn);
        let limits = FileLimits { max_file_bytes: 20, max_rows: 1, ..FileLimits::default() };
        let s = scan(&b"ref,address\nc1,+15555001234\n"[..], &account(), limits).unwrap();
        assert_eq!(s.rejection.unwrap().code, FileErrorCode::FileTooLarge);
        let limits = FileLimits { max_file_bytes: 1000, max_rows: 1, ..FileLimits::default() };
        let s = scan(&b"ref,address\nc1,+15555001234\n\nc2,+15555001234\n"[..], &account(), limits).unwrap();
        assert_eq!(s.records, 2);
        assert_eq!(s.rejection.unwrap().code, FileErrorCode::TooManyRows);
    }

    fn small_records() -> FileLimits {
        FileLimits { max_record_bytes: 1024, ..FileLimits::default() }
    }

    #[test]
    fn the_record_limit_is_the_limit_not_the_limit_and_the_look_ahead() {
        let text = format!("ref,address,metadata.x\nc1,+15555001234,{}\nc2,+15555001234,y\n", "x".repeat(5000));
        let scanned = scan(text.as_bytes(), &account(), small_records()).unwrap();
        assert_eq!(
            scanned.rejection.map(|r| (r.code, r.message.contains("line 2"))),
            Some((FileErrorCode::RecordTooLarge, true))
        );
        let fits = format!("ref,address,metadata.x\nc1,+15555001234,{}\n", "x".repeat(900));
        assert_eq!(scan(fits.as_bytes(), &account(), small_records()).unwrap().rejection, None);
    }

    #[test]
    fn blank_lines_at_the_end_of_a_compressed_file_count_against_its_size() {
        use std::io::Write;
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(b"ref,address\nc1,+15555001234\n").unwrap();
        gz.write_all(&vec![b'\n'; 200_000]).unwrap();
        let compressed = gz.finish().unwrap();
        let limits = FileLimits { max_file_bytes: 100_000, ..FileLimits::default() };
        let rejection = scan(&compressed[..], &account(), limits).unwrap().rejection.expect("rejected");
        assert_eq!(rejection.code, FileErrorCode::FileTooLarge);
        assert!(rejection.message.contains("decompresses"), "{}", rejection.message);
    }

    #[test]
    fn a_record_over_the_limit_rejects_the_file_naming_its_line() {
        let mut text = b"ref,address\nc1,+15555001234\n\nc2,\"".to_vec();
        text.extend(std::iter::repeat_n(b'x', 200_000));
        let scanned = scan(&text[..], &account(), small_records()).unwrap();
        let rejection = scanned.rejection.expect("rejected");
        assert_eq!(rejection.code, FileErrorCode::RecordTooLarge);
        assert!(rejection.message.contains("line 4"), "{}", rejection.message);
        // Records under the limit, however many, pass.
        let text = format!("ref,address\n{}", "c1,+15555001234\n".repeat(10_000));
        assert_eq!(scan(text.as_bytes(), &account(), small_records()).unwrap().rejection, None);
    }

    #[test]
    fn blank_line_runs_cost_no_record_space_and_count_as_lines() {
        let text =
            format!("ref,address\n{}c1,+15555001234\n{}c2,+15555001234\n", "\n".repeat(5000), "\r\n".repeat(3000));
        let scanned = scan(text.as_bytes(), &account(), small_records()).unwrap();
        assert_eq!((scanned.rejection, scanned.records), (None, 2));
        let mut reader = RowReader::open(text.as_bytes(), account(), small_records()).unwrap().unwrap();
        assert_eq!(reader.next_row().unwrap().unwrap().line, 5002);
        assert_eq!(reader.next_row().unwrap().unwrap().line, 8003);
        assert!(reader.counter_is_small());
    }

    #[test]
    fn too_many_columns_and_too_deep_paths_reject_the_file() {
        let limits = FileLimits { max_columns: 3, ..FileLimits::default() };
        let scanned = scan(&b"ref,address,phone,email\n"[..], &account(), limits).unwrap();
        assert_eq!(scanned.rejection.unwrap().code, FileErrorCode::TooManyColumns);
        let header = format!("ref,address,metadata{}\n", ".a".repeat(33));
        let rejection = scan(header.as_bytes(), &account(), FileLimits::default()).unwrap().rejection.unwrap();
        assert!(rejection.message.contains("33 levels deep; the limit is 32"), "{}", rejection.message);
        let header = format!("ref,address,metadata{}\nc1,+15555001234,x\n", ".a".repeat(32));
        assert_eq!(scan(header.as_bytes(), &account(), FileLimits::default()).unwrap().rejection, None);
    }

    #[test]
    fn json_nested_too_deep_fails_its_row_naming_the_limit() {
        let deep = format!("\"{}1{}\"", "[".repeat(40), "]".repeat(40)).replace('[', "{\"\"a\"\":[");
        let r = rows(&format!("ref,address,metadata\nc1,+15555001234,{deep}\n"));
        let errors = r[0].outcome.as_ref().unwrap_err();
        assert!(errors[0].message.contains("the limit is 32"), "{}", errors[0].message);
        assert_eq!(json_depth(r#"{"a":"{{{{[[[[","b":{"c":1}}"#), 2);
    }

    #[test]
    fn a_cell_of_many_bad_addresses_is_checked_only_so_far() {
        let cell: String = (0..1000).map(|i| format!("x{i},")).collect();
        let r = rows(&format!("ref,addresses\nc1,\"{cell}\"\n"));
        let errors = r[0].outcome.as_ref().unwrap_err();
        assert_eq!(errors.len(), MAX_ERRORS_PER_CELL);
        assert!(errors.last().unwrap().message.contains("995 more values of addresses not checked"));
        let same = "x,".repeat(1000);
        assert_eq!(rows(&format!("ref,addresses\nc1,\"{same}\"\n"))[0].outcome.as_ref().unwrap_err().len(), 1);
    }

    #[test]
    fn a_bare_cr_ends_a_line_as_crlf_and_lf_do() {
        let r = rows("ref,address\rc1,+15555001234\rc2,+15555001234\r\nc3,+15555001234\n");
        assert_eq!(r.iter().map(|r| r.line).collect::<Vec<_>>(), [2, 3, 4]);
        let r = rows("ref,address\r\r\"a\rb\",+15555001234\rc2,+15555001234\r");
        assert_eq!(r.iter().map(|r| r.line).collect::<Vec<_>>(), [3, 5], "a quoted CR is a line break too");
    }

    #[test]
    fn the_delimiter_of_a_cr_only_file_is_read_from_its_first_line() {
        for d in [";", "\t"] {
            let text = format!("ref{d}address{d}metadata.name\rc1{d}+15555001234{d}Doe, John, Jr., PhD\r");
            let r = rows(&text);
            assert_eq!(r.len(), 1, "{d:?}");
            assert!(r[0].outcome.is_ok(), "{d:?}: {:?}", r[0].outcome);
        }
    }

    #[test]
    fn an_addresses_cell_of_separators_only_is_missing_address() {
        let r = rows("ref,addresses\nc1,\" , ; \"\n");
        assert_eq!(first_error(&r[0]), ("missing_address", "addresses".to_owned()));
    }

    fn mapped_account(profile: &str) -> AccountSettings {
        let p = std::sync::Arc::new(crate::domain::mapping::Profile::parse("mine", profile.as_bytes()).unwrap());
        let mut acct = account();
        acct.mapping = MappingChoice::Select { file_name: "export.csv".into(), profiles: Arc::new(vec![p]) };
        acct
    }

    const PROFILE: &str = "ignore = [\"Total Spent\"]\n[columns]\n\"Customer ID\" = \"ref\"\n\"Email\" = \"email\"\n\
        \"Mobile\" = \"phone\"\n\"Phone 2\" = \"address_2\"\n\"First Name\" = \"metadata.firstName\"\n\
        [constants]\n\"metadata.source\" = \"shop\"\n[fallback]\nref = [\"Email\"]\n";

    #[test]
    fn a_mapped_file_keeps_the_merchants_column_order_and_applies_fallbacks_and_constants() {
        let text = "Mobile,Customer ID,Email,Total Spent,Phone 2,First Name\n\
                    '+15555001234,'42,ann@example.com,10.00,+15555001235,Ann\n\
                    ,,bob@example.com,0,,Bob\n";
        let acct = mapped_account(PROFILE);
        let scanned = scan(text.as_bytes(), &acct, FileLimits::default()).unwrap();
        assert_eq!(scanned.rejection, None);
        let applied = scanned.mapping.clone().expect("mapped");
        assert_eq!(applied.ignored, ["Total Spent"]);
        let mut chosen = account();
        chosen.mapping = MappingChoice::Chosen(applied);
        let r = rows_of(text.as_bytes(), chosen);
        let c = r[0].outcome.as_ref().unwrap();
        assert_eq!(c.customer_ref().as_str(), "42", "the apostrophe is dropped");
        let got: Vec<&str> = c.addresses().iter().map(|a| a.as_str()).collect();
        assert_eq!(got, ["+15555001234", "ann@example.com", "+15555001235"]);
        assert_eq!(
            Value::Object(c.metadata().as_map().clone()),
            serde_json::json!({"firstName": "Ann", "source": "shop"})
        );
        let c = r[1].outcome.as_ref().unwrap();
        assert_eq!(c.customer_ref().as_str(), "bob@example.com", "the fallback");
    }

    #[test]
    fn a_mapped_error_names_the_merchants_column_and_our_target() {
        let text = "Customer ID,Email,Mobile\nc1,ann@example.com,1.5551234567E+10\nc2,ann@example.com,12\n";
        let r = rows_of(text.as_bytes(), mapped_account(PROFILE));
        let errors = r[0].outcome.as_ref().unwrap_err();
        assert_eq!((errors[0].code.code(), errors[0].field.as_str()), ("invalid_phone", "mobile"));
        assert!(errors[0].message.starts_with("\"mobile\" (phone): "), "{}", errors[0].message);
        assert!(errors[0].message.contains("spreadsheet"), "{}", errors[0].message);
        let errors = r[1].outcome.as_ref().unwrap_err();
        assert_eq!(errors[0].field, "mobile");
    }

    #[test]
    fn excels_sep_line_is_skipped_and_still_counts_as_a_line() {
        let r = rows("sep=;\nref;address\nc1;+15555001234\n");
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].line, 3);
        assert!(r[0].outcome.is_ok());
        let scanned =
            scan(&b"sep=,\r\nref,address\r\nc1,+15555001234\r\n"[..], &account(), FileLimits::default()).unwrap();
        assert_eq!((scanned.rejection, scanned.records), (None, 1));
    }

    #[test]
    fn an_unmapped_header_is_read_as_before_when_no_profile_explains_it() {
        let acct = mapped_account(PROFILE);
        let scanned = scan(&b"ref,address\nc1,+15555001234\n"[..], &acct, FileLimits::default()).unwrap();
        assert_eq!((scanned.rejection, scanned.mapping), (None, None));
        let scanned = scan(&b"ref,adress\n"[..], &acct, FileLimits::default()).unwrap();
        assert_eq!(scanned.rejection.unwrap().code, FileErrorCode::UnknownColumn);
        let scanned = scan(&b"Customer ID,Email,email\n"[..], &acct, FileLimits::default()).unwrap();
        assert_eq!(scanned.rejection.unwrap().code, FileErrorCode::DuplicateColumn, "two columns one name");
    }

    #[test]
    fn a_metadata_column_keeps_its_keys_case() {
        let r = rows("ref,address,Metadata.firstName\nc1,+15555001234,Ann\n");
        let c = r[0].outcome.as_ref().unwrap();
        assert_eq!(Value::Object(c.metadata().as_map().clone()), serde_json::json!({"firstName": "Ann"}));
    }

    #[test]
    fn e_notation_and_apostrophes_are_recognised() {
        assert!(is_e_notation("1.5551234567E+10") && is_e_notation("4.4e11") && is_e_notation("1E5"));
        assert!(!is_e_notation("+15551234567") && !is_e_notation("E+10") && !is_e_notation("1.5E"));
        assert_eq!(strip_apostrophe("'+15551234567"), "+15551234567");
        assert_eq!(strip_apostrophe("'2024-05-01"), "2024-05-01");
        assert_eq!(strip_apostrophe("'quoted'"), "'quoted'");
        assert_eq!(strip_apostrophe("O'Brien"), "O'Brien");
    }

    #[test]
    fn a_duplicate_key_in_a_json_cell_fails_the_row() {
        let r =
            rows("ref,address,metadata\nc1,+15555001234,\"{\"\"tier\"\":\"\"gold\"\",\"\"tier\"\":\"\"silver\"\"}\"\n");
        let errors = r[0].outcome.as_ref().unwrap_err();
        assert_eq!((errors[0].code.code(), errors[0].field.as_str()), ("invalid_metadata", "metadata"));
        assert!(errors[0].message.contains("`tier` twice"), "{}", errors[0].message);
        let r = rows("ref,address,appdata\nc1,+15555001234,\"{\"\"a\"\":{\"\"b\"\":1,\"\"b\"\":2}}\"\n");
        assert_eq!(first_error(&r[0]), ("invalid_appdata", "appdata".into()), "nested objects too");
        assert_eq!(duplicate_key(r#"{"a":[{"x":1},{"x":2}],"b":{"x":1}}"#), None, "same keys in different objects");
    }

    #[test]
    fn numbers_keep_their_digits() {
        let r = rows("ref,address,metadata\nc1,+15555001234,\"{\"\"id\"\":123456789012345678901,\"\"p\"\":0.10}\"\n");
        let c = r[0].outcome.as_ref().unwrap();
        let text = serde_json::to_string(c.metadata().as_map()).unwrap();
        assert_eq!(text, r#"{"id":123456789012345678901,"p":0.10}"#);
    }

    #[test]
    fn a_dotted_key_inside_an_object_is_that_key_not_a_path() {
        let r = rows("ref,address,metadata,metadata.a.b\nc1,+15555001234,\"{\"\"a.b\"\":1}\",2\n");
        let c = r[0].outcome.as_ref().unwrap();
        assert_eq!(Value::Object(c.metadata().as_map().clone()), serde_json::json!({"a.b": 1, "a": {"b": "2"}}));
    }

    /// The line counter's state after each read, byte by byte: what the
    /// run-at-a-time counter must match.
    fn counted_byte_by_byte(text: &[u8]) -> (u64, Vec<(u64, u64)>, u64) {
        let (mut newlines, mut starts, mut record_start) = (0u64, Vec::new(), 0u64);
        let (mut after_break, mut after_cr, mut content) = (true, false, false);
        for (at, &b) in text.iter().enumerate() {
            let is_break = b == b'\n' || b == b'\r';
            if b == b'\r' || (b == b'\n' && !after_cr) {
                newlines += 1;
            }
            after_cr = b == b'\r';
            if !is_break && after_break {
                starts.push((at as u64, newlines));
            }
            after_break = is_break;
            if is_break && !content {
                record_start = at as u64 + 1;
            }
            content |= !is_break;
        }
        (newlines, starts, record_start)
    }

    proptest::proptest! {
        #[test]
        fn lines_are_counted_as_byte_by_byte(
            text in proptest::collection::vec(proptest::sample::select(b"a,\"\r\n".to_vec()), 0..200),
            read_size in 1usize..17,
        ) {
            /// Hands out at most `read_size` bytes a read, as a slow stream.
            struct Trickle<'a>(&'a [u8], usize);
            impl Read for Trickle<'_> {
                fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                    let n = self.0.len().min(self.1).min(buf.len());
                    buf[..n].copy_from_slice(&self.0[..n]);
                    self.0 = &self.0[n..];
                    Ok(n)
                }
            }
            let mut counter = LineCounter::new(Trickle(&text, read_size), 1 << 20);
            io::copy(&mut counter, &mut io::sink()).unwrap();
            let (newlines, starts, record_start) = counted_byte_by_byte(&text);
            proptest::prop_assert_eq!(counter.newlines, newlines);
            proptest::prop_assert_eq!(counter.content_starts.iter().copied().collect::<Vec<_>>(), starts);
            proptest::prop_assert_eq!(counter.record_start, record_start);
        }
    }
}

//! `intake check`: validates a file offline, as the daemon would, without a
//! database. `ref_exists` cannot be known offline; everything else is.

use super::rows::{scan, FileLimits, ParsedRow, RowReader};
use crate::domain::{AccountSettings, FileError};
use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::path::Path;

/// What `check` found.
#[derive(Debug, Default)]
pub struct CheckOutcome {
    pub rejection: Option<FileError>,
    pub rows: u64,
    pub failed: u64,
    /// The mapping profile the file was read with, if any.
    pub mapping: Option<crate::domain::mapping::AppliedMapping>,
}

/// Reads the file, calling `on_failure` for each failing record in order.
pub fn check_file(
    path: &Path,
    account: &AccountSettings,
    limits: FileLimits,
    mut on_failure: impl FnMut(&ParsedRow),
) -> io::Result<CheckOutcome> {
    let scanned = scan(File::open(path)?, account, limits)?;
    if let Some(rejection) = scanned.rejection {
        return Ok(CheckOutcome { rejection: Some(rejection), ..Default::default() });
    }
    let mut account = account.clone();
    account.mapping = match scanned.mapping.clone() {
        Some(applied) => crate::domain::mapping::MappingChoice::Chosen(applied),
        None => crate::domain::mapping::MappingChoice::Unmapped,
    };
    let none = std::sync::Arc::new(crate::openpgp::Opening::none());
    let content = super::upload::open(File::open(path)?, limits.max_gzip_ratio, &none)?;
    let mut reader = match RowReader::open(content.reader, account, limits)? {
        Ok(reader) => reader,
        Err(rejection) => return Ok(CheckOutcome { rejection: Some(rejection), ..Default::default() }),
    };
    let mut outcome = CheckOutcome { mapping: scanned.mapping, ..Default::default() };
    let mut claimed: HashMap<String, u64> = HashMap::new();
    while let Some(mut row) = reader.next_row()? {
        outcome.rows += 1;
        if let Some(claim) = row.claim.clone() {
            match claimed.get(&claim) {
                Some(&first) => row.mark_duplicate(first),
                None => {
                    claimed.insert(claim, row.line);
                }
            }
        }
        if row.outcome.is_err() {
            outcome.failed += 1;
            on_failure(&row);
        }
    }
    Ok(outcome)
}

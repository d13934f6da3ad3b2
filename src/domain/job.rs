//! An upload job as every front end sees it: what it does (`JobKind`), where
//! it stands (`JobStatus`, `JobPhase`) and how it ended (`Summary`, the
//! `NAME.summary.json` a merchant downloads). Typed here once; the JSON is
//! only their wire form, never read back to learn a status or a time.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use time::OffsetDateTime;

/// A stored name that is none of an enum's: the database was changed by hand.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} `{name}`")]
pub struct UnknownName {
    pub what: &'static str,
    pub name: String,
}

/// What a job does with its rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum JobKind {
    /// A file in `/customers`: rows are upserted.
    #[default]
    Import,
    /// A file in `/validate`: rows are checked against the database as an
    /// import would, nothing is written to customers.
    Validation,
}

impl JobKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Import => "import",
            Self::Validation => "validation",
        }
    }

    pub fn is_dry_run(self) -> bool {
        self == Self::Validation
    }

    pub fn parse(raw: &str) -> Result<Self, UnknownName> {
        Ok(match raw {
            "import" => Self::Import,
            "validation" => Self::Validation,
            other => return Err(UnknownName { what: "job kind", name: other.to_owned() }),
        })
    }
}

/// Where a job is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobStatus {
    /// Recorded; its upload is being moved into the spool.
    Arriving,
    Queued,
    Running,
    /// A transient fault; taken again at `retry_at`.
    Retrying,
    Completed,
    Rejected,
    /// Could not be finished: the rows committed so far are reported.
    Aborted,
}

impl JobStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Arriving => "arriving",
            Self::Queued => "queued",
            Self::Running => "running",
            Self::Retrying => "retrying",
            Self::Completed => "completed",
            Self::Rejected => "rejected",
            Self::Aborted => "aborted",
        }
    }

    pub fn is_final(self) -> bool {
        matches!(self, Self::Completed | Self::Rejected | Self::Aborted)
    }

    pub fn parse(raw: &str) -> Result<Self, UnknownName> {
        Ok(match raw {
            "arriving" => Self::Arriving,
            "queued" => Self::Queued,
            "running" => Self::Running,
            "retrying" => Self::Retrying,
            "completed" => Self::Completed,
            "rejected" => Self::Rejected,
            "aborted" => Self::Aborted,
            other => return Err(UnknownName { what: "job status", name: other.to_owned() }),
        })
    }
}

impl std::fmt::Display for JobStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a running job stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobPhase {
    /// Batches of rows are being applied.
    Rows,
    /// The outcome is decided (the job's summary is stored); the report is
    /// being published.
    Publishing,
    /// Finished: the report is out and the upload archived.
    Done,
}

impl JobPhase {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Rows => "rows",
            Self::Publishing => "publishing",
            Self::Done => "done",
        }
    }

    pub fn parse(raw: &str) -> Result<Self, UnknownName> {
        Ok(match raw {
            "rows" => Self::Rows,
            "publishing" => Self::Publishing,
            "done" => Self::Done,
            other => return Err(UnknownName { what: "job phase", name: other.to_owned() }),
        })
    }
}

/// `NAME.summary.json`: how a job ended. Its keys and their order are the
/// contract merchants' scripts read; times are RFC 3339 in UTC to the second.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Summary {
    pub account: String,
    pub file: String,
    pub job_id: String,
    pub sha256: String,
    pub bytes: u64,
    pub status: JobStatus,
    pub rows: u64,
    pub created: u64,
    pub updated: u64,
    pub unchanged: u64,
    pub failed: u64,
    #[serde(with = "rfc3339")]
    pub received_at: OffsetDateTime,
    #[serde(with = "rfc3339")]
    pub started_at: OffsetDateTime,
    #[serde(with = "rfc3339")]
    pub finished_at: OffsetDateTime,
    pub error: Option<SummaryError>,
    /// How many failed rows have each error code (their first error).
    #[serde(default)]
    pub errors_by_code: BTreeMap<String, u64>,
    /// A file of `/validate`: each row's outcome as it would be; nothing written.
    #[serde(default)]
    pub dry_run: bool,
    /// The name in `/outbox` of the failed records, when there is such a file.
    #[serde(default)]
    pub failed_file: Option<String>,
    /// The mapping profile the file was read with (`null`: none).
    #[serde(default)]
    pub mapping: Option<SummaryMapping>,
    /// The file's columns that profile drops on purpose, as written in the file.
    #[serde(default)]
    pub ignored_columns: Vec<String>,
    /// An OpenPGP upload's verified signer (spec §12); absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pgp: Option<SummaryPgp>,
}

/// The summary's `pgp`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SummaryPgp {
    /// The fingerprint (40 hex) of the merchant key whose signature verified.
    pub signer: Option<String>,
    /// The results' name in `/outbox` when they are encrypted to the
    /// merchant's keys (`NAME.results.csv.pgp`; `failed_file` names the
    /// encrypted failed records then).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub results_file: Option<String>,
}

/// The summary's `mapping`: which profile, and which version of it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SummaryMapping {
    pub name: String,
    pub preset: bool,
    /// The SHA-256 of the profile's text.
    pub sha256: String,
}

impl Summary {
    /// The event a webhook announces this ending as: `job.completed`,
    /// `validation.rejected`, ...
    pub fn event(&self) -> String {
        format!("{}.{}", if self.dry_run { "validation" } else { "job" }, self.status)
    }
}

/// Why a file was rejected or a job aborted: a stable code and plain words.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SummaryError {
    pub code: String,
    pub message: String,
}

impl From<&super::FileError> for SummaryError {
    fn from(e: &super::FileError) -> Self {
        SummaryError { code: e.code.code().to_owned(), message: e.message.clone() }
    }
}

/// Times as reports show them: RFC 3339 in UTC, to the second
/// (`2026-11-26T10:00:00Z`).
pub mod rfc3339 {
    use serde::{Deserialize, Deserializer, Serializer};
    use time::format_description::well_known::Rfc3339;
    use time::{OffsetDateTime, UtcOffset};

    /// `at` in UTC without its fraction of a second.
    pub fn format(at: OffsetDateTime) -> String {
        let at = at.to_offset(UtcOffset::UTC);
        let at = at.replace_nanosecond(0).unwrap_or(at);
        at.format(&Rfc3339).unwrap_or_else(|_| "1970-01-01T00:00:00Z".into())
    }

    pub fn serialize<S: Serializer>(at: &OffsetDateTime, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format(*at))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<OffsetDateTime, D::Error> {
        let text = String::deserialize(d)?;
        OffsetDateTime::parse(&text, &Rfc3339).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary() -> Summary {
        let at =
            OffsetDateTime::parse("2026-11-26T10:00:00.250Z", &time::format_description::well_known::Rfc3339).unwrap();
        Summary {
            account: "acme".into(),
            file: "May.CSV".into(),
            job_id: "j".into(),
            sha256: "00".into(),
            bytes: 3,
            status: JobStatus::Completed,
            rows: 1,
            created: 1,
            updated: 0,
            unchanged: 0,
            failed: 0,
            received_at: at,
            started_at: at,
            finished_at: at + time::Duration::seconds(2),
            error: None,
            errors_by_code: BTreeMap::new(),
            dry_run: false,
            failed_file: None,
            mapping: None,
            ignored_columns: Vec::new(),
            pgp: None,
        }
    }

    #[test]
    fn a_summary_shows_its_status_as_a_word_and_its_times_to_the_second() {
        let json = serde_json::to_string(&summary()).unwrap();
        assert!(json.contains(r#""status":"completed""#), "{json}");
        assert!(json.contains(r#""received_at":"2026-11-26T10:00:00Z""#), "{json}");
        assert!(json.contains(r#""finished_at":"2026-11-26T10:00:02Z""#), "{json}");
        let back: Summary = serde_json::from_str(&json).unwrap();
        assert_eq!(back.status, JobStatus::Completed);
        assert_eq!(back.finished_at - back.started_at, time::Duration::seconds(2));
    }

    #[test]
    fn every_status_reads_back_from_its_name() {
        for status in [
            JobStatus::Arriving,
            JobStatus::Queued,
            JobStatus::Running,
            JobStatus::Retrying,
            JobStatus::Completed,
            JobStatus::Rejected,
            JobStatus::Aborted,
        ] {
            assert_eq!(JobStatus::parse(status.as_str()), Ok(status));
        }
        assert!(JobStatus::parse("done").is_err());
    }
}

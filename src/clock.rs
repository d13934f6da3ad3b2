//! Timestamps as the reports and the database show them: RFC 3339 in UTC.

use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// Now, to the second: `2026-11-26T10:00:00Z`.
pub fn now_rfc3339() -> String {
    format_rfc3339(OffsetDateTime::now_utc())
}

pub fn format_rfc3339(at: OffsetDateTime) -> String {
    let at = at.replace_nanosecond(0).unwrap_or(at);
    at.format(&Rfc3339).unwrap_or_else(|_| "1970-01-01T00:00:00Z".into())
}

/// `seconds` before now, in the same form (for lease expiry).
pub fn seconds_ago_rfc3339(seconds: i64) -> String {
    format_rfc3339(OffsetDateTime::now_utc() - time::Duration::seconds(seconds))
}

/// A compact form for file names: `20261126T100000Z`.
pub fn compact(rfc3339: &str) -> String {
    rfc3339.chars().filter(|c| c.is_ascii_alphanumeric()).collect()
}

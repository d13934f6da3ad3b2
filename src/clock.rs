//! Timestamps. In memory an `OffsetDateTime`; in reports RFC 3339 in UTC;
//! in the database a real timestamp (PostgreSQL `timestamptz`) or, in
//! SQLite, one fixed-width UTC text form that sorts as time does
//! (`2026-11-26T10:00:00.000Z`). Liveness and age decisions (heartbeats,
//! retries, how long a file stays visible) are taken on the database's
//! clock, never on a host's: several hosts may share one database.

use time::format_description::well_known::Rfc3339;
use time::macros::format_description;
use time::OffsetDateTime;

pub use time::OffsetDateTime as Timestamp;

/// Now, on this host's clock (for what reports show, never for liveness).
pub fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}

/// Now on this host's clock, to the second (`2026-11-26T10:00:00Z`): what
/// the webhook outbox schedules by. One width, so text order is time order.
pub fn now_rfc3339() -> String {
    format_rfc3339(now())
}

/// `seconds` before now on this host's clock, in the same form (negative: after).
pub fn seconds_ago_rfc3339(seconds: i64) -> String {
    format_rfc3339(now() - time::Duration::seconds(seconds))
}

/// As reports show it, to the second: `2026-11-26T10:00:00Z`.
pub fn format_rfc3339(at: OffsetDateTime) -> String {
    let at = at.to_offset(time::UtcOffset::UTC);
    let at = at.replace_nanosecond(0).unwrap_or(at);
    at.format(&Rfc3339).unwrap_or_else(|_| "1970-01-01T00:00:00Z".into())
}

/// The fixed-width text form SQLite keeps (milliseconds, UTC), which is
/// also what `strftime('%Y-%m-%dT%H:%M:%fZ', 'now')` gives.
pub fn format_stored(at: OffsetDateTime) -> String {
    let format = format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");
    at.to_offset(time::UtcOffset::UTC).format(&format).unwrap_or_else(|_| "1970-01-01T00:00:00.000Z".into())
}

/// Reads an RFC 3339 timestamp (any of the forms stored over time).
pub fn parse(text: &str) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(text, &Rfc3339).ok()
}

/// A compact form for file names: `20261126T100000Z`.
pub fn compact(at: OffsetDateTime) -> String {
    format_rfc3339(at).chars().filter(|c| c.is_ascii_alphanumeric()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stored_form_has_one_width_and_sorts_as_time_does() {
        let a = parse("2026-11-26T10:00:00Z").unwrap();
        let b = a + time::Duration::milliseconds(5);
        let c = a + time::Duration::seconds(3600 * 24 * 400);
        let [sa, sb, sc] = [a, b, c].map(format_stored);
        assert_eq!(sa, "2026-11-26T10:00:00.000Z");
        assert!(sa < sb && sb < sc && sa.len() == sb.len() && sb.len() == sc.len());
        assert_eq!(parse(&sb), Some(b));
        assert_eq!(compact(b), "20261126T100000Z");
    }
}

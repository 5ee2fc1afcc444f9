//! Instants as integer milliseconds since the Unix epoch (what the store keeps),
//! and their RFC 3339 form (what the API shows).

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Milliseconds since 1970-01-01T00:00:00Z.
pub type UnixMs = i64;

/// The current instant.
pub fn now_ms() -> UnixMs {
    let now = OffsetDateTime::now_utc();
    (now.unix_timestamp_nanos() / 1_000_000) as UnixMs
}

/// RFC 3339 in UTC with millisecond precision, e.g. `2026-11-23T06:10:05.123Z`.
pub fn to_rfc3339(ms: UnixMs) -> String {
    let dt = OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000).unwrap_or(OffsetDateTime::UNIX_EPOCH);
    let mut s = dt
        .replace_nanosecond((ms.rem_euclid(1000) as u32) * 1_000_000)
        .unwrap_or(dt)
        .format(&Rfc3339)
        .unwrap_or_default();
    // `time` prints the fraction only when it is non-zero; keep the form stable.
    if !s.contains('.') {
        s = s.replacen('Z', ".000Z", 1);
    }
    s
}

/// Parses an RFC 3339 instant (any offset) into milliseconds.
pub fn parse_rfc3339(s: &str) -> Option<UnixMs> {
    let dt = OffsetDateTime::parse(s, &Rfc3339).ok()?;
    Some((dt.unix_timestamp_nanos() / 1_000_000) as UnixMs)
}

//! Instants as integer milliseconds since the Unix epoch (what the store keeps),
//! and their RFC 3339 form (what the API shows).

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Milliseconds since 1970-01-01T00:00:00Z.
pub type UnixMs = i64;

/// Added to the clock: 0 except in tests that move time (the binary sets it
/// from `KEYWARD_TEST_CLOCK_FILE`, and says so loudly at start).
static SKEW_MS: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(0);

/// Moves this process's clock `ms` ahead of the system's (tests only).
pub fn set_skew_ms(ms: i64) {
    SKEW_MS.store(ms, std::sync::atomic::Ordering::Relaxed);
}

/// The current instant.
pub fn now_ms() -> UnixMs {
    let now = OffsetDateTime::now_utc();
    (now.unix_timestamp_nanos() / 1_000_000) as UnixMs + SKEW_MS.load(std::sync::atomic::Ordering::Relaxed)
}

/// RFC 3339 in UTC with exactly three fraction digits, e.g.
/// `2026-11-23T06:10:05.120Z`: a fixed width, so instants sort as strings
/// (`time`'s own RFC 3339 form drops trailing zeros: `05.12Z` sorted after
/// `05.123Z`).
pub fn to_rfc3339(ms: UnixMs) -> String {
    const FORMAT: &[time::format_description::BorrowedFormatItem<'_>] =
        time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");
    let dt = OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000).unwrap_or(OffsetDateTime::UNIX_EPOCH);
    dt.format(FORMAT).unwrap_or_default()
}

/// Parses an RFC 3339 instant (any offset) into milliseconds.
pub fn parse_rfc3339(s: &str) -> Option<UnixMs> {
    let dt = OffsetDateTime::parse(s, &Rfc3339).ok()?;
    Some((dt.unix_timestamp_nanos() / 1_000_000) as UnixMs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instants_have_a_fixed_width_and_round_trip() {
        for (ms, text) in [
            (0, "1970-01-01T00:00:00.000Z"),
            (1_796_162_396_120, "2026-12-01T21:59:56.120Z"),
            (1_796_162_396_123, "2026-12-01T21:59:56.123Z"),
            (1_796_162_396_100, "2026-12-01T21:59:56.100Z"),
        ] {
            assert_eq!(to_rfc3339(ms), text);
            assert_eq!(parse_rfc3339(text), Some(ms));
        }
        assert!(to_rfc3339(1_796_162_396_120) < to_rfc3339(1_796_162_396_123));
    }
}

//! The usage event: one per verification (and later per proxied request).
//! It names the key by id and hint, never by value; for a presented string
//! that matched no key it keeps only a fingerprint (a truncated HMAC), so
//! repeated attempts with the same wrong string can be correlated.

use serde::{Deserialize, Serialize};

use crate::outcome::Outcome;
use crate::time::UnixMs;

/// What produced an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    Verify,
    Proxy,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Verify => "verify",
            EventKind::Proxy => "proxy",
        }
    }

    pub fn parse(s: &str) -> EventKind {
        if s == "proxy" { EventKind::Proxy } else { EventKind::Verify }
    }
}

/// One use of a key (or an attempt at one).
#[derive(Debug, Clone, PartialEq)]
pub struct UsageEvent {
    /// Position in the log, assigned when written (0 before).
    pub id: i64,
    pub ts: UnixMs,
    pub kind: EventKind,
    pub request_id: String,
    pub workspace_id: String,
    pub keyspace_id: Option<String>,
    pub key_id: Option<String>,
    pub key_hint: Option<String>,
    pub owner_id: Option<String>,
    /// For `MALFORMED`/`NOT_FOUND`: a truncated HMAC of the presented string.
    pub fingerprint: Option<String>,
    pub source_ip: Option<String>,
    pub user_agent: Option<String>,
    pub method: Option<String>,
    pub path: Option<String>,
    pub outcome: Outcome,
    /// The final HTTP status of the request, when reported or proxied.
    pub http_status: Option<u16>,
    /// Why the key was refused, for people.
    pub error: Option<String>,
    pub bytes_in: Option<u64>,
    pub bytes_out: Option<u64>,
    /// Latency of the whole request in microseconds, when reported or proxied.
    pub latency_us: Option<u64>,
    /// The source address's country (ISO 3166-1 alpha-2) and autonomous
    /// system, when IP enrichment is configured.
    pub country: Option<String>,
    pub asn: Option<u32>,
    pub as_org: Option<String>,
    /// In memory only, for the rules engine (not stored): an admitted old key
    /// in its rotation overlap.
    pub deprecated: bool,
    /// In memory only, for the rules engine (not stored): the scopes the
    /// request asked for (given, and required by the keyspace's path rules).
    pub scopes: Vec<String>,
}

/// What an application reports about a request it verified.
#[derive(Debug, Clone, PartialEq)]
pub struct UsageReport {
    pub request_id: String,
    pub workspace_id: String,
    pub http_status: Option<u16>,
    pub bytes_in: Option<u64>,
    pub bytes_out: Option<u64>,
    pub latency_us: Option<u64>,
}

impl UsageEvent {
    /// Applies a usage report's fields that are set.
    pub fn apply(&mut self, r: &UsageReport) {
        if r.http_status.is_some() {
            self.http_status = r.http_status;
        }
        if r.bytes_in.is_some() {
            self.bytes_in = r.bytes_in;
        }
        if r.bytes_out.is_some() {
            self.bytes_out = r.bytes_out;
        }
        if r.latency_us.is_some() {
            self.latency_us = r.latency_us;
        }
    }
}

/// Makes caller-given text safe to keep in an event: drops a query string
/// from paths, cuts anything key-shaped (see [`crate::redact`]; `prefixes`
/// are the known prefixes of imported keys), and caps the length.
pub fn scrub(text: &str, is_path: bool, max: usize, prefixes: &[String]) -> String {
    let text = if is_path { text.split(['?', '#']).next().unwrap_or("") } else { text };
    // Cap before the search too, so its cost is bounded whatever was sent.
    let mut out = crate::redact::redact(cap(text, max.saturating_mul(2)), prefixes);
    out.truncate(cap(&out, max).len());
    out
}

/// The longest prefix of `s` of at most `max` bytes that ends on a char boundary.
fn cap(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut cut = max;
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    &s[..cut]
}

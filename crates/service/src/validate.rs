//! Validation of every request shape, in one place: each helper names the
//! field and the rule it broke, and never repeats a key-shaped value (see
//! [`shown`]). Handlers only extract and call; use cases call these first.

use std::net::IpAddr;

use keyward_core::KeyPrefix;
use keyward_core::key::ROOT_PREFIX;
use keyward_core::policy::{self, MAX_PATH_LEN, MAX_PATH_SEGMENTS, MAX_SCOPES, PathRule, RateLimit, Refill};
use keyward_core::redact;
use keyward_core::time::{UnixMs, parse_rfc3339};
use serde_json::Value;

use crate::{Result, ServiceError};

const MAX_META_BYTES: usize = 16 * 1024;
const MAX_TTL_MS: i64 = 100 * 365 * 24 * 3600 * 1000;

pub(crate) fn invalid(msg: impl Into<String>) -> ServiceError {
    ServiceError::Invalid(msg.into())
}

pub(crate) fn check_text(field: &str, v: &str, max: usize) -> Result<()> {
    if v.trim().is_empty() {
        return Err(invalid(format!("{field} must not be empty")));
    }
    if v.chars().count() > max {
        return Err(invalid(format!("{field} must be at most {max} characters")));
    }
    if v.chars().any(char::is_control) {
        return Err(invalid(format!("{field} must not contain control characters")));
    }
    no_secret(field, v)
}

/// Refuses text that holds anything key-shaped: names, owners, notes and meta
/// are stored, audited and exported, and a key must reach none of them.
pub(crate) fn no_secret(field: &str, v: &str) -> Result<()> {
    if redact::holds_secret(v, &[]) {
        return Err(invalid(format!(
            "{field} holds what looks like an API key or another secret; keys must never be stored in names, \
             owners, notes or meta (revoke it if it was real)"
        )));
    }
    Ok(())
}

pub(crate) fn check_opt_text(field: &str, v: &Option<String>, max: usize) -> Result<()> {
    v.as_deref().map_or(Ok(()), |v| check_text(field, v, max))
}

pub(crate) fn check_meta(v: &Value) -> Result<()> {
    if !v.is_object() {
        return Err(invalid("meta must be a JSON object"));
    }
    let text = v.to_string();
    if text.len() > MAX_META_BYTES {
        return Err(invalid(format!("meta must be at most {MAX_META_BYTES} bytes as JSON")));
    }
    no_secret("meta", &text)
}

pub(crate) fn check_ttl(field: &str, ttl: i64) -> Result<()> {
    if !(1..=MAX_TTL_MS).contains(&ttl) {
        return Err(invalid(format!("{field} must be between 1 and {MAX_TTL_MS} milliseconds")));
    }
    Ok(())
}

/// Shows a client-given value in an error only when it is short, plain and
/// nothing like a key (a key pasted into the wrong field must not come back
/// in the answer, nor reach the log through it); otherwise names no value.
pub(crate) fn shown(v: &str) -> String {
    let plain = v.len() <= 32 && !v.chars().any(char::is_control) && !redact::holds_secret(v, &[]);
    if plain { format!("{v:?}") } else { "the value".into() }
}

pub(crate) fn check_scopes(field: &str, v: &[String]) -> Result<()> {
    if v.len() > MAX_SCOPES {
        return Err(invalid(format!("{field} may hold at most {MAX_SCOPES} scopes")));
    }
    for (i, s) in v.iter().enumerate() {
        if !policy::valid_scope(s) || redact::holds_secret(s, &[]) {
            return Err(invalid(format!(
                "{field}[{i}]: {} is not a scope; use read, write, admin, or resource:action such as invoices:read or invoices:*",
                shown(s)
            )));
        }
    }
    Ok(())
}

/// Validates CIDRs and returns them in canonical form (host bits cleared,
/// bare addresses as /32 or /128, IPv4-mapped IPv6 as IPv4).
pub(crate) fn check_cidrs(field: &str, v: &[String]) -> Result<Vec<String>> {
    if v.len() > 256 {
        return Err(invalid(format!("{field} may hold at most 256 entries")));
    }
    v.iter()
        .enumerate()
        .map(|(i, c)| {
            policy::parse_cidr(c).map(|n| n.to_string()).ok_or_else(|| {
                invalid(format!(
                    "{field}[{i}]: {} is not an IPv4 or IPv6 CIDR such as 10.0.0.0/8 or 2001:db8::/32",
                    shown(c)
                ))
            })
        })
        .collect()
}

pub(crate) fn check_ratelimits(field: &str, v: &[RateLimit]) -> Result<()> {
    if v.len() > 8 {
        return Err(invalid(format!("{field} may hold at most 8 windows")));
    }
    for (i, r) in v.iter().enumerate() {
        check_text(&format!("{field}[{i}].name"), &r.name, 64)?;
        if v[..i].iter().any(|o| o.name == r.name) {
            return Err(invalid(format!("{field}[{i}].name: {} is used twice", shown(&r.name))));
        }
        if r.limit == 0 || r.limit > 1_000_000_000 {
            return Err(invalid(format!("{field}[{i}].limit must be between 1 and 1000000000")));
        }
        if !(1..=31 * 24 * 3600 * 1000).contains(&r.window_ms) {
            return Err(invalid(format!("{field}[{i}].window_ms must be between 1 and 2678400000 (31 days)")));
        }
    }
    Ok(())
}

pub(crate) fn check_quota(remaining: Option<i64>, refill: Option<&Refill>) -> Result<()> {
    if remaining.is_some_and(|r| r < 0) {
        return Err(invalid("remaining must not be negative"));
    }
    if let Some(r) = refill {
        if r.interval_ms < 1000 || r.interval_ms > MAX_TTL_MS {
            return Err(invalid("refill.interval_ms must be at least 1000"));
        }
        if r.amount < 0 {
            return Err(invalid("refill.amount must not be negative"));
        }
    }
    Ok(())
}

/// Checks path rules and puts their patterns in normal form (see
/// `core::policy::normalize_pattern`).
pub(crate) fn check_rules(v: &mut [PathRule]) -> Result<()> {
    if v.len() > 64 {
        return Err(invalid("path_rules may hold at most 64 rules"));
    }
    for (i, r) in v.iter_mut().enumerate() {
        r.pattern =
            policy::normalize_pattern(&r.pattern).map_err(|e| invalid(format!("path_rules[{i}].pattern {e}")))?;
        if r.scopes.is_empty() {
            return Err(invalid(format!("path_rules[{i}].scopes must name at least one scope")));
        }
        check_scopes(&format!("path_rules[{i}].scopes"), &r.scopes)?;
        for m in r.methods.iter().flatten() {
            if m.is_empty() || m.len() > 16 || !m.bytes().all(|b| b.is_ascii_uppercase()) {
                return Err(invalid(format!("path_rules[{i}].methods: {} is not an upper-case HTTP method", shown(m))));
            }
        }
    }
    Ok(())
}

pub(crate) fn parse_instant(field: &str, s: &str) -> Result<UnixMs> {
    parse_rfc3339(s).ok_or_else(|| invalid(format!("{field} must be an RFC 3339 instant such as 2030-01-31T12:00:00Z")))
}

pub(crate) fn parse_prefix(s: &str) -> Result<KeyPrefix> {
    if s == ROOT_PREFIX {
        return Err(invalid("prefix kw_root is reserved for root keys"));
    }
    KeyPrefix::new(s).map_err(|e| invalid(format!("prefix: {e}")))
}

pub(crate) fn page_limit(limit: Option<u32>) -> Result<u32> {
    match limit.unwrap_or(100) {
        l @ 1..=1000 => Ok(l),
        _ => Err(invalid("limit must be between 1 and 1000")),
    }
}

pub(crate) fn to_value<T: serde::Serialize>(v: &T) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
}

/// Largest `cost` a verify may count.
pub const MAX_COST: u32 = 1_000_000;

/// The checked fields of a verify request (the key itself is judged by the
/// verify path: a bad key is a decision, `MALFORMED`, not a 400).
#[derive(Debug, Clone, Copy)]
pub struct VerifyFields {
    pub ip: Option<IpAddr>,
    pub cost: u64,
}

/// Checks a verify's `ip`, `method`, `path`, `scopes` and `cost`.
pub fn verify_fields(
    ip: Option<&str>,
    method: Option<&str>,
    path: Option<&str>,
    scopes: &[String],
    cost: Option<u32>,
) -> Result<VerifyFields> {
    let ip = ip.map(|s| s.parse::<IpAddr>().map_err(|_| invalid("ip is not an IPv4 or IPv6 address"))).transpose()?;
    if let Some(m) = method
        && (m.is_empty() || m.len() > 16 || !m.bytes().all(|b| b.is_ascii_alphabetic()))
    {
        return Err(invalid("method must be an HTTP method such as GET or POST"));
    }
    if let Some(p) = path {
        if !p.starts_with('/') || p.len() > MAX_PATH_LEN {
            return Err(invalid(format!("path must start with / and be at most {MAX_PATH_LEN} bytes")));
        }
        if p.split('/').filter(|s| !s.is_empty()).count() > MAX_PATH_SEGMENTS {
            return Err(invalid(format!("path may have at most {MAX_PATH_SEGMENTS} segments")));
        }
    }
    check_scopes("scopes", scopes)?;
    let cost = cost.unwrap_or(1);
    if cost > MAX_COST {
        return Err(invalid(format!("cost must be between 0 and {MAX_COST}")));
    }
    Ok(VerifyFields { ip, cost: u64::from(cost) })
}

#[cfg(test)]
mod tests;

/// A page cursor that is an id of `kind` (`key`, `inc`, …), as the lists return.
pub(crate) fn id_cursor(kind: &str, cursor: Option<&str>) -> Result<()> {
    match cursor {
        Some(c) if !keyward_core::id::is_id(kind, c) => Err(invalid("cursor is not one this API returned")),
        _ => Ok(()),
    }
}

/// A page cursor that is a positive sequence number (events, audit).
pub(crate) fn seq_cursor(cursor: Option<&str>) -> Result<Option<i64>> {
    cursor
        .map(|c| match c.parse::<i64>() {
            Ok(n) if n >= 0 => Ok(n),
            _ => Err(invalid("cursor is not one this API returned")),
        })
        .transpose()
}

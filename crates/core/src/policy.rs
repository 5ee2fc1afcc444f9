//! Access policy on the verify path, all pure: IP allowlists, scopes (method
//! presets, custom `resource:action` scopes with wildcards, keyspace path
//! rules), rate-limit windows and usage quotas. Time is passed in.
//!
//! Order of checks (see `service::verify`): MALFORMED → NOT_FOUND →
//! REVOKED → ROTATED → DISABLED → EXPIRED → IP_NOT_ALLOWED → FORBIDDEN → RATE_LIMITED →
//! USAGE_EXCEEDED. Limits and quota are checked together and consumed only
//! when both admit, so a denied request consumes nothing.

use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::outcome::Outcome;
use crate::time::UnixMs;

/// The preset that grants every scope.
pub const ADMIN: &str = "admin";
/// The preset required by GET and HEAD.
pub const READ: &str = "read";
/// The preset required by POST, PUT, PATCH and DELETE.
pub const WRITE: &str = "write";
/// Most scopes a key or rule may carry.
pub const MAX_SCOPES: usize = 64;

// ---------------------------------------------------------------- IP

/// Parses one allowlist entry: a CIDR (`10.0.0.0/8`, `2001:db8::/32`) or a bare
/// address (a /32 or /128). Host bits are cleared; an IPv4-mapped IPv6 network
/// (`::ffff:10.0.0.0/104`) becomes the IPv4 network it names.
pub fn parse_cidr(s: &str) -> Option<IpNet> {
    let s = s.trim();
    let net: IpNet = match s.parse::<IpNet>() {
        Ok(n) => n,
        Err(_) => IpNet::from(s.parse::<IpAddr>().ok()?),
    };
    let net = net.trunc();
    if let IpNet::V6(v6) = net
        && let Some(v4) = v6.addr().to_ipv4_mapped()
        && v6.prefix_len() >= 96
    {
        return ipnet::Ipv4Net::new(v4, v6.prefix_len() - 96).ok().map(IpNet::V4);
    }
    Some(net)
}

/// Whether `ip` falls in any of `nets`. An IPv4-mapped IPv6 address is
/// matched as the IPv4 address it carries.
pub fn ip_allowed(nets: &[IpNet], ip: IpAddr) -> bool {
    let ip = ip.to_canonical();
    nets.iter().any(|n| n.contains(&ip))
}

// ---------------------------------------------------------------- scopes

/// Whether `s` is an acceptable scope: a preset, or words of
/// `[A-Za-z0-9_.-]` joined by `:`, the last of which may be `*`.
pub fn valid_scope(s: &str) -> bool {
    if s.is_empty() || s.len() > 64 {
        return false;
    }
    let parts: Vec<&str> = s.split(':').collect();
    parts.iter().enumerate().all(|(i, p)| {
        (*p == "*" && i == parts.len() - 1 && i > 0)
            || (!p.is_empty() && p.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-')))
    })
}

/// Whether a granted scope covers a required one: `admin` covers all; equal
/// scopes match; `invoices:*` covers `invoices:read` and `invoices:lines:add`.
pub fn covers(granted: &str, required: &str) -> bool {
    if granted == ADMIN || granted == required {
        return true;
    }
    match granted.strip_suffix('*') {
        Some(prefix) if prefix.ends_with(':') => required.starts_with(prefix) && required.len() > prefix.len(),
        _ => false,
    }
}

/// The preset an HTTP method needs: `read` for GET/HEAD, `write` for
/// POST/PUT/PATCH/DELETE, `admin` for anything else (OPTIONS, TRACE, …).
pub fn method_scope(method: &str) -> &'static str {
    match method.to_ascii_uppercase().as_str() {
        "GET" | "HEAD" => READ,
        "POST" | "PUT" | "PATCH" | "DELETE" => WRITE,
        _ => ADMIN,
    }
}

/// A keyspace rule: requests whose path matches `pattern` (and whose method
/// is in `methods`, when given) also need `scopes`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PathRule {
    /// `/`-separated; `*` matches one segment, `**` any number (even none).
    pub pattern: String,
    pub scopes: Vec<String>,
    /// Upper-case HTTP methods; absent means every method.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub methods: Option<Vec<String>>,
}

/// Normalizes a request path for matching: drops the query, decodes
/// percent-escapes (but not `%2F`), collapses empty and `.` segments and
/// resolves `..`, so `/public/../admin` is judged as `/admin`.
pub fn normalize_path(path: &str) -> Vec<String> {
    let path = path.split(['?', '#']).next().unwrap_or("");
    let mut out: Vec<String> = Vec::new();
    for seg in path.split('/') {
        let seg = percent_decode(seg);
        match seg.as_str() {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            _ => out.push(seg),
        }
    }
    out
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hex = std::str::from_utf8(&b[i + 1..i + 3]).ok().and_then(|h| u8::from_str_radix(h, 16).ok());
            if let Some(v) = hex.filter(|&v| v != b'/') {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Most segments a path pattern may have.
pub const MAX_PATTERN_SEGMENTS: usize = 32;
/// Most `**` a path pattern may hold (after `**/**` is folded into one).
pub const MAX_PATTERN_GLOBSTARS: usize = 4;
/// Longest path pattern, in bytes.
pub const MAX_PATTERN_LEN: usize = 512;
/// Longest request path a verify may give, in bytes.
pub const MAX_PATH_LEN: usize = 4096;
/// Most segments a request path may have.
pub const MAX_PATH_SEGMENTS: usize = 256;

/// Why a path pattern was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatternError {
    /// It does not start with `/`.
    Start,
    /// It holds `?` or `#`.
    Query,
    /// Longer than [`MAX_PATTERN_LEN`].
    Length,
    /// More than [`MAX_PATTERN_SEGMENTS`] segments.
    Segments,
    /// More than [`MAX_PATTERN_GLOBSTARS`] `**`.
    Globstars,
    /// A segment mixes `*` with other characters (`a*b`, `***`).
    Wildcard,
}

impl std::fmt::Display for PatternError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PatternError::Start => "must start with /",
            PatternError::Query => "must not hold ? or #",
            PatternError::Length => "must be at most 512 bytes",
            PatternError::Segments => "may have at most 32 segments",
            PatternError::Globstars => "may hold ** at most 4 times",
            PatternError::Wildcard => {
                "segments are literal, * (one segment) or ** (any number): * cannot be mixed with text"
            }
        })
    }
}

/// Checks a path pattern and returns its normal form: empty segments
/// dropped and runs of `**` folded into one (`/a//**/**/b` → `/a/**/b`),
/// which matches exactly the same paths.
pub fn normalize_pattern(p: &str) -> Result<String, PatternError> {
    if !p.starts_with('/') {
        return Err(PatternError::Start);
    }
    if p.contains(['?', '#']) {
        return Err(PatternError::Query);
    }
    if p.len() > MAX_PATTERN_LEN {
        return Err(PatternError::Length);
    }
    let mut segs: Vec<&str> = Vec::new();
    for seg in p.split('/').filter(|s| !s.is_empty()) {
        if seg.contains('*') && seg != "*" && seg != "**" {
            return Err(PatternError::Wildcard);
        }
        if seg == "**" && segs.last() == Some(&"**") {
            continue;
        }
        segs.push(seg);
    }
    if segs.len() > MAX_PATTERN_SEGMENTS {
        return Err(PatternError::Segments);
    }
    if segs.iter().filter(|s| **s == "**").count() > MAX_PATTERN_GLOBSTARS {
        return Err(PatternError::Globstars);
    }
    Ok(format!("/{}", segs.join("/")))
}

/// Whether normalized path segments match a pattern: `*` is one segment,
/// `**` any number (even none), anything else a literal segment.
///
/// Dynamic programming over (pattern segment, path position): the cost is
/// O(pattern segments × path segments) whatever the input, with no
/// backtracking (a recursive matcher is exponential in the number of `**`).
pub fn path_matches(pattern: &str, segs: &[String]) -> bool {
    // reach[j]: the pattern read so far can match exactly segs[..j].
    let mut reach = vec![false; segs.len() + 1];
    reach[0] = true;
    for p in pattern.split('/').filter(|p| !p.is_empty()) {
        match p {
            "**" => {
                // Any number of segments: reachable from any earlier position.
                let mut any = false;
                for r in reach.iter_mut() {
                    any |= *r;
                    *r = any;
                }
            }
            _ => {
                // One segment: position j+1 from position j, right to left so
                // each step reads the previous pattern segment's positions.
                for j in (0..segs.len()).rev() {
                    reach[j + 1] = reach[j] && (p == "*" || segs[j] == p);
                }
                reach[0] = false;
            }
        }
        if !reach.iter().any(|r| *r) {
            return false;
        }
    }
    reach[segs.len()]
}

/// Checks a path pattern's syntax and bounds (see [`normalize_pattern`]).
pub fn valid_pattern(p: &str) -> bool {
    normalize_pattern(p).is_ok()
}

/// What a verify asks for, as far as scopes go.
#[derive(Debug, Clone, Copy, Default)]
pub struct ScopeRequest<'a> {
    pub method: Option<&'a str>,
    pub path: Option<&'a str>,
    pub scopes: &'a [String],
}

/// The required scopes the key lacks, in the order they were required:
/// the method preset, then matching path rules, then explicit scopes.
pub fn missing_scopes(granted: &[String], rules: &[PathRule], req: &ScopeRequest<'_>) -> Vec<String> {
    let mut missing: Vec<String> = Vec::new();
    let mut need = |s: &str| {
        if !granted.iter().any(|g| covers(g, s)) && !missing.iter().any(|m| m == s) {
            missing.push(s.to_owned());
        }
    };
    if let Some(m) = req.method {
        need(method_scope(m));
    }
    if let Some(p) = req.path
        && !rules.is_empty()
    {
        let segs = normalize_path(p);
        for r in rules {
            let method_ok = match (&r.methods, req.method) {
                (None, _) => true,
                (Some(ms), Some(m)) => ms.iter().any(|x| x.eq_ignore_ascii_case(m)),
                // A rule limited to some methods applies when the method is unknown.
                (Some(_), None) => true,
            };
            if method_ok && path_matches(&r.pattern, &segs) {
                for s in &r.scopes {
                    need(s);
                }
            }
        }
    }
    for s in req.scopes {
        need(s);
    }
    missing
}

// ---------------------------------------------------------------- limits

/// One rate-limit window of a key: at most `limit` units per `window_ms`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    pub name: String,
    pub limit: u64,
    pub window_ms: i64,
}

/// Buckets per window: the window is tracked at 1/20 of its length.
const BUCKETS: i64 = 20;

/// A sliding window kept as `n + 1` buckets of width `w`, with `n * w >=
/// window`. The count sums every bucket that any part of the last `window`
/// could fall in, so it never undercounts: in no interval of length `window`
/// are more than `limit` units admitted. The price is that a unit is
/// remembered up to one bucket (1/20 of the window) longer than strictly needed.
#[derive(Debug, Clone)]
pub struct WindowCounter {
    width: i64,
    ring: Vec<u64>,
    head: i64,
}

impl WindowCounter {
    pub fn new(window_ms: i64) -> Self {
        let window_ms = window_ms.max(1);
        let n = BUCKETS.min(window_ms);
        let width = (window_ms + n - 1) / n;
        WindowCounter { width, ring: vec![0; n as usize + 1], head: i64::MIN }
    }

    fn advance(&mut self, now: UnixMs) {
        let c = now.div_euclid(self.width);
        if self.head == i64::MIN || c - self.head >= self.ring.len() as i64 {
            self.ring.iter_mut().for_each(|b| *b = 0);
        } else {
            for k in self.head + 1..=c {
                let i = k.rem_euclid(self.ring.len() as i64) as usize;
                self.ring[i] = 0;
            }
        }
        if c > self.head || self.head == i64::MIN {
            self.head = c;
        }
    }

    /// Units counted in the window at `now`.
    pub fn count(&mut self, now: UnixMs) -> u64 {
        self.advance(now);
        self.ring.iter().sum()
    }

    pub fn add(&mut self, now: UnixMs, units: u64) {
        self.advance(now);
        let i = self.head.rem_euclid(self.ring.len() as i64) as usize;
        self.ring[i] += units;
    }

    /// When the oldest counted unit stops counting (`now` if none is counted).
    pub fn reset_at(&mut self, now: UnixMs) -> UnixMs {
        self.advance(now);
        let n = self.ring.len() as i64;
        for k in self.head - (n - 1)..=self.head {
            if self.ring[k.rem_euclid(n) as usize] > 0 {
                return (k + n) * self.width;
            }
        }
        now
    }
}

/// Periodic refill of a quota: every `interval_ms`, `remaining` is set back to `amount`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Refill {
    pub interval_ms: i64,
    pub amount: i64,
}

/// A usage quota.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    pub remaining: i64,
    pub refill: Option<Refill>,
    /// When the quota was last refilled (or set).
    pub refilled_at: UnixMs,
}

impl Quota {
    /// Applies any refills due by `now`.
    pub fn refill_due(&mut self, now: UnixMs) -> bool {
        match self.refill {
            Some(r) if r.interval_ms > 0 && now >= self.refilled_at + r.interval_ms => {
                let periods = (now - self.refilled_at) / r.interval_ms;
                self.refilled_at += periods * r.interval_ms;
                self.remaining = r.amount;
                true
            }
            _ => false,
        }
    }
}

/// The limit state of one key: its windows and its quota.
#[derive(Debug, Clone)]
pub struct Limiter {
    pub windows: Vec<(RateLimit, WindowCounter)>,
    pub quota: Option<Quota>,
    /// Set when the quota changed and must be written to the store.
    pub quota_dirty: bool,
}

/// The state of the window shown to the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WindowReport {
    pub name: String,
    pub limit: u64,
    pub window_ms: i64,
    pub remaining: u64,
    pub reset: UnixMs,
}

/// The IETF rate-limit header fields of a decision
/// (draft-ietf-httpapi-ratelimit-headers): `RateLimit-Policy` says what the
/// window is (`q` units per `w` seconds), `RateLimit` how much is left (`r`)
/// and in how many seconds it frees up (`t`). Text only: the HTTP crates set
/// the headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimitFields {
    pub policy: String,
    pub state: String,
    /// Seconds to wait, for a refused request's `Retry-After`.
    pub retry_after: Option<u64>,
}

impl RateLimitFields {
    /// (lower-case header name, value) pairs: `ratelimit-policy`,
    /// `ratelimit`, and `retry-after` when refused and `retry` is asked for.
    pub fn headers(&self, retry: bool) -> Vec<(&'static str, String)> {
        let mut h = vec![("ratelimit-policy", self.policy.clone()), ("ratelimit", self.state.clone())];
        if let (true, Some(s)) = (retry, self.retry_after) {
            h.push(("retry-after", s.to_string()));
        }
        h
    }
}

impl WindowReport {
    /// The header fields of this window at `now`; `refused` adds `Retry-After`.
    pub fn fields(&self, now: UnixMs, refused: bool) -> RateLimitFields {
        // The name goes in a quoted string: keep it to what needs no escaping.
        let name: String =
            self.name.chars().filter(|c| c.is_ascii_graphic() && *c != '"' && *c != '\\').take(64).collect();
        let w = (self.window_ms.max(1000) + 999) / 1000;
        let t = ((self.reset - now).max(0) + 999) / 1000;
        RateLimitFields {
            policy: format!("\"{name}\";q={};w={w}", self.limit),
            state: format!("\"{name}\";r={};t={t}", self.remaining),
            retry_after: refused.then_some(t.max(1) as u64),
        }
    }
}

/// The limits' verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admission {
    pub outcome: Outcome,
    /// The most constrained window (the one that refused, if one did).
    pub window: Option<WindowReport>,
    /// Quota left after this request, when the key has one.
    pub remaining: Option<i64>,
}

impl Limiter {
    pub fn new(limits: &[RateLimit], quota: Option<Quota>) -> Self {
        Limiter {
            windows: limits.iter().map(|l| (l.clone(), WindowCounter::new(l.window_ms))).collect(),
            quota,
            quota_dirty: false,
        }
    }

    /// Follows a change of the windows' definition. A window with the same
    /// name and length keeps its count (a new limit applies to what was
    /// already used); any other window starts empty.
    pub fn reconfigure(&mut self, limits: &[RateLimit]) {
        let same = self.windows.len() == limits.len() && self.windows.iter().zip(limits).all(|((a, _), b)| a == b);
        if !same {
            let mut old = std::mem::take(&mut self.windows);
            self.windows = limits
                .iter()
                .map(|l| match old.iter().position(|(o, _)| o.name == l.name && o.window_ms == l.window_ms) {
                    Some(i) => {
                        let (_, counter) = old.swap_remove(i);
                        (l.clone(), counter)
                    }
                    None => (l.clone(), WindowCounter::new(l.window_ms)),
                })
                .collect();
        }
    }

    /// Admits `cost` units if every window and the quota allow it, and then
    /// consumes them everywhere; otherwise consumes nothing.
    pub fn admit(&mut self, now: UnixMs, cost: u64) -> Admission {
        let mut tightest: Option<WindowReport> = None;
        let mut refused: Option<WindowReport> = None;
        for (spec, counter) in &mut self.windows {
            let used = counter.count(now);
            let ok = used.saturating_add(cost) <= spec.limit;
            let report = WindowReport {
                name: spec.name.clone(),
                limit: spec.limit,
                window_ms: spec.window_ms,
                remaining: spec.limit.saturating_sub(used + if ok { cost } else { 0 }),
                reset: counter.reset_at(now).max(now),
            };
            if !ok && refused.is_none() {
                refused = Some(report);
            } else if tightest.as_ref().is_none_or(|t| report.remaining < t.remaining) {
                tightest = Some(report);
            }
        }
        if let Some(mut r) = refused {
            // The refusing window frees up when its oldest unit leaves, or
            // later if the cost needs more than one bucket to drain.
            r.reset = r.reset.max(now + 1);
            return Admission {
                outcome: Outcome::RateLimited,
                window: Some(r),
                remaining: self.quota.map(|q| q.remaining),
            };
        }
        if let Some(q) = &mut self.quota {
            if q.refill_due(now) {
                self.quota_dirty = true;
            }
            if q.remaining < cost as i64 {
                return Admission { outcome: Outcome::UsageExceeded, window: tightest, remaining: Some(q.remaining) };
            }
        }
        for (_, counter) in &mut self.windows {
            counter.add(now, cost);
        }
        let remaining = self.quota.as_mut().map(|q| {
            if cost > 0 {
                q.remaining -= cost as i64;
            }
            q.remaining
        });
        if cost > 0 && self.quota.is_some() {
            self.quota_dirty = true;
        }
        Admission { outcome: Outcome::Valid, window: tightest, remaining }
    }
}

#[cfg(test)]
mod tests;

//! The rules engine: bounded state per key and per source address, fed one
//! usage event at a time (in the order the event writer wrote them), and
//! findings out: "this rule, for this subject, at this severity, because of
//! this figure". Deduplication and the alert lifecycle are the tracker's.
//!
//! Time is the events' own (`ts`), so a replay or a test clock gives the same
//! findings as the live stream. State is bounded: a fixed set of sliding sums
//! per key and per address, distinct-value sets capped at [`DISTINCT_CAP`],
//! at most [`SEEN_CAP`] remembered addresses per key, and keys and addresses
//! idle for longer than the longest window are dropped by [`Engine::sweep`]
//! (their learned state is persisted first, see [`Learned`]).

use std::collections::HashMap;
use std::sync::Arc;

use keyward_core::Outcome;
use keyward_core::event::UsageEvent;
use keyward_core::window::SlidingSum;
use serde::{Deserialize, Serialize};

use crate::rules::{RuleId, RuleSet, RuleSettings, Severity, is_sensitive, level_for};

/// Most distinct values (addresses, user agents, networks, invalid keys)
/// remembered per window; sharing and enumeration thresholds above it cannot fire.
pub const DISTINCT_CAP: usize = 256;
/// Most addresses remembered per key for `new_ip`.
pub const SEEN_CAP: usize = 1000;

const HOUR: i64 = 3_600_000;
/// Hours in a week: the baseline learns one volume per hour of the week.
const WEEK_HOURS: usize = 168;
/// Weight of the newest hour in the learned volume.
const EWMA_ALPHA: f32 = 0.3;

/// What a rule is about.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Subject {
    Key { key_id: String, key_hint: Option<String>, keyspace_id: Option<String>, owner_id: Option<String> },
    Ip { ip: String },
}

impl Subject {
    /// The dedup name: `key:<id>` or `ip:<address>`.
    pub fn name(&self) -> String {
        match self {
            Subject::Key { key_id, .. } => format!("key:{key_id}"),
            Subject::Ip { ip } => format!("ip:{ip}"),
        }
    }

    pub fn key_id(&self) -> Option<&str> {
        match self {
            Subject::Key { key_id, .. } => Some(key_id),
            Subject::Ip { .. } => None,
        }
    }
}

/// One rule's verdict on one event.
#[derive(Debug, Clone, PartialEq)]
pub struct Finding {
    pub workspace_id: String,
    pub rule: RuleId,
    pub severity: Severity,
    pub subject: Subject,
    /// What was measured (count, bytes, percent; 1 for event rules).
    pub value: f64,
    /// The level crossed.
    pub threshold: f64,
    pub window_ms: Option<i64>,
    /// For people: what was seen.
    pub detail: String,
    /// The event that crossed it, when there is one.
    pub event_id: Option<i64>,
    pub ts: i64,
}

/// Something a use case reports that no usage event shows.
#[derive(Debug, Clone)]
pub enum Signal {
    /// A key found leaked; `source` says where.
    Leak { workspace_id: String, subject: Subject, source: String, ts: i64 },
    /// A key expires within `days` days.
    Expiring { workspace_id: String, subject: Subject, days: i64, expires_at: String, ts: i64 },
    /// A revoked key was not refused by the verify path (`code` is what it answered).
    RevocationCheckFailed { workspace_id: String, subject: Subject, code: String, ts: i64 },
    /// A failed root-key authentication from `ip`.
    RootAuthFailure { workspace_id: String, ip: String, ts: i64 },
}

/// The rules in force for an event: per key, else per keyspace, else per workspace.
#[derive(Debug, Clone, Default)]
pub struct RuleBook {
    pub default: Arc<RuleSet>,
    pub workspaces: HashMap<String, Arc<RuleSet>>,
    pub keyspaces: HashMap<String, Arc<RuleSet>>,
    pub keys: HashMap<String, Arc<RuleSet>>,
}

impl RuleBook {
    pub fn for_subject(&self, workspace: &str, keyspace: Option<&str>, key: Option<&str>) -> Arc<RuleSet> {
        key.and_then(|k| self.keys.get(k))
            .or_else(|| keyspace.and_then(|ks| self.keyspaces.get(ks)))
            .or_else(|| self.workspaces.get(workspace))
            .unwrap_or(&self.default)
            .clone()
    }
}

/// Builds the book from stored overrides: a workspace's lie over the
/// defaults, a keyspace's over its workspace's, a key's over its keyspace's.
impl RuleBook {
    pub fn build(rows: &[keyward_store::alerts::RuleOverrideRow]) -> RuleBook {
        use crate::rules::Overrides;
        let parse = |row: &keyward_store::alerts::RuleOverrideRow| -> Overrides {
            serde_json::from_value(row.rules.clone()).unwrap_or_else(|e| {
                tracing::error!(workspace_id = %row.workspace_id, target = %row.target_id, error = %e, "Stored alert rules do not parse; ignoring them.");
                Overrides::new()
            })
        };
        let mut book = RuleBook::default();
        for row in rows.iter().filter(|r| r.level == "workspace") {
            book.workspaces.insert(row.workspace_id.clone(), Arc::new(book.default.patched(&parse(row))));
        }
        for row in rows.iter().filter(|r| r.level == "keyspace") {
            let base = book.workspaces.get(&row.workspace_id).cloned().unwrap_or_else(|| book.default.clone());
            book.keyspaces.insert(row.target_id.clone(), Arc::new(base.patched(&parse(row))));
        }
        for row in rows.iter().filter(|r| r.level == "key") {
            let base = row
                .keyspace_id
                .as_ref()
                .and_then(|ks| book.keyspaces.get(ks))
                .or_else(|| book.workspaces.get(&row.workspace_id))
                .cloned()
                .unwrap_or_else(|| book.default.clone());
            book.keys.insert(row.target_id.clone(), Arc::new(base.patched(&parse(row))));
        }
        book
    }
}

/// Reads a key's learned state from where it was persisted, on the key's
/// first use since the start (or since it was dropped from memory).
pub type LearnedLoader = Box<dyn FnMut(&str) -> Option<Learned> + Send>;

/// A stable hash (persisted sets must hash alike after a restart).
fn fnv(bytes: &[u8]) -> u64 {
    keyward_core::hash::fnv1a(&[bytes])
}

/// Distinct values seen within a window, each with when it was last seen.
#[derive(Debug, Default, Clone)]
struct Distinct {
    seen: Vec<(u64, i64)>,
}

impl Distinct {
    /// Notes `value` at `now`; returns how many distinct values the window holds.
    fn note(&mut self, value: u64, now: i64, window_ms: i64) -> usize {
        let cutoff = now - window_ms;
        self.seen.retain(|(_, at)| *at > cutoff);
        let full = self.seen.len() >= DISTINCT_CAP;
        match self.seen.iter_mut().find(|(v, _)| *v == value) {
            Some(entry) => entry.1 = now,
            None if !full => self.seen.push((value, now)),
            None => {
                if let Some(oldest) = self.seen.iter_mut().min_by_key(|(_, at)| *at) {
                    *oldest = (value, now);
                }
            }
        }
        self.seen.len()
    }
}

/// Per-key counters, by what they count.
#[derive(Debug, Clone, Copy)]
enum Counter {
    PerMinute,
    Per5Minutes,
    DeniedTotal,
    Denied,
    StatusTotal,
    Status5xx,
    Bytes,
    FailedAuth,
    DeniedBurst,
}
const KEY_COUNTERS: usize = 9;

/// What a key learns and must keep across restarts: when it was first used,
/// the addresses it was used from (for `new_ip`), and its hourly volume by
/// hour of the week (for `baseline`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Learned {
    pub first_use: i64,
    /// Address hash → last seen (ms).
    pub ips: Vec<(u64, i64)>,
    /// Learned requests per hour, by hour of the week (Monday 00:00 UTC first).
    pub hourly: Vec<f32>,
    /// Hours learned per slot (saturating).
    pub samples: Vec<u8>,
    /// The hour being counted (`ts / 1 h`) and its count so far.
    pub hour: i64,
    pub hour_count: u64,
    /// Country and autonomous-system hashes → last seen (IP enrichment).
    #[serde(default)]
    pub countries: Vec<(u64, i64)>,
    #[serde(default)]
    pub asns: Vec<(u64, i64)>,
}

impl Learned {
    fn new(first_use: i64) -> Learned {
        Learned {
            first_use,
            ips: Vec::new(),
            hourly: vec![0.0; WEEK_HOURS],
            samples: vec![0; WEEK_HOURS],
            hour: first_use.div_euclid(HOUR),
            hour_count: 0,
            countries: Vec::new(),
            asns: Vec::new(),
        }
    }

    /// Whether persisted state has the shape this version reads.
    fn is_whole(&self) -> bool {
        self.hourly.len() == WEEK_HOURS && self.samples.len() == WEEK_HOURS
    }

    fn hour_of_week(hour: i64) -> usize {
        // 1970-01-01 00:00 UTC was a Thursday: 3 days after Monday 00:00.
        (hour + 72).rem_euclid(WEEK_HOURS as i64) as usize
    }

    /// Counts one request at `ts`, folding finished hours into the learned volume.
    fn count_hour(&mut self, ts: i64) -> u64 {
        let hour = ts.div_euclid(HOUR);
        if hour > self.hour {
            // The finished hour, then the silent hours after it (at most a week of them).
            let silent = (hour - self.hour - 1).min(WEEK_HOURS as i64);
            let finished = std::iter::once((self.hour, self.hour_count as f32))
                .chain((0..silent).map(|i| (hour - silent + i, 0.0)));
            for (h, count) in finished {
                let slot = Learned::hour_of_week(h);
                self.hourly[slot] = if self.samples[slot] == 0 {
                    count
                } else {
                    EWMA_ALPHA * count + (1.0 - EWMA_ALPHA) * self.hourly[slot]
                };
                self.samples[slot] = self.samples[slot].saturating_add(1);
            }
            self.hour = hour;
            self.hour_count = 0;
        }
        self.hour_count += 1;
        self.hour_count
    }

    /// Notes an address; returns whether it was seen within `lookback_ms` before.
    fn note_ip(&mut self, ip: u64, ts: i64, lookback_ms: i64) -> bool {
        note_seen(&mut self.ips, ip, ts, lookback_ms)
    }
}

/// Notes `value` in a bounded seen-list; whether it was seen within `lookback_ms` before.
fn note_seen(seen: &mut Vec<(u64, i64)>, value: u64, ts: i64, lookback_ms: i64) -> bool {
    match seen.iter_mut().find(|(h, _)| *h == value) {
        Some(entry) => {
            let known = entry.1 > ts - lookback_ms;
            entry.1 = entry.1.max(ts);
            known
        }
        None => {
            if seen.len() >= SEEN_CAP
                && let Some(oldest) = seen.iter().enumerate().min_by_key(|(_, (_, at))| *at).map(|(i, _)| i)
            {
                seen.swap_remove(oldest);
            }
            seen.push((value, ts));
            false
        }
    }
}

struct KeyState {
    workspace_id: Box<str>,
    keyspace_id: Option<Box<str>>,
    hint: Option<Box<str>>,
    owner_id: Option<Box<str>>,
    last_seen: i64,
    counters: [SlidingSum; KEY_COUNTERS],
    ips: Distinct,
    user_agents: Distinct,
    networks: Distinct,
    learned: Box<Learned>,
    /// Learned state changed since it was last taken for persistence.
    dirty: bool,
}

#[derive(Default)]
struct IpState {
    last_seen: i64,
    failed_auth: SlidingSum,
    denied_burst: SlidingSum,
    root_failures: SlidingSum,
    invalid_keys: Distinct,
}

/// Refusals of the key itself: the key is bad, not the request.
fn is_failed_auth(o: Outcome) -> bool {
    matches!(
        o,
        Outcome::Malformed
            | Outcome::NotFound
            | Outcome::Disabled
            | Outcome::Expired
            | Outcome::Revoked
            | Outcome::Rotated
            | Outcome::IpNotAllowed
    )
}

/// The key was good for this address (whatever else was refused).
fn key_admitted_from_ip(o: Outcome) -> bool {
    matches!(o, Outcome::Valid | Outcome::Forbidden | Outcome::RateLimited | Outcome::UsageExceeded)
}

/// An address's network: /24 for IPv4, /48 for IPv6 (pseudonyms are their own network).
fn network(ip: &str) -> String {
    match ip.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(v4)) => {
            let o = v4.octets();
            format!("{}.{}.{}.0/24", o[0], o[1], o[2])
        }
        Ok(std::net::IpAddr::V6(v6)) => {
            let s = v6.segments();
            format!("{:x}:{:x}:{:x}::/48", s[0], s[1], s[2])
        }
        Err(_) => ip.to_owned(),
    }
}

fn thousands(v: f64) -> String {
    let n = v.round() as i64;
    let digits = n.abs().to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 { format!("-{out}") } else { out }
}

fn duration(ms: i64) -> String {
    match ms {
        ms if ms % HOUR == 0 => format!("{} h", ms / HOUR),
        ms if ms % 60_000 == 0 => format!("{} min", ms / 60_000),
        ms => format!("{} s", ms / 1000),
    }
}

/// A source address within a workspace.
type IpId = (Box<str>, Box<str>);

/// The engine's tunables.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Most keys with state; past it the longest idle are dropped first.
    pub max_keys: usize,
    /// Most source addresses with state.
    pub max_ips: usize,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig { max_keys: 1_000_000, max_ips: 1_000_000 }
    }
}

/// The rules engine. Single-threaded: one thread feeds it in log order.
pub struct Engine {
    cfg: EngineConfig,
    book: RuleBook,
    keys: foldhash::HashMap<Box<str>, KeyState>,
    ips: foldhash::HashMap<IpId, IpState>,
    loader: LearnedLoader,
    /// Learned state of keys dropped from memory, to persist before it is lost.
    evicted: Vec<(String, String, Learned)>,
}

/// Reads a key's subject from its state.
fn key_subject(id: &str, k: &KeyState) -> Subject {
    Subject::Key {
        key_id: id.to_owned(),
        key_hint: k.hint.as_deref().map(str::to_owned),
        keyspace_id: k.keyspace_id.as_deref().map(str::to_owned),
        owner_id: k.owner_id.as_deref().map(str::to_owned),
    }
}

/// Collects findings for one event.
struct Out<'a> {
    findings: &'a mut Vec<Finding>,
    workspace_id: &'a str,
    event_id: Option<i64>,
    ts: i64,
}

impl Out<'_> {
    /// A measured rule: fires at the highest level `value` is above.
    fn measured(&mut self, rule: RuleId, s: &RuleSettings, subject: &dyn Fn() -> Subject, value: f64, what: &str) {
        if let Some(level) = level_for(&s.levels, value) {
            let window = s.window_ms.map(|w| format!(" in {}", duration(w))).unwrap_or_default();
            let unit = if matches!(rule, RuleId::DeniedRate | RuleId::ServerErrorRate) {
                format!("{value:.1} % {what}")
            } else {
                format!("{} {what}", thousands(value))
            };
            self.push(
                rule,
                level.severity,
                subject(),
                value,
                level.above,
                s.window_ms,
                format!("{unit}{window} (above {})", thousands(level.above)),
            );
        }
    }

    /// An event rule: fires at its one level.
    fn event(&mut self, rule: RuleId, s: &RuleSettings, subject: Subject, detail: String) {
        let severity = s.levels.first().map_or(Severity::Medium, |l| l.severity);
        self.push(rule, severity, subject, 1.0, 0.0, None, detail);
    }

    #[allow(clippy::too_many_arguments)]
    fn push(
        &mut self,
        rule: RuleId,
        severity: Severity,
        subject: Subject,
        value: f64,
        threshold: f64,
        window_ms: Option<i64>,
        detail: String,
    ) {
        self.findings.push(Finding {
            workspace_id: self.workspace_id.to_owned(),
            rule,
            severity,
            subject,
            value,
            threshold,
            window_ms,
            detail,
            event_id: self.event_id,
            ts: self.ts,
        });
    }
}

impl Engine {
    pub fn new(cfg: EngineConfig) -> Engine {
        Engine {
            cfg,
            book: RuleBook::default(),
            keys: foldhash::HashMap::default(),
            ips: foldhash::HashMap::default(),
            loader: Box::new(|_| None),
            evicted: Vec::new(),
        }
    }

    pub fn set_rules(&mut self, book: RuleBook) {
        self.book = book;
    }

    pub fn rules(&self) -> &RuleBook {
        &self.book
    }

    /// Where learned state persisted earlier is read from.
    pub fn set_loader(&mut self, loader: LearnedLoader) {
        self.loader = loader;
    }

    /// Keys with state in memory, and source addresses.
    pub fn sizes(&self) -> (usize, usize) {
        (self.keys.len(), self.ips.len())
    }

    /// Evaluates one event; findings are appended to `out`.
    pub fn observe(&mut self, e: &UsageEvent, out: &mut Vec<Finding>) {
        let mut sink =
            Out { findings: out, workspace_id: &e.workspace_id, event_id: Some(e.id).filter(|id| *id > 0), ts: e.ts };
        if let Some(key_id) = &e.key_id {
            self.observe_key(key_id, e, &mut sink);
        }
        if let Some(ip) = &e.source_ip {
            self.observe_ip(ip, e, &mut sink);
        }
    }

    /// The key's state, made (or read back from where it was saved) on its first use.
    fn key_state(&mut self, key_id: &str, e: &UsageEvent) -> Option<&mut KeyState> {
        if !self.keys.contains_key(key_id) {
            if self.keys.len() >= self.cfg.max_keys {
                self.drop_idle_keys(self.keys.len() / 10 + 1);
            }
            let learned = (self.loader)(key_id).filter(Learned::is_whole).unwrap_or_else(|| Learned::new(e.ts));
            let state = KeyState {
                workspace_id: e.workspace_id.as_str().into(),
                keyspace_id: e.keyspace_id.as_deref().map(Into::into),
                hint: e.key_hint.as_deref().map(Into::into),
                owner_id: e.owner_id.as_deref().map(Into::into),
                last_seen: e.ts,
                counters: Default::default(),
                ips: Distinct::default(),
                user_agents: Distinct::default(),
                networks: Distinct::default(),
                learned: Box::new(learned),
                dirty: true,
            };
            self.keys.insert(key_id.into(), state);
        }
        let k = self.keys.get_mut(key_id)?;
        k.last_seen = k.last_seen.max(e.ts);
        Some(k)
    }

    fn observe_key(&mut self, key_id: &str, e: &UsageEvent, out: &mut Out<'_>) {
        let rules = self.book.for_subject(&e.workspace_id, e.keyspace_id.as_deref(), Some(key_id));
        let Some(k) = self.key_state(key_id, e) else { return };
        let subject = || Subject::Key {
            key_id: key_id.to_owned(),
            key_hint: e.key_hint.clone(),
            keyspace_id: e.keyspace_id.clone(),
            owner_id: e.owner_id.clone(),
        };
        let ts = e.ts;
        let on = |rule: RuleId| Some(rules.get(rule)).filter(|s| s.enabled);
        let window = |s: &RuleSettings| s.window_ms.unwrap_or(60_000);
        let count =
            |k: &mut KeyState, c: Counter, s: &RuleSettings, n: u64| k.counters[c as usize].add(ts, window(s), n);

        if let Some(s) = on(RuleId::RequestsPerMinute) {
            let n = count(k, Counter::PerMinute, s, 1);
            out.measured(RuleId::RequestsPerMinute, s, &subject, n as f64, "requests");
        }
        if let Some(s) = on(RuleId::RequestsPer5Minutes) {
            let n = count(k, Counter::Per5Minutes, s, 1);
            out.measured(RuleId::RequestsPer5Minutes, s, &subject, n as f64, "requests");
        }
        let denied = !e.outcome.is_valid();
        if let Some(s) = on(RuleId::DeniedRate) {
            let total = count(k, Counter::DeniedTotal, s, 1);
            let refused = count(k, Counter::Denied, s, u64::from(denied));
            if total >= s.min_requests.unwrap_or(20) && denied {
                out.measured(
                    RuleId::DeniedRate,
                    s,
                    &subject,
                    refused as f64 * 100.0 / total as f64,
                    "of verifications refused",
                );
            }
        }
        if let Some(s) = on(RuleId::DeniedBurstKey)
            && denied
        {
            let n = count(k, Counter::DeniedBurst, s, 1);
            out.measured(RuleId::DeniedBurstKey, s, &subject, n as f64, "refused verifications");
        }
        if let Some(s) = on(RuleId::FailedAuthPerKey)
            && is_failed_auth(e.outcome)
        {
            let n = count(k, Counter::FailedAuth, s, 1);
            out.measured(RuleId::FailedAuthPerKey, s, &subject, n as f64, "refusals of the key");
        }
        Engine::status_and_bytes(
            k,
            &rules,
            e.http_status,
            e.bytes_in.unwrap_or(0) + e.bytes_out.unwrap_or(0),
            ts,
            &subject,
            out,
        );

        match e.outcome {
            Outcome::Rotated | Outcome::Revoked => {
                if let Some(s) = on(RuleId::UsedAfterEnd) {
                    let what = if e.outcome == Outcome::Rotated {
                        "rotated key used after its overlap"
                    } else {
                        "revoked key used"
                    };
                    let from = e.source_ip.as_deref().map(|ip| format!(" from {ip}")).unwrap_or_default();
                    out.event(RuleId::UsedAfterEnd, s, subject(), format!("{what}{from}"));
                }
            }
            Outcome::Valid if e.deprecated => {
                if let Some(s) = on(RuleId::RotationOverlapUse) {
                    out.event(
                        RuleId::RotationOverlapUse,
                        s,
                        subject(),
                        "the old key of a rotation is still in use".into(),
                    );
                }
            }
            _ => {}
        }
        if e.outcome.is_valid()
            && let Some(s) = on(RuleId::OffHours)
        {
            let sensitive = s.sensitive_scopes.as_deref().unwrap_or_default();
            let hours = s.business_hours.clone().unwrap_or_default();
            if let Some(scope) = e.scopes.iter().find(|sc| is_sensitive(sc, sensitive))
                && !hours.contains(ts)
            {
                out.event(
                    RuleId::OffHours,
                    s,
                    subject(),
                    format!("sensitive scope {scope} used outside business hours"),
                );
            }
        }

        // Learned state: first use, addresses, hourly volume.
        if e.outcome.is_valid()
            && let Some(s) = on(RuleId::Baseline)
        {
            let n = k.learned.count_hour(ts);
            k.dirty = true;
            let slot = Learned::hour_of_week(ts.div_euclid(HOUR));
            let learning = ts - k.learned.first_use < s.learning_ms.unwrap_or(0);
            let learned = k.learned.hourly[slot].max(1.0) as f64;
            let threshold = learned * s.factor.unwrap_or(3.0);
            if !learning && k.learned.samples[slot] > 0 && n >= s.min_requests.unwrap_or(100) && n as f64 > threshold {
                let severity = s.levels.first().map_or(Severity::Medium, |l| l.severity);
                out.push(
                    RuleId::Baseline,
                    severity,
                    subject(),
                    n as f64,
                    threshold,
                    Some(HOUR),
                    format!(
                        "{} requests this hour, {:.1}× the learned {} for this hour of the week",
                        thousands(n as f64),
                        n as f64 / learned,
                        thousands(learned)
                    ),
                );
            }
        }
        if let Some(ip) = e.source_ip.as_deref().filter(|_| key_admitted_from_ip(e.outcome)) {
            let ip_hash = fnv(ip.as_bytes());
            if let Some(s) = on(RuleId::NewIp) {
                let known = k.learned.note_ip(ip_hash, ts, s.lookback_ms.unwrap_or(30 * 24 * HOUR));
                k.dirty = true;
                let learning = ts - k.learned.first_use < s.learning_ms.unwrap_or(0);
                if !known && !learning {
                    out.event(RuleId::NewIp, s, subject(), format!("first request from {ip} for this key"));
                }
            }
            if let Some(s) = on(RuleId::SharedIps) {
                let n = k.ips.note(ip_hash, ts, window(s));
                out.measured(RuleId::SharedIps, s, &subject, n as f64, "distinct addresses");
            }
            let learning = |s: &RuleSettings, k: &KeyState| ts - k.learned.first_use < s.learning_ms.unwrap_or(0);
            if let (Some(s), Some(country)) = (on(RuleId::NewCountry), e.country.as_deref()) {
                let known = note_seen(
                    &mut k.learned.countries,
                    fnv(country.as_bytes()),
                    ts,
                    s.lookback_ms.unwrap_or(30 * 24 * HOUR),
                );
                k.dirty = true;
                if !known && !learning(s, k) {
                    out.event(
                        RuleId::NewCountry,
                        s,
                        subject(),
                        format!("first request from country {country} for this key ({ip})"),
                    );
                }
            }
            if let (Some(s), Some(asn)) = (on(RuleId::NewAsn), e.asn) {
                let known = note_seen(&mut k.learned.asns, u64::from(asn), ts, s.lookback_ms.unwrap_or(30 * 24 * HOUR));
                k.dirty = true;
                if !known && !learning(s, k) {
                    let org = e.as_org.as_deref().map(|o| format!(" {o}")).unwrap_or_default();
                    out.event(
                        RuleId::NewAsn,
                        s,
                        subject(),
                        format!("first request from AS{asn}{org} for this key ({ip})"),
                    );
                }
            }
            if let Some(s) = on(RuleId::SharedNetworks) {
                // The autonomous system when known, else the /24 or /48.
                let net = e.asn.map_or_else(|| network(ip), |a| format!("AS{a}"));
                let n = k.networks.note(fnv(net.as_bytes()), ts, window(s));
                out.measured(RuleId::SharedNetworks, s, &subject, n as f64, "distinct networks");
            }
            if let (Some(s), Some(ua)) = (on(RuleId::SharedUserAgents), e.user_agent.as_deref()) {
                let n = k.user_agents.note(fnv(ua.as_bytes()), ts, window(s));
                out.measured(RuleId::SharedUserAgents, s, &subject, n as f64, "distinct user agents");
            }
        }
    }

    /// The status and byte rules, from an event or a later usage report.
    fn status_and_bytes(
        k: &mut KeyState,
        rules: &RuleSet,
        status: Option<u16>,
        bytes: u64,
        ts: i64,
        subject: &dyn Fn() -> Subject,
        out: &mut Out<'_>,
    ) {
        let on = |rule: RuleId| Some(rules.get(rule)).filter(|s| s.enabled);
        if let (Some(s), Some(status)) = (on(RuleId::ServerErrorRate), status) {
            let w = s.window_ms.unwrap_or(300_000);
            let total = k.counters[Counter::StatusTotal as usize].add(ts, w, 1);
            let failed = k.counters[Counter::Status5xx as usize].add(ts, w, u64::from(status >= 500));
            if total >= s.min_requests.unwrap_or(20) && status >= 500 {
                out.measured(
                    RuleId::ServerErrorRate,
                    s,
                    subject,
                    failed as f64 * 100.0 / total as f64,
                    "of reported statuses 5xx",
                );
            }
        }
        if let Some(s) = on(RuleId::DataTransfer)
            && bytes > 0
        {
            let n = k.counters[Counter::Bytes as usize].add(ts, s.window_ms.unwrap_or(HOUR), bytes);
            out.measured(RuleId::DataTransfer, s, subject, n as f64, "bytes transferred");
        }
    }

    /// A usage report that arrived after its event was evaluated.
    pub fn report(
        &mut self,
        workspace_id: &str,
        key_id: &str,
        status: Option<u16>,
        bytes: u64,
        ts: i64,
        out: &mut Vec<Finding>,
    ) {
        let Some(k) = self.keys.get_mut(key_id) else { return };
        let rules = self.book.for_subject(workspace_id, k.keyspace_id.as_deref(), Some(key_id));
        let subject = key_subject(key_id, k);
        let mut sink = Out { findings: out, workspace_id, event_id: None, ts };
        Engine::status_and_bytes(k, &rules, status, bytes, ts, &|| subject.clone(), &mut sink);
    }

    fn observe_ip(&mut self, ip: &str, e: &UsageEvent, out: &mut Out<'_>) {
        let denied = !e.outcome.is_valid();
        let failed = is_failed_auth(e.outcome);
        let invalid = matches!(e.outcome, Outcome::Malformed | Outcome::NotFound);
        if !denied {
            return; // Address state exists only for addresses that were refused.
        }
        let rules = self.book.for_subject(&e.workspace_id, e.keyspace_id.as_deref(), e.key_id.as_deref());
        let state = self.ip_state(&e.workspace_id, ip, e.ts);
        let subject = || Subject::Ip { ip: ip.to_owned() };
        let on = |rule: RuleId| Some(rules.get(rule)).filter(|s| s.enabled);
        if let Some(s) = on(RuleId::DeniedBurstIp) {
            let n = state.denied_burst.add(e.ts, s.window_ms.unwrap_or(60_000), 1);
            out.measured(RuleId::DeniedBurstIp, s, &subject, n as f64, "refused verifications");
        }
        if failed && let Some(s) = on(RuleId::FailedAuthPerIp) {
            let n = state.failed_auth.add(e.ts, s.window_ms.unwrap_or(HOUR), 1);
            out.measured(RuleId::FailedAuthPerIp, s, &subject, n as f64, "refused keys");
        }
        if invalid && let (Some(s), Some(fp)) = (on(RuleId::Enumeration), e.fingerprint.as_deref()) {
            let n = state.invalid_keys.note(fnv(fp.as_bytes()), e.ts, s.window_ms.unwrap_or(600_000));
            out.measured(RuleId::Enumeration, s, &subject, n as f64, "distinct invalid keys");
        }
    }

    fn ip_state(&mut self, workspace_id: &str, ip: &str, ts: i64) -> &mut IpState {
        let id: IpId = (workspace_id.into(), ip.into());
        if !self.ips.contains_key(&id) && self.ips.len() >= self.cfg.max_ips {
            let mut by_age: Vec<(i64, IpId)> = self.ips.iter().map(|(k, v)| (v.last_seen, k.clone())).collect();
            by_age.sort_unstable_by_key(|(at, _)| *at);
            for (_, old) in by_age.into_iter().take(self.ips.len() / 10 + 1) {
                self.ips.remove(&old);
            }
        }
        let state = self.ips.entry(id).or_default();
        state.last_seen = state.last_seen.max(ts);
        state
    }

    /// Evaluates a use case's signal.
    pub fn signal(&mut self, signal: Signal, out: &mut Vec<Finding>) {
        let on = |book: &RuleBook, ws: &str, subject: &Subject, rule: RuleId| {
            let rules = match subject {
                Subject::Key { key_id, keyspace_id, .. } => book.for_subject(ws, keyspace_id.as_deref(), Some(key_id)),
                Subject::Ip { .. } => book.for_subject(ws, None, None),
            };
            Some(rules.get(rule).clone()).filter(|s| s.enabled)
        };
        match signal {
            Signal::Leak { workspace_id, subject, source, ts } => {
                if let Some(s) = on(&self.book, &workspace_id, &subject, RuleId::Leak) {
                    let mut sink = Out { findings: out, workspace_id: &workspace_id, event_id: None, ts };
                    sink.event(RuleId::Leak, &s, subject, format!("key found leaked ({source}); it was revoked"));
                }
            }
            Signal::Expiring { workspace_id, subject, days, expires_at, ts } => {
                if let Some(s) = on(&self.book, &workspace_id, &subject, RuleId::Expiring) {
                    let mut sink = Out { findings: out, workspace_id: &workspace_id, event_id: None, ts };
                    let day = if days == 1 { "day" } else { "days" };
                    sink.event(
                        RuleId::Expiring,
                        &s,
                        subject,
                        format!("key expires within {days} {day}, at {expires_at}"),
                    );
                }
            }
            Signal::RevocationCheckFailed { workspace_id, subject, code, ts } => {
                if let Some(s) = on(&self.book, &workspace_id, &subject, RuleId::RevocationCheckFailed) {
                    let mut sink = Out { findings: out, workspace_id: &workspace_id, event_id: None, ts };
                    sink.event(
                        RuleId::RevocationCheckFailed,
                        &s,
                        subject,
                        format!("a revoked key verified {code} instead of REVOKED"),
                    );
                }
            }
            Signal::RootAuthFailure { workspace_id, ip, ts } => {
                let subject = Subject::Ip { ip: ip.clone() };
                if let Some(s) = on(&self.book, &workspace_id, &subject, RuleId::RootAuthFailures) {
                    let state = self.ip_state(&workspace_id, &ip, ts);
                    let n = state.root_failures.add(ts, s.window_ms.unwrap_or(60_000), 1);
                    let mut sink = Out { findings: out, workspace_id: &workspace_id, event_id: None, ts };
                    sink.measured(
                        RuleId::RootAuthFailures,
                        &s,
                        &|| subject.clone(),
                        n as f64,
                        "failed root-key authentications",
                    );
                }
            }
        }
    }

    /// Learned state changed since last taken, with its workspace, for persistence;
    /// includes the state of keys dropped from memory.
    pub fn take_learned(&mut self) -> Vec<(String, String, Learned)> {
        let mut out = std::mem::take(&mut self.evicted);
        for (id, k) in self.keys.iter_mut().filter(|(_, k)| k.dirty) {
            k.dirty = false;
            out.push((id.to_string(), k.workspace_id.to_string(), (*k.learned).clone()));
        }
        out
    }

    /// Drops keys and addresses idle for longer than `idle_ms` at `now` (their
    /// learned state is kept for [`Engine::take_learned`]).
    pub fn sweep(&mut self, now: i64, idle_ms: i64) {
        let cutoff = now - idle_ms;
        let idle: Vec<Box<str>> =
            self.keys.iter().filter(|(_, k)| k.last_seen < cutoff).map(|(id, _)| id.clone()).collect();
        for id in idle {
            self.evict(&id);
        }
        self.ips.retain(|_, s| s.last_seen >= cutoff);
    }

    fn drop_idle_keys(&mut self, n: usize) {
        let mut by_age: Vec<(i64, Box<str>)> = self.keys.iter().map(|(id, k)| (k.last_seen, id.clone())).collect();
        by_age.sort_unstable_by_key(|(at, _)| *at);
        for (_, id) in by_age.into_iter().take(n) {
            self.evict(&id);
        }
    }

    fn evict(&mut self, id: &str) {
        if let Some(k) = self.keys.remove(id)
            && k.dirty
        {
            self.evicted.push((id.to_owned(), k.workspace_id.to_string(), *k.learned));
        }
    }
}

#[cfg(test)]
mod tests;

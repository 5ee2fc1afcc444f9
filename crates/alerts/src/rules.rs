//! Alert rules as data: every rule with its defaults (the table in
//! PRODUCT.md, "Default alert rules"), the settings a workspace, a keyspace
//! or a key may override, and their checks. An override names only what it
//! changes; [`RuleSet::patched`] lays it over what is below it (defaults <
//! workspace < keyspace < key).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// How bad an alert is. `medium` and `warning` rank the same.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Notice,
    Medium,
    Warning,
    High,
    Critical,
}

impl Severity {
    pub const ALL: [Severity; 5] =
        [Severity::Notice, Severity::Medium, Severity::Warning, Severity::High, Severity::Critical];

    /// Rank for escalation: notice 1, medium and warning 2, high 3, critical 4.
    pub fn rank(self) -> u8 {
        match self {
            Severity::Notice => 1,
            Severity::Medium | Severity::Warning => 2,
            Severity::High => 3,
            Severity::Critical => 4,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Notice => "notice",
            Severity::Medium => "medium",
            Severity::Warning => "warning",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }

    pub fn parse(s: &str) -> Option<Severity> {
        Severity::ALL.into_iter().find(|v| v.as_str() == s)
    }
}

/// What a rule watches: one key, or one source address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubjectKind {
    Key,
    Ip,
}

/// Which knobs a rule has besides `enabled` and `levels`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Knobs {
    /// Fires on each matching event, at its one level.
    Event,
    /// A count over `window_ms`.
    Count,
    /// A percentage over `window_ms`, once `min_requests` were seen.
    Rate,
    /// Something new for the key, after `learning_ms` of use, within `lookback_ms`.
    Novelty,
    /// The hour's volume against the key's learned hourly volume.
    Baseline,
    /// Requests needing a sensitive scope outside business hours.
    OffHours,
}

macro_rules! rules {
    ($( $id:ident = $name:literal, $subject:ident, $knobs:ident, $doc:literal; )*) => {
        /// Every rule keyward evaluates.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        pub enum RuleId { $( #[doc = $doc] #[serde(rename = $name)] $id, )* }

        impl RuleId {
            pub const ALL: &[RuleId] = &[$( RuleId::$id, )*];

            pub fn as_str(self) -> &'static str {
                match self { $( RuleId::$id => $name, )* }
            }

            pub fn subject(self) -> SubjectKind {
                match self { $( RuleId::$id => SubjectKind::$subject, )* }
            }

            fn knobs(self) -> Knobs {
                match self { $( RuleId::$id => Knobs::$knobs, )* }
            }

            /// What the rule watches, for people.
            pub fn describe(self) -> &'static str {
                match self { $( RuleId::$id => $doc, )* }
            }
        }
    };
}

rules! {
    RequestsPerMinute = "requests_per_minute", Key, Count, "Requests per minute for one key.";
    RequestsPer5Minutes = "requests_per_5_minutes", Key, Count, "Requests in 5 minutes for one key.";
    DeniedRate = "denied_rate", Key, Rate, "Share of a key's verifications that were refused, in percent.";
    ServerErrorRate = "server_error_rate", Key, Rate, "Share of a key's reported statuses that were 5xx, in percent.";
    DataTransfer = "data_transfer", Key, Count, "Bytes in and out (reported or proxied) for one key.";
    FailedAuthPerKey = "failed_auth_per_key", Key, Count, "Refusals of the key itself (disabled, expired, revoked, rotated, IP not allowed) for one key id.";
    FailedAuthPerIp = "failed_auth_per_ip", Ip, Count, "Refusals of the key itself (malformed, not found, disabled, expired, revoked, rotated, IP not allowed) from one address.";
    NewIp = "new_ip", Key, Novelty, "A request from an address not seen for this key within the lookback.";
    RotationOverlapUse = "rotation_overlap_use", Key, Event, "The old key of a rotation used during its overlap.";
    UsedAfterEnd = "used_after_end", Key, Event, "A rotated key after its overlap, or a revoked key, presented.";
    Enumeration = "enumeration", Ip, Count, "Distinct unknown or malformed keys presented from one address.";
    OffHours = "off_hours", Key, OffHours, "A sensitive scope used outside business hours.";
    Leak = "leak", Key, Event, "The key was found leaked (scanner, leak report, GitHub).";
    Expiring = "expiring", Key, Event, "The key expires within 14, 7 or 1 days.";
    RevocationCheckFailed = "revocation_check_failed", Key, Event, "A revoked key was not refused by the verify path.";
    Baseline = "baseline", Key, Baseline, "A key's volume this hour far above its learned volume for the hour.";
    SharedIps = "shared_ips", Key, Count, "Distinct source addresses using one key (key sharing).";
    SharedUserAgents = "shared_user_agents", Key, Count, "Distinct user agents using one key (key sharing).";
    SharedNetworks = "shared_networks", Key, Count, "Distinct networks (/24, /48) using one key (key sharing).";
    DeniedBurstKey = "denied_burst_key", Key, Count, "A burst of refused verifications of one key.";
    DeniedBurstIp = "denied_burst_ip", Ip, Count, "A burst of refused verifications from one address.";
    RootAuthFailures = "root_auth_failures", Ip, Count, "Failed root-key authentications against the management API from one address.";
    NewCountry = "new_country", Key, Novelty, "A key's first request from a country (IP enrichment configured).";
    NewAsn = "new_asn", Key, Novelty, "A key's first request from an autonomous system (IP enrichment configured).";
}

// By hand: the derive would spell `RequestsPer5Minutes` its own way, not as serde does.
impl utoipa::PartialSchema for RuleId {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::schema::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .enum_values(Some(RuleId::ALL.iter().map(|r| r.as_str())))
            .description(Some("Every rule keyward evaluates (see GET /v1/alert-rules for what each watches)."))
            .into()
    }
}

impl ToSchema for RuleId {}

impl RuleId {
    pub fn parse(s: &str) -> Option<RuleId> {
        RuleId::ALL.iter().copied().find(|r| r.as_str() == s)
    }
}

/// A threshold: above `above`, the alert has `severity`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Level {
    pub severity: Severity,
    /// Count, bytes or percent, as the rule measures; event rules ignore it.
    #[serde(default)]
    pub above: f64,
}

/// Business hours for `off_hours`: local to an IANA time zone (with its
/// daylight saving), or to a fixed offset from UTC.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BusinessHours {
    /// First minute of business, `HH:MM` (default 08:00).
    pub start: String,
    /// End of business, `HH:MM`, exclusive (default 18:00).
    pub end: String,
    /// Business days, `mon` … `sun` (default mon–fri).
    pub weekdays: Vec<String>,
    /// Offset from UTC, `+02:00` or `-05:00` (default `+00:00`); ignored when `time_zone` is set.
    #[serde(default = "utc")]
    pub utc_offset: String,
    /// An IANA time zone, e.g. `Europe/Berlin` (daylight saving included).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_zone: Option<String>,
}

fn utc() -> String {
    "+00:00".into()
}

impl Default for BusinessHours {
    fn default() -> Self {
        BusinessHours {
            start: "08:00".into(),
            end: "18:00".into(),
            weekdays: ["mon", "tue", "wed", "thu", "fri"].map(str::to_owned).to_vec(),
            utc_offset: utc(),
            time_zone: None,
        }
    }
}

const WEEKDAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

fn minutes(hhmm: &str) -> Option<i64> {
    let (h, m) = hhmm.split_once(':')?;
    let (h, m): (i64, i64) = (h.parse().ok()?, m.parse().ok()?);
    ((0..=24).contains(&h) && (0..60).contains(&m) && h * 60 + m <= 1440).then_some(h * 60 + m)
}

fn offset_minutes(s: &str) -> Option<i64> {
    let sign = match s.as_bytes().first()? {
        b'+' => 1,
        b'-' => -1,
        _ => return None,
    };
    minutes(&s[1..]).filter(|m| *m <= 14 * 60).map(|m| sign * m)
}

impl BusinessHours {
    /// Whether `at` (UTC ms) falls inside these hours.
    pub fn contains(&self, at: i64) -> bool {
        let (Some(start), Some(end), Some(fixed)) =
            (minutes(&self.start), minutes(&self.end), offset_minutes(&self.utc_offset))
        else {
            return true;
        };
        let offset = match self.time_zone.as_deref().and_then(|z| jiff::tz::TimeZone::get(z).ok()) {
            Some(zone) => match jiff::Timestamp::from_millisecond(at) {
                Ok(ts) => i64::from(zone.to_offset(ts).seconds()) / 60,
                Err(_) => fixed,
            },
            None => fixed,
        };
        let local_min = at.div_euclid(60_000) + offset;
        let day = local_min.div_euclid(1440);
        // 1970-01-01 was a Thursday (index 3 from Monday).
        let weekday = WEEKDAYS[(day + 3).rem_euclid(7) as usize];
        let minute = local_min.rem_euclid(1440);
        self.weekdays.iter().any(|d| d == weekday) && minute >= start && minute < end
    }

    fn problems(&self, at: &str) -> Vec<String> {
        let mut p = Vec::new();
        for (field, v) in [("start", &self.start), ("end", &self.end)] {
            if minutes(v).is_none() {
                p.push(format!("{at}.business_hours.{field}: write HH:MM, e.g. 08:00"));
            }
        }
        if minutes(&self.start) >= minutes(&self.end) {
            p.push(format!("{at}.business_hours: start must be before end"));
        }
        if self.weekdays.iter().any(|d| !WEEKDAYS.contains(&d.as_str())) {
            p.push(format!("{at}.business_hours.weekdays: use mon, tue, wed, thu, fri, sat, sun"));
        }
        if offset_minutes(&self.utc_offset).is_none() {
            p.push(format!("{at}.business_hours.utc_offset: write +HH:MM or -HH:MM, e.g. +01:00"));
        }
        if let Some(z) = &self.time_zone
            && jiff::tz::TimeZone::get(z).is_err()
        {
            p.push(format!("{at}.business_hours.time_zone: not an IANA time zone such as Europe/Berlin"));
        }
        p
    }
}

/// One rule's settings, complete.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RuleSettings {
    pub enabled: bool,
    /// Thresholds, lowest first; the highest crossed gives the severity.
    pub levels: Vec<Level>,
    /// Count, rate and sharing rules: the sliding window.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub window_ms: Option<i64>,
    /// Rate rules: requests needed in the window before the rate counts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_requests: Option<u64>,
    /// Novelty and baseline rules: how long after a key's first use it learns silently.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub learning_ms: Option<i64>,
    /// `new_ip`: an address seen within this long is not new.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lookback_ms: Option<i64>,
    /// `baseline`: how many times the learned volume counts as far above.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub factor: Option<f64>,
    /// `off_hours`: when business is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub business_hours: Option<BusinessHours>,
    /// `off_hours`: scopes that count as sensitive (`admin`, `billing:*`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sensitive_scopes: Option<Vec<String>>,
}

/// What an override changes in one rule; absent fields keep what is below.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RulePatch {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub levels: Option<Vec<Level>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub window_ms: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_requests: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub learning_ms: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lookback_ms: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub factor: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub business_hours: Option<BusinessHours>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sensitive_scopes: Option<Vec<String>>,
}

/// Overrides of some rules, by rule.
pub type Overrides = BTreeMap<RuleId, RulePatch>;

const MINUTE: i64 = 60_000;
const HOUR: i64 = 60 * MINUTE;
const DAY: i64 = 24 * HOUR;

fn levels(pairs: &[(Severity, f64)]) -> Vec<Level> {
    pairs.iter().map(|&(severity, above)| Level { severity, above }).collect()
}

fn settings(rule: RuleId) -> RuleSettings {
    use Severity::*;
    let base = RuleSettings {
        enabled: true,
        levels: Vec::new(),
        window_ms: None,
        min_requests: None,
        learning_ms: None,
        lookback_ms: None,
        factor: None,
        business_hours: None,
        sensitive_scopes: None,
    };
    let count = |window: i64, l: &[(Severity, f64)]| RuleSettings {
        window_ms: Some(window),
        levels: levels(l),
        ..base.clone()
    };
    let event = |s: Severity| RuleSettings { levels: levels(&[(s, 0.0)]), ..base.clone() };
    match rule {
        RuleId::RequestsPerMinute => count(MINUTE, &[(Warning, 500.0), (Critical, 1000.0)]),
        RuleId::RequestsPer5Minutes => count(5 * MINUTE, &[(High, 500.0)]),
        RuleId::DeniedRate | RuleId::ServerErrorRate => {
            RuleSettings { min_requests: Some(20), ..count(5 * MINUTE, &[(Warning, 5.0), (Critical, 10.0)]) }
        }
        RuleId::DataTransfer => count(HOUR, &[(Warning, 500e6), (Critical, 1e9)]),
        RuleId::FailedAuthPerKey | RuleId::FailedAuthPerIp => count(HOUR, &[(Warning, 10.0), (Critical, 50.0)]),
        RuleId::NewIp | RuleId::NewCountry | RuleId::NewAsn => {
            RuleSettings { learning_ms: Some(DAY), lookback_ms: Some(30 * DAY), ..event(Medium) }
        }
        RuleId::RotationOverlapUse | RuleId::Expiring => event(Notice),
        RuleId::UsedAfterEnd => event(High),
        RuleId::Enumeration => count(10 * MINUTE, &[(High, 20.0)]),
        RuleId::OffHours => RuleSettings {
            business_hours: Some(BusinessHours::default()),
            sensitive_scopes: Some(Vec::new()),
            ..event(Medium)
        },
        RuleId::Leak | RuleId::RevocationCheckFailed => event(Critical),
        RuleId::Baseline => {
            RuleSettings { learning_ms: Some(7 * DAY), factor: Some(3.0), min_requests: Some(100), ..event(Medium) }
        }
        RuleId::SharedIps => count(10 * MINUTE, &[(Medium, 10.0), (High, 50.0)]),
        RuleId::SharedUserAgents => count(10 * MINUTE, &[(Medium, 5.0)]),
        RuleId::SharedNetworks => count(10 * MINUTE, &[(Medium, 5.0)]),
        RuleId::DeniedBurstKey => count(MINUTE, &[(Medium, 20.0)]),
        RuleId::DeniedBurstIp => count(MINUTE, &[(Medium, 30.0)]),
        RuleId::RootAuthFailures => count(MINUTE, &[(High, 20.0)]),
    }
}

/// Every rule's complete settings: the defaults, or those with overrides laid over.
#[derive(Debug, Clone, PartialEq)]
pub struct RuleSet {
    rules: Vec<RuleSettings>,
}

impl Default for RuleSet {
    fn default() -> Self {
        RuleSet { rules: RuleId::ALL.iter().map(|r| settings(*r)).collect() }
    }
}

impl RuleSet {
    pub fn get(&self, rule: RuleId) -> &RuleSettings {
        &self.rules[rule as usize]
    }

    /// These settings with `overrides` laid over.
    pub fn patched(&self, overrides: &Overrides) -> RuleSet {
        let mut out = self.clone();
        for (rule, patch) in overrides {
            let s = &mut out.rules[*rule as usize];
            if let Some(v) = patch.enabled {
                s.enabled = v;
            }
            if let Some(v) = &patch.levels {
                s.levels = v.clone();
            }
            macro_rules! take {
                ($($f:ident),*) => { $( if patch.$f.is_some() { s.$f = patch.$f.clone(); } )* };
            }
            take!(window_ms, min_requests, learning_ms, lookback_ms, factor, business_hours, sensitive_scopes);
        }
        out
    }

    /// Every rule with its settings, in the order of [`RuleId::ALL`].
    pub fn iter(&self) -> impl Iterator<Item = (RuleId, &RuleSettings)> {
        RuleId::ALL.iter().copied().zip(self.rules.iter())
    }
}

/// Every problem with a set of overrides, each with its path (`rules.new_ip.window_ms`).
pub fn problems(overrides: &Overrides) -> Vec<String> {
    let mut p = Vec::new();
    for (rule, patch) in overrides {
        let at = format!("rules.{}", rule.as_str());
        let knobs = rule.knobs();
        let not_for = |p: &mut Vec<String>, field: &str, set: bool, ok: bool| {
            if set && !ok {
                p.push(format!("{at}.{field}: does not apply to {}", rule.as_str()));
            }
        };
        not_for(&mut p, "window_ms", patch.window_ms.is_some(), matches!(knobs, Knobs::Count | Knobs::Rate));
        not_for(&mut p, "min_requests", patch.min_requests.is_some(), matches!(knobs, Knobs::Rate | Knobs::Baseline));
        not_for(&mut p, "learning_ms", patch.learning_ms.is_some(), matches!(knobs, Knobs::Novelty | Knobs::Baseline));
        not_for(&mut p, "lookback_ms", patch.lookback_ms.is_some(), knobs == Knobs::Novelty);
        not_for(&mut p, "factor", patch.factor.is_some(), knobs == Knobs::Baseline);
        not_for(&mut p, "business_hours", patch.business_hours.is_some(), knobs == Knobs::OffHours);
        not_for(&mut p, "sensitive_scopes", patch.sensitive_scopes.is_some(), knobs == Knobs::OffHours);
        if let Some(w) = patch.window_ms
            && !(1_000..=7 * DAY).contains(&w)
        {
            p.push(format!("{at}.window_ms: must be between 1000 (1 s) and 604800000 (7 days)"));
        }
        for (field, v) in [("learning_ms", patch.learning_ms), ("lookback_ms", patch.lookback_ms)] {
            if v.is_some_and(|v| !(0..=365 * DAY).contains(&v)) {
                p.push(format!("{at}.{field}: must be between 0 and 31536000000 (a year)"));
            }
        }
        if patch.factor.is_some_and(|f| !(f.is_finite() && f > 1.0 && f <= 1000.0)) {
            p.push(format!("{at}.factor: must be above 1 and at most 1000"));
        }
        if let Some(levels) = &patch.levels {
            let measured = !matches!(knobs, Knobs::Event | Knobs::Novelty | Knobs::OffHours);
            if levels.is_empty() || levels.len() > 4 {
                p.push(format!("{at}.levels: give 1 to 4 levels (switch a rule off with enabled: false)"));
            } else if !measured && levels.len() != 1 {
                p.push(format!("{at}.levels: {} has one level (its severity)", rule.as_str()));
            }
            for (i, l) in levels.iter().enumerate() {
                if measured && !(l.above.is_finite() && l.above >= 0.0) {
                    p.push(format!("{at}.levels[{i}].above: must be a number at least 0"));
                }
                if i > 0
                    && measured
                    && (l.above <= levels[i - 1].above || l.severity.rank() < levels[i - 1].severity.rank())
                {
                    p.push(format!("{at}.levels[{i}]: levels must rise in threshold and not fall in severity"));
                }
                if knobs == Knobs::Rate && l.above > 100.0 {
                    p.push(format!("{at}.levels[{i}].above: a rate is a percentage, at most 100"));
                }
            }
        }
        if let Some(h) = &patch.business_hours {
            p.extend(h.problems(&at));
        }
        if let Some(scopes) = &patch.sensitive_scopes
            && (scopes.len() > 64 || scopes.iter().any(|s| s.is_empty() || s.len() > 128))
        {
            p.push(format!("{at}.sensitive_scopes: at most 64 scopes of 1 to 128 characters"));
        }
    }
    p
}

/// The severity for a measured value: the highest level it is above.
pub fn level_for(levels: &[Level], value: f64) -> Option<Level> {
    levels.iter().rev().find(|l| value > l.above).copied()
}

/// Whether `scope` is one of `sensitive` (an entry ending in `:*` covers its resource).
pub fn is_sensitive(scope: &str, sensitive: &[String]) -> bool {
    sensitive.iter().any(|s| match s.strip_suffix('*') {
        Some(prefix) => scope.starts_with(prefix),
        None => s == scope,
    })
}

#[cfg(test)]
mod tests;

//! The alert lifecycle: one alert per rule and subject (deduplicated),
//! opened on its first finding, updated while findings keep coming (written
//! at most every `update_every_ms`), escalated when a finding crosses a
//! higher level, and resolved — by a person, or by itself after `quiet_ms`
//! without a finding. A finding within `cooldown_ms` of a resolution reopens
//! the same alert instead of opening another. States: open → acknowledged →
//! resolved; an escalation makes an acknowledged alert open again.

use std::collections::HashMap;

use keyward_core::id::new_id;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::engine::{Finding, Subject};
use crate::rules::{RuleId, Severity};

/// Where an alert is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AlertStatus {
    Open,
    Acknowledged,
    Resolved,
}

impl AlertStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            AlertStatus::Open => "open",
            AlertStatus::Acknowledged => "acknowledged",
            AlertStatus::Resolved => "resolved",
        }
    }

    pub fn parse(s: &str) -> Option<AlertStatus> {
        [AlertStatus::Open, AlertStatus::Acknowledged, AlertStatus::Resolved].into_iter().find(|v| v.as_str() == s)
    }
}

/// One alert, as stored and shown.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    pub id: String,
    pub workspace_id: String,
    pub rule: RuleId,
    pub severity: Severity,
    pub status: AlertStatus,
    pub subject: Subject,
    /// The figure of the latest finding, and the level it crossed.
    pub value: f64,
    pub threshold: f64,
    pub window_ms: Option<i64>,
    /// For people: the latest finding.
    pub detail: String,
    pub first_seen: i64,
    pub last_seen: i64,
    /// Findings folded into this alert.
    pub count: u64,
    /// The first events that crossed it (at most [`TrackerConfig::max_event_ids`]).
    pub event_ids: Vec<i64>,
    pub acknowledged_at: Option<i64>,
    pub acknowledged_by: Option<String>,
    pub resolved_at: Option<i64>,
    /// A root key id, or `auto` after the quiet period.
    pub resolved_by: Option<String>,
    pub updated_at: i64,
}

/// What happened to an alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeKind {
    Opened,
    /// Resolved within the cooldown and firing again.
    Reopened,
    Escalated,
    /// Count, last seen and figures moved; nothing to notify.
    Updated,
    Resolved,
}

impl ChangeKind {
    /// The webhook event type, for changes that notify.
    pub fn event_type(self) -> Option<&'static str> {
        match self {
            ChangeKind::Opened | ChangeKind::Reopened => Some("alert.opened"),
            ChangeKind::Escalated => Some("alert.escalated"),
            ChangeKind::Resolved => Some("alert.resolved"),
            ChangeKind::Updated => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    pub kind: ChangeKind,
    pub alert: Alert,
    /// For an escalation: the severity before.
    pub previous: Option<Severity>,
}

/// The tracker's tunables.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrackerConfig {
    /// An alert without a finding for this long resolves itself, ms. Default 1800000 (30 min).
    pub quiet_ms: i64,
    /// A finding this soon after a resolution reopens the alert, ms. Default 600000 (10 min).
    pub cooldown_ms: i64,
    /// An ongoing alert's count and figures are written at most this often, ms. Default 1000.
    pub update_every_ms: i64,
    /// Events kept on an alert as its evidence. Default 20.
    pub max_event_ids: usize,
}

impl Default for TrackerConfig {
    fn default() -> Self {
        TrackerConfig { quiet_ms: 30 * 60_000, cooldown_ms: 10 * 60_000, update_every_ms: 1000, max_event_ids: 20 }
    }
}

impl TrackerConfig {
    pub fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        if self.quiet_ms < 1000 || self.cooldown_ms < 0 || self.update_every_ms < 10 {
            p.push(
                "alerts: quiet_ms must be at least 1000, cooldown_ms at least 0, update_every_ms at least 10".into(),
            );
        }
        if !(1..=1000).contains(&self.max_event_ids) {
            p.push("alerts.max_event_ids: must be between 1 and 1000".into());
        }
        p
    }
}

/// Rules whose alerts wait for a person: they never resolve themselves.
fn needs_a_person(rule: RuleId) -> bool {
    matches!(rule, RuleId::Leak | RuleId::RevocationCheckFailed)
}

struct Tracked {
    alert: Alert,
    /// Changed since last written.
    dirty: bool,
    written_at: i64,
}

type Dedup = (String, RuleId, String);

/// The alerts alive in memory: open, acknowledged, and resolved within the cooldown.
pub struct Tracker {
    cfg: TrackerConfig,
    alerts: HashMap<Dedup, Tracked>,
}

fn dedup_of(a: &Alert) -> Dedup {
    (a.workspace_id.clone(), a.rule, a.subject.name())
}

impl Tracker {
    pub fn new(cfg: TrackerConfig) -> Tracker {
        Tracker { cfg, alerts: HashMap::new() }
    }

    /// Takes up alerts stored by an earlier run (unresolved, or resolved
    /// within the cooldown), so a restart forgets none and opens no twin.
    pub fn load(&mut self, alerts: impl IntoIterator<Item = Alert>) {
        for a in alerts {
            let written_at = a.updated_at;
            self.alerts.insert(dedup_of(&a), Tracked { alert: a, dirty: false, written_at });
        }
    }

    /// Alerts in memory (for metrics and tests).
    pub fn len(&self) -> usize {
        self.alerts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.alerts.is_empty()
    }

    /// Folds a finding in; returns the change to write and notify, if any
    /// (an ongoing alert's updates come from [`Tracker::tick`]).
    pub fn apply(&mut self, f: Finding, now: i64) -> Option<Change> {
        let key: Dedup = (f.workspace_id.clone(), f.rule, f.subject.name());
        let max_ids = self.cfg.max_event_ids;
        let cooldown = self.cfg.cooldown_ms;
        let Some(t) = self.alerts.get_mut(&key) else {
            let alert = Alert {
                id: new_id("alr", now),
                workspace_id: f.workspace_id,
                rule: f.rule,
                severity: f.severity,
                status: AlertStatus::Open,
                subject: f.subject,
                value: f.value,
                threshold: f.threshold,
                window_ms: f.window_ms,
                detail: f.detail,
                first_seen: f.ts,
                last_seen: f.ts,
                count: 1,
                event_ids: f.event_id.into_iter().collect(),
                acknowledged_at: None,
                acknowledged_by: None,
                resolved_at: None,
                resolved_by: None,
                updated_at: now,
            };
            self.alerts.insert(key, Tracked { alert: alert.clone(), dirty: false, written_at: now });
            return Some(Change { kind: ChangeKind::Opened, alert, previous: None });
        };
        let a = &mut t.alert;
        if a.status == AlertStatus::Resolved && a.resolved_at.is_some_and(|at| now - at > cooldown) {
            // Past the cooldown: this is a new alert.
            self.alerts.remove(&key);
            return self.apply(f, now);
        }
        let reopened = a.status == AlertStatus::Resolved;
        let escalated = f.severity.rank() > a.severity.rank();
        let previous = a.severity;
        a.count += 1;
        a.last_seen = a.last_seen.max(f.ts);
        if f.severity.rank() >= a.severity.rank() {
            // The figures of the highest level reached so far.
            a.value = f.value;
            a.threshold = f.threshold;
            a.detail = f.detail;
            a.severity = f.severity;
        }
        if let Some(id) = f.event_id
            && a.event_ids.len() < max_ids
        {
            a.event_ids.push(id);
        }
        t.dirty = true;
        if reopened || (escalated && a.status == AlertStatus::Acknowledged) {
            a.status = AlertStatus::Open;
            a.resolved_at = None;
            a.resolved_by = None;
        }
        let kind = if reopened {
            ChangeKind::Reopened
        } else if escalated {
            ChangeKind::Escalated
        } else {
            return None;
        };
        a.updated_at = now;
        t.dirty = false;
        t.written_at = now;
        Some(Change { kind, alert: a.clone(), previous: escalated.then_some(previous) })
    }

    /// Updates due to be written, and alerts resolved by their quiet period.
    pub fn tick(&mut self, now: i64) -> Vec<Change> {
        let mut out = Vec::new();
        let (quiet, cooldown, every) = (self.cfg.quiet_ms, self.cfg.cooldown_ms, self.cfg.update_every_ms);
        self.alerts.retain(|_, t| {
            let a = &mut t.alert;
            if a.status == AlertStatus::Resolved {
                return a.resolved_at.is_some_and(|at| now - at <= cooldown);
            }
            if now - a.last_seen > quiet && !needs_a_person(a.rule) {
                a.status = AlertStatus::Resolved;
                a.resolved_at = Some(now);
                a.resolved_by = Some("auto".into());
                a.updated_at = now;
                t.dirty = false;
                t.written_at = now;
                out.push(Change { kind: ChangeKind::Resolved, alert: a.clone(), previous: None });
            } else if t.dirty && now - t.written_at >= every {
                a.updated_at = now;
                t.dirty = false;
                t.written_at = now;
                out.push(Change { kind: ChangeKind::Updated, alert: a.clone(), previous: None });
            }
            true
        });
        out
    }

    /// Writes pending updates now, whatever their age (at shutdown).
    pub fn flush(&mut self, now: i64) -> Vec<Change> {
        let mut out = Vec::new();
        for t in self.alerts.values_mut().filter(|t| t.dirty) {
            t.dirty = false;
            t.written_at = now;
            t.alert.updated_at = now;
            out.push(Change { kind: ChangeKind::Updated, alert: t.alert.clone(), previous: None });
        }
        out
    }

    /// A person acknowledged or resolved an alert through the API: the
    /// tracker follows (`alert` is the stored record after the change).
    pub fn follow(&mut self, alert: Alert) {
        let key = dedup_of(&alert);
        match self.alerts.get_mut(&key) {
            Some(t) if t.alert.id == alert.id => {
                let (count, last_seen, event_ids) = (t.alert.count, t.alert.last_seen, t.alert.event_ids.clone());
                t.alert = Alert {
                    count: count.max(alert.count),
                    last_seen: last_seen.max(alert.last_seen),
                    event_ids,
                    ..alert
                };
            }
            Some(_) => {}
            None => {
                let written_at = alert.updated_at;
                self.alerts.insert(key, Tracked { alert, dirty: false, written_at });
            }
        }
    }
}

#[cfg(test)]
mod tests;

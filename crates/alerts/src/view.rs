//! How alerts are shown: the API's JSON (instants as RFC 3339) and the
//! record stored (instants in ms, read back at start), and the webhook
//! message of a change.

use keyward_core::id::new_id;
use keyward_core::time::to_rfc3339;
use keyward_store::alerts::{AlertRow, Notice};
use serde::Serialize;
use serde_json::{Value, json};
use utoipa::ToSchema;

use crate::engine::Subject;
use crate::rules::{RuleId, Severity};
use crate::tracker::{Alert, AlertStatus, Change};

/// What an alert is about, as shown.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SubjectView {
    /// `key` or `ip`.
    pub kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_hint: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keyspace_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
}

/// An alert as the API and webhooks show it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AlertView {
    pub id: String,
    pub rule: RuleId,
    pub severity: Severity,
    pub status: AlertStatus,
    pub subject: SubjectView,
    /// The latest figure at the highest level reached (count, bytes, percent).
    pub value: f64,
    /// The level it crossed.
    pub threshold: f64,
    pub window_ms: Option<i64>,
    /// For people: what was seen.
    pub detail: String,
    pub first_seen: String,
    pub last_seen: String,
    /// Findings folded into this alert.
    pub count: u64,
    /// The first events that crossed it.
    pub event_ids: Vec<i64>,
    pub acknowledged_at: Option<String>,
    pub acknowledged_by: Option<String>,
    pub resolved_at: Option<String>,
    /// A root key id, or `auto` after the quiet period.
    pub resolved_by: Option<String>,
    pub updated_at: String,
}

impl AlertView {
    pub fn of(a: &Alert) -> AlertView {
        let subject = match &a.subject {
            Subject::Key { key_id, key_hint, keyspace_id, owner_id } => SubjectView {
                kind: "key",
                key_id: Some(key_id.clone()),
                key_hint: key_hint.clone(),
                keyspace_id: keyspace_id.clone(),
                owner_id: owner_id.clone(),
                ip: None,
            },
            Subject::Ip { ip } => SubjectView {
                kind: "ip",
                key_id: None,
                key_hint: None,
                keyspace_id: None,
                owner_id: None,
                ip: Some(ip.clone()),
            },
        };
        AlertView {
            id: a.id.clone(),
            rule: a.rule,
            severity: a.severity,
            status: a.status,
            subject,
            value: a.value,
            threshold: a.threshold,
            window_ms: a.window_ms,
            detail: a.detail.clone(),
            first_seen: to_rfc3339(a.first_seen),
            last_seen: to_rfc3339(a.last_seen),
            count: a.count,
            event_ids: a.event_ids.clone(),
            acknowledged_at: a.acknowledged_at.map(to_rfc3339),
            acknowledged_by: a.acknowledged_by.clone(),
            resolved_at: a.resolved_at.map(to_rfc3339),
            resolved_by: a.resolved_by.clone(),
            updated_at: to_rfc3339(a.updated_at),
        }
    }
}

/// The alert as the API and webhooks show it, as JSON.
pub fn alert_json(a: &Alert) -> Value {
    serde_json::to_value(AlertView::of(a)).unwrap_or(Value::Null)
}

/// The stored row of an alert.
pub fn alert_row(a: &Alert) -> AlertRow {
    AlertRow {
        id: a.id.clone(),
        workspace_id: a.workspace_id.clone(),
        rule: a.rule.as_str().to_owned(),
        severity: a.severity.as_str().to_owned(),
        status: a.status.as_str().to_owned(),
        subject: a.subject.name(),
        key_id: a.subject.key_id().map(str::to_owned),
        first_seen: a.first_seen,
        last_seen: a.last_seen,
        updated_at: a.updated_at,
        body: serde_json::to_value(a).unwrap_or(Value::Null),
    }
}

/// An alert read back from its row (None when the record is from an unknown shape).
pub fn alert_of(row: &AlertRow) -> Option<Alert> {
    serde_json::from_value(row.body.clone()).ok()
}

/// A webhook message: `{type, timestamp, data}`, the envelope the Standard
/// Webhooks specification suggests.
pub fn message(workspace_id: &str, event_type: &str, data: Value, now: i64) -> Notice {
    Notice {
        id: new_id("msg", now),
        workspace_id: workspace_id.to_owned(),
        event_type: event_type.to_owned(),
        body: json!({"type": event_type, "timestamp": to_rfc3339(now), "data": data}),
        created_at: now,
    }
}

/// The webhook message of a notifying change.
pub fn notice(change: &Change, now: i64) -> Option<Notice> {
    let event_type = change.kind.event_type()?;
    let mut data = alert_json(&change.alert);
    if let Some(previous) = change.previous {
        data["previous_severity"] = json!(previous);
    }
    Some(message(&change.alert.workspace_id, event_type, data, now))
}

/// The history row of a change that notifies (opened, reopened, escalated, resolved).
pub fn change_row(change: &Change, now: i64) -> Option<keyward_store::alerts::AlertChangeRow> {
    let kind = match change.kind {
        crate::tracker::ChangeKind::Opened => "opened",
        crate::tracker::ChangeKind::Reopened => "reopened",
        crate::tracker::ChangeKind::Escalated => "escalated",
        crate::tracker::ChangeKind::Resolved => "resolved",
        crate::tracker::ChangeKind::Updated => return None,
    };
    let mut body = alert_json(&change.alert);
    if let Some(previous) = change.previous {
        body["previous_severity"] = json!(previous);
    }
    Some(keyward_store::alerts::AlertChangeRow {
        seq: 0,
        workspace_id: change.alert.workspace_id.clone(),
        alert_id: change.alert.id.clone(),
        change: kind.to_owned(),
        at: now,
        body,
    })
}

/// Every event type a webhook may subscribe to.
pub const EVENT_TYPES: &[&str] = &[
    "alert.opened",
    "alert.escalated",
    "alert.resolved",
    "key.revoked",
    "key.rotated",
    "key.disabled",
    "key.expiring",
];

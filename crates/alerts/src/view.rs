//! How alerts are shown: the API's JSON (instants as RFC 3339) and the
//! record stored (instants in ms, read back at start), and the webhook
//! message of a change.

use keyward_core::id::new_id;
use keyward_core::time::to_rfc3339;
use keyward_store::alerts::{AlertRow, Notice};
use serde_json::{Value, json};

use crate::engine::Subject;
use crate::tracker::{Alert, Change};

fn at(ms: Option<i64>) -> Value {
    ms.map_or(Value::Null, |m| Value::String(to_rfc3339(m)))
}

/// The alert as the API and webhooks show it.
pub fn alert_json(a: &Alert) -> Value {
    let subject = match &a.subject {
        Subject::Key { key_id, key_hint, keyspace_id, owner_id } => {
            json!({"kind": "key", "key_id": key_id, "key_hint": key_hint, "keyspace_id": keyspace_id, "owner_id": owner_id})
        }
        Subject::Ip { ip } => json!({"kind": "ip", "ip": ip}),
    };
    json!({
        "id": a.id,
        "rule": a.rule,
        "severity": a.severity,
        "status": a.status,
        "subject": subject,
        "value": a.value,
        "threshold": a.threshold,
        "window_ms": a.window_ms,
        "detail": a.detail,
        "first_seen": to_rfc3339(a.first_seen),
        "last_seen": to_rfc3339(a.last_seen),
        "count": a.count,
        "event_ids": a.event_ids,
        "acknowledged_at": at(a.acknowledged_at),
        "acknowledged_by": a.acknowledged_by,
        "resolved_at": at(a.resolved_at),
        "resolved_by": a.resolved_by,
        "updated_at": to_rfc3339(a.updated_at),
    })
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

/// The webhook message of a notifying change: `{type, timestamp, data}`,
/// the envelope the Standard Webhooks specification suggests.
pub fn notice(change: &Change, now: i64) -> Option<Notice> {
    let event_type = change.kind.event_type()?;
    let mut data = alert_json(&change.alert);
    if let Some(previous) = change.previous {
        data["previous_severity"] = json!(previous);
    }
    Some(Notice {
        id: new_id("msg", now),
        workspace_id: change.alert.workspace_id.clone(),
        event_type: event_type.to_owned(),
        body: json!({"type": event_type, "timestamp": to_rfc3339(now), "data": data}),
        created_at: now,
    })
}

//! What the alerting side keeps: alerts, alert-rule overrides, the learned
//! state of keys (addresses seen, hourly volume), webhook endpoints, and the
//! webhook outbox (messages, and one delivery per endpoint and message with
//! its attempts). Rows carry the JSON the alerts crate defines; the store
//! indexes the columns queries filter on.
//!
//! Invariant: a message is enqueued in the same transaction as the change it
//! reports (an alert's write, or a management change's audit entry), so no
//! change is acknowledged without its notification queued, and a restart
//! loses no delivery.

use serde_json::Value;

use crate::Result;

/// One alert: the filterable columns and the whole record as JSON.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertRow {
    pub id: String,
    pub workspace_id: String,
    pub rule: String,
    pub severity: String,
    pub status: String,
    /// `key:<id>` or `ip:<address>`.
    pub subject: String,
    pub key_id: Option<String>,
    pub first_seen: i64,
    pub last_seen: i64,
    pub updated_at: i64,
    pub body: Value,
}

/// A filter over alerts, newest first (by id).
#[derive(Debug, Clone, Default)]
pub struct AlertFilter {
    pub workspace_id: String,
    pub status: Option<String>,
    pub severity: Option<String>,
    pub rule: Option<String>,
    pub key_id: Option<String>,
    /// Alerts last seen at or after this instant.
    pub since: Option<i64>,
    /// Ids before this one (the cursor).
    pub before_id: Option<String>,
    pub limit: u32,
}

/// One change of an alert (opened, reopened, escalated, resolved), in the
/// order they happened: what sinks export as `event.kind: alert`.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertChangeRow {
    /// Position in the history; set by the store.
    pub seq: i64,
    pub workspace_id: String,
    pub alert_id: String,
    pub change: String,
    pub at: i64,
    /// The alert as the API shows it, after the change.
    pub body: Value,
}

/// A workspace's, keyspace's or key's rule overrides (JSON).
#[derive(Debug, Clone, PartialEq)]
pub struct RuleOverrideRow {
    pub workspace_id: String,
    /// `workspace`, `keyspace` or `key`.
    pub level: String,
    /// The keyspace or key id; the workspace id for `workspace`.
    pub target_id: String,
    /// For a key: its keyspace (its overrides lie over that keyspace's).
    pub keyspace_id: Option<String>,
    pub rules: Value,
    pub updated_at: i64,
}

/// A notification to deliver to every endpoint of a workspace that takes its type.
#[derive(Debug, Clone, PartialEq)]
pub struct Notice {
    /// `msg_…`: the `webhook-id`, the same on every retry.
    pub id: String,
    pub workspace_id: String,
    /// e.g. `alert.opened`, `key.revoked`.
    pub event_type: String,
    /// The whole JSON body sent.
    pub body: Value,
    pub created_at: i64,
}

/// A webhook endpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct WebhookRow {
    pub id: String,
    pub workspace_id: String,
    pub url: String,
    /// Event types it takes; empty for all.
    pub events: Vec<String>,
    pub description: Option<String>,
    /// The `whsec_…` signing secret.
    pub secret: String,
    /// `webhook` (Standard Webhooks JSON) or `slack` (a Slack-compatible `{"text": …}`).
    pub format: String,
    pub created_at: i64,
    pub deleted_at: Option<i64>,
}

/// A delivery: one message to one endpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct DeliveryRow {
    pub id: String,
    pub workspace_id: String,
    pub webhook_id: String,
    pub message_id: String,
    pub event_type: String,
    /// `pending`, `delivered` or `dead` (retries exhausted).
    pub status: String,
    pub attempts: u32,
    pub next_attempt_at: Option<i64>,
    pub last_attempt_at: Option<i64>,
    pub last_status: Option<u16>,
    pub last_error: Option<String>,
    pub created_at: i64,
    pub delivered_at: Option<i64>,
}

/// A delivery due now, with what sending it needs.
#[derive(Debug, Clone)]
pub struct DueDelivery {
    pub delivery: DeliveryRow,
    pub url: String,
    pub secret: String,
    pub format: String,
    pub body: Value,
}

/// How one attempt went.
#[derive(Debug, Clone, PartialEq)]
pub struct AttemptRow {
    pub delivery_id: String,
    pub n: u32,
    pub at: i64,
    pub status: Option<u16>,
    pub error: Option<String>,
    pub duration_ms: i64,
}

/// What follows an attempt.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum AttemptNext {
    Delivered,
    RetryAt(i64),
    Dead,
}

/// The alerting side of the store.
pub trait AlertStore: Send + Sync {
    /// Writes alerts, the history of their changes and their notices in one transaction.
    fn write_alerts(&self, alerts: &[AlertRow], changes: &[AlertChangeRow], notices: &[Notice]) -> Result<()>;
    /// An alert changed by a person (acknowledged, resolved), with its audit entry.
    fn put_alert(
        &self,
        alert: &AlertRow,
        changes: &[AlertChangeRow],
        notices: &[Notice],
        audit: &crate::AuditEntry,
    ) -> Result<()>;
    /// Alert changes after `seq`, oldest first.
    fn alert_changes_after(&self, seq: i64, limit: u32) -> Result<Vec<AlertChangeRow>>;
    /// The newest change's position (0 when none).
    fn last_alert_change(&self) -> Result<i64>;
    /// Deletes alert changes older than `before` (the history sinks export, past
    /// retention); returns how many went.
    fn purge_alert_changes(&self, before: i64) -> Result<usize>;
    fn get_alert(&self, workspace_id: &str, id: &str) -> Result<Option<AlertRow>>;
    fn list_alerts(&self, filter: &AlertFilter) -> Result<Vec<AlertRow>>;
    /// Every unresolved alert, and those resolved at or after `resolved_since`.
    fn live_alerts(&self, resolved_since: i64) -> Result<Vec<AlertRow>>;

    fn rule_overrides(&self) -> Result<Vec<RuleOverrideRow>>;
    /// Replaces one level's overrides (an empty object clears them), audited.
    fn put_rule_overrides(&self, row: &RuleOverrideRow, audit: &crate::AuditEntry) -> Result<()>;

    fn load_learned(&self, key_id: &str) -> Result<Option<Value>>;
    fn save_learned(&self, rows: &[(String, String, Value)], at: i64) -> Result<()>;

    fn insert_webhook(&self, w: &WebhookRow, audit: &crate::AuditEntry) -> Result<()>;
    fn delete_webhook(&self, workspace_id: &str, id: &str, at: i64, audit: &crate::AuditEntry) -> Result<()>;
    fn get_webhook(&self, workspace_id: &str, id: &str) -> Result<Option<WebhookRow>>;
    fn list_webhooks(&self, workspace_id: &str) -> Result<Vec<WebhookRow>>;
    /// Deliveries due at `now`, oldest first.
    fn due_deliveries(&self, now: i64, limit: u32) -> Result<Vec<DueDelivery>>;
    fn record_attempt(&self, attempt: &AttemptRow, next: AttemptNext) -> Result<()>;
    fn list_deliveries(
        &self,
        workspace_id: &str,
        webhook_id: &str,
        before_id: Option<&str>,
        limit: u32,
    ) -> Result<Vec<DeliveryRow>>;
    fn delivery_attempts(&self, delivery_id: &str) -> Result<Vec<AttemptRow>>;
    /// Puts one of an endpoint's deliveries back in the queue, due now; false when the
    /// live endpoint has no such delivery.
    fn redeliver(&self, workspace_id: &str, webhook_id: &str, delivery_id: &str, now: i64) -> Result<bool>;
    /// Deliveries waiting, for `/metrics`.
    fn pending_deliveries(&self) -> Result<u64>;
}

//! Alerts, alert rules and webhooks from the service's side: the API's use
//! cases (list, read with evidence, acknowledge, resolve; rules by level;
//! webhook endpoints, their deliveries and redelivery), the signals use cases
//! send the monitor (leaks, expiry, failed revocation checks, failed root-key
//! authentications), and the webhook messages of key lifecycle changes.

use std::sync::Arc;

pub use keyward_alerts::AlertStatus;
use keyward_alerts::rules::{Overrides, problems};
pub use keyward_alerts::view::AlertView;
use keyward_alerts::view::{EVENT_TYPES, alert_of, alert_row, message};
use keyward_alerts::{Monitor, RuleBook, RuleId, RuleSet, RuleSettings, Signal, Subject};
use keyward_core::Permission;
use keyward_core::id::new_id;
use keyward_core::time::{now_ms, parse_rfc3339, to_rfc3339};
use keyward_store::KeyRecord;
use keyward_store::alerts::{AlertFilter, Notice, RuleOverrideRow, WebhookRow};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::{IntoParams, ToSchema};

use crate::events::{EventView, event_view};
use crate::validate::{check_opt_text, invalid, page_limit, to_value};
use crate::{Actor, Result, Service, ServiceError};

/// `GET /v1/alerts` filters.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AlertQuery {
    pub status: Option<AlertStatus>,
    pub severity: Option<keyward_alerts::Severity>,
    /// A rule id, e.g. `requests_per_minute`.
    pub rule: Option<RuleId>,
    pub key_id: Option<String>,
    /// Alerts last seen at or after this RFC 3339 instant.
    pub since: Option<String>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AlertPage {
    pub data: Vec<AlertView>,
    pub next_cursor: Option<String>,
}

/// One alert with the events that crossed it (those still in the log).
#[derive(Debug, Serialize, ToSchema)]
pub struct AlertDetail {
    #[serde(flatten)]
    pub alert: AlertView,
    pub events: Vec<EventView>,
}

/// `POST /v1/alerts/{id}/ack` and `/resolve`.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AlertAction {
    /// Why, for the audit log.
    pub note: Option<String>,
}

/// `GET /v1/alert-rules` query: which level to show.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct RulesQuery {
    pub keyspace_id: Option<String>,
    pub key_id: Option<String>,
}

/// One rule as in force at a level.
#[derive(Debug, Serialize, ToSchema)]
pub struct RuleView {
    pub rule: RuleId,
    pub description: &'static str,
    #[serde(flatten)]
    pub settings: RuleSettings,
}

/// The rules in force at a level, and the overrides set at that very level.
#[derive(Debug, Serialize, ToSchema)]
pub struct RulesView {
    /// `workspace`, `keyspace` or `key`.
    pub level: &'static str,
    pub target_id: String,
    pub rules: Vec<RuleView>,
    /// What this level changes (`PUT` replaces it).
    #[schema(value_type = Object)]
    pub overrides: Value,
}

/// `PUT /v1/alert-rules`: replaces one level's overrides.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PutRules {
    /// Set for a keyspace's overrides (or with `key_id`, the key's keyspace is used).
    pub keyspace_id: Option<String>,
    /// Set for one key's overrides.
    pub key_id: Option<String>,
    /// Rule id → the settings to change (`{}` clears this level).
    #[schema(value_type = Object)]
    pub rules: Overrides,
}

/// `POST /v1/webhooks`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateWebhook {
    /// Where to POST: `https://…` (or `http://…`).
    pub url: String,
    /// Event types to send (default all): alert.opened, alert.escalated, alert.resolved,
    /// key.revoked, key.rotated, key.disabled, key.expiring.
    pub events: Option<Vec<String>>,
    pub description: Option<String>,
    /// `webhook` (default: Standard Webhooks JSON), `slack` (a Slack-compatible
    /// `{"text": …}`), or `email` for a `mailto:` url (sent through `[webhooks.smtp]`).
    pub format: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookView {
    pub id: String,
    pub url: String,
    pub events: Vec<String>,
    pub description: Option<String>,
    pub format: String,
    pub created_at: String,
}

/// A new endpoint, with its signing secret shown this once.
#[derive(Serialize, ToSchema)]
pub struct CreatedWebhook {
    #[serde(flatten)]
    pub view: WebhookView,
    /// The `whsec_…` signing secret (Standard Webhooks). Store it now.
    pub secret: String,
}

impl std::fmt::Debug for CreatedWebhook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreatedWebhook").field("view", &self.view).field("secret", &"[redacted]").finish()
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AttemptView {
    pub n: u32,
    pub at: String,
    pub status: Option<u16>,
    pub error: Option<String>,
    pub duration_ms: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveryView {
    pub id: String,
    /// The `webhook-id` the receiver sees (the same on every attempt).
    pub message_id: String,
    pub event_type: String,
    /// `pending`, `delivered` or `dead`.
    pub status: String,
    pub attempts: u32,
    pub next_attempt_at: Option<String>,
    pub last_status: Option<u16>,
    pub last_error: Option<String>,
    pub created_at: String,
    pub delivered_at: Option<String>,
    pub attempt_log: Vec<AttemptView>,
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DeliveryQuery {
    pub cursor: Option<String>,
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveryPage {
    pub data: Vec<DeliveryView>,
    pub next_cursor: Option<String>,
}

/// Endpoints per workspace: each message is written once per endpoint that takes it.
const MAX_WEBHOOKS: usize = 100;

fn webhook_view(w: &WebhookRow) -> WebhookView {
    WebhookView {
        id: w.id.clone(),
        url: w.url.clone(),
        events: w.events.clone(),
        description: w.description.clone(),
        format: w.format.clone(),
        created_at: to_rfc3339(w.created_at),
    }
}

/// The webhook message of a key lifecycle change.
pub(crate) fn key_notice(event_type: &str, k: &KeyRecord, extra: Value, now: i64) -> Notice {
    let mut data = json!({
        "key_id": k.id,
        "key_hint": k.hint,
        "keyspace_id": k.keyspace_id,
        "owner_id": k.owner_id,
    });
    if let (Some(d), Some(e)) = (data.as_object_mut(), extra.as_object()) {
        d.extend(e.clone());
    }
    message(&k.workspace_id, event_type, data, now)
}

/// A key as the subject of an alert.
pub(crate) fn key_subject(k: &KeyRecord) -> Subject {
    Subject::Key {
        key_id: k.id.clone(),
        key_hint: Some(k.hint.clone()),
        keyspace_id: Some(k.keyspace_id.clone()),
        owner_id: k.owner_id.clone(),
    }
}

impl Service {
    /// Connects the running monitor: signals go to it from now on.
    pub fn attach_monitor(&self, monitor: Arc<Monitor>) {
        let _ = self.monitor.set(monitor);
    }

    pub fn monitor(&self) -> Option<&Arc<Monitor>> {
        self.monitor.get()
    }

    pub(crate) fn signal(&self, s: Signal) {
        if let Some(m) = self.monitor.get() {
            m.signal(s);
        }
    }

    /// A failed root-key authentication from `ip`, for `root_auth_failures`.
    /// The alert goes to the operator's workspace (the first one made): the
    /// caller could not say which workspace it meant.
    pub fn note_auth_failure(&self, ip: Option<&str>) {
        let (Some(ip), Some(m)) = (ip, self.monitor.get()) else { return };
        let workspace = self
            .roots
            .read()
            .values()
            .min_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)))
            .map(|r| r.workspace_id.clone());
        if let Some(workspace_id) = workspace {
            m.signal(Signal::RootAuthFailure { workspace_id, ip: ip.to_owned(), ts: now_ms() });
        }
    }

    pub async fn list_alerts(&self, actor: &Actor, q: AlertQuery) -> Result<AlertPage> {
        actor.require(Permission::AlertsRead, "read alerts")?;
        let limit = page_limit(q.limit)?;
        crate::validate::id_cursor("alr", q.cursor.as_deref())?;
        let since = q
            .since
            .as_deref()
            .map(|s| parse_rfc3339(s).ok_or_else(|| invalid("since must be an RFC 3339 instant")))
            .transpose()?;
        let filter = AlertFilter {
            workspace_id: actor.workspace_id.clone(),
            status: q.status.map(|s| s.as_str().to_owned()),
            severity: q.severity.map(|s| s.as_str().to_owned()),
            rule: q.rule.map(|r| r.as_str().to_owned()),
            key_id: q.key_id,
            since,
            before_id: q.cursor,
            limit: limit + 1,
        };
        let mut rows = self.blocking(move |s| s.list_alerts(&filter)).await?;
        let next_cursor = if rows.len() > limit as usize {
            rows.truncate(limit as usize);
            rows.last().map(|r| r.id.clone())
        } else {
            None
        };
        Ok(AlertPage { data: rows.iter().filter_map(alert_of).map(|a| AlertView::of(&a)).collect(), next_cursor })
    }

    async fn stored_alert(&self, actor: &Actor, id: &str) -> Result<keyward_alerts::Alert> {
        let (ws, aid) = (actor.workspace_id.clone(), id.to_owned());
        let row = self.blocking(move |s| s.get_alert(&ws, &aid)).await?;
        row.as_ref().and_then(alert_of).ok_or_else(|| ServiceError::not_found("alert", id))
    }

    pub async fn get_alert(&self, actor: &Actor, id: &str) -> Result<AlertDetail> {
        actor.require(Permission::AlertsRead, "read alerts")?;
        let alert = self.stored_alert(actor, id).await?;
        let events = match self.events() {
            Some(p) if !alert.event_ids.is_empty() => {
                let (log, ws, ids) = (p.log().clone(), actor.workspace_id.clone(), alert.event_ids.clone());
                tokio::task::spawn_blocking(move || log.by_ids(&ws, &ids))
                    .await
                    .map_err(|_| ServiceError::Task)??
                    .into_iter()
                    .map(event_view)
                    .collect()
            }
            _ => Vec::new(),
        };
        Ok(AlertDetail { alert: AlertView::of(&alert), events })
    }

    /// Acknowledges (`resolve = false`) or resolves an alert, audited.
    pub async fn act_on_alert(&self, actor: &Actor, id: &str, resolve: bool, req: AlertAction) -> Result<AlertView> {
        actor.require(Permission::AlertsWrite, if resolve { "resolve alerts" } else { "acknowledge alerts" })?;
        check_opt_text("note", &req.note, 2000)?;
        let mut alert = self.stored_alert(actor, id).await?;
        let before = to_value(&AlertView::of(&alert));
        let now = now_ms();
        if alert.status == AlertStatus::Resolved {
            return Err(ServiceError::Conflict(format!("alert {id} is already resolved")));
        }
        if resolve {
            alert.status = AlertStatus::Resolved;
            alert.resolved_at = Some(now);
            alert.resolved_by = Some(actor.root_key_id.clone());
        } else {
            if alert.status == AlertStatus::Acknowledged {
                return Err(ServiceError::Conflict(format!("alert {id} is already acknowledged")));
            }
            alert.status = AlertStatus::Acknowledged;
            alert.acknowledged_at = Some(now);
            alert.acknowledged_by = Some(actor.root_key_id.clone());
        }
        alert.updated_at = now;
        let view = AlertView::of(&alert);
        let action = if resolve { "alert.resolve" } else { "alert.acknowledge" };
        let mut audit = self.audit_entry(
            actor,
            action,
            "alert",
            id,
            Some(before),
            Some(json!({"status": view.status, "note": req.note})),
        );
        if resolve {
            audit.notify.push(message(&alert.workspace_id, "alert.resolved", to_value(&view), now));
        }
        let row = alert_row(&alert);
        let history: Vec<_> = resolve
            .then(|| {
                let change = keyward_alerts::Change {
                    kind: keyward_alerts::ChangeKind::Resolved,
                    alert: alert.clone(),
                    previous: None,
                };
                keyward_alerts::view::change_row(&change, now)
            })
            .flatten()
            .into_iter()
            .collect();
        self.blocking(move |s| s.put_alert(&row, &history, &[], &audit)).await?;
        if let Some(m) = self.monitor.get() {
            m.follow(alert);
        }
        tracing::info!(alert_id = %id, action, "Alert changed by a person.");
        Ok(view)
    }

    /// Which level a rules call names, checked against the store.
    async fn rule_level(
        &self,
        actor: &Actor,
        keyspace_id: Option<&str>,
        key_id: Option<&str>,
    ) -> Result<(&'static str, String, Option<String>)> {
        match (keyspace_id, key_id) {
            (_, Some(key)) => {
                let k = self.get_key(actor, key).await?;
                Ok(("key", k.id, Some(k.keyspace_id)))
            }
            (Some(ks), None) => {
                let ks = self.get_keyspace(actor, ks).await?;
                Ok(("keyspace", ks.id, None))
            }
            (None, None) => Ok(("workspace", actor.workspace_id.clone(), None)),
        }
    }

    pub async fn get_alert_rules(&self, actor: &Actor, q: RulesQuery) -> Result<RulesView> {
        actor.require(Permission::AlertsRead, "read alert rules")?;
        let (level, target, keyspace) = self.rule_level(actor, q.keyspace_id.as_deref(), q.key_id.as_deref()).await?;
        let rows = self.blocking(|s| s.rule_overrides()).await?;
        let rows: Vec<RuleOverrideRow> = rows.into_iter().filter(|r| r.workspace_id == actor.workspace_id).collect();
        let book = RuleBook::build(&rows);
        let set: Arc<RuleSet> = match level {
            "key" => book.for_subject(&actor.workspace_id, keyspace.as_deref(), Some(&target)),
            "keyspace" => book.for_subject(&actor.workspace_id, Some(&target), None),
            _ => book.for_subject(&actor.workspace_id, None, None),
        };
        let overrides =
            rows.iter().find(|r| r.level == level && r.target_id == target).map_or(json!({}), |r| r.rules.clone());
        let rules =
            set.iter().map(|(rule, s)| RuleView { rule, description: rule.describe(), settings: s.clone() }).collect();
        Ok(RulesView { level, target_id: target, rules, overrides })
    }

    pub async fn put_alert_rules(&self, actor: &Actor, req: PutRules) -> Result<RulesView> {
        actor.require(Permission::AlertsConfigure, "change alert rules")?;
        let p = problems(&req.rules);
        if !p.is_empty() {
            return Err(invalid(p.join("; ")));
        }
        let (level, target, keyspace) =
            self.rule_level(actor, req.keyspace_id.as_deref(), req.key_id.as_deref()).await?;
        let rules = to_value(&req.rules);
        let ws = actor.workspace_id.clone();
        let before = {
            let (ws, target) = (ws.clone(), target.clone());
            self.blocking(move |s| s.rule_overrides())
                .await?
                .into_iter()
                .find(|r| r.workspace_id == ws && r.level == level && r.target_id == target)
                .map(|r| r.rules)
        };
        let row = RuleOverrideRow {
            workspace_id: ws,
            level: level.to_owned(),
            target_id: target.clone(),
            keyspace_id: keyspace,
            rules: rules.clone(),
            updated_at: now_ms(),
        };
        let audit = self.audit_entry(actor, "alert_rules.update", level, &target, before, Some(rules));
        self.blocking(move |s| s.put_rule_overrides(&row, &audit)).await?;
        self.reload_rules().await?;
        tracing::info!(level, target_id = %target, "Alert rules changed.");
        let q = match level {
            "key" => RulesQuery { key_id: Some(target), keyspace_id: None },
            "keyspace" => RulesQuery { keyspace_id: Some(target), key_id: None },
            _ => RulesQuery::default(),
        };
        self.get_alert_rules(actor, q).await
    }

    /// Hands the monitor the rules as stored now (at start, and after each change).
    pub async fn reload_rules(&self) -> Result<()> {
        if let Some(m) = self.monitor.get() {
            let rows = self.blocking(|s| s.rule_overrides()).await?;
            let book = RuleBook::build(&rows);
            let watched = |set: &RuleSet| {
                let s = set.get(RuleId::OffHours);
                s.enabled && s.sensitive_scopes.as_ref().is_some_and(|v| !v.is_empty())
            };
            let wanted = std::iter::once(&book.default)
                .chain(book.workspaces.values())
                .chain(book.keyspaces.values())
                .chain(book.keys.values())
                .any(|set| watched(set));
            self.scopes_wanted.store(wanted, std::sync::atomic::Ordering::Relaxed);
            m.set_rules(book);
        }
        Ok(())
    }

    pub async fn create_webhook(&self, actor: &Actor, req: CreateWebhook) -> Result<CreatedWebhook> {
        actor.require(Permission::AlertsConfigure, "create webhooks")?;
        let url = req.url.trim().to_owned();
        let mail = url.strip_prefix("mailto:");
        let parsed_ok = match mail {
            // One address: local part, @, a domain with a dot.
            Some(addr) => {
                addr.len() <= 254
                    && !addr.contains(char::is_whitespace)
                    && addr.split_once('@').is_some_and(|(l, d)| !l.is_empty() && d.contains('.') && !d.contains('@'))
            }
            None => {
                (url.starts_with("https://") || url.starts_with("http://"))
                    && url.len() <= 2048
                    && !url.contains(char::is_whitespace)
                    && url.split("://").nth(1).is_some_and(|rest| !rest.is_empty() && !rest.starts_with('/'))
            }
        };
        if !parsed_ok {
            return Err(invalid(
                "url must be an http:// or https:// URL of at most 2048 characters, or mailto:address for email",
            ));
        }
        crate::validate::no_secret("url", &url)?;
        let events = req.events.unwrap_or_default();
        if let Some(bad) = events.iter().find(|e| !EVENT_TYPES.contains(&e.as_str())) {
            return Err(invalid(format!(
                "events: {} is not an event type; use {}",
                crate::validate::shown(bad),
                EVENT_TYPES.join(", ")
            )));
        }
        check_opt_text("description", &req.description, 500)?;
        let format = req.format.unwrap_or_else(|| if mail.is_some() { "email" } else { "webhook" }.to_owned());
        match (mail.is_some(), format.as_str()) {
            (false, "webhook" | "slack") | (true, "email") => {}
            (true, _) => return Err(invalid("a mailto: endpoint takes format email")),
            (false, _) => return Err(invalid("format must be webhook or slack (email is for mailto: endpoints)")),
        }
        let ws = actor.workspace_id.clone();
        if self.blocking(move |s| s.list_webhooks(&ws)).await?.len() >= MAX_WEBHOOKS {
            return Err(ServiceError::Conflict(format!(
                "a workspace has at most {MAX_WEBHOOKS} endpoints; delete one first (every message goes to each)"
            )));
        }
        let now = now_ms();
        let secret = keyward_alerts::webhook::new_secret().map_err(|e| {
            tracing::error!(error = %e, "The OS gave no random bytes for a webhook secret.");
            ServiceError::Task
        })?;
        let row = WebhookRow {
            id: new_id("wh", now),
            workspace_id: actor.workspace_id.clone(),
            url,
            events,
            description: req.description,
            secret: secret.clone(),
            format,
            created_at: now,
            deleted_at: None,
        };
        let view = webhook_view(&row);
        let audit = self.audit_entry(actor, "webhook.create", "webhook", &row.id, None, Some(to_value(&view)));
        self.blocking(move |s| s.insert_webhook(&row, &audit)).await?;
        tracing::info!(webhook_id = %view.id, "Webhook endpoint created.");
        Ok(CreatedWebhook { view, secret })
    }

    pub async fn list_webhooks(&self, actor: &Actor) -> Result<Vec<WebhookView>> {
        actor.require(Permission::AlertsRead, "read webhooks")?;
        let ws = actor.workspace_id.clone();
        Ok(self.blocking(move |s| s.list_webhooks(&ws)).await?.iter().map(webhook_view).collect())
    }

    pub async fn delete_webhook(&self, actor: &Actor, id: &str) -> Result<WebhookView> {
        actor.require(Permission::AlertsConfigure, "delete webhooks")?;
        let (ws, wid) = (actor.workspace_id.clone(), id.to_owned());
        let hook = self
            .blocking(move |s| s.get_webhook(&ws, &wid))
            .await?
            .ok_or_else(|| ServiceError::not_found("webhook", id))?;
        let view = webhook_view(&hook);
        let audit = self.audit_entry(actor, "webhook.delete", "webhook", id, Some(to_value(&view)), None);
        let (ws, wid) = (actor.workspace_id.clone(), id.to_owned());
        self.blocking(move |s| s.delete_webhook(&ws, &wid, now_ms(), &audit)).await?;
        Ok(view)
    }

    pub async fn list_deliveries(&self, actor: &Actor, webhook_id: &str, q: DeliveryQuery) -> Result<DeliveryPage> {
        actor.require(Permission::AlertsRead, "read webhook deliveries")?;
        let limit = page_limit(q.limit)?;
        crate::validate::id_cursor("dlv", q.cursor.as_deref())?;
        let (ws, wid) = (actor.workspace_id.clone(), webhook_id.to_owned());
        let hooks = self.blocking(move |s| s.get_webhook(&ws, &wid)).await?;
        if hooks.is_none() {
            return Err(ServiceError::not_found("webhook", webhook_id));
        }
        let (ws, wid, cursor) = (actor.workspace_id.clone(), webhook_id.to_owned(), q.cursor);
        let (rows, attempts) = self
            .blocking(move |s| {
                let rows = s.list_deliveries(&ws, &wid, cursor.as_deref(), limit + 1)?;
                let attempts = rows.iter().map(|d| s.delivery_attempts(&d.id)).collect::<Result<Vec<_>, _>>()?;
                Ok((rows, attempts))
            })
            .await?;
        let mut data: Vec<DeliveryView> = rows
            .into_iter()
            .zip(attempts)
            .map(|(d, attempts)| DeliveryView {
                id: d.id,
                message_id: d.message_id,
                event_type: d.event_type,
                status: d.status,
                attempts: d.attempts,
                next_attempt_at: d.next_attempt_at.map(to_rfc3339),
                last_status: d.last_status,
                last_error: d.last_error,
                created_at: to_rfc3339(d.created_at),
                delivered_at: d.delivered_at.map(to_rfc3339),
                attempt_log: attempts
                    .into_iter()
                    .map(|a| AttemptView {
                        n: a.n,
                        at: to_rfc3339(a.at),
                        status: a.status,
                        error: a.error,
                        duration_ms: a.duration_ms,
                    })
                    .collect(),
            })
            .collect();
        let next_cursor = if data.len() > limit as usize {
            data.truncate(limit as usize);
            data.last().map(|d| d.id.clone())
        } else {
            None
        };
        Ok(DeliveryPage { data, next_cursor })
    }

    pub async fn redeliver(&self, actor: &Actor, webhook_id: &str, delivery_id: &str) -> Result<()> {
        actor.require(Permission::AlertsConfigure, "redeliver webhooks")?;
        let (ws, wid, did) = (actor.workspace_id.clone(), webhook_id.to_owned(), delivery_id.to_owned());
        if !self.blocking(move |s| s.redeliver(&ws, &wid, &did, now_ms())).await? {
            return Err(ServiceError::not_found("delivery", delivery_id));
        }
        tracing::info!(webhook_id, delivery_id, "Webhook delivery queued again.");
        Ok(())
    }
}

/// Automatic response, off by default and set per keyspace
/// (`auto_disable_on_critical`): a critical alert about a key of such a
/// keyspace disables the key. The change is audited as
/// `key.auto_disable` by `system:auto-response:<alert id>`, notifies
/// `key.disabled`, and an `enabled: true` undoes it.
pub struct AutoResponse {
    service: std::sync::Weak<Service>,
    runtime: tokio::runtime::Handle,
}

impl AutoResponse {
    pub fn new(service: &Arc<Service>, runtime: tokio::runtime::Handle) -> Arc<AutoResponse> {
        Arc::new(AutoResponse { service: Arc::downgrade(service), runtime })
    }
}

impl keyward_alerts::Responder for AutoResponse {
    fn alert_changed(&self, change: &keyward_alerts::Change) {
        use keyward_alerts::ChangeKind;
        let a = &change.alert;
        let raised = matches!(change.kind, ChangeKind::Opened | ChangeKind::Reopened | ChangeKind::Escalated);
        let (true, keyward_alerts::Severity::Critical, Some(key_id)) = (raised, a.severity, a.subject.key_id()) else {
            return;
        };
        let Some(service) = self.service.upgrade() else { return };
        let (ws, key_id, alert_id) = (a.workspace_id.clone(), key_id.to_owned(), a.id.clone());
        self.runtime.spawn(async move {
            if let Err(e) = service.auto_disable(&ws, &key_id, &alert_id).await {
                tracing::error!(key_id = %key_id, alert_id = %alert_id, error = %e, "Automatic response failed.");
            }
        });
    }
}

impl Service {
    /// Disables `key_id` for `alert_id` when its keyspace asks for it.
    async fn auto_disable(&self, workspace_id: &str, key_id: &str, alert_id: &str) -> Result<()> {
        let (ws, id) = (workspace_id.to_owned(), key_id.to_owned());
        let Some(mut k) = self.blocking(move |s| s.get_key(&ws, &id)).await? else { return Ok(()) };
        if !self.keyspace_cell(&k.keyspace_id).get().auto_disable_on_critical || !k.enabled || k.revoked_at.is_some() {
            return Ok(());
        }
        let now = now_ms();
        let before = to_value(&crate::views::key_view(&k, None, now));
        k.enabled = false;
        k.updated_at = now;
        let actor = Actor {
            workspace_id: workspace_id.to_owned(),
            root_key_id: format!("system:auto-response:{alert_id}"),
            role: keyward_core::Role::Admin,
            source_ip: None,
            request_id: None,
        };
        self.save_key(&actor, k, before, "key.auto_disable", now, crate::index::QuotaFrom::Live).await?;
        tracing::warn!(key_id, alert_id, "Key disabled by automatic response to a critical alert.");
        Ok(())
    }
}

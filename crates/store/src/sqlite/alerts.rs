//! [`AlertStore`] on SQLite: alerts, rule overrides, learned state, webhooks
//! and the outbox, in the same file as keys (so an alert, a key change and
//! their notifications commit together).

use keyward_core::id::new_id;
use rusqlite::{OptionalExtension, Row, Transaction, params};
use serde_json::Value;

use super::SqliteStore;
use crate::alerts::{
    AlertChangeRow, AlertFilter, AlertRow, AlertStore, AttemptNext, AttemptRow, DeliveryRow, DueDelivery, Notice,
    RuleOverrideRow, WebhookRow,
};
use crate::{AuditEntry, Result, StoreError};

fn parse(text: String) -> Value {
    serde_json::from_str(&text).unwrap_or(Value::Null)
}

/// Writes each notice as a message and a pending delivery for every live
/// endpoint of its workspace that takes its type.
pub(super) fn enqueue(tx: &Transaction<'_>, notices: &[Notice]) -> Result<()> {
    if notices.is_empty() {
        return Ok(());
    }
    let mut hooks =
        tx.prepare_cached("SELECT id, events FROM webhooks WHERE workspace_id = ?1 AND deleted_at IS NULL")?;
    let mut message = tx.prepare_cached(
        "INSERT INTO webhook_messages (id, workspace_id, event_type, body, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?;
    let mut delivery = tx.prepare_cached(
        "INSERT INTO webhook_deliveries (id, workspace_id, webhook_id, message_id, event_type, status, attempts,
                                         next_attempt_at, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, 'pending', 0, ?6, ?6)",
    )?;
    for n in notices {
        let targets: Vec<(String, String)> =
            hooks.query_map([&n.workspace_id], |r| Ok((r.get(0)?, r.get(1)?)))?.collect::<rusqlite::Result<_>>()?;
        let takers: Vec<String> = targets
            .into_iter()
            .filter(|(_, events)| {
                let events: Vec<String> = serde_json::from_str(events).unwrap_or_default();
                events.is_empty() || events.iter().any(|e| e == &n.event_type)
            })
            .map(|(id, _)| id)
            .collect();
        if takers.is_empty() {
            continue;
        }
        message.execute(params![n.id, n.workspace_id, n.event_type, n.body.to_string(), n.created_at])?;
        for hook in takers {
            delivery.execute(params![
                new_id("dlv", n.created_at),
                n.workspace_id,
                hook,
                n.id,
                n.event_type,
                n.created_at
            ])?;
        }
    }
    Ok(())
}

const ALERT_COLS: &str =
    "id, workspace_id, rule, severity, status, subject, key_id, first_seen, last_seen, updated_at, body";

fn alert_from_row(r: &Row<'_>) -> rusqlite::Result<AlertRow> {
    Ok(AlertRow {
        id: r.get(0)?,
        workspace_id: r.get(1)?,
        rule: r.get(2)?,
        severity: r.get(3)?,
        status: r.get(4)?,
        subject: r.get(5)?,
        key_id: r.get(6)?,
        first_seen: r.get(7)?,
        last_seen: r.get(8)?,
        updated_at: r.get(9)?,
        body: parse(r.get(10)?),
    })
}

fn upsert_alert(tx: &Transaction<'_>, a: &AlertRow) -> Result<()> {
    tx.prepare_cached(
        "INSERT INTO alerts (id, workspace_id, rule, severity, status, subject, key_id, first_seen, last_seen, updated_at, body)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)
         ON CONFLICT(id) DO UPDATE SET severity = excluded.severity, status = excluded.status,
             last_seen = excluded.last_seen, updated_at = excluded.updated_at, body = excluded.body
         WHERE alerts.workspace_id = excluded.workspace_id",
    )?
    .execute(params![
        a.id,
        a.workspace_id,
        a.rule,
        a.severity,
        a.status,
        a.subject,
        a.key_id,
        a.first_seen,
        a.last_seen,
        a.updated_at,
        a.body.to_string()
    ])?;
    Ok(())
}

const HOOK_COLS: &str = "id, workspace_id, url, events, description, secret, format, created_at, deleted_at";

fn hook_from_row(r: &Row<'_>) -> rusqlite::Result<WebhookRow> {
    let events: String = r.get(3)?;
    Ok(WebhookRow {
        id: r.get(0)?,
        workspace_id: r.get(1)?,
        url: r.get(2)?,
        events: serde_json::from_str(&events).unwrap_or_default(),
        description: r.get(4)?,
        secret: r.get(5)?,
        format: r.get(6)?,
        created_at: r.get(7)?,
        deleted_at: r.get(8)?,
    })
}

const DELIVERY_COLS: &str = "d.id, d.workspace_id, d.webhook_id, d.message_id, d.event_type, d.status, d.attempts,
    d.next_attempt_at, d.last_attempt_at, d.last_status, d.last_error, d.created_at, d.delivered_at";

fn delivery_from_row(r: &Row<'_>) -> rusqlite::Result<DeliveryRow> {
    Ok(DeliveryRow {
        id: r.get(0)?,
        workspace_id: r.get(1)?,
        webhook_id: r.get(2)?,
        message_id: r.get(3)?,
        event_type: r.get(4)?,
        status: r.get(5)?,
        attempts: r.get(6)?,
        next_attempt_at: r.get(7)?,
        last_attempt_at: r.get(8)?,
        last_status: r.get::<_, Option<i64>>(9)?.map(|s| s as u16),
        last_error: r.get(10)?,
        created_at: r.get(11)?,
        delivered_at: r.get(12)?,
    })
}

fn append_changes(tx: &Transaction<'_>, changes: &[AlertChangeRow]) -> Result<()> {
    let mut st = tx.prepare_cached(
        "INSERT INTO alert_changes (workspace_id, alert_id, change, at, body) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?;
    for c in changes {
        st.execute(params![c.workspace_id, c.alert_id, c.change, c.at, c.body.to_string()])?;
    }
    Ok(())
}

impl AlertStore for SqliteStore {
    fn write_alerts(&self, alerts: &[AlertRow], changes: &[AlertChangeRow], notices: &[Notice]) -> Result<()> {
        self.tx(|tx| {
            for a in alerts {
                upsert_alert(tx, a)?;
            }
            append_changes(tx, changes)?;
            enqueue(tx, notices)
        })
    }

    fn put_alert(
        &self,
        alert: &AlertRow,
        changes: &[AlertChangeRow],
        notices: &[Notice],
        audit: &AuditEntry,
    ) -> Result<()> {
        self.tx(|tx| {
            upsert_alert(tx, alert)?;
            append_changes(tx, changes)?;
            enqueue(tx, notices)?;
            super::append_audit(tx, audit)
        })
    }

    fn alert_changes_after(&self, seq: i64, limit: u32) -> Result<Vec<AlertChangeRow>> {
        self.with(|c| {
            let mut st = c.prepare_cached(
                "SELECT seq, workspace_id, alert_id, change, at, body FROM alert_changes WHERE seq > ?1 ORDER BY seq LIMIT ?2",
            )?;
            let rows = st.query_map(params![seq, limit], |r| {
                Ok(AlertChangeRow {
                    seq: r.get(0)?,
                    workspace_id: r.get(1)?,
                    alert_id: r.get(2)?,
                    change: r.get(3)?,
                    at: r.get(4)?,
                    body: parse(r.get(5)?),
                })
            })?;
            Ok(rows.collect::<rusqlite::Result<_>>()?)
        })
    }

    fn purge_alert_changes(&self, before: i64) -> Result<usize> {
        // Keep the newest row whatever its age: its seq is where AUTOINCREMENT goes on.
        self.with(|c| {
            Ok(c.execute(
                "DELETE FROM alert_changes WHERE at < ?1 AND seq < (SELECT MAX(seq) FROM alert_changes)",
                [before],
            )?)
        })
    }

    fn last_alert_change(&self) -> Result<i64> {
        self.with(|c| Ok(c.query_row("SELECT COALESCE(MAX(seq), 0) FROM alert_changes", [], |r| r.get(0))?))
    }

    fn get_alert(&self, workspace_id: &str, id: &str) -> Result<Option<AlertRow>> {
        self.with(|c| {
            Ok(c.query_row(
                &format!("SELECT {ALERT_COLS} FROM alerts WHERE workspace_id = ?1 AND id = ?2"),
                [workspace_id, id],
                alert_from_row,
            )
            .optional()?)
        })
    }

    fn list_alerts(&self, f: &AlertFilter) -> Result<Vec<AlertRow>> {
        self.with(|c| {
            let mut st = c.prepare_cached(&format!(
                "SELECT {ALERT_COLS} FROM alerts
                 WHERE workspace_id = ?1 AND (?2 IS NULL OR status = ?2) AND (?3 IS NULL OR severity = ?3)
                   AND (?4 IS NULL OR rule = ?4) AND (?5 IS NULL OR key_id = ?5) AND (?6 IS NULL OR last_seen >= ?6)
                   AND (?7 IS NULL OR id < ?7)
                 ORDER BY id DESC LIMIT ?8"
            ))?;
            let rows = st.query_map(
                params![f.workspace_id, f.status, f.severity, f.rule, f.key_id, f.since, f.before_id, f.limit],
                alert_from_row,
            )?;
            Ok(rows.collect::<rusqlite::Result<_>>()?)
        })
    }

    fn live_alerts(&self, resolved_since: i64) -> Result<Vec<AlertRow>> {
        self.with(|c| {
            let mut st = c.prepare(&format!(
                "SELECT {ALERT_COLS} FROM alerts WHERE status != 'resolved'
                 UNION ALL SELECT {ALERT_COLS} FROM alerts WHERE status = 'resolved' AND updated_at >= ?1"
            ))?;
            let rows = st.query_map([resolved_since], alert_from_row)?;
            Ok(rows.collect::<rusqlite::Result<_>>()?)
        })
    }

    fn rule_overrides(&self) -> Result<Vec<RuleOverrideRow>> {
        self.with(|c| {
            let mut st =
                c.prepare("SELECT workspace_id, level, target_id, keyspace_id, rules, updated_at FROM alert_rules")?;
            let rows = st.query_map([], |r| {
                Ok(RuleOverrideRow {
                    workspace_id: r.get(0)?,
                    level: r.get(1)?,
                    target_id: r.get(2)?,
                    keyspace_id: r.get(3)?,
                    rules: parse(r.get(4)?),
                    updated_at: r.get(5)?,
                })
            })?;
            Ok(rows.collect::<rusqlite::Result<_>>()?)
        })
    }

    fn put_rule_overrides(&self, row: &RuleOverrideRow, audit: &AuditEntry) -> Result<()> {
        self.tx(|tx| {
            let empty = row.rules.as_object().is_some_and(|o| o.is_empty());
            if empty {
                tx.execute(
                    "DELETE FROM alert_rules WHERE workspace_id = ?1 AND level = ?2 AND target_id = ?3",
                    params![row.workspace_id, row.level, row.target_id],
                )?;
            } else {
                tx.execute(
                    "INSERT INTO alert_rules (workspace_id, level, target_id, keyspace_id, rules, updated_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                     ON CONFLICT(workspace_id, level, target_id)
                     DO UPDATE SET rules = excluded.rules, keyspace_id = excluded.keyspace_id, updated_at = excluded.updated_at",
                    params![row.workspace_id, row.level, row.target_id, row.keyspace_id, row.rules.to_string(), row.updated_at],
                )?;
            }
            super::append_audit(tx, audit)
        })
    }

    fn load_learned(&self, key_id: &str) -> Result<Option<Value>> {
        self.with(|c| {
            let text: Option<String> =
                c.query_row("SELECT body FROM alert_learned WHERE key_id = ?1", [key_id], |r| r.get(0)).optional()?;
            Ok(text.map(parse))
        })
    }

    fn save_learned(&self, rows: &[(String, String, Value)], at: i64) -> Result<()> {
        self.tx(|tx| {
            let mut st = tx.prepare_cached(
                "INSERT INTO alert_learned (key_id, workspace_id, body, updated_at) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT(key_id) DO UPDATE SET body = excluded.body, updated_at = excluded.updated_at",
            )?;
            for (key, ws, body) in rows {
                st.execute(params![key, ws, body.to_string(), at])?;
            }
            Ok(())
        })
    }

    fn insert_webhook(&self, w: &WebhookRow, audit: &AuditEntry) -> Result<()> {
        self.tx(|tx| {
            tx.execute(
                &format!("INSERT INTO webhooks ({HOOK_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)"),
                params![
                    w.id,
                    w.workspace_id,
                    w.url,
                    serde_json::to_string(&w.events).unwrap_or_else(|_| "[]".into()),
                    w.description,
                    w.secret,
                    w.format,
                    w.created_at,
                    w.deleted_at
                ],
            )?;
            super::append_audit(tx, audit)
        })
    }

    fn delete_webhook(&self, workspace_id: &str, id: &str, at: i64, audit: &AuditEntry) -> Result<()> {
        self.tx(|tx| {
            let n = tx.execute(
                "UPDATE webhooks SET deleted_at = ?3 WHERE workspace_id = ?1 AND id = ?2 AND deleted_at IS NULL",
                params![workspace_id, id, at],
            )?;
            if n == 0 {
                return Err(StoreError::NotFound("webhook"));
            }
            // Nothing more goes to a deleted endpoint.
            tx.execute(
                "UPDATE webhook_deliveries SET status = 'dead', next_attempt_at = NULL, last_error = 'endpoint deleted'
                 WHERE webhook_id = ?1 AND status = 'pending'",
                [id],
            )?;
            super::append_audit(tx, audit)
        })
    }

    fn get_webhook(&self, workspace_id: &str, id: &str) -> Result<Option<WebhookRow>> {
        self.with(|c| {
            Ok(c.query_row(
                &format!("SELECT {HOOK_COLS} FROM webhooks WHERE workspace_id = ?1 AND id = ?2 AND deleted_at IS NULL"),
                [workspace_id, id],
                hook_from_row,
            )
            .optional()?)
        })
    }

    fn list_webhooks(&self, workspace_id: &str) -> Result<Vec<WebhookRow>> {
        self.with(|c| {
            let mut st = c.prepare(&format!(
                "SELECT {HOOK_COLS} FROM webhooks WHERE workspace_id = ?1 AND deleted_at IS NULL ORDER BY id"
            ))?;
            let rows = st.query_map([workspace_id], hook_from_row)?;
            Ok(rows.collect::<rusqlite::Result<_>>()?)
        })
    }

    fn due_deliveries(&self, now: i64, limit: u32) -> Result<Vec<DueDelivery>> {
        self.with(|c| {
            let mut st = c.prepare_cached(&format!(
                "SELECT {DELIVERY_COLS}, w.url, w.secret, w.format, m.body
                 FROM webhook_deliveries d
                 JOIN webhooks w ON w.id = d.webhook_id
                 JOIN webhook_messages m ON m.id = d.message_id
                 WHERE d.status = 'pending' AND d.next_attempt_at <= ?1
                 ORDER BY d.next_attempt_at, d.id LIMIT ?2"
            ))?;
            let rows = st.query_map(params![now, limit], |r| {
                Ok(DueDelivery {
                    delivery: delivery_from_row(r)?,
                    url: r.get(13)?,
                    secret: r.get(14)?,
                    format: r.get(15)?,
                    body: parse(r.get(16)?),
                })
            })?;
            Ok(rows.collect::<rusqlite::Result<_>>()?)
        })
    }

    fn record_attempt(&self, a: &AttemptRow, next: AttemptNext) -> Result<()> {
        self.tx(|tx| {
            tx.execute(
                "INSERT OR REPLACE INTO webhook_attempts (delivery_id, n, at, status, error, duration_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![a.delivery_id, a.n, a.at, a.status.map(i64::from), a.error, a.duration_ms],
            )?;
            let (status, next_at, delivered) = match next {
                AttemptNext::Delivered => ("delivered", None, Some(a.at)),
                AttemptNext::RetryAt(at) => ("pending", Some(at), None),
                AttemptNext::Dead => ("dead", None, None),
            };
            tx.execute(
                "UPDATE webhook_deliveries SET status = ?2, attempts = ?3, next_attempt_at = ?4, last_attempt_at = ?5,
                        last_status = ?6, last_error = ?7, delivered_at = ?8
                 WHERE id = ?1",
                params![a.delivery_id, status, a.n, next_at, a.at, a.status.map(i64::from), a.error, delivered],
            )?;
            Ok(())
        })
    }

    fn list_deliveries(
        &self,
        workspace_id: &str,
        webhook_id: &str,
        before_id: Option<&str>,
        limit: u32,
    ) -> Result<Vec<DeliveryRow>> {
        self.with(|c| {
            let mut st = c.prepare_cached(&format!(
                "SELECT {DELIVERY_COLS} FROM webhook_deliveries d
                 WHERE d.workspace_id = ?1 AND d.webhook_id = ?2 AND (?3 IS NULL OR d.id < ?3)
                 ORDER BY d.id DESC LIMIT ?4"
            ))?;
            let rows = st.query_map(params![workspace_id, webhook_id, before_id, limit], delivery_from_row)?;
            Ok(rows.collect::<rusqlite::Result<_>>()?)
        })
    }

    fn delivery_attempts(&self, delivery_id: &str) -> Result<Vec<AttemptRow>> {
        self.with(|c| {
            let mut st = c.prepare_cached(
                "SELECT delivery_id, n, at, status, error, duration_ms FROM webhook_attempts WHERE delivery_id = ?1 ORDER BY n",
            )?;
            let rows = st.query_map([delivery_id], |r| {
                Ok(AttemptRow {
                    delivery_id: r.get(0)?,
                    n: r.get(1)?,
                    at: r.get(2)?,
                    status: r.get::<_, Option<i64>>(3)?.map(|s| s as u16),
                    error: r.get(4)?,
                    duration_ms: r.get(5)?,
                })
            })?;
            Ok(rows.collect::<rusqlite::Result<_>>()?)
        })
    }

    fn redeliver(&self, workspace_id: &str, webhook_id: &str, delivery_id: &str, now: i64) -> Result<bool> {
        self.with(|c| {
            let n = c.execute(
                "UPDATE webhook_deliveries SET status = 'pending', next_attempt_at = ?4
                 WHERE workspace_id = ?1 AND webhook_id = ?2 AND id = ?3
                   AND webhook_id IN (SELECT id FROM webhooks WHERE deleted_at IS NULL)",
                params![workspace_id, webhook_id, delivery_id, now],
            )?;
            Ok(n > 0)
        })
    }

    fn pending_deliveries(&self) -> Result<u64> {
        self.with(|c| {
            Ok(c.query_row("SELECT COUNT(*) FROM webhook_deliveries WHERE status = 'pending'", [], |r| r.get(0))?)
        })
    }
}

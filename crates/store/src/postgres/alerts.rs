//! [`AlertStore`] on PostgreSQL: the same rows as `sqlite/alerts.rs`, in the
//! same database as keys, so an alert, a key change and their notices commit
//! together. Alert changes are written under the write lock: their `seq`
//! is the sinks' cursor, and must follow commit order.

use keyward_core::id::new_id;
use postgres::{Row, Transaction};
use serde_json::Value;

use super::store::{PgStore, parse};
use crate::alerts::{
    AlertChangeRow, AlertFilter, AlertRow, AlertStore, AttemptNext, AttemptRow, DeliveryRow, DueDelivery, Notice,
    RuleOverrideRow, WebhookRow,
};
use crate::{AuditEntry, Result, StoreError};

/// Writes each notice as a message and a pending delivery for every live
/// endpoint of its workspace that takes its type.
pub(super) fn enqueue(tx: &mut Transaction<'_>, notices: &[Notice]) -> Result<()> {
    if notices.is_empty() {
        return Ok(());
    }
    let hooks = tx.prepare("SELECT id, events FROM webhooks WHERE workspace_id = $1 AND deleted_at IS NULL")?;
    let message = tx.prepare(
        "INSERT INTO webhook_messages (id, workspace_id, event_type, body, created_at) VALUES ($1, $2, $3, $4, $5)",
    )?;
    let delivery = tx.prepare(
        "INSERT INTO webhook_deliveries (id, workspace_id, webhook_id, message_id, event_type, status, attempts,
                                         next_attempt_at, created_at)
         VALUES ($1, $2, $3, $4, $5, 'pending', 0, $6, $6)",
    )?;
    for n in notices {
        let mut takers = Vec::new();
        for r in tx.query(&hooks, &[&n.workspace_id])? {
            let (id, events): (String, String) = (r.try_get(0)?, r.try_get(1)?);
            let events: Vec<String> = serde_json::from_str(&events).unwrap_or_default();
            if events.is_empty() || events.iter().any(|e| e == &n.event_type) {
                takers.push(id);
            }
        }
        if takers.is_empty() {
            continue;
        }
        tx.execute(&message, &[&n.id, &n.workspace_id, &n.event_type, &n.body.to_string(), &n.created_at])?;
        for hook in takers {
            tx.execute(
                &delivery,
                &[&new_id("dlv", n.created_at), &n.workspace_id, &hook, &n.id, &n.event_type, &n.created_at],
            )?;
        }
    }
    Ok(())
}

/// How long a claimed delivery is left to the node that claimed it.
const DELIVERY_LEASE_MS: i64 = 60_000;

const ALERT_COLS: &str =
    "id, workspace_id, rule, severity, status, subject, key_id, first_seen, last_seen, updated_at, body";

fn alert_from_row(r: &Row) -> Result<AlertRow> {
    Ok(AlertRow {
        id: r.try_get(0)?,
        workspace_id: r.try_get(1)?,
        rule: r.try_get(2)?,
        severity: r.try_get(3)?,
        status: r.try_get(4)?,
        subject: r.try_get(5)?,
        key_id: r.try_get(6)?,
        first_seen: r.try_get(7)?,
        last_seen: r.try_get(8)?,
        updated_at: r.try_get(9)?,
        body: parse(r.try_get(10)?),
    })
}

fn upsert_alert(tx: &mut Transaction<'_>, a: &AlertRow) -> Result<()> {
    tx.execute(
        "INSERT INTO alerts (id, workspace_id, rule, severity, status, subject, key_id, first_seen, last_seen, updated_at, body)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
         ON CONFLICT (id) DO UPDATE SET severity = excluded.severity, status = excluded.status,
             last_seen = excluded.last_seen, updated_at = excluded.updated_at, body = excluded.body
         WHERE alerts.workspace_id = excluded.workspace_id",
        &[
            &a.id,
            &a.workspace_id,
            &a.rule,
            &a.severity,
            &a.status,
            &a.subject,
            &a.key_id,
            &a.first_seen,
            &a.last_seen,
            &a.updated_at,
            &a.body.to_string(),
        ],
    )?;
    Ok(())
}

const HOOK_COLS: &str = "id, workspace_id, url, events, description, secret, format, created_at, deleted_at";

fn hook_from_row(r: &Row) -> Result<WebhookRow> {
    let events: String = r.try_get(3)?;
    Ok(WebhookRow {
        id: r.try_get(0)?,
        workspace_id: r.try_get(1)?,
        url: r.try_get(2)?,
        events: serde_json::from_str(&events).unwrap_or_default(),
        description: r.try_get(4)?,
        secret: r.try_get(5)?,
        format: r.try_get(6)?,
        created_at: r.try_get(7)?,
        deleted_at: r.try_get(8)?,
    })
}

const DELIVERY_COLS: &str = "d.id, d.workspace_id, d.webhook_id, d.message_id, d.event_type, d.status, d.attempts,
    d.next_attempt_at, d.last_attempt_at, d.last_status, d.last_error, d.created_at, d.delivered_at";

fn delivery_from_row(r: &Row) -> Result<DeliveryRow> {
    Ok(DeliveryRow {
        id: r.try_get(0)?,
        workspace_id: r.try_get(1)?,
        webhook_id: r.try_get(2)?,
        message_id: r.try_get(3)?,
        event_type: r.try_get(4)?,
        status: r.try_get(5)?,
        attempts: r.try_get::<_, i64>(6)? as u32,
        next_attempt_at: r.try_get(7)?,
        last_attempt_at: r.try_get(8)?,
        last_status: r.try_get::<_, Option<i64>>(9)?.map(|s| s as u16),
        last_error: r.try_get(10)?,
        created_at: r.try_get(11)?,
        delivered_at: r.try_get(12)?,
    })
}

fn append_changes(tx: &mut Transaction<'_>, changes: &[AlertChangeRow]) -> Result<()> {
    for c in changes {
        tx.execute(
            "INSERT INTO alert_changes (workspace_id, alert_id, change, at, body) VALUES ($1, $2, $3, $4, $5)",
            &[&c.workspace_id, &c.alert_id, &c.change, &c.at, &c.body.to_string()],
        )?;
    }
    Ok(())
}

impl AlertStore for PgStore {
    fn write_alerts(&self, alerts: &[AlertRow], changes: &[AlertChangeRow], notices: &[Notice]) -> Result<()> {
        self.tx("writing alerts", |tx| {
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
        self.tx("writing an alert", |tx| {
            upsert_alert(tx, alert)?;
            append_changes(tx, changes)?;
            enqueue(tx, notices)?;
            super::store::append_audit(tx, audit)
        })
    }

    fn alert_changes_after(&self, seq: i64, limit: u32) -> Result<Vec<AlertChangeRow>> {
        self.with("reading alert changes", |c| {
            c.query(
                "SELECT seq, workspace_id, alert_id, change, at, body FROM alert_changes WHERE seq > $1 ORDER BY seq LIMIT $2",
                &[&seq, &i64::from(limit)],
            )?
            .iter()
            .map(|r| {
                Ok(AlertChangeRow {
                    seq: r.try_get(0)?,
                    workspace_id: r.try_get(1)?,
                    alert_id: r.try_get(2)?,
                    change: r.try_get(3)?,
                    at: r.try_get(4)?,
                    body: parse(r.try_get(5)?),
                })
            })
            .collect()
        })
    }

    fn purge_alert_changes(&self, before: i64) -> Result<usize> {
        self.with("purging alert changes", |c| {
            Ok(c.execute(
                "DELETE FROM alert_changes WHERE at < $1 AND seq < (SELECT MAX(seq) FROM alert_changes)",
                &[&before],
            )? as usize)
        })
    }

    fn last_alert_change(&self) -> Result<i64> {
        self.with("reading alert changes", |c| {
            Ok(c.query_one("SELECT COALESCE(MAX(seq), 0)::BIGINT FROM alert_changes", &[])?.try_get(0)?)
        })
    }

    fn get_alert(&self, workspace_id: &str, id: &str) -> Result<Option<AlertRow>> {
        self.with("reading an alert", |c| {
            c.query_opt(
                &format!("SELECT {ALERT_COLS} FROM alerts WHERE workspace_id = $1 AND id = $2"),
                &[&workspace_id, &id],
            )?
            .as_ref()
            .map(alert_from_row)
            .transpose()
        })
    }

    fn list_alerts(&self, f: &AlertFilter) -> Result<Vec<AlertRow>> {
        self.with("listing alerts", |c| {
            c.query(
                &format!(
                    "SELECT {ALERT_COLS} FROM alerts
                     WHERE workspace_id = $1 AND ($2::TEXT IS NULL OR status = $2) AND ($3::TEXT IS NULL OR severity = $3)
                       AND ($4::TEXT IS NULL OR rule = $4) AND ($5::TEXT IS NULL OR key_id = $5)
                       AND ($6::BIGINT IS NULL OR last_seen >= $6) AND ($7::TEXT IS NULL OR id < $7)
                     ORDER BY id DESC LIMIT $8"
                ),
                &[&f.workspace_id, &f.status, &f.severity, &f.rule, &f.key_id, &f.since, &f.before_id, &i64::from(f.limit)],
            )?
            .iter()
            .map(alert_from_row)
            .collect()
        })
    }

    fn live_alerts(&self, resolved_since: i64) -> Result<Vec<AlertRow>> {
        self.with("reading live alerts", |c| {
            c.query(
                &format!(
                    "SELECT {ALERT_COLS} FROM alerts WHERE status != 'resolved'
                     UNION ALL SELECT {ALERT_COLS} FROM alerts WHERE status = 'resolved' AND updated_at >= $1"
                ),
                &[&resolved_since],
            )?
            .iter()
            .map(alert_from_row)
            .collect()
        })
    }

    fn rule_overrides(&self) -> Result<Vec<RuleOverrideRow>> {
        self.with("reading rule overrides", |c| {
            c.query("SELECT workspace_id, level, target_id, keyspace_id, rules, updated_at FROM alert_rules", &[])?
                .iter()
                .map(|r| {
                    Ok(RuleOverrideRow {
                        workspace_id: r.try_get(0)?,
                        level: r.try_get(1)?,
                        target_id: r.try_get(2)?,
                        keyspace_id: r.try_get(3)?,
                        rules: parse(r.try_get(4)?),
                        updated_at: r.try_get(5)?,
                    })
                })
                .collect()
        })
    }

    fn put_rule_overrides(&self, row: &RuleOverrideRow, audit: &AuditEntry) -> Result<()> {
        self.tx("writing rule overrides", |tx| {
            let empty = row.rules.as_object().is_some_and(|o| o.is_empty());
            if empty {
                tx.execute(
                    "DELETE FROM alert_rules WHERE workspace_id = $1 AND level = $2 AND target_id = $3",
                    &[&row.workspace_id, &row.level, &row.target_id],
                )?;
            } else {
                tx.execute(
                    "INSERT INTO alert_rules (workspace_id, level, target_id, keyspace_id, rules, updated_at)
                     VALUES ($1, $2, $3, $4, $5, $6)
                     ON CONFLICT (workspace_id, level, target_id)
                     DO UPDATE SET rules = excluded.rules, keyspace_id = excluded.keyspace_id, updated_at = excluded.updated_at",
                    &[&row.workspace_id, &row.level, &row.target_id, &row.keyspace_id, &row.rules.to_string(), &row.updated_at],
                )?;
            }
            super::store::note_change(tx, "rules", &row.workspace_id, &row.target_id)?;
            super::store::append_audit(tx, audit)
        })
    }

    fn load_learned(&self, key_id: &str) -> Result<Option<Value>> {
        self.with("reading learned state", |c| {
            let text: Option<String> = c
                .query_opt("SELECT body FROM alert_learned WHERE key_id = $1", &[&key_id])?
                .map(|r| r.try_get(0))
                .transpose()?;
            Ok(text.map(parse))
        })
    }

    fn save_learned(&self, rows: &[(String, String, Value)], at: i64) -> Result<()> {
        self.tx_unordered("saving learned state", |tx| {
            let st = tx.prepare(
                "INSERT INTO alert_learned (key_id, workspace_id, body, updated_at) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (key_id) DO UPDATE SET body = excluded.body, updated_at = excluded.updated_at",
            )?;
            for (key, ws, body) in rows {
                tx.execute(&st, &[key, ws, &body.to_string(), &at])?;
            }
            Ok(())
        })
    }

    fn insert_webhook(&self, w: &WebhookRow, audit: &AuditEntry) -> Result<()> {
        self.tx("creating a webhook", |tx| {
            tx.execute(
                &format!("INSERT INTO webhooks ({HOOK_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"),
                &[
                    &w.id,
                    &w.workspace_id,
                    &w.url,
                    &serde_json::to_string(&w.events).unwrap_or_else(|_| "[]".into()),
                    &w.description,
                    &w.secret,
                    &w.format,
                    &w.created_at,
                    &w.deleted_at,
                ],
            )?;
            super::store::append_audit(tx, audit)
        })
    }

    fn delete_webhook(&self, workspace_id: &str, id: &str, at: i64, audit: &AuditEntry) -> Result<()> {
        self.tx("deleting a webhook", |tx| {
            let n = tx.execute(
                "UPDATE webhooks SET deleted_at = $3 WHERE workspace_id = $1 AND id = $2 AND deleted_at IS NULL",
                &[&workspace_id, &id, &at],
            )?;
            if n == 0 {
                return Err(StoreError::NotFound("webhook"));
            }
            // Nothing more goes to a deleted endpoint.
            tx.execute(
                "UPDATE webhook_deliveries SET status = 'dead', next_attempt_at = NULL, last_error = 'endpoint deleted'
                 WHERE webhook_id = $1 AND status = 'pending'",
                &[&id],
            )?;
            super::store::append_audit(tx, audit)
        })
    }

    fn get_webhook(&self, workspace_id: &str, id: &str) -> Result<Option<WebhookRow>> {
        self.with("reading a webhook", |c| {
            c.query_opt(
                &format!("SELECT {HOOK_COLS} FROM webhooks WHERE workspace_id = $1 AND id = $2 AND deleted_at IS NULL"),
                &[&workspace_id, &id],
            )?
            .as_ref()
            .map(hook_from_row)
            .transpose()
        })
    }

    fn list_webhooks(&self, workspace_id: &str) -> Result<Vec<WebhookRow>> {
        self.with("listing webhooks", |c| {
            c.query(
                &format!("SELECT {HOOK_COLS} FROM webhooks WHERE workspace_id = $1 AND deleted_at IS NULL ORDER BY id"),
                &[&workspace_id],
            )?
            .iter()
            .map(hook_from_row)
            .collect()
        })
    }

    /// Claims the due deliveries for this node: each is leased for a minute
    /// (its next attempt moved out), so other nodes skip it; a node that dies
    /// mid-send leaves it to the next one after the lease (at least once).
    fn due_deliveries(&self, now: i64, limit: u32) -> Result<Vec<DueDelivery>> {
        self.tx_unordered("claiming due deliveries", |tx| {
            let claimed: Vec<String> = tx
                .query(
                    "WITH due AS (
                         SELECT id FROM webhook_deliveries WHERE status = 'pending' AND next_attempt_at <= $1
                         ORDER BY next_attempt_at, id LIMIT $2 FOR UPDATE SKIP LOCKED)
                     UPDATE webhook_deliveries d SET next_attempt_at = $1 + $3 FROM due WHERE d.id = due.id
                     RETURNING d.id",
                    &[&now, &i64::from(limit), &DELIVERY_LEASE_MS],
                )?
                .iter()
                .map(|r| r.try_get(0))
                .collect::<Result<_, _>>()?;
            if claimed.is_empty() {
                return Ok(Vec::new());
            }
            tx.query(
                &format!(
                    "SELECT {DELIVERY_COLS}, w.url, w.secret, w.format, m.body
                     FROM webhook_deliveries d
                     JOIN webhooks w ON w.id = d.webhook_id
                     JOIN webhook_messages m ON m.id = d.message_id
                     WHERE d.id = ANY($1)
                     ORDER BY d.created_at, d.id"
                ),
                &[&claimed],
            )?
            .iter()
            .map(|r| {
                Ok(DueDelivery {
                    delivery: delivery_from_row(r)?,
                    url: r.try_get(13)?,
                    secret: r.try_get(14)?,
                    format: r.try_get(15)?,
                    body: parse(r.try_get(16)?),
                })
            })
            .collect()
        })
    }

    fn record_attempt(&self, a: &AttemptRow, next: AttemptNext) -> Result<()> {
        self.tx_unordered("recording a delivery attempt", |tx| {
            let status = a.status.map(i64::from);
            let n = i64::from(a.n);
            tx.execute(
                "INSERT INTO webhook_attempts (delivery_id, n, at, status, error, duration_ms)
                 VALUES ($1, $2, $3, $4, $5, $6)
                 ON CONFLICT (delivery_id, n) DO UPDATE SET at = excluded.at, status = excluded.status,
                     error = excluded.error, duration_ms = excluded.duration_ms",
                &[&a.delivery_id, &n, &a.at, &status, &a.error, &a.duration_ms],
            )?;
            let (state, next_at, delivered) = match next {
                AttemptNext::Delivered => ("delivered", None, Some(a.at)),
                AttemptNext::RetryAt(at) => ("pending", Some(at), None),
                AttemptNext::Dead => ("dead", None, None),
            };
            tx.execute(
                "UPDATE webhook_deliveries SET status = $2, attempts = $3, next_attempt_at = $4, last_attempt_at = $5,
                        last_status = $6, last_error = $7, delivered_at = $8
                 WHERE id = $1",
                &[&a.delivery_id, &state, &n, &next_at, &a.at, &status, &a.error, &delivered],
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
        self.with("listing deliveries", |c| {
            c.query(
                &format!(
                    "SELECT {DELIVERY_COLS} FROM webhook_deliveries d
                     WHERE d.workspace_id = $1 AND d.webhook_id = $2 AND ($3::TEXT IS NULL OR d.id < $3)
                     ORDER BY d.id DESC LIMIT $4"
                ),
                &[&workspace_id, &webhook_id, &before_id, &i64::from(limit)],
            )?
            .iter()
            .map(delivery_from_row)
            .collect()
        })
    }

    fn delivery_attempts(&self, delivery_id: &str) -> Result<Vec<AttemptRow>> {
        self.with("reading delivery attempts", |c| {
            c.query(
                "SELECT delivery_id, n, at, status, error, duration_ms FROM webhook_attempts WHERE delivery_id = $1 ORDER BY n",
                &[&delivery_id],
            )?
            .iter()
            .map(|r| {
                Ok(AttemptRow {
                    delivery_id: r.try_get(0)?,
                    n: r.try_get::<_, i64>(1)? as u32,
                    at: r.try_get(2)?,
                    status: r.try_get::<_, Option<i64>>(3)?.map(|s| s as u16),
                    error: r.try_get(4)?,
                    duration_ms: r.try_get(5)?,
                })
            })
            .collect()
        })
    }

    fn redeliver(&self, workspace_id: &str, webhook_id: &str, delivery_id: &str, now: i64) -> Result<bool> {
        self.with("redelivering", |c| {
            let n = c.execute(
                "UPDATE webhook_deliveries SET status = 'pending', next_attempt_at = $4
                 WHERE workspace_id = $1 AND webhook_id = $2 AND id = $3
                   AND webhook_id IN (SELECT id FROM webhooks WHERE deleted_at IS NULL)",
                &[&workspace_id, &webhook_id, &delivery_id, &now],
            )?;
            Ok(n > 0)
        })
    }

    fn pending_deliveries(&self) -> Result<u64> {
        self.with("counting pending deliveries", |c| {
            let n: i64 =
                c.query_one("SELECT COUNT(*) FROM webhook_deliveries WHERE status = 'pending'", &[])?.try_get(0)?;
            Ok(n as u64)
        })
    }
}

//! Key lifecycle: rotation with an overlap, bulk emergency revocation, the
//! revocation health check, and expiry reminders.

use keyward_core::id::new_id;
use keyward_core::time::{now_ms, to_rfc3339};
use keyward_core::{KeyPrefix, Outcome, Permission, RawKey};
use keyward_store::{KeyFilter, KeyRecord, Reminder};
use serde_json::json;

use crate::api::{
    BulkRevoke, BulkRevoked, ListRemindersQuery, ReminderPage, ReminderView, Revocation, RevocationCheck, RevokeKey,
    RotateKey, RotatedKey,
};
use crate::index::QuotaFrom;
use crate::validate::{check_opt_text, invalid, page_limit, parse_instant, to_value};
use crate::verify::VerifyInput;
use crate::{Actor, Result, Service, ServiceError, current_hash_kind};

/// Whether a revocation check's code means the key is rejected as it should be.
/// Default rotation overlap: 24 hours.
pub const DEFAULT_OVERLAP_MS: i64 = 24 * 3600 * 1000;
/// Longest rotation overlap: 30 days.
pub const MAX_OVERLAP_MS: i64 = 30 * 24 * 3600 * 1000;
/// Days before expiry at which a reminder is recorded.
pub const REMINDER_DAYS: [i64; 3] = [14, 7, 1];
const DAY_MS: i64 = 24 * 3600 * 1000;

impl Service {
    /// Rotates a key: a new key with the same owner, meta, scopes, limits and
    /// quota, returned once; the old key keeps working, deprecated, until the
    /// overlap ends, then answers `ROTATED`. At most one generation overlaps:
    /// rotating a key whose predecessor is still in its overlap ends that
    /// predecessor's overlap now. A key already rotated cannot be rotated again
    /// (rotate its successor).
    pub async fn rotate_key(&self, actor: &Actor, id: &str, req: RotateKey) -> Result<RotatedKey> {
        actor.require(Permission::KeysWrite, "rotate keys")?;
        let overlap = req.overlap_ms.unwrap_or(DEFAULT_OVERLAP_MS);
        if !(0..=MAX_OVERLAP_MS).contains(&overlap) {
            return Err(invalid(format!("overlap_ms must be between 0 and {MAX_OVERLAP_MS} (30 days)")));
        }
        let mut old = self.load_key(actor, id).await?;
        if old.revoked_at.is_some() {
            return Err(ServiceError::Conflict(format!("key {} is revoked; revocation is final", old.id)));
        }
        if let Some(next) = &old.rotated_to {
            return Err(ServiceError::Conflict(format!(
                "key {} was already rotated to {next}; rotate that key instead",
                old.id
            )));
        }
        let now = now_ms();
        let ks_id = old.keyspace_id.clone();
        let ks = {
            let (ws, k) = (actor.workspace_id.clone(), ks_id.clone());
            self.blocking(move |s| s.get_keyspace(&ws, &k))
                .await?
                .ok_or_else(|| ServiceError::not_found("keyspace", &ks_id))?
        };
        let prefix = KeyPrefix::new(&ks.prefix).map_err(|e| invalid(format!("keyspace prefix: {e}")))?;
        let raw = RawKey::generate(&prefix);
        let cached_old = self.index.get(&old.hash);
        let live_quota = cached_old.as_ref().and_then(|c| c.quota_mark());
        // The new key lives as long as the old one was meant to, within the age policy.
        let lifetime = old.expires_at.map(|e| e - old.created_at);
        let expires_at = match (ks.max_age_ms, lifetime) {
            (Some(max), Some(l)) => Some(now + l.min(max)),
            (Some(max), None) => Some(now + max),
            (None, Some(l)) => Some(now + l),
            (None, None) => None,
        };
        let new = KeyRecord {
            id: new_id("key", now),
            hash: self.hasher.hash(raw.expose()),
            hash_kind: current_hash_kind(&self.hasher),
            hint: raw.hint(),
            expires_at,
            created_at: now,
            updated_at: now,
            last_used_at: None,
            last_used_ip: None,
            remaining: live_quota.as_ref().map(|q| q.remaining).or(old.remaining),
            refilled_at: live_quota.as_ref().map(|q| q.refilled_at).or(old.refilled_at),
            rotated_at: None,
            rotated_to: None,
            overlap_until: None,
            revocation_check_at: None,
            revocation_check_code: None,
            revoked_at: None,
            revoke_reason: None,
            revoke_note: None,
            incident_id: None,
            ..old.clone()
        };
        let before = to_value(&self.view_of(&old, now));
        old.rotated_at = Some(now);
        old.rotated_to = Some(new.id.clone());
        old.overlap_until = Some(now + overlap);
        old.updated_at = now;
        // One generation of overlap at most: predecessors still overlapping end now.
        let (ws, oid) = (actor.workspace_id.clone(), old.id.clone());
        let mut ended = Vec::new();
        for mut p in self.blocking(move |s| s.keys_rotated_to(&ws, &oid)).await? {
            if p.overlap_until.is_some_and(|t| t > now) && p.revoked_at.is_none() {
                p.overlap_until = Some(now);
                p.updated_at = now;
                ended.push(p);
            }
        }
        let audit = self.audit_entry(
            actor,
            "key.rotate",
            "key",
            &old.id,
            Some(json!({"overlap_until": before["overlap_until"], "rotated_to": null})),
            Some(json!({
                "rotated_to": new.id,
                "overlap_until": to_rfc3339(now + overlap),
                "new_key": {"id": new.id, "hint": new.hint},
                "ended_overlaps": ended.iter().map(|k| k.id.clone()).collect::<Vec<_>>(),
            })),
        );
        let mut audit = audit;
        audit.notify.push(crate::alerts::key_notice(
            "key.rotated",
            &old,
            json!({"new_key_id": new.id, "new_key_hint": new.hint, "overlap_until": to_rfc3339(now + overlap)}),
            now,
        ));
        let sealed = self.seal_if_recoverable(&ks, &new.id, &raw)?;
        let n = new.clone();
        let changed: Vec<KeyRecord> = std::iter::once(old.clone()).chain(ended.iter().cloned()).collect();
        self.blocking(move |s| s.rotate_key_with(&n, sealed.as_deref(), &changed, &audit)).await?;
        let cell = self.keyspace_cell(&ks_id);
        let previous = self.index.put(old.clone(), cell.clone(), QuotaFrom::Live);
        for k in ended {
            self.index.put(k, cell.clone(), QuotaFrom::Live);
        }
        let new_cached = self.index.put_sharing(new.clone(), cell, &previous);
        if let Some(shared) = self.limits.get() {
            // The old key counts against its successor's limits during the
            // overlap (`CachedKey::limiter_id`): they start from its counts.
            let ks = previous.keyspace.get();
            let windows = previous.policy.ratelimits.as_deref().unwrap_or(&ks.ratelimits);
            if let Err(e) = shared.redis.copy(&previous.id, &new_cached.id, windows).await {
                tracing::warn!(error = %e, key_id = %old.id, "Could not carry the key's counts over to its successor in Redis.");
            }
        }
        tracing::info!(key_id = %old.id, new_key_id = %new_cached.id, overlap_ms = overlap, "Key rotated.");
        Ok(RotatedKey {
            key: raw.expose().to_owned(),
            view: crate::views::key_view(&new, Some(&new_cached), now),
            previous: crate::views::key_view(&old, Some(&previous), now),
        })
    }

    /// Revokes every unrevoked key matching the filters as one audited
    /// action, or with `dry_run` only reports which keys that would be.
    pub async fn bulk_revoke(&self, actor: &Actor, req: BulkRevoke) -> Result<BulkRevoked> {
        actor.require(Permission::KeysWrite, "revoke keys")?;
        if req.owner_id.is_none() && req.keyspace_id.is_none() && req.created_before.is_none() {
            return Err(invalid("give at least one of owner_id, keyspace_id, created_before"));
        }
        check_opt_text("note", &req.note, 2000)?;
        self.check_incident_ref(actor, req.incident.as_deref()).await?;
        let created_before = req.created_before.as_deref().map(|s| parse_instant("created_before", s)).transpose()?;
        let now = now_ms();
        let mut matched: Vec<KeyRecord> = Vec::new();
        let mut after = None;
        loop {
            let f = KeyFilter {
                workspace_id: actor.workspace_id.clone(),
                keyspace_id: req.keyspace_id.clone(),
                owner_id: req.owner_id.clone(),
                status: None,
                now,
                after: after.clone(),
                limit: 1000,
                q: None,
            };
            let page = self.blocking(move |s| s.list_keys(&f)).await?;
            let n = page.len();
            after = page.last().map(|k| k.id.clone());
            matched.extend(
                page.into_iter().filter(|k| k.revoked_at.is_none() && created_before.is_none_or(|t| k.created_at < t)),
            );
            if n < 1000 {
                break;
            }
        }
        let key_ids: Vec<String> = matched.iter().map(|k| k.id.clone()).collect();
        if req.dry_run || matched.is_empty() {
            return Ok(BulkRevoked { dry_run: req.dry_run, count: key_ids.len(), key_ids });
        }
        for k in &mut matched {
            if let Some(mark) = self.index.get(&k.hash).and_then(|c| c.quota_mark())
                && k.remaining.is_some()
            {
                k.remaining = Some(mark.remaining);
                k.refilled_at = Some(mark.refilled_at);
            }
            k.revoked_at = Some(now);
            k.revoke_reason = Some(req.reason.as_str().to_owned());
            k.revoke_note = req.note.clone();
            k.incident_id = req.incident.clone();
            k.updated_at = now;
        }
        let audit = self.audit_entry(
            actor,
            "key.bulk_revoke",
            "keys",
            &format!("{} keys", key_ids.len()),
            None,
            Some(json!({
                "filter": {"owner_id": req.owner_id, "keyspace_id": req.keyspace_id, "created_before": req.created_before},
                "reason": req.reason.as_str(),
                "note": req.note,
                "incident": req.incident,
                "key_ids": key_ids,
            })),
        );
        let mut audit = audit;
        audit.notify = matched
            .iter()
            .map(|k| {
                let extra = json!({"reason": req.reason.as_str(), "bulk": true, "incident": req.incident});
                crate::alerts::key_notice("key.revoked", k, extra, now)
            })
            .collect();
        let keys = matched.clone();
        self.blocking(move |s| s.update_keys(&keys, &audit)).await?;
        for k in matched {
            let cell = self.keyspace_cell(&k.keyspace_id);
            self.index.put(k, cell, QuotaFrom::Live);
        }
        tracing::warn!(count = key_ids.len(), reason = req.reason.as_str(), "Keys revoked in bulk.");
        let ids = key_ids.clone();
        let ws = actor.workspace_id.clone();
        let stored = self
            .blocking(move |s| {
                ids.iter().filter_map(|id| s.get_key(&ws, id).transpose()).collect::<Result<Vec<_>, _>>()
            })
            .await?;
        self.check_revocations(stored).await;
        Ok(BulkRevoked { dry_run: false, count: key_ids.len(), key_ids })
    }

    /// Revokes one key, then proves it through the verify path.
    pub async fn revoke_and_check(&self, actor: &Actor, id: &str, req: RevokeKey) -> Result<crate::api::KeyView> {
        let mut view = self.revoke_key(actor, id, req).await?;
        view.revocation_check = self.check_revocation(&actor.workspace_id, id).await;
        Ok(view)
    }

    /// The revocation health check: re-reads the key from the store and runs
    /// its hash through the verify path's lookup and decision. Anything but
    /// `REVOKED` (or `ROTATED`) is a failure: logged as an error, counted in
    /// `keyward_revocation_check_failures_total`, and kept on the key.
    pub async fn check_revocation(&self, workspace_id: &str, key_id: &str) -> Option<RevocationCheck> {
        let (ws, id) = (workspace_id.to_owned(), key_id.to_owned());
        let stored = match self.blocking(move |s| s.get_key(&ws, &id)).await {
            Ok(Some(k)) => k,
            Ok(None) => return None,
            Err(e) => {
                tracing::error!(key_id, error = %e, "Revocation check could not read the key.");
                return None;
            }
        };
        self.check_revocations(vec![stored]).await.pop()
    }

    /// The revocation health check of many keys, as read from the store just
    /// now: each decision comes from the verify path, and all results are
    /// written in one transaction (bulk revocations check thousands at once).
    pub async fn check_revocations(&self, stored: Vec<KeyRecord>) -> Vec<RevocationCheck> {
        let now = now_ms();
        let mut results = Vec::with_capacity(stored.len());
        let mut marks = Vec::with_capacity(stored.len());
        for k in &stored {
            let found = if k.revoked_at.is_none() {
                Revocation::NotRevokedInStore
            } else {
                // The decision the key would get presented bare, from the lookup on;
                // a probe consumes nothing.
                Revocation::of(match self.index.get(&k.hash) {
                    Some(cached) => self.decide_cached(&k.workspace_id, cached, &VerifyInput::probe(), now).outcome,
                    None => Outcome::NotFound,
                })
            };
            let code = found.code();
            if found.ok() {
                tracing::debug!(key_id = %k.id, code, "Revocation check passed.");
            } else {
                metrics::counter!("keyward_revocation_check_failures_total").increment(1);
                tracing::error!(key_id = %k.id, code, "REVOCATION CHECK FAILED: a revoked key is not rejected.");
                self.signal(keyward_alerts::Signal::RevocationCheckFailed {
                    workspace_id: k.workspace_id.clone(),
                    subject: crate::alerts::key_subject(k),
                    code: code.to_owned(),
                    ts: now,
                });
            }
            marks.push((k.id.clone(), now, code.to_owned()));
            results.push(RevocationCheck { at: to_rfc3339(now), code: code.to_owned(), ok: found.ok() });
        }
        let n = marks.len();
        if let Err(e) = self.blocking(move |s| s.record_revocation_checks(&marks)).await {
            tracing::error!(keys = n, error = %e, "Recording revocation checks failed.");
        } else {
            tracing::info!(keys = n, failed = results.iter().filter(|r| !r.ok).count(), "Revocation checks recorded.");
        }
        results
    }

    /// Re-checks every key revoked in the last `days` days; returns (checked, failed).
    pub async fn recheck_revoked(&self, days: i64) -> Result<(usize, usize)> {
        let since = now_ms() - days * DAY_MS;
        let keys = self.blocking(move |s| s.revoked_since(since)).await?;
        if keys.is_empty() {
            return Ok((0, 0));
        }
        let checks = self.check_revocations(keys).await;
        Ok((checks.len(), checks.iter().filter(|r| !r.ok).count()))
    }

    /// Records a reminder for every live key that expires within 14, 7 or 1
    /// days (once per key, threshold and expiry); returns how many were new.
    pub async fn record_expiry_reminders(&self) -> Result<usize> {
        let now = now_ms();
        let mut due = Vec::new();
        {
            // Reminders stored by an earlier run are not sent to the store again.
            let mut reminded = self.reminded.lock();
            reminded.retain(|(_, _, exp)| *exp > now);
            for k in self.index.all() {
                let life = k.lifecycle();
                let (Some(exp), None) = (life.expires_at, life.revoked_at) else { continue };
                if exp <= now || k.rotated_to().is_some() {
                    continue;
                }
                for days in REMINDER_DAYS {
                    if exp - now <= days * DAY_MS && !reminded.contains(&(k.id.to_string(), days, exp)) {
                        due.push(Reminder {
                            id: new_id("rem", now),
                            workspace_id: k.workspace_id().to_owned(),
                            key_id: k.id.to_string(),
                            days,
                            expires_at: exp,
                            created_at: now,
                        });
                    }
                }
            }
        }
        if due.is_empty() {
            return Ok(0);
        }
        let marks: Vec<(String, i64, i64)> = due.iter().map(|r| (r.key_id.clone(), r.days, r.expires_at)).collect();
        // One notice per key and run: for its nearest threshold.
        let nearest = |r: &Reminder| !due.iter().any(|o| o.key_id == r.key_id && o.days < r.days);
        let keys: std::collections::HashMap<String, std::sync::Arc<crate::index::CachedKey>> = self
            .index
            .all()
            .into_iter()
            .filter(|k| due.iter().any(|r| *r.key_id == *k.id))
            .map(|k| (k.id.to_string(), k))
            .collect();
        let subject_of = |r: &Reminder| {
            keys.get(&r.key_id).map(|k| keyward_alerts::Subject::Key {
                key_id: r.key_id.clone(),
                key_hint: Some(k.hint()),
                keyspace_id: Some(k.keyspace_id().to_owned()),
                owner_id: k.owner_id.as_deref().map(str::to_owned),
            })
        };
        let notices: Vec<Option<keyward_store::alerts::Notice>> = due
            .iter()
            .map(|r| {
                let Some(keyward_alerts::Subject::Key { key_hint, keyspace_id, owner_id, .. }) =
                    subject_of(r).filter(|_| nearest(r))
                else {
                    return None;
                };
                let data = serde_json::json!({"key_id": r.key_id, "key_hint": key_hint, "keyspace_id": keyspace_id,
                    "owner_id": owner_id, "days": r.days, "expires_at": to_rfc3339(r.expires_at)});
                Some(keyward_alerts::view::message(&r.workspace_id, "key.expiring", data, now))
            })
            .collect();
        let signals: Vec<keyward_alerts::Signal> = due
            .iter()
            .filter(|r| nearest(r))
            .filter_map(|r| {
                Some(keyward_alerts::Signal::Expiring {
                    workspace_id: r.workspace_id.clone(),
                    subject: subject_of(r)?,
                    days: r.days,
                    expires_at: to_rfc3339(r.expires_at),
                    ts: now,
                })
            })
            .collect();
        let key_of: Vec<(String, i64)> = due.iter().map(|r| (r.key_id.clone(), r.days)).collect();
        let new = self.blocking(move |s| s.insert_reminders(&due, &notices)).await?;
        let n = new.iter().filter(|b| **b).count();
        for s in signals {
            let keyward_alerts::Signal::Expiring { subject, days, .. } = &s else { continue };
            let fresh = key_of
                .iter()
                .zip(&new)
                .any(|((k, d), inserted)| *inserted && Some(k.as_str()) == subject.key_id() && d == days);
            if fresh {
                self.signal(s);
            }
        }
        self.reminded.lock().extend(marks);
        if n > 0 {
            tracing::info!(new_reminders = n, "Keys are nearing expiry.");
        }
        Ok(n)
    }

    pub async fn list_reminders(&self, actor: &Actor, q: ListRemindersQuery) -> Result<ReminderPage> {
        actor.require(Permission::KeysRead, "read reminders")?;
        let limit = page_limit(q.limit)?;
        let (ws, key, cursor) = (actor.workspace_id.clone(), q.key_id, q.cursor);
        let mut rows =
            self.blocking(move |s| s.list_reminders(&ws, key.as_deref(), cursor.as_deref(), limit + 1)).await?;
        let next_cursor = if rows.len() > limit as usize {
            rows.truncate(limit as usize);
            rows.last().map(|r| r.id.clone())
        } else {
            None
        };
        let data = rows
            .into_iter()
            .map(|r| ReminderView {
                id: r.id,
                key_id: r.key_id,
                days: r.days,
                expires_at: to_rfc3339(r.expires_at),
                created_at: to_rfc3339(r.created_at),
            })
            .collect();
        Ok(ReminderPage { data, next_cursor })
    }
}

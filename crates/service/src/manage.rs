//! Management use cases: workspaces, keyspaces, keys, root keys, audit.
//! Each checks the actor's role, validates, writes store-then-index, and
//! records an audit entry in the same store transaction as the change.

use keyward_core::id::{is_id, new_id};
use keyward_core::key::DEFAULT_PREFIX;
use keyward_core::policy::RateLimit;
use keyward_core::time::{UnixMs, now_ms, to_rfc3339};
use keyward_core::{KeyPrefix, Permission, RawKey, Role};
use keyward_store::{AuditEntry, AuditFilter, KeyFilter, KeyRecord, KeyStatus, Keyspace, RootKeyRecord, Workspace};
use serde_json::Value;

use crate::api::*;
use crate::index::{KeyspacePolicy, QuotaFrom};
use crate::validate::*;
use crate::views::{audit_view, diff, key_view, keyspace_view, root_key_view};
use crate::{Actor, Result, Service, ServiceError, current_hash_kind};

impl Service {
    pub(crate) fn audit_entry(
        &self,
        actor: &Actor,
        action: &str,
        target_type: &str,
        target_id: &str,
        before: Option<Value>,
        after: Option<Value>,
    ) -> AuditEntry {
        let at = now_ms();
        AuditEntry {
            id: new_id("aud", at),
            workspace_id: actor.workspace_id.clone(),
            at,
            actor: actor.root_key_id.clone(),
            action: action.to_owned(),
            target_type: target_type.to_owned(),
            target_id: target_id.to_owned(),
            source_ip: actor.source_ip.clone(),
            request_id: actor.request_id.clone(),
            before,
            after,
            seq: 0,
            hash: String::new(),
            notify: Vec::new(),
        }
    }

    fn new_root_key(&self, workspace_id: &str, name: &str, role: Role, now: UnixMs) -> (RawKey, RootKeyRecord) {
        let raw = RawKey::generate(&KeyPrefix::root());
        let rec = RootKeyRecord {
            id: new_id("rk", now),
            workspace_id: workspace_id.to_owned(),
            name: name.to_owned(),
            role,
            hash: self.hasher.hash(raw.expose()),
            hash_kind: current_hash_kind(&self.hasher),
            hint: raw.hint(),
            created_at: now,
            revoked_at: None,
            expires_at: None,
            last_used_at: None,
        };
        (raw, rec)
    }

    // ---- workspaces ----

    /// On an empty store, creates the `default` workspace and its first admin
    /// root key, and returns that key; on a store in use, returns `None`.
    pub async fn bootstrap(&self) -> Result<Option<CreatedRootKey>> {
        if self.blocking(|s| s.workspace_count()).await? > 0 {
            return Ok(None);
        }
        let system = Actor {
            workspace_id: String::new(),
            root_key_id: "system".into(),
            role: Role::Admin,
            source_ip: None,
            request_id: None,
        };
        match self.create_workspace_as(&system, "default", true).await {
            Ok(created) => Ok(Some(created.root_key)),
            // Another node of the cluster made it first.
            Err(ServiceError::Conflict(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Creates an isolated workspace with its first admin root key.
    pub async fn create_workspace(&self, actor: &Actor, req: CreateWorkspace) -> Result<CreatedWorkspace> {
        actor.require(Permission::WorkspacesCreate, "create workspaces")?;
        check_text("name", &req.name, 200)?;
        self.create_workspace_as(actor, &req.name, false).await
    }

    /// With `first`, only if there is no workspace yet (checked in the same transaction).
    async fn create_workspace_as(&self, actor: &Actor, name: &str, first: bool) -> Result<CreatedWorkspace> {
        let now = now_ms();
        let ws = Workspace { id: new_id("ws", now), name: name.to_owned(), created_at: now };
        let (raw, rk) = self.new_root_key(&ws.id, "admin", Role::Admin, now);
        let mut audit = self.audit_entry(
            actor,
            "workspace.create",
            "workspace",
            &ws.id,
            None,
            Some(serde_json::json!({"name": ws.name, "admin_root_key_id": rk.id})),
        );
        audit.workspace_id = ws.id.clone();
        let (w, r) = (ws.clone(), rk.clone());
        let made = self
            .blocking(move |s| match first {
                true => s.create_first_workspace(&w, &r, &audit),
                false => s.create_workspace(&w, &r, &audit).map(|()| true),
            })
            .await?;
        if !made {
            return Err(ServiceError::Conflict("a workspace exists already".into()));
        }
        let view = root_key_view(&rk);
        self.put_root(rk);
        tracing::info!(workspace_id = %ws.id, "Workspace created.");
        Ok(CreatedWorkspace {
            id: ws.id,
            name: ws.name,
            created_at: keyward_core::time::to_rfc3339(ws.created_at),
            root_key: CreatedRootKey { key: raw.expose().to_owned(), view },
        })
    }

    // ---- keyspaces ----

    pub async fn create_keyspace(&self, actor: &Actor, req: CreateKeyspace) -> Result<KeyspaceView> {
        actor.require(Permission::KeysWrite, "create keyspaces")?;
        check_text("name", &req.name, 200)?;
        let prefix = parse_prefix(req.prefix.as_deref().unwrap_or(DEFAULT_PREFIX))?;
        if let Some(t) = req.default_ttl_ms {
            check_ttl("default_ttl_ms", t)?;
        }
        let default_scopes = req.default_scopes.unwrap_or_default();
        check_scopes("default_scopes", &default_scopes)?;
        let default_ip_allowlist = check_cidrs("default_ip_allowlist", &req.default_ip_allowlist.unwrap_or_default())?;
        let default_ratelimits = req
            .default_ratelimits
            .unwrap_or_else(|| vec![RateLimit { name: "default".into(), limit: 1000, window_ms: 60_000 }]);
        check_ratelimits("default_ratelimits", &default_ratelimits)?;
        let mut path_rules = req.path_rules.unwrap_or_default();
        check_rules(&mut path_rules)?;
        if let Some(m) = req.max_age_ms {
            check_ttl("max_age_ms", m)?;
        }
        let now = now_ms();
        let ks = Keyspace {
            id: new_id("ks", now),
            workspace_id: actor.workspace_id.clone(),
            name: req.name,
            prefix: prefix.as_str().to_owned(),
            default_ttl_ms: req.default_ttl_ms,
            created_at: now,
            updated_at: now,
            default_scopes,
            default_ip_allowlist,
            default_ratelimits,
            path_rules,
            pseudonymize_ips: req.pseudonymize_ips.unwrap_or(false),
            auto_disable_on_critical: req.auto_disable_on_critical.unwrap_or(false),
            max_age_ms: req.max_age_ms,
            recoverable: req.recoverable.unwrap_or(false),
        };
        if ks.recoverable {
            self.require_keyring()?;
        }
        let view = keyspace_view(&ks);
        let audit = self.audit_entry(actor, "keyspace.create", "keyspace", &ks.id, None, Some(to_value(&view)));
        let k = ks.clone();
        self.blocking(move |s| s.insert_keyspace(&k, &audit)).await?;
        self.keyspace_cell(&ks.id).set(KeyspacePolicy::from_record(&ks));
        Ok(view)
    }

    pub async fn list_keyspaces(&self, actor: &Actor) -> Result<Vec<KeyspaceView>> {
        actor.require(Permission::KeysRead, "list keyspaces")?;
        let ws = actor.workspace_id.clone();
        let v = self.blocking(move |s| s.list_keyspaces(&ws)).await?;
        Ok(v.iter().map(keyspace_view).collect())
    }

    pub(crate) async fn load_keyspace(&self, actor: &Actor, id: &str) -> Result<Keyspace> {
        let (ws, idc) = (actor.workspace_id.clone(), id.to_owned());
        self.blocking(move |s| s.get_keyspace(&ws, &idc)).await?.ok_or_else(|| ServiceError::not_found("keyspace", id))
    }

    pub async fn get_keyspace(&self, actor: &Actor, id: &str) -> Result<KeyspaceView> {
        actor.require(Permission::KeysRead, "read keyspaces")?;
        Ok(keyspace_view(&self.load_keyspace(actor, id).await?))
    }

    pub async fn patch_keyspace(&self, actor: &Actor, id: &str, req: PatchKeyspace) -> Result<KeyspaceView> {
        actor.require(Permission::KeysWrite, "change keyspaces")?;
        let mut ks = self.load_keyspace(actor, id).await?;
        let before = to_value(&keyspace_view(&ks));
        if let Some(name) = req.name {
            check_text("name", &name, 200)?;
            ks.name = name;
        }
        if let Some(p) = req.prefix {
            ks.prefix = parse_prefix(&p)?.as_str().to_owned();
        }
        if let Some(t) = req.default_ttl_ms {
            if let Some(t) = t {
                check_ttl("default_ttl_ms", t)?;
            }
            ks.default_ttl_ms = t;
        }
        if let Some(v) = req.default_scopes {
            check_scopes("default_scopes", &v)?;
            ks.default_scopes = v;
        }
        if let Some(v) = req.default_ip_allowlist {
            ks.default_ip_allowlist = check_cidrs("default_ip_allowlist", &v)?;
        }
        if let Some(v) = req.default_ratelimits {
            check_ratelimits("default_ratelimits", &v)?;
            ks.default_ratelimits = v;
        }
        if let Some(mut v) = req.path_rules {
            check_rules(&mut v)?;
            ks.path_rules = v;
        }
        if let Some(v) = req.auto_disable_on_critical {
            ks.auto_disable_on_critical = v;
        }
        if let Some(v) = req.pseudonymize_ips {
            ks.pseudonymize_ips = v;
        }
        if let Some(v) = req.recoverable {
            if v {
                self.require_keyring()?;
            }
            ks.recoverable = v;
        }
        if let Some(v) = req.max_age_ms {
            if let Some(m) = v {
                check_ttl("max_age_ms", m)?;
            }
            ks.max_age_ms = v;
        }
        ks.updated_at = now_ms();
        let view = keyspace_view(&ks);
        let (b, a) = diff(&before, &to_value(&view));
        let audit = self.audit_entry(actor, "keyspace.update", "keyspace", &ks.id, Some(b), Some(a));
        let k = ks.clone();
        self.blocking(move |s| s.update_keyspace(&k, &audit)).await?;
        self.keyspace_cell(&ks.id).set(KeyspacePolicy::from_record(&ks));
        Ok(view)
    }

    // ---- keys ----

    pub async fn create_key(&self, actor: &Actor, req: CreateKey) -> Result<CreatedKey> {
        actor.require(Permission::KeysWrite, "create keys")?;
        check_opt_text("name", &req.name, 200)?;
        check_opt_text("owner_id", &req.owner_id, 256)?;
        let meta = req.meta.unwrap_or_else(|| Value::Object(Default::default()));
        check_meta(&meta)?;
        let now = now_ms();
        let expires_at = new_expiry(req.expires_at.as_deref(), req.ttl_ms, now)?;
        if let Some(v) = &req.scopes {
            check_scopes("scopes", v)?;
        }
        let ip_allowlist = req.ip_allowlist.as_deref().map(|v| check_cidrs("ip_allowlist", v)).transpose()?;
        if let Some(v) = &req.ratelimits {
            check_ratelimits("ratelimits", v)?;
        }
        check_quota(req.remaining, req.refill.as_ref())?;
        let remaining = req.remaining.or(req.refill.map(|r| r.amount));
        let ks = self.load_keyspace(actor, &req.keyspace_id).await?;
        let expires_at = expires_at.or(ks.default_ttl_ms.map(|t| now + t));
        // The keyspace's age policy caps every key's lifetime.
        let expires_at = match (expires_at, ks.max_age_ms) {
            (Some(t), Some(max)) if t > now + max => {
                return Err(invalid(format!(
                    "the key would outlive the keyspace's max_age_ms ({max}); ask for an earlier expiry or none"
                )));
            }
            (None, Some(max)) => Some(now + max),
            (t, _) => t,
        };
        let prefix = KeyPrefix::new(&ks.prefix).map_err(|e| invalid(format!("keyspace prefix: {e}")))?;
        let raw = RawKey::generate(&prefix);
        let rec = KeyRecord {
            name: req.name,
            owner_id: req.owner_id,
            meta,
            enabled: req.enabled.unwrap_or(true),
            expires_at,
            scopes: req.scopes.unwrap_or_else(|| ks.default_scopes.clone()),
            ip_allowlist,
            ratelimits: req.ratelimits,
            remaining,
            refill: req.refill,
            refilled_at: remaining.map(|_| now),
            ..KeyRecord::blank(
                new_id("key", now),
                actor.workspace_id.clone(),
                ks.id.clone(),
                self.hasher.hash(raw.expose()),
                current_hash_kind(&self.hasher),
                raw.hint(),
                now,
            )
        };
        let view = key_view(&rec, None, now);
        let audit = self.audit_entry(actor, "key.create", "key", &rec.id, None, Some(to_value(&view)));
        let sealed = self.seal_if_recoverable(&ks, &rec.id, &raw)?;
        let r = rec.clone();
        self.blocking(move |s| s.insert_key_with(&r, sealed.as_deref(), &audit)).await?;
        self.negative.remove(&rec.hash);
        self.index.put(rec, self.keyspace_cell(&view.keyspace_id), QuotaFrom::Record);
        tracing::info!(key_id = %view.id, keyspace_id = %view.keyspace_id, "Key created.");
        let warning = view.scopes.is_empty().then(|| crate::api::NO_SCOPE_WARNING.to_owned());
        Ok(CreatedKey { key: raw.expose().to_owned(), view, warning })
    }

    pub(crate) async fn load_key(&self, actor: &Actor, id: &str) -> Result<KeyRecord> {
        if !is_id("key", id) {
            return Err(ServiceError::not_found("key", id));
        }
        let (ws, idc) = (actor.workspace_id.clone(), id.to_owned());
        self.blocking(move |s| s.get_key(&ws, &idc)).await?.ok_or_else(|| ServiceError::not_found("key", id))
    }

    pub(crate) fn view_of(&self, k: &KeyRecord, now: UnixMs) -> KeyView {
        let cached = self.index.get(&k.hash);
        key_view(k, cached.as_deref(), now)
    }

    pub async fn get_key(&self, actor: &Actor, id: &str) -> Result<KeyView> {
        actor.require(Permission::KeysRead, "read keys")?;
        let k = self.load_key(actor, id).await?;
        Ok(self.view_of(&k, now_ms()))
    }

    pub async fn list_keys(&self, actor: &Actor, q: ListKeysQuery) -> Result<KeyPage> {
        actor.require(Permission::KeysRead, "list keys")?;
        let limit = page_limit(q.limit)?;
        let status = match q.status.as_deref() {
            None => None,
            Some("active") => Some(KeyStatus::Active),
            Some("disabled") => Some(KeyStatus::Disabled),
            Some("expired") => Some(KeyStatus::Expired),
            Some("revoked") => Some(KeyStatus::Revoked),
            Some(_) => return Err(invalid("status must be one of active, disabled, expired, revoked")),
        };
        if let Some(c) = &q.cursor
            && !is_id("key", c)
        {
            return Err(invalid("cursor is not one this API returned"));
        }
        let search = match q.q.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(s) if s.chars().count() > 200 => return Err(invalid("q is at most 200 characters")),
            Some(s) if s.chars().any(char::is_control) => return Err(invalid("q must not hold control characters")),
            Some(s) => Some(s.to_owned()),
        };
        let now = now_ms();
        let filter = KeyFilter {
            workspace_id: actor.workspace_id.clone(),
            keyspace_id: q.keyspace_id,
            owner_id: q.owner_id,
            status,
            now,
            after: q.cursor,
            limit: limit + 1,
            q: search,
        };
        let mut rows = self.blocking(move |s| s.list_keys(&filter)).await?;
        let next_cursor = if rows.len() > limit as usize {
            rows.truncate(limit as usize);
            rows.last().map(|k| k.id.clone())
        } else {
            None
        };
        Ok(KeyPage { data: rows.iter().map(|k| self.view_of(k, now)).collect(), next_cursor })
    }

    pub async fn patch_key(&self, actor: &Actor, id: &str, req: PatchKey) -> Result<KeyView> {
        actor.require(Permission::KeysWrite, "change keys")?;
        let mut k = self.load_key(actor, id).await?;
        if k.revoked_at.is_some() {
            return Err(ServiceError::Conflict(format!("key {} is revoked; revocation is final", k.id)));
        }
        let now = now_ms();
        let before = to_value(&self.view_of(&k, now));
        if let Some(name) = req.name {
            check_opt_text("name", &name, 200)?;
            k.name = name;
        }
        if let Some(owner) = req.owner_id {
            check_opt_text("owner_id", &owner, 256)?;
            k.owner_id = owner;
        }
        if let Some(meta) = req.meta {
            check_meta(&meta)?;
            k.meta = meta;
        }
        if let Some(exp) = req.expires_at {
            k.expires_at = exp.as_deref().map(|s| parse_instant("expires_at", s)).transpose()?;
        }
        if let Some(en) = req.enabled {
            k.enabled = en;
        }
        if let Some(v) = req.scopes {
            check_scopes("scopes", &v)?;
            k.scopes = v;
        }
        if let Some(v) = req.ip_allowlist {
            k.ip_allowlist = v.as_deref().map(|v| check_cidrs("ip_allowlist", v)).transpose()?;
        }
        if let Some(v) = req.ratelimits {
            if let Some(v) = &v {
                check_ratelimits("ratelimits", v)?;
            }
            k.ratelimits = v;
        }
        let quota_set = req.remaining.is_some() || req.refill.is_some();
        if let Some(r) = req.refill {
            check_quota(None, r.as_ref())?;
            k.refill = r;
        }
        if let Some(r) = req.remaining {
            check_quota(r, None)?;
            k.remaining = r;
            k.refilled_at = r.map(|_| now);
        } else if k.remaining.is_none() && req.refill.flatten().is_some() {
            // A refill on an unlimited key starts it at the refill amount.
            k.remaining = k.refill.map(|r| r.amount);
            k.refilled_at = Some(now);
        }
        k.updated_at = now;
        let from = if quota_set { QuotaFrom::Record } else { QuotaFrom::Live };
        self.save_key(actor, k, before, "key.update", now, from).await
    }

    pub async fn revoke_key(&self, actor: &Actor, id: &str, req: RevokeKey) -> Result<KeyView> {
        self.check_incident_ref(actor, req.incident.as_deref()).await?;
        self.revoke_key_for_incident(actor, id, req).await
    }

    /// Revokes with `req.incident` taken as given: for a leak report, whose
    /// incident is written right after its keys are revoked (revoke first).
    pub(crate) async fn revoke_key_for_incident(&self, actor: &Actor, id: &str, req: RevokeKey) -> Result<KeyView> {
        actor.require(Permission::KeysWrite, "revoke keys")?;
        check_opt_text("note", &req.note, 2000)?;
        let mut k = self.load_key(actor, id).await?;
        if k.revoked_at.is_some() {
            return Err(ServiceError::Conflict(format!("key {} is already revoked", k.id)));
        }
        let now = now_ms();
        let before = to_value(&self.view_of(&k, now));
        k.revoked_at = Some(now);
        k.revoke_reason = Some(req.reason.as_str().to_owned());
        k.revoke_note = req.note;
        k.incident_id = req.incident;
        k.updated_at = now;
        let view = self.save_key(actor, k, before, "key.revoke", now, QuotaFrom::Live).await?;
        tracing::warn!(key_id = %view.id, reason = req.reason.as_str(), "Key revoked.");
        Ok(view)
    }

    /// Writes a changed key to the store with its audit diff, then the index.
    /// Unless the change sets the quota, the live in-memory quota is what is
    /// written, so a PATCH never hands back consumed units.
    pub(crate) async fn save_key(
        &self,
        actor: &Actor,
        mut k: KeyRecord,
        before: Value,
        action: &str,
        now: UnixMs,
        quota: QuotaFrom,
    ) -> Result<KeyView> {
        if quota == QuotaFrom::Live
            && let Some(mark) = self.index.get(&k.hash).and_then(|c| c.quota_mark())
            && k.remaining.is_some()
        {
            k.remaining = Some(mark.remaining);
            k.refilled_at = Some(mark.refilled_at);
        }
        let after = key_view(&k, None, now);
        let was_enabled = before["enabled"] != false;
        let (b, a) = diff(&before, &to_value(&after));
        let mut audit = self.audit_entry(actor, action, "key", &k.id, Some(b), Some(a));
        // Connected systems hear of a deactivation (webhooks), in the same transaction.
        if action == "key.revoke" {
            let extra =
                serde_json::json!({"reason": k.revoke_reason, "note": k.revoke_note, "incident": k.incident_id});
            audit.notify.push(crate::alerts::key_notice("key.revoked", &k, extra, now));
        } else if was_enabled && !k.enabled {
            audit.notify.push(crate::alerts::key_notice("key.disabled", &k, serde_json::json!({}), now));
        }
        let rec = k.clone();
        self.blocking(move |s| s.update_key(&rec, &audit)).await?;
        let cell = self.keyspace_cell(&k.keyspace_id);
        let cached = self.index.put(k.clone(), cell, quota);
        Ok(key_view(&k, Some(&cached), now))
    }

    // ---- root keys ----

    pub async fn create_root_key(&self, actor: &Actor, req: CreateRootKey) -> Result<CreatedRootKey> {
        actor.require(Permission::RootKeysWrite, "create root keys")?;
        check_text("name", &req.name, 200)?;
        let now = now_ms();
        let expires_at = new_expiry(req.expires_at.as_deref(), req.ttl_ms, now)?;
        let (raw, mut rk) = self.new_root_key(&actor.workspace_id, &req.name, req.role, now);
        rk.expires_at = expires_at;
        let view = root_key_view(&rk);
        let audit = self.audit_entry(actor, "root_key.create", "root_key", &rk.id, None, Some(to_value(&view)));
        let r = rk.clone();
        self.blocking(move |s| s.insert_root_key(&r, &audit)).await?;
        self.put_root(rk);
        Ok(CreatedRootKey { key: raw.expose().to_owned(), view })
    }

    pub async fn list_root_keys(&self, actor: &Actor) -> Result<Vec<RootKeyView>> {
        actor.require(Permission::RootKeysRead, "list root keys")?;
        let ws = actor.workspace_id.clone();
        let all = self.blocking(move |s| s.list_root_keys(&ws)).await?;
        Ok(all
            .iter()
            .map(|r| RootKeyView { last_used_at: self.root_last_used(r).map(to_rfc3339), ..root_key_view(r) })
            .collect())
    }

    /// A new secret for a root key (same name and role); the old one stops
    /// now, or at the end of `overlap_ms` so that its users can switch.
    pub async fn rotate_root_key(&self, actor: &Actor, id: &str, req: RotateRootKey) -> Result<RotatedRootKey> {
        actor.require(Permission::RootKeysWrite, "rotate root keys")?;
        let overlap = req.overlap_ms.unwrap_or(0);
        if !(0..=7 * 24 * 3_600_000).contains(&overlap) {
            return Err(invalid("overlap_ms must be between 0 and 604800000 (7 days)"));
        }
        let now = now_ms();
        let expires_at = new_expiry(req.expires_at.as_deref(), req.ttl_ms, now)?;
        let ws = actor.workspace_id.clone();
        let all = self.blocking(move |s| s.list_root_keys(&ws)).await?;
        let old = all
            .iter()
            .find(|r| r.id == id && r.revoked_at.is_none() && r.expires_at.is_none_or(|e| e > now))
            .ok_or_else(|| ServiceError::not_found("root key", id))?;
        let (raw, mut new) = self.new_root_key(&actor.workspace_id, &old.name, old.role, now);
        new.expires_at = expires_at;
        let mut ended = old.clone();
        if overlap == 0 {
            ended.revoked_at = Some(now);
        } else {
            ended.expires_at = Some(ended.expires_at.map_or(now + overlap, |e| e.min(now + overlap)));
        }
        let (new_view, old_view) = (root_key_view(&new), root_key_view(&ended));
        let audit = self.audit_entry(
            actor,
            "root_key.rotate",
            "root_key",
            &old.id,
            Some(to_value(&root_key_view(old))),
            Some(
                serde_json::json!({"rotated_to": new.id, "previous": to_value(&old_view), "new": to_value(&new_view)}),
            ),
        );
        let (n, o) = (new.clone(), ended.clone());
        self.blocking(move |s| s.rotate_root_key(&n, &o, &audit)).await?;
        self.put_root(ended);
        self.put_root(new);
        Ok(RotatedRootKey { key: raw.expose().to_owned(), view: new_view, previous: old_view })
    }

    /// Revokes a root key at once. The last active admin key of a workspace
    /// cannot be revoked: that would lock everyone out.
    pub async fn revoke_root_key(&self, actor: &Actor, id: &str) -> Result<RootKeyView> {
        actor.require(Permission::RootKeysWrite, "revoke root keys")?;
        let ws = actor.workspace_id.clone();
        let all = self.blocking(move |s| s.list_root_keys(&ws)).await?;
        let target = all
            .iter()
            .find(|r| r.id == id && r.revoked_at.is_none())
            .ok_or_else(|| ServiceError::not_found("root key", id))?;
        let admins = all.iter().filter(|r| r.role == Role::Admin && r.revoked_at.is_none()).count();
        if target.role == Role::Admin && admins <= 1 {
            return Err(ServiceError::Conflict(
                "this is the workspace's last active admin root key; create another admin key first".into(),
            ));
        }
        let now = now_ms();
        let mut rk = target.clone();
        rk.revoked_at = Some(now);
        let audit = self.audit_entry(
            actor,
            "root_key.revoke",
            "root_key",
            &rk.id,
            Some(serde_json::json!({"revoked_at": null})),
            Some(serde_json::json!({"revoked_at": keyward_core::time::to_rfc3339(now)})),
        );
        let (ws, rid) = (actor.workspace_id.clone(), rk.id.clone());
        self.blocking(move |s| s.revoke_root_key(&ws, &rid, now, &audit)).await?;
        let view = root_key_view(&rk);
        self.put_root(rk);
        Ok(view)
    }

    // ---- audit ----

    pub async fn list_audit(&self, actor: &Actor, q: ListAuditQuery) -> Result<AuditPage> {
        actor.require(Permission::AuditRead, "read the audit log")?;
        let limit = page_limit(q.limit)?;
        let before_seq = match q.cursor.as_deref() {
            None => None,
            Some(c) => seq_cursor(Some(c))?,
        };
        let f = AuditFilter {
            workspace_id: actor.workspace_id.clone(),
            action: q.action,
            target_id: q.target_id,
            before_seq,
            limit: limit + 1,
        };
        let mut rows = self.blocking(move |s| s.list_audit(&f)).await?;
        let next_cursor = if rows.len() > limit as usize {
            rows.truncate(limit as usize);
            rows.last().map(|e| e.seq.to_string())
        } else {
            None
        };
        Ok(AuditPage { data: rows.into_iter().map(audit_view).collect(), next_cursor })
    }

    pub async fn verify_audit(&self, actor: &Actor) -> Result<AuditVerifyView> {
        actor.require(Permission::AuditRead, "read the audit log")?;
        let ws = actor.workspace_id.clone();
        let c = self.blocking(move |s| s.verify_audit(&ws)).await?;
        Ok(AuditVerifyView { ok: c.first_bad_seq.is_none(), entries: c.entries, first_bad_seq: c.first_bad_seq })
    }
}

/// A new key's or root key's expiry from `expires_at` or `ttl_ms` (not both), in the future.
fn new_expiry(expires_at: Option<&str>, ttl_ms: Option<i64>, now: UnixMs) -> Result<Option<UnixMs>> {
    match (expires_at, ttl_ms) {
        (Some(_), Some(_)) => Err(invalid("give expires_at or ttl_ms, not both")),
        (Some(s), None) => {
            let t = parse_instant("expires_at", s)?;
            if t <= now {
                return Err(invalid("expires_at is in the past; a new key must be usable"));
            }
            Ok(Some(t))
        }
        (None, Some(ttl)) => {
            check_ttl("ttl_ms", ttl)?;
            Ok(Some(now + ttl))
        }
        (None, None) => Ok(None),
    }
}

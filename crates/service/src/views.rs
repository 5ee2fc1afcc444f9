//! From stored records to API views, and the before/after diff of audit entries.

use keyward_core::time::{UnixMs, to_rfc3339};
use keyward_core::verify::{Lifecycle, status};
use keyward_store::{AuditEntry, KeyRecord, Keyspace, RootKeyRecord};
use serde_json::{Map, Value};

use crate::api::{AuditView, KeyView, KeyspaceView, RateLimitState, RevocationCheck, RootKeyView, VerifyResponse};
use crate::index::CachedKey;

pub(crate) fn ts(ms: Option<UnixMs>) -> Option<String> {
    ms.map(to_rfc3339)
}

pub(crate) fn key_view(k: &KeyRecord, cached: Option<&CachedKey>, now: UnixMs) -> KeyView {
    let life = Lifecycle {
        enabled: k.enabled,
        expires_at: k.expires_at,
        revoked_at: k.revoked_at,
        overlap_until: k.overlap_until,
    };
    let (last_at, last_ip) = match cached {
        // The index may hold a newer mark than the store has yet.
        Some(c) if *c.id == *k.id => c.last_used(k.last_used_at, k.last_used_ip.as_deref()),
        _ => (k.last_used_at, k.last_used_ip.clone()),
    };
    KeyView {
        id: k.id.clone(),
        keyspace_id: k.keyspace_id.clone(),
        name: k.name.clone(),
        owner_id: k.owner_id.clone(),
        meta: k.meta.clone(),
        hint: k.hint.clone(),
        hash_kind: k.hash_kind.clone(),
        status: status(&life, now).to_owned(),
        enabled: k.enabled,
        expires_at: ts(k.expires_at),
        scopes: k.scopes.clone(),
        ip_allowlist: k.ip_allowlist.clone(),
        ratelimits: k.ratelimits.clone(),
        remaining: match cached {
            // The live count, which the store may not have yet.
            Some(c) if *c.id == *k.id => c.quota_mark().map(|q| q.remaining).or(k.remaining),
            _ => k.remaining,
        },
        refill: k.refill,
        rotated_to: k.rotated_to.clone(),
        overlap_until: ts(k.overlap_until),
        revocation_check: k.revocation_check_at.map(|at| RevocationCheck {
            at: to_rfc3339(at),
            code: k.revocation_check_code.clone().unwrap_or_default(),
            ok: k
                .revocation_check_code
                .as_deref()
                .and_then(crate::api::Revocation::from_code)
                .is_some_and(crate::api::Revocation::ok),
        }),
        created_at: to_rfc3339(k.created_at),
        updated_at: to_rfc3339(k.updated_at),
        last_used_at: ts(last_at),
        last_used_ip: last_ip,
        revoked_at: ts(k.revoked_at),
        revoke_reason: k.revoke_reason.clone(),
        revoke_note: k.revoke_note.clone(),
        incident: k.incident_id.clone(),
    }
}

pub(crate) fn keyspace_view(ks: &Keyspace) -> KeyspaceView {
    KeyspaceView {
        id: ks.id.clone(),
        name: ks.name.clone(),
        prefix: ks.prefix.clone(),
        default_ttl_ms: ks.default_ttl_ms,
        default_scopes: ks.default_scopes.clone(),
        default_ip_allowlist: ks.default_ip_allowlist.clone(),
        default_ratelimits: ks.default_ratelimits.clone(),
        path_rules: ks.path_rules.clone(),
        pseudonymize_ips: ks.pseudonymize_ips,
        auto_disable_on_critical: ks.auto_disable_on_critical,
        recoverable: ks.recoverable,
        max_age_ms: ks.max_age_ms,
        created_at: to_rfc3339(ks.created_at),
        updated_at: to_rfc3339(ks.updated_at),
    }
}

pub(crate) fn root_key_view(r: &RootKeyRecord) -> RootKeyView {
    RootKeyView {
        id: r.id.clone(),
        name: r.name.clone(),
        role: r.role,
        hint: r.hint.clone(),
        created_at: to_rfc3339(r.created_at),
        revoked_at: ts(r.revoked_at),
        expires_at: ts(r.expires_at),
        last_used_at: ts(r.last_used_at),
    }
}

pub(crate) fn audit_view(e: AuditEntry) -> AuditView {
    AuditView {
        id: e.id,
        seq: e.seq,
        at: to_rfc3339(e.at),
        actor: e.actor,
        action: e.action,
        target_type: e.target_type,
        target_id: e.target_id,
        source_ip: e.source_ip,
        request_id: e.request_id,
        before: e.before,
        after: e.after,
        hash: e.hash,
    }
}

/// The fields that differ between two views, as (before, after) objects.
/// Bookkeeping fields that change on every write are left out.
pub(crate) fn diff(before: &Value, after: &Value) -> (Value, Value) {
    const SKIP: &[&str] = &["updated_at", "status", "last_used_at", "last_used_ip", "revocation_check"];
    let empty = Map::new();
    let b = before.as_object().unwrap_or(&empty);
    let a = after.as_object().unwrap_or(&empty);
    let mut ob = Map::new();
    let mut oa = Map::new();
    for (k, av) in a {
        if SKIP.contains(&k.as_str()) {
            continue;
        }
        let bv = b.get(k).unwrap_or(&Value::Null);
        if bv != av {
            ob.insert(k.clone(), bv.clone());
            oa.insert(k.clone(), av.clone());
        }
    }
    (Value::Object(ob), Value::Object(oa))
}

/// The answer to `POST /v1/keys/verify` for a decision.
pub(crate) fn verify_response(d: crate::decision::Decision) -> VerifyResponse {
    let outcome = d.outcome;
    let deprecated_until = d.deprecated_until();
    let k = d.key.as_deref();
    VerifyResponse {
        valid: outcome.is_valid(),
        code: outcome,
        key_id: k.map(|k| k.id.to_string()),
        keyspace_id: k.map(|k| k.keyspace_id().to_owned()),
        owner_id: k.and_then(|k| k.owner_id.as_deref().map(str::to_owned)),
        name: k.and_then(|k| k.name().map(str::to_owned)),
        scopes: k.map(|k| k.policy.scopes.clone()).unwrap_or_default(),
        meta: k.map(|k| k.meta()),
        expires_at: k.and_then(|k| k.lifecycle().expires_at.map(to_rfc3339)),
        remaining: d.remaining,
        ratelimit: d.window.map(|w| RateLimitState {
            limit: w.limit,
            remaining: w.remaining,
            reset: to_rfc3339(w.reset),
        }),
        deprecated: deprecated_until.is_some(),
        deprecated_until: deprecated_until.map(to_rfc3339),
        message: d.message,
    }
}

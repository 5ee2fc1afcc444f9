//! Migration in: keys from another system, imported by their existing hashes
//! (SHA-256 of the whole key, hex), so customers keep their keys when they
//! move to keyward. Each imported key records its hash kind (`sha256`); the
//! verify path tries it for strings that start with an imported prefix, after
//! the native checks. An imported key verifies like a native one (policies,
//! limits, events) and rotates into a native key.

use parking_lot::RwLock;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use keyward_core::id::new_id;
use keyward_core::policy::{RateLimit, Refill};
use keyward_core::time::now_ms;
use keyward_core::{KeyHash, Permission};
use keyward_store::KeyRecord;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use utoipa::ToSchema;

use crate::index::{CachedKey, QuotaFrom};
use crate::validate::{
    check_cidrs, check_meta, check_opt_text, check_quota, check_ratelimits, check_scopes, invalid, parse_instant,
};
use crate::{Actor, Result, Service, ServiceError};

/// The hash kind of imported keys.
pub const SHA256: &str = "sha256";

/// The prefixes of imported keys, to know which presented strings to try.
#[derive(Default)]
pub struct ImportedPrefixes {
    any: AtomicBool,
    prefixes: RwLock<Arc<Vec<String>>>,
}

impl ImportedPrefixes {
    /// Remembers the prefix of an imported key record (from its hint).
    pub fn note(&self, k: &KeyRecord) {
        if k.hash_kind != SHA256 {
            return;
        }
        let prefix = k.hint.split('…').next().unwrap_or_default().to_owned();
        let mut p = self.prefixes.write();
        if !p.contains(&prefix) {
            Arc::make_mut(&mut p).push(prefix);
        }
        self.any.store(true, Ordering::Release);
    }

    /// Whether `s` starts like an imported key.
    pub fn matches(&self, s: &str) -> bool {
        self.any.load(Ordering::Acquire)
            && s.len() <= 512
            && self.prefixes.read().iter().any(|p| s.starts_with(p.as_str()))
    }

    /// Every known prefix, for the scrubber of caller text.
    pub fn list(&self) -> Arc<Vec<String>> {
        self.prefixes.read().clone()
    }
}

/// One key to import.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ImportedKey {
    /// Hex SHA-256 of the whole key, as the other system stored it.
    pub hash: String,
    /// `sha256` (the default and, for now, the only kind).
    pub hash_kind: Option<String>,
    /// The start every such key has, e.g. `sk_live_`: keyward tries imported
    /// hashes only for strings with a known prefix.
    pub prefix: String,
    /// The key's last four characters, if known, for its display hint.
    pub last4: Option<String>,
    pub name: Option<String>,
    pub owner_id: Option<String>,
    #[schema(value_type = Option<Object>)]
    pub meta: Option<Value>,
    pub scopes: Option<Vec<String>>,
    pub ip_allowlist: Option<Vec<String>>,
    pub ratelimits: Option<Vec<RateLimit>>,
    pub remaining: Option<i64>,
    pub refill: Option<Refill>,
    /// RFC 3339.
    pub expires_at: Option<String>,
    pub enabled: Option<bool>,
}

/// `POST /v1/keys/import`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ImportKeys {
    pub keyspace_id: String,
    /// At most 1000 per request.
    pub keys: Vec<ImportedKey>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ImportResult {
    pub imported: usize,
    /// Ids of the new keys, in the order given (skipped ones left out).
    pub key_ids: Vec<String>,
    /// Positions of keys whose hash is already known (imported before): skipped.
    pub duplicates: Vec<usize>,
    /// How many imported keys have no scope at all (neither their own nor the
    /// keyspace's defaults): every verify that gives a method, path or scope
    /// refuses them `FORBIDDEN` until scopes are set with PATCH.
    pub without_scopes: usize,
    /// What to do about it, when `without_scopes` is not 0.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub warning: Option<String>,
}

impl Service {
    /// The imported key a presented string hashes to, if any.
    pub(crate) fn imported_lookup(&self, s: &str) -> Option<std::sync::Arc<CachedKey>> {
        if !self.imported.matches(s) {
            return None;
        }
        let digest: [u8; 32] = Sha256::digest(s.as_bytes()).into();
        self.index.get(&KeyHash(digest)).filter(|k| &*k.hash_kind == SHA256)
    }

    /// Imports keys by hash into a keyspace, as one audited action.
    pub async fn import_keys(&self, actor: &Actor, req: ImportKeys) -> Result<ImportResult> {
        actor.require(Permission::KeysWrite, "import keys")?;
        if req.keys.is_empty() || req.keys.len() > 1000 {
            return Err(invalid("keys must hold 1 to 1000 entries per request"));
        }
        let ks = self.get_keyspace(actor, &req.keyspace_id).await?;
        let now = now_ms();
        let mut records = Vec::new();
        let mut duplicates = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for (i, k) in req.keys.into_iter().enumerate() {
            let at = |m: &str| invalid(format!("keys[{i}].{m}"));
            if k.hash_kind.as_deref().is_some_and(|h| h != SHA256) {
                return Err(at("hash_kind: only sha256 is supported"));
            }
            let bytes = hex::decode(k.hash.trim())
                .ok()
                .and_then(|b| <[u8; 32]>::try_from(b).ok())
                .ok_or_else(|| at("hash: must be 64 hex characters (SHA-256)"))?;
            // The hint is `<prefix>…<last4>` and the prefix is read back from it at start.
            // A prefix is what every key of that system starts with, and is
            // stored and audited verbatim: short, plain, and no secret.
            if k.prefix.is_empty()
                || k.prefix.len() > 32
                || !k.prefix.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
                || keyward_core::redact::holds_secret(&k.prefix, &[])
            {
                return Err(at(
                    "prefix: 1 to 32 characters of letters, digits, _ - . (what every key of the other system starts with, e.g. sk_live_)",
                ));
            }
            if k.last4.as_ref().is_some_and(|l| l.chars().count() != 4 || !l.chars().all(|c| c.is_ascii_graphic())) {
                return Err(at("last4: exactly four visible characters"));
            }
            let hash = KeyHash(bytes);
            if self.index.get(&hash).is_some() || !seen.insert(hash) {
                duplicates.push(i);
                continue;
            }
            // The same rules as for keys created here, with the row named.
            let row = |e: ServiceError| match e {
                ServiceError::Invalid(m) => invalid(format!("keys[{i}].{m}")),
                other => other,
            };
            let meta = k.meta.clone().unwrap_or_else(|| json!({}));
            check_meta(&meta).map_err(row)?;
            check_opt_text("name", &k.name, 200).map_err(row)?;
            check_opt_text("owner_id", &k.owner_id, 256).map_err(row)?;
            if let Some(v) = &k.scopes {
                check_scopes("scopes", v).map_err(row)?;
            }
            let ip_allowlist =
                k.ip_allowlist.as_deref().map(|v| check_cidrs("ip_allowlist", v)).transpose().map_err(row)?;
            if let Some(v) = &k.ratelimits {
                check_ratelimits("ratelimits", v).map_err(row)?;
            }
            check_quota(k.remaining, k.refill.as_ref()).map_err(row)?;
            let expires_at =
                k.expires_at.as_deref().map(|s| parse_instant("expires_at", s)).transpose().map_err(row)?;
            let remaining = k.remaining.or(k.refill.map(|r| r.amount));
            records.push(KeyRecord {
                name: k.name,
                owner_id: k.owner_id,
                meta,
                enabled: k.enabled.unwrap_or(true),
                expires_at,
                scopes: k.scopes.unwrap_or_else(|| ks.default_scopes.clone()),
                ip_allowlist,
                ratelimits: k.ratelimits,
                remaining,
                refill: k.refill,
                refilled_at: remaining.map(|_| now),
                ..KeyRecord::blank(
                    new_id("key", now),
                    actor.workspace_id.clone(),
                    ks.id.clone(),
                    hash,
                    SHA256.into(),
                    format!("{}…{}", k.prefix, k.last4.unwrap_or_default()),
                    now,
                )
            });
        }
        let key_ids: Vec<String> = records.iter().map(|r| r.id.clone()).collect();
        let without_scopes = records.iter().filter(|r| r.scopes.is_empty()).count();
        if !records.is_empty() {
            let audit = self.audit_entry(
                actor,
                "key.import",
                "keyspace",
                &ks.id,
                None,
                Some(json!({"imported": key_ids, "hash_kind": SHA256, "duplicates_skipped": duplicates.len()})),
            );
            let r = records.clone();
            self.blocking(move |s| s.insert_keys(&r, &audit)).await?;
            let cell = self.keyspace_cell(&ks.id);
            for r in records {
                self.imported.note(&r);
                self.index.put(r, cell.clone(), QuotaFrom::Record);
            }
            tracing::info!(imported = key_ids.len(), keyspace_id = %ks.id, "Keys imported by hash.");
        }
        let warning = (without_scopes > 0).then(|| {
            format!(
                "{without_scopes} imported keys have no scope and are refused for any method, path or scope: \
                 give scopes per key in the import, set the keyspace's default_scopes before importing, \
                 or PATCH /v1/keys/{{id}} with scopes"
            )
        });
        Ok(ImportResult { imported: key_ids.len(), key_ids, duplicates, without_scopes, warning })
    }
}

//! The records the store keeps. Plain data; the service owns their meaning.

use keyward_core::policy::{PathRule, RateLimit, Refill};
use keyward_core::{KeyHash, Role};
use serde_json::Value;

/// An isolated tenant: its root keys see nothing of other workspaces.
#[derive(Debug, Clone, PartialEq)]
pub struct Workspace {
    pub id: String,
    pub name: String,
    pub created_at: i64,
}

/// A family of keys with one prefix and shared defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct Keyspace {
    pub id: String,
    pub workspace_id: String,
    pub name: String,
    pub prefix: String,
    /// Lifetime given to new keys that set neither `expires_at` nor `ttl_ms`.
    pub default_ttl_ms: Option<i64>,
    pub created_at: i64,
    pub updated_at: i64,
    /// Scopes given to new keys that name none.
    pub default_scopes: Vec<String>,
    /// CIDRs that apply to keys without an allowlist of their own (empty: none).
    pub default_ip_allowlist: Vec<String>,
    /// Rate limits of keys without their own (default: 1,000 per minute).
    pub default_ratelimits: Vec<RateLimit>,
    /// Path rules: scopes needed for matching request paths.
    pub path_rules: Vec<PathRule>,
    /// Usage events of this keyspace's keys keep a keyed hash of the source
    /// address instead of the address.
    pub pseudonymize_ips: bool,
    /// Longest lifetime of a key: new keys expire by then.
    pub max_age_ms: Option<i64>,
    /// Automatic response: a critical alert about a key of this keyspace disables it.
    pub auto_disable_on_critical: bool,
    /// Keys created here are also kept sealed (encrypted under a data key),
    /// so that an admin can reveal them again.
    pub recoverable: bool,
}

/// One API key, by hash.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyRecord {
    pub id: String,
    pub workspace_id: String,
    pub keyspace_id: String,
    pub name: Option<String>,
    pub owner_id: Option<String>,
    /// Always a JSON object.
    pub meta: Value,
    pub hash: KeyHash,
    /// Algorithm and pepper version, e.g. `hmac-sha256:v1`.
    pub hash_kind: String,
    pub hint: String,
    pub enabled: bool,
    pub expires_at: Option<i64>,
    pub revoked_at: Option<i64>,
    pub revoke_reason: Option<String>,
    pub revoke_note: Option<String>,
    pub incident_id: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
    pub last_used_at: Option<i64>,
    pub last_used_ip: Option<String>,
    pub scopes: Vec<String>,
    /// `None`: the keyspace default applies. `Some(empty)`: no restriction.
    pub ip_allowlist: Option<Vec<String>>,
    /// `None`: the keyspace default applies. `Some(empty)`: no limit.
    pub ratelimits: Option<Vec<RateLimit>>,
    /// Usage quota left; `None` means unlimited.
    pub remaining: Option<i64>,
    pub refill: Option<Refill>,
    /// When the quota was last set or refilled.
    pub refilled_at: Option<i64>,
    /// When this key was rotated, and to which key.
    pub rotated_at: Option<i64>,
    pub rotated_to: Option<String>,
    /// A rotated key keeps working until this instant.
    pub overlap_until: Option<i64>,
    /// The last revocation health check: when, and the code it saw.
    pub revocation_check_at: Option<i64>,
    pub revocation_check_code: Option<String>,
}

impl KeyRecord {
    /// A new, enabled key with no name, owner, meta, policy, quota or history:
    /// callers set what they have with struct update syntax.
    pub fn blank(
        id: String,
        workspace_id: String,
        keyspace_id: String,
        hash: KeyHash,
        hash_kind: String,
        hint: String,
        now: i64,
    ) -> Self {
        KeyRecord {
            id,
            workspace_id,
            keyspace_id,
            name: None,
            owner_id: None,
            meta: Value::Object(Default::default()),
            hash,
            hash_kind,
            hint,
            enabled: true,
            expires_at: None,
            revoked_at: None,
            revoke_reason: None,
            revoke_note: None,
            incident_id: None,
            created_at: now,
            updated_at: now,
            last_used_at: None,
            last_used_ip: None,
            scopes: Vec::new(),
            ip_allowlist: None,
            ratelimits: None,
            remaining: None,
            refill: None,
            refilled_at: None,
            rotated_at: None,
            rotated_to: None,
            overlap_until: None,
            revocation_check_at: None,
            revocation_check_code: None,
        }
    }
}

/// A reminder that a key expires in `days` days.
#[derive(Debug, Clone, PartialEq)]
pub struct Reminder {
    pub id: String,
    pub workspace_id: String,
    pub key_id: String,
    pub days: i64,
    pub expires_at: i64,
    pub created_at: i64,
}

/// An incident record; its fields live in `body` (the service owns their shape).
#[derive(Debug, Clone, PartialEq)]
pub struct IncidentRecord {
    pub id: String,
    pub workspace_id: String,
    pub body: Value,
    pub created_at: i64,
    pub updated_at: i64,
}

/// A batched quota state.
#[derive(Debug, Clone, PartialEq)]
pub struct QuotaMark {
    pub key_id: String,
    pub remaining: i64,
    pub refilled_at: i64,
}

/// A key of the management API.
#[derive(Debug, Clone, PartialEq)]
pub struct RootKeyRecord {
    pub id: String,
    pub workspace_id: String,
    pub name: String,
    pub role: Role,
    pub hash: KeyHash,
    pub hash_kind: String,
    pub hint: String,
    pub created_at: i64,
    pub revoked_at: Option<i64>,
    /// After this instant the key no longer authenticates (optional).
    pub expires_at: Option<i64>,
    /// When it last authenticated (written in batches, like keys' marks).
    pub last_used_at: Option<i64>,
}

/// One management action, chained to the one before it in its workspace.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditEntry {
    pub id: String,
    pub workspace_id: String,
    pub at: i64,
    /// The root key that acted, or `system`.
    pub actor: String,
    pub action: String,
    pub target_type: String,
    pub target_id: String,
    pub source_ip: Option<String>,
    pub request_id: Option<String>,
    pub before: Option<Value>,
    pub after: Option<Value>,
    /// Position in the workspace chain; set by the store.
    pub seq: i64,
    /// Hex SHA-256 over the previous hash and this entry; set by the store.
    pub hash: String,
    /// Notifications of this change, enqueued in its transaction (not part of the entry).
    pub notify: Vec<crate::alerts::Notice>,
}

/// The status filter of key listings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyStatus {
    Active,
    Disabled,
    Expired,
    Revoked,
}

/// Which keys to list: all filters are ANDed; `after` is the pagination cursor.
#[derive(Debug, Clone, Default)]
pub struct KeyFilter {
    pub workspace_id: String,
    pub keyspace_id: Option<String>,
    pub owner_id: Option<String>,
    pub status: Option<KeyStatus>,
    /// The instant `status` is judged at.
    pub now: i64,
    /// Only ids greater than this one.
    pub after: Option<String>,
    pub limit: u32,
    /// A search: keys whose id or owner id is exactly this, whose name
    /// starts with it (ASCII case-insensitive), or whose hint ends with it
    /// (at least its last 4 characters). Each term is answered from an index.
    pub q: Option<String>,
}

impl KeyFilter {
    /// `q`'s parts as the stores bind them: the text, the upper bound of
    /// the name prefix range, and the hint tail (the last 4 characters, or
    /// nothing when `q` is shorter and so cannot match a hint).
    pub fn search_terms(&self) -> Option<(String, String, Option<String>)> {
        let q = self.q.as_deref()?;
        let chars: Vec<char> = q.chars().collect();
        let tail = (chars.len() >= 4).then(|| chars[chars.len() - 4..].iter().collect());
        Some((q.to_owned(), format!("{q}\u{10ffff}"), tail))
    }
}

/// Which audit entries to list, newest first.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub workspace_id: String,
    pub action: Option<String>,
    pub target_id: Option<String>,
    /// Only entries with a smaller sequence number.
    pub before_seq: Option<i64>,
    pub limit: u32,
}

/// The result of re-hashing a workspace's audit chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditCheck {
    pub entries: u64,
    /// The first sequence number whose hash does not match, if any.
    pub first_bad_seq: Option<i64>,
}

/// A batched last-use mark.
#[derive(Debug, Clone, PartialEq)]
pub struct LastUse {
    pub key_id: String,
    pub at: i64,
    pub ip: Option<String>,
}

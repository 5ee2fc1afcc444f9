//! The shapes of the v1 API: request bodies (unknown fields rejected) and
//! responses. Instants are RFC 3339 strings in UTC; durations are `*_ms`.

use keyward_core::policy::{PathRule, RateLimit, Refill};
use keyward_core::{Outcome, Role};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

/// Distinguishes an absent field (`None`) from an explicit `null` (`Some(None)`).
fn nullable<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateKeyspace {
    /// A label for people.
    #[schema(min_length = 1, max_length = 200)]
    pub name: String,
    /// Prefix of the keys made in this keyspace (default `kw_live`).
    #[schema(min_length = 2, max_length = 32, pattern = "^[a-z][a-z0-9]*(_[a-z0-9]+)*$")]
    pub prefix: Option<String>,
    /// Lifetime of new keys that give neither `expires_at` nor `ttl_ms`.
    #[schema(minimum = 1)]
    pub default_ttl_ms: Option<i64>,
    /// Scopes of new keys that name none.
    pub default_scopes: Option<Vec<String>>,
    /// CIDRs applied to every key without an allowlist of its own.
    pub default_ip_allowlist: Option<Vec<String>>,
    /// Rate limits of every key without its own. Default: `[{"name": "default", "limit": 1000, "window_ms": 60000}]`.
    pub default_ratelimits: Option<Vec<RateLimit>>,
    /// Scopes required for matching request paths, e.g. `{"pattern": "/admin/**", "scopes": ["admin"]}`.
    pub path_rules: Option<Vec<PathRule>>,
    /// Record a keyed hash (`anon:…`) instead of the source IP in usage events. Default false.
    pub pseudonymize_ips: Option<bool>,
    /// Longest lifetime of a key, ms: new keys expire by then (e.g. 7776000000 = 90 days).
    #[schema(minimum = 1)]
    pub max_age_ms: Option<i64>,
    /// Automatic response: a critical alert about one of its keys disables the key
    /// (audited with the alert id; `enabled: true` undoes it). Default false.
    pub auto_disable_on_critical: Option<bool>,
    /// Keep every new key sealed (AES-256-GCM under a data key) so that an admin
    /// can reveal it again (`POST /v1/keys/{id}/reveal`). Needs encryption at
    /// rest (a master key). Default false: hashes only.
    pub recoverable: Option<bool>,
}

impl CreateKeyspace {
    /// A keyspace with this name and every default.
    pub fn named(name: &str) -> Self {
        CreateKeyspace { name: name.to_owned(), ..Default::default() }
    }
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PatchKeyspace {
    pub name: Option<String>,
    /// Applies to keys created from now on; existing keys keep working.
    pub prefix: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<i64>)]
    pub default_ttl_ms: Option<Option<i64>>,
    pub default_scopes: Option<Vec<String>>,
    /// Takes effect on the next verify of every key that inherits it.
    pub default_ip_allowlist: Option<Vec<String>>,
    /// Takes effect on the next verify of every key that inherits it.
    pub default_ratelimits: Option<Vec<RateLimit>>,
    pub path_rules: Option<Vec<PathRule>>,
    /// Applies to events recorded from now on.
    pub pseudonymize_ips: Option<bool>,
    /// Applies to keys created or rotated from now on; `null` removes it.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<i64>)]
    pub max_age_ms: Option<Option<i64>>,
    /// Automatic response on critical alerts, from the next alert on.
    pub auto_disable_on_critical: Option<bool>,
    /// Recoverable keys from now on (keys made before stay hash-only).
    pub recoverable: Option<bool>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct KeyspaceView {
    pub id: String,
    pub name: String,
    pub prefix: String,
    pub default_ttl_ms: Option<i64>,
    pub default_scopes: Vec<String>,
    pub default_ip_allowlist: Vec<String>,
    pub default_ratelimits: Vec<RateLimit>,
    pub path_rules: Vec<PathRule>,
    pub pseudonymize_ips: bool,
    pub max_age_ms: Option<i64>,
    pub auto_disable_on_critical: bool,
    pub recoverable: bool,
    pub created_at: String,
    pub updated_at: String,
}

/// `POST /v1/keys/{id}/reveal`: a recoverable key, shown again.
#[derive(Debug, Serialize, ToSchema)]
pub struct RevealedKey {
    pub id: String,
    /// The key itself. Audited; handle it as when it was created.
    pub key: String,
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateKey {
    pub keyspace_id: String,
    pub name: Option<String>,
    /// Your identifier for who holds the key (a customer, a service).
    pub owner_id: Option<String>,
    /// Free-form JSON object returned on every verify (at most 16 KiB).
    #[schema(value_type = Option<Object>)]
    pub meta: Option<Value>,
    /// RFC 3339 instant from which the key verifies `EXPIRED`.
    pub expires_at: Option<String>,
    /// Lifetime from now, instead of `expires_at`.
    #[schema(minimum = 1)]
    pub ttl_ms: Option<i64>,
    /// Default true.
    pub enabled: Option<bool>,
    /// Presets `read`, `write`, `admin`, or custom `resource:action` (`invoices:*`). Default: the keyspace's `default_scopes`.
    pub scopes: Option<Vec<String>>,
    /// IPv4/IPv6 CIDRs or addresses. Absent: the keyspace default applies; `[]`: no restriction.
    pub ip_allowlist: Option<Vec<String>>,
    /// Rate-limit windows. Absent: the keyspace default applies; `[]`: no limit.
    pub ratelimits: Option<Vec<RateLimit>>,
    /// Usage quota: verifications left (each costs `cost`, default 1). Absent: unlimited.
    #[schema(minimum = 0)]
    pub remaining: Option<i64>,
    /// Sets `remaining` back to `amount` every `interval_ms`.
    pub refill: Option<Refill>,
}

impl CreateKey {
    /// A key in this keyspace with every default.
    pub fn in_keyspace(keyspace_id: &str) -> Self {
        CreateKey { keyspace_id: keyspace_id.to_owned(), ..Default::default() }
    }
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PatchKey {
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    pub name: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    pub owner_id: Option<Option<String>>,
    #[schema(value_type = Option<Object>)]
    pub meta: Option<Value>,
    /// RFC 3339; `null` removes the expiry. A past instant expires the key now.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    pub expires_at: Option<Option<String>>,
    pub enabled: Option<bool>,
    pub scopes: Option<Vec<String>>,
    /// `null`: inherit the keyspace default again.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<Vec<String>>)]
    pub ip_allowlist: Option<Option<Vec<String>>>,
    /// `null`: inherit the keyspace default again.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<Vec<RateLimit>>)]
    pub ratelimits: Option<Option<Vec<RateLimit>>>,
    /// Sets the quota; `null` makes the key unlimited.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<i64>)]
    pub remaining: Option<Option<i64>>,
    /// `null` removes the refill.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<Refill>)]
    pub refill: Option<Option<Refill>>,
}

/// Why a key was revoked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RevokeReason {
    Compromised,
    Leaked,
    Rotated,
    Unused,
    Other,
}

impl RevokeReason {
    pub fn as_str(self) -> &'static str {
        match self {
            RevokeReason::Compromised => "compromised",
            RevokeReason::Leaked => "leaked",
            RevokeReason::Rotated => "rotated",
            RevokeReason::Unused => "unused",
            RevokeReason::Other => "other",
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RevokeKey {
    pub reason: RevokeReason,
    /// Free text kept with the key and in the audit log.
    pub note: Option<String>,
    /// The incident this revocation belongs to.
    pub incident: Option<String>,
}

/// A key as the API shows it: never the key itself, only its hint.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct KeyView {
    pub id: String,
    pub keyspace_id: String,
    pub name: Option<String>,
    pub owner_id: Option<String>,
    #[schema(value_type = Object)]
    pub meta: Value,
    /// Prefix and last four characters, e.g. `kw_live_…x9Qz`.
    pub hint: String,
    /// How the key is stored: `hmac-sha256:vN` (native) or `sha256` (imported).
    pub hash_kind: String,
    /// `active`, `disabled`, `expired` or `revoked`.
    pub status: String,
    pub enabled: bool,
    pub expires_at: Option<String>,
    pub scopes: Vec<String>,
    /// Own allowlist; null when the keyspace default applies.
    pub ip_allowlist: Option<Vec<String>>,
    /// Own rate limits; null when the keyspace default applies.
    pub ratelimits: Option<Vec<RateLimit>>,
    /// Quota left; null when unlimited.
    pub remaining: Option<i64>,
    pub refill: Option<Refill>,
    /// The key that replaced this one, when rotated.
    pub rotated_to: Option<String>,
    /// A rotated key verifies (deprecated) until this instant, then `ROTATED`.
    pub overlap_until: Option<String>,
    /// The last revocation health check of a revoked key.
    pub revocation_check: Option<RevocationCheck>,
    pub created_at: String,
    pub updated_at: String,
    pub last_used_at: Option<String>,
    pub last_used_ip: Option<String>,
    pub revoked_at: Option<String>,
    pub revoke_reason: Option<String>,
    pub revoke_note: Option<String>,
    pub incident: Option<String>,
}

/// What the revocation health check found for one revoked key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Revocation {
    /// The verify path refuses the key, as it must: `REVOKED` or `ROTATED`.
    Refused(Outcome),
    /// The verify path answers something else (`VALID`, `DISABLED`, `NOT_FOUND`, …): a failure.
    NotRefused(Outcome),
    /// The store itself holds no revocation for the key: a failure.
    NotRevokedInStore,
}

impl Revocation {
    pub(crate) fn of(decision: Outcome) -> Revocation {
        match decision {
            Outcome::Revoked | Outcome::Rotated => Revocation::Refused(decision),
            other => Revocation::NotRefused(other),
        }
    }

    /// Reads a code as stored beside the key.
    pub fn from_code(code: &str) -> Option<Revocation> {
        if code == "NOT_REVOKED_IN_STORE" {
            return Some(Revocation::NotRevokedInStore);
        }
        Outcome::parse(code).map(Revocation::of)
    }

    /// The code stored and shown: the verify outcome, or `NOT_REVOKED_IN_STORE`.
    pub fn code(self) -> &'static str {
        match self {
            Revocation::Refused(o) | Revocation::NotRefused(o) => o.as_str(),
            Revocation::NotRevokedInStore => "NOT_REVOKED_IN_STORE",
        }
    }

    pub fn ok(self) -> bool {
        matches!(self, Revocation::Refused(_))
    }
}

/// The result of re-verifying a revoked key through the verify path.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RevocationCheck {
    pub at: String,
    /// What the verify path answered: `REVOKED` when all is well.
    pub code: String,
    pub ok: bool,
}

/// `POST /v1/keys/{id}/rotate`.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RotateKey {
    /// How long the old key keeps working, ms (default 86400000 = 24 h; 0 = ends now; at most 30 days).
    #[schema(minimum = 0, maximum = 2592000000i64)]
    pub overlap_ms: Option<i64>,
}

/// The response to a rotation: the new key, shown this once.
#[derive(Serialize, ToSchema)]
pub struct RotatedKey {
    /// The new secret. Store it now.
    pub key: String,
    #[serde(flatten)]
    pub view: KeyView,
    /// The old key, now deprecated until `overlap_until`.
    pub previous: KeyView,
}

/// `POST /v1/keys/revoke`: emergency revocation of many keys at once.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BulkRevoke {
    pub owner_id: Option<String>,
    pub keyspace_id: Option<String>,
    /// RFC 3339: keys created before this instant.
    pub created_before: Option<String>,
    pub reason: RevokeReason,
    pub note: Option<String>,
    pub incident: Option<String>,
    /// Report what would be revoked, and change nothing.
    #[serde(default)]
    pub dry_run: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct BulkRevoked {
    pub dry_run: bool,
    pub count: usize,
    pub key_ids: Vec<String>,
}

/// A stored expiry reminder.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReminderView {
    pub id: String,
    pub key_id: String,
    /// 14, 7 or 1.
    pub days: i64,
    pub expires_at: String,
    pub created_at: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ReminderPage {
    pub data: Vec<ReminderView>,
    pub next_cursor: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListRemindersQuery {
    pub key_id: Option<String>,
    pub cursor: Option<String>,
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
}

/// The response to a create: the key is in `key`, shown this once.
#[derive(Serialize, ToSchema)]
pub struct CreatedKey {
    /// The secret. Store it now: keyward keeps only its hash.
    pub key: String,
    #[serde(flatten)]
    pub view: KeyView,
    /// Said when the key has no scope: a verify that names a method, path or
    /// scope is then refused `FORBIDDEN` (a bare verify is admitted).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub warning: Option<String>,
}

/// What a key without scopes means, where the user creates one.
pub const NO_SCOPE_WARNING: &str = "this key has no scope: a verify that names a method, path or scope is refused \
    FORBIDDEN (a bare verify is admitted); give it scopes (PATCH /v1/keys/ID with \"scopes\", or \
    `keyward keys update ID --scope read`), or set the keyspace's default_scopes";

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListKeysQuery {
    pub keyspace_id: Option<String>,
    pub owner_id: Option<String>,
    /// `active`, `disabled`, `expired` or `revoked`.
    pub status: Option<String>,
    /// Search: keys whose id or owner id is exactly this, whose name starts
    /// with it (ASCII case-insensitive), or whose hint ends with it (at least
    /// 4 characters, e.g. `x7Qe` or `sk_live_…x7Qe`). 1 to 200 characters.
    pub q: Option<String>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// 1 to 1000, default 100.
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct KeyPage {
    pub data: Vec<KeyView>,
    /// Pass as `cursor` for the next page; null on the last page.
    pub next_cursor: Option<String>,
}

#[derive(Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VerifyRequest {
    /// The key as presented by the caller.
    pub key: String,
    /// The caller's source address.
    pub ip: Option<String>,
    /// HTTP method of the request being authorized.
    pub method: Option<String>,
    /// Path of the request being authorized.
    pub path: Option<String>,
    /// Scopes the request needs (all of them).
    pub scopes: Option<Vec<String>>,
    /// Units this request counts against quotas and limits (default 1; 0 checks without consuming).
    #[schema(minimum = 0, maximum = 1000000)]
    pub cost: Option<u32>,
    /// The end client's user agent, recorded in the usage event.
    pub user_agent: Option<String>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RateLimitState {
    pub limit: u64,
    pub remaining: u64,
    /// RFC 3339 instant at which the window frees up.
    pub reset: String,
}

/// A verification decision. Always answered with 200; `valid` says the verdict.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct VerifyResponse {
    pub valid: bool,
    pub code: Outcome,
    pub key_id: Option<String>,
    pub keyspace_id: Option<String>,
    pub owner_id: Option<String>,
    pub name: Option<String>,
    pub scopes: Vec<String>,
    #[schema(value_type = Option<Object>)]
    pub meta: Option<Value>,
    pub expires_at: Option<String>,
    /// Quota left after this request, when the key has one.
    pub remaining: Option<i64>,
    pub ratelimit: Option<RateLimitState>,
    /// True for an old key inside its rotation overlap.
    pub deprecated: bool,
    /// When a deprecated key stops working.
    pub deprecated_until: Option<String>,
    /// Why the key was refused, for people (e.g. the missing scope).
    pub message: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateRootKey {
    #[schema(min_length = 1, max_length = 200)]
    pub name: String,
    pub role: Role,
    /// RFC 3339 instant after which the root key no longer authenticates.
    pub expires_at: Option<String>,
    /// Lifetime from now, instead of `expires_at`.
    #[schema(minimum = 1)]
    pub ttl_ms: Option<i64>,
}

/// `POST /v1/root-keys/{id}/rotate`: a new secret with the same name and role.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RotateRootKey {
    /// How long the old key keeps working, ms (at most 7 days). Default 0: it stops at once.
    #[schema(minimum = 0)]
    pub overlap_ms: Option<i64>,
    /// Expiry of the new key (RFC 3339); default: none.
    pub expires_at: Option<String>,
    /// Lifetime of the new key from now, instead of `expires_at`.
    #[schema(minimum = 1)]
    pub ttl_ms: Option<i64>,
}

#[derive(Serialize, ToSchema)]
pub struct RotatedRootKey {
    /// The new secret, shown this once.
    pub key: String,
    #[serde(flatten)]
    pub view: RootKeyView,
    /// The old key, with when it stops working.
    pub previous: RootKeyView,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RootKeyView {
    pub id: String,
    pub name: String,
    pub role: Role,
    pub hint: String,
    pub created_at: String,
    pub revoked_at: Option<String>,
    pub expires_at: Option<String>,
    /// When it last authenticated (to the second; written every few seconds).
    pub last_used_at: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct CreatedRootKey {
    /// The secret, shown this once.
    pub key: String,
    #[serde(flatten)]
    pub view: RootKeyView,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateWorkspace {
    #[schema(min_length = 1, max_length = 200)]
    pub name: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedWorkspace {
    pub id: String,
    pub name: String,
    pub created_at: String,
    /// The new workspace's first admin root key, shown this once.
    pub root_key: CreatedRootKey,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListAuditQuery {
    /// e.g. `key.create`, `key.revoke`.
    pub action: Option<String>,
    pub target_id: Option<String>,
    pub cursor: Option<String>,
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AuditView {
    pub id: String,
    pub seq: i64,
    pub at: String,
    /// Id of the root key that acted, or `system`.
    pub actor: String,
    pub action: String,
    pub target_type: String,
    pub target_id: String,
    pub source_ip: Option<String>,
    pub request_id: Option<String>,
    /// Changed fields before the action.
    #[schema(value_type = Option<Object>)]
    pub before: Option<Value>,
    /// Changed fields after the action.
    #[schema(value_type = Option<Object>)]
    pub after: Option<Value>,
    pub hash: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AuditPage {
    pub data: Vec<AuditView>,
    /// Pass as `cursor` for the next page; null on the last page.
    pub next_cursor: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AuditVerifyView {
    pub ok: bool,
    pub entries: u64,
    pub first_bad_seq: Option<i64>,
}

// Types that hold a raw key print `[redacted]` in its place, so no `{:?}`
// anywhere can put a key in a log line or an error.
pub(crate) struct Redacted;

impl std::fmt::Debug for Redacted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

impl std::fmt::Debug for VerifyRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifyRequest")
            .field("key", &Redacted)
            .field("ip", &self.ip)
            .field("method", &self.method)
            .field("path", &self.path)
            .field("scopes", &self.scopes)
            .field("cost", &self.cost)
            .field("user_agent", &self.user_agent)
            .finish()
    }
}

impl std::fmt::Debug for CreatedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreatedKey")
            .field("key", &Redacted)
            .field("view", &self.view)
            .field("warning", &self.warning)
            .finish()
    }
}

impl std::fmt::Debug for RotatedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RotatedKey")
            .field("key", &Redacted)
            .field("view", &self.view)
            .field("previous", &self.previous)
            .finish()
    }
}

impl std::fmt::Debug for CreatedRootKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreatedRootKey").field("key", &Redacted).field("view", &self.view).finish()
    }
}

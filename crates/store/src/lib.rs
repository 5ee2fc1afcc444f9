//! keyward's durable state. [`Store`] is the one interface the service uses;
//! [`sqlite::SqliteStore`] is the embedded default (one file, WAL mode).
//!
//! Invariants:
//! * Every management change is written in the same transaction as its audit
//!   record, so there is never a change without its audit entry or the reverse.
//! * Only hashes are stored: no type here can hold a raw key.
//! * A call returns only after its transaction is committed with
//!   `synchronous=FULL`: what the API acknowledges survives a crash.

pub mod alerts;
pub mod cipher;
#[cfg(test)]
mod conformance;
pub mod datadir;
pub mod error;
pub mod events;
pub mod model;
pub mod postgres;
pub mod sqlite;

pub use error::{KeyringError, StoreError};
pub use model::*;
use sha2::{Digest, Sha256};

/// The chained hash of one audit entry: SHA-256 over the previous hash and
/// every stored field, separated by a byte that cannot occur in them.
pub(crate) fn audit_hash(prev: &str, seq: i64, e: &AuditEntry, before: Option<&str>, after: Option<&str>) -> String {
    let mut h = Sha256::new();
    let seq = seq.to_string();
    let at = e.at.to_string();
    for part in [
        prev,
        &seq,
        &e.id,
        &e.workspace_id,
        &at,
        &e.actor,
        &e.action,
        &e.target_type,
        &e.target_id,
        e.source_ip.as_deref().unwrap_or(""),
        e.request_id.as_deref().unwrap_or(""),
        before.unwrap_or(""),
        after.unwrap_or(""),
    ] {
        h.update(part.as_bytes());
        h.update([0x1f]);
    }
    hex::encode(h.finalize())
}

/// Result of a store call.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Durable state. Calls block: async callers run them on a blocking thread.
pub trait Store: alerts::AlertStore + Send + Sync + 'static {
    /// A named server setting (e.g. the pepper check value).
    fn get_setting(&self, name: &str) -> Result<Option<String>>;
    fn put_setting(&self, name: &str, value: &str) -> Result<()>;
    /// Stores a setting only if it has none yet; false if it had one.
    /// A shared store decides in one statement (nodes racing at first start).
    fn put_setting_if_absent(&self, name: &str, value: &str) -> Result<bool> {
        if self.get_setting(name)?.is_some() {
            return Ok(false);
        }
        self.put_setting(name, value).map(|()| true)
    }

    /// Creates a workspace with its first admin root key.
    fn create_workspace(&self, ws: &Workspace, admin: &RootKeyRecord, audit: &AuditEntry) -> Result<()>;
    /// [`Store::create_workspace`] only if there is none yet; false if there was.
    /// A shared store checks and creates in one transaction (nodes racing at first start).
    fn create_first_workspace(&self, ws: &Workspace, admin: &RootKeyRecord, audit: &AuditEntry) -> Result<bool> {
        if self.workspace_count()? > 0 {
            return Ok(false);
        }
        self.create_workspace(ws, admin, audit).map(|()| true)
    }
    /// Number of workspaces (zero means a fresh data dir).
    fn workspace_count(&self) -> Result<u64>;

    fn insert_keyspace(&self, ks: &Keyspace, audit: &AuditEntry) -> Result<()>;
    fn update_keyspace(&self, ks: &Keyspace, audit: &AuditEntry) -> Result<()>;
    fn get_keyspace(&self, workspace_id: &str, id: &str) -> Result<Option<Keyspace>>;
    fn list_keyspaces(&self, workspace_id: &str) -> Result<Vec<Keyspace>>;
    /// Every keyspace of every workspace, to build the verify path's policies at start.
    fn all_keyspaces(&self) -> Result<Vec<Keyspace>>;

    fn insert_key(&self, key: &KeyRecord, audit: &AuditEntry) -> Result<()> {
        self.insert_key_with(key, None, audit)
    }
    /// [`Store::insert_key`], with the key's sealed copy (recoverable keyspaces) in the same transaction.
    fn insert_key_with(&self, key: &KeyRecord, sealed: Option<&[u8]>, audit: &AuditEntry) -> Result<()>;
    /// The sealed copy of a key of a recoverable keyspace, if one was kept.
    fn sealed_key(&self, workspace_id: &str, key_id: &str) -> Result<Option<Vec<u8>>>;
    /// Replaces every mutable field of the key with the given record.
    fn update_key(&self, key: &KeyRecord, audit: &AuditEntry) -> Result<()>;
    fn get_key(&self, workspace_id: &str, id: &str) -> Result<Option<KeyRecord>>;
    fn find_key_by_hash(&self, hash: &keyward_core::KeyHash) -> Result<Option<KeyRecord>>;
    fn list_keys(&self, filter: &KeyFilter) -> Result<Vec<KeyRecord>>;
    /// Inserts several keys and one audit record in one transaction (imports).
    fn insert_keys(&self, keys: &[KeyRecord], audit: &AuditEntry) -> Result<()>;
    /// Writes several changed keys and one audit record in one transaction.
    fn update_keys(&self, keys: &[KeyRecord], audit: &AuditEntry) -> Result<()>;
    /// Inserts a rotation's new key and writes the keys it changed, in one transaction.
    fn rotate_key(&self, new: &KeyRecord, changed: &[KeyRecord], audit: &AuditEntry) -> Result<()> {
        self.rotate_key_with(new, None, changed, audit)
    }
    /// [`Store::rotate_key`], with the new key's sealed copy.
    fn rotate_key_with(
        &self,
        new: &KeyRecord,
        sealed: Option<&[u8]>,
        changed: &[KeyRecord],
        audit: &AuditEntry,
    ) -> Result<()>;
    /// Keys whose `rotated_to` is `id` (the predecessors of a key).
    fn keys_rotated_to(&self, workspace_id: &str, id: &str) -> Result<Vec<KeyRecord>>;
    /// Keys of every workspace revoked at or after `since`.
    fn revoked_since(&self, since: i64) -> Result<Vec<KeyRecord>>;
    /// Records revocation health checks (key id, instant, code) in one transaction.
    fn record_revocation_checks(&self, checks: &[(String, i64, String)]) -> Result<()>;
    /// Stores reminders, skipping ones already stored; returns how many were new.
    /// Stores the reminders not stored yet (once per key, threshold and
    /// expiry); `notices[i]`, when given, is enqueued only if `reminders[i]`
    /// was new. Returns which were new.
    fn insert_reminders(&self, reminders: &[Reminder], notices: &[Option<alerts::Notice>]) -> Result<Vec<bool>>;
    fn list_reminders(
        &self,
        workspace_id: &str,
        key_id: Option<&str>,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<Reminder>>;
    /// Inserts or replaces an incident, with its audit record.
    fn put_incident(&self, incident: &IncidentRecord, audit: &AuditEntry) -> Result<()>;
    fn get_incident(&self, workspace_id: &str, id: &str) -> Result<Option<IncidentRecord>>;
    fn list_incidents(&self, workspace_id: &str, after: Option<&str>, limit: u32) -> Result<Vec<IncidentRecord>>;
    /// Calls `f` for every key, to fill the in-memory index at start.
    fn for_each_key(&self, f: &mut dyn FnMut(KeyRecord)) -> Result<()>;
    /// Writes a batch of last-use marks (key id, instant, source address).
    fn record_last_used(&self, batch: &[LastUse]) -> Result<()>;
    /// Writes a batch of quota states (remaining, last refill).
    fn record_quotas(&self, batch: &[QuotaMark]) -> Result<()>;

    fn insert_root_key(&self, rk: &RootKeyRecord, audit: &AuditEntry) -> Result<()>;
    fn revoke_root_key(&self, workspace_id: &str, id: &str, at: i64, audit: &AuditEntry) -> Result<()>;
    /// Inserts `new` and sets the old key's end (`revoked_at` now, or an
    /// `expires_at` at the end of an overlap), in one transaction.
    fn rotate_root_key(&self, new: &RootKeyRecord, old: &RootKeyRecord, audit: &AuditEntry) -> Result<()>;
    /// Writes root keys' last-use instants (id, instant).
    fn record_root_key_uses(&self, batch: &[(String, i64)]) -> Result<()>;
    fn list_root_keys(&self, workspace_id: &str) -> Result<Vec<RootKeyRecord>>;
    fn all_root_keys(&self) -> Result<Vec<RootKeyRecord>>;

    fn list_audit(&self, filter: &AuditFilter) -> Result<Vec<AuditEntry>>;
    /// Records an action that changes nothing in the store itself (e.g. a
    /// master-key rotation, which rewrites the keyring file).
    fn append_audit(&self, audit: &AuditEntry) -> Result<()>;
    /// Recomputes the hash chain of a workspace's audit log.
    fn verify_audit(&self, workspace_id: &str) -> Result<AuditCheck>;
}
